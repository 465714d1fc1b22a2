# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options shared by every module that talks to MySQL/MariaDB.
    DOCUMENTATION = r'''
options:
  login_user:
    description:
      - The user name used to authenticate.
      - Falls back to C(user) in the C([client]) group of O(config_file), then to the
        driver's default (the current OS user).
    type: str
    aliases: [login_username]
  login_password:
    description:
      - The password used to authenticate with.
      - Falls back to C(password) in O(config_file).
    type: str
  login_host:
    description:
      - Host running the database server.
      - Falls back to C(host) in O(config_file), then to V(localhost) (over TCP; set
        O(login_unix_socket) to use a socket).
    type: str
  login_port:
    description:
      - Port of the database server.
      - Falls back to C(port) in O(config_file), then to V(3306).
    type: int
  login_unix_socket:
    description:
      - Unix socket to connect to; takes precedence over O(login_host) and O(login_port).
    type: str
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established.
    type: int
    default: 30
  config_file:
    description:
      - A MySQL option file (C(my.cnf) format) whose C([client]) group supplies defaults for
        any login option not given, like community.mysql modules do.
      - Ignored when the file does not exist.
    type: path
    default: ~/.my.cnf
  ca_cert:
    description:
      - For the TLS of this module's own login connection (to O(login_host)), the CA
        certificate (PEM) on the host that runs the module that verifies the server's
        certificate. Setting it enables TLS.
      - Not the TLS between a replica and its source; that is part of a channel
        (C(channels[].ssl_ca) of M(edgefleet.mysql_backup.replication_source)). The alias
        V(ssl_ca) is kept for compatibility with community.mysql.
    type: path
    aliases: [ssl_ca]
  client_cert:
    description:
      - TLS of the login connection - client certificate (PEM) for TLS client authentication.
        Alias V(ssl_cert) as in community.mysql; not C(channels[].ssl_cert).
    type: path
    aliases: [ssl_cert]
  client_key:
    description:
      - TLS of the login connection - private key (PEM) of O(client_cert). Alias V(ssl_key) as
        in community.mysql; not C(channels[].ssl_key).
    type: path
    aliases: [ssl_key]
  check_hostname:
    description:
      - Whether the server certificate's host name must match O(login_host) (login connection).
      - When unset, it is checked when O(ca_cert) is set, as PyMySQL does by default.
    type: bool
requirements:
  - PyMySQL (Python package, on the host that runs the module)
notes:
  - Connection options are the same in every module of this collection; values from
    O(config_file) are used only for options that are not given.
  - The login user needs C(REPLICATION SLAVE ADMIN) or C(SUPER) (MariaDB) /
    C(REPLICATION_SLAVE_ADMIN) (MySQL) to change replication, and C(REPLICA MONITOR) /
    C(REPLICATION CLIENT) to read its status.
'''
