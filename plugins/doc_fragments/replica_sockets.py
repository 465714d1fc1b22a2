# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # How the cloud host modules (fleet_status, table_checksum) reach the replica instances of the
    # host they run on: each through its socket in socket_dir, with one login for all of them.
    # Argument spec: args_common.replica_sockets_argument_spec().
    DOCUMENTATION = r'''
options:
  socket_dir:
    description: Directory of the replica instances' sockets (C(edgefleet-<instance>.sock)).
    type: path
    default: /run/mysqld
  login_user:
    description:
      - User on the replica instances of this host, the same for every instance (through their
        sockets; V(root) uses socket authentication).
    type: str
    default: root
  login_password:
    description: Password of O(login_user); not needed for V(root) with socket authentication.
    type: str
'''
