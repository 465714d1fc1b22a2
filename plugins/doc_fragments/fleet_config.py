# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  config:
    description:
      - Path to the fleet config file (the C(*.fleet.yml) inventory source of the
        P(edgefleet.mysql_backup.fleet#inventory) plugin). Its C(registry) and C(allocation)
        keys are used; relative registry paths are relative to that file.
      - "Read on the host the module runs on; run the module on the controller
        (C(delegate_to: localhost) or C(hosts: localhost)) for a file registry."
    type: path
  registry:
    description:
      - The registry location, replacing the one in O(config).
      - "C({type: file, path: ..., alloc_path: ..., lock_path: ...}) or C({type: mysql, host,
        port, user, password, database, unix_socket, defaults_file, ssl_ca, ssl_cert, ssl_key,
        table_prefix, connect_timeout})."
      - Relative paths are relative to O(config)'s directory, or to the current directory.
    type: dict
requirements:
  - PyYAML (for file registries and config files)
  - PyMySQL (only for a registry of C(type=mysql))
notes:
  - "File registry: writers hold an exclusive C(fcntl) lock on C(.<registry file>.lock) and
    replace files atomically, so concurrent runs (AWX job slices) serialize and readers never
    see half a file."
  - "MySQL registry: writers serialize on a row lock; UNIQUE keys on every port of a cloud
    host, on server_id and on gtid_domain_id make duplicates impossible; conflicts retry."
"""
