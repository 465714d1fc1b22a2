# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Where the cloud host modules (fleet_status, table_checksum) find the replica instances.
    DOCUMENTATION = r'''
options:
  socket_dir:
    description: Directory of the replica instances' sockets (C(edgefleet-<instance>.sock)).
    type: path
    default: /run/mysqld
'''
