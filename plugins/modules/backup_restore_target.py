#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_restore_target
short_description: What a restore of an edgefleet backup into a MariaDB server would do (read-only)
version_added: 0.1.0
description:
  - Inspects the target server of a restore the way C(edgefleet-backup restore) decides, with
    the same code (C(inspect_target) in the collection's module_utils C(backup/restore.py)).
  - It reports which target schemas exist, which are not empty (and would make the restore refuse
    unless O(overwrite)), which would be dropped first, and what the GTID step would do on a
    replacement device.
  - Used by C(playbooks/restore.yml) so that C(--check) reports exactly what the real run would
    do or refuse. Never changes anything; runs in check mode too.
  - Connects as O(login_user) over O(login_unix_socket) with the C(mariadb) client (MariaDB's
    C(unix_socket) authentication as root, no password).
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.read_only
options:
  login_unix_socket:
    description: Unix socket of the target server.
    type: str
    required: true
  login_user:
    description: User to log in as (unix_socket authentication).
    type: str
    default: root
  targets:
    description: Target schema names of the restore (after any renaming).
    type: list
    elements: str
    required: true
  overwrite:
    description: Whether the restore would drop and replace non-empty target schemas.
    type: bool
    default: false
  position:
    description: The backup's GTID position in the device's domain (for the GTID decision).
    type: str
    default: ''
  gtid_state:
    description:
      - V(auto) as a device restore runs (continue the device's GTID sequence on a fresh server), V(skip) otherwise.
    type: str
    choices: [auto, skip]
    default: skip
'''

EXAMPLES = r'''
- name: Would a restore into app on the device be refused?
  edgefleet.mysql_backup.backup_restore_target:
    login_unix_socket: /run/mysqld/mysqld.sock
    targets: [app]
    position: 1000-1000-42
    gtid_state: auto
  register: target

- name: Say so
  ansible.builtin.debug:
    msg: "{{ target.refused or 'the restore would proceed' }}"
'''

RETURN = r'''
present:
  description: Target schemas that exist on the server.
  returned: always
  type: list
  elements: str
busy:
  description: Non-empty target schemas with their object counts (tables, views, routines, triggers, events).
  returned: always
  type: dict
  sample: {app: {tables: 3, views: 0, routines: 0, triggers: 0, events: 0}}
refused:
  description: Why the restore would be refused (nothing changed), or null when it would proceed.
  returned: always
  type: str
drop:
  description: Target schemas the restore would drop before loading (empty ones, or every one with O(overwrite)).
  returned: always
  type: list
  elements: str
gtid:
  description: The GTID step on a replacement device, V(set) with C(gtid_binlog_state), or V(skipped) with a reason.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULT_TOOLS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.restore import inspect_target


def main():
    module = AnsibleModule(
        argument_spec=dict(
            login_unix_socket=dict(type='str', required=True),
            login_user=dict(type='str', default='root'),
            targets=dict(type='list', elements='str', required=True),
            overwrite=dict(type='bool', default=False),
            position=dict(type='str', default=''),
            gtid_state=dict(type='str', choices=['auto', 'skip'], default='skip'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        with Server(params['login_unix_socket'], dict(DEFAULT_TOOLS), params['login_user'], timeout=120) as server:
            plan = inspect_target(server, dict((t, t) for t in params['targets']), params['overwrite'],
                                  params['position'], params['gtid_state'])
    except BackupError as exc:
        module.fail_json(msg='cannot inspect the restore target %s: %s' % (params['login_unix_socket'], exc))
    module.exit_json(changed=False, **plan)


if __name__ == '__main__':
    main()
