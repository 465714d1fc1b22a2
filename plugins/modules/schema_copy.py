#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: schema_copy
short_description: Dump schemas into a file, load a dump into a replica, or both
version_added: 0.1.0
description:
  - The dump and load steps of seeding a device's replica (C(roles/replication) C(tasks/seed.yml))
    and of moving a device to another cloud host (C(roles/rebalance)), with the command lines of
    C(module_utils/dump_load.py) (one home for every C(mariadb-dump) flag set, shared with the
    backup program).
  - With O(dump), C(mariadb-dump) runs on the managed host into O(path), written to a private
    temporary file and renamed only when the dump is complete (it ends with C(-- Dump completed)). A
    O(purpose=seed) dump carries the snapshot's GTID position, returned as RV(gtid_pos).
  - With O(load), the dump in O(path) is streamed into the replica with C(sql_log_bin=0) (the
    replica does not binlog the copy), schemas renamed on the way with O(rename_prefix); with
    O(replace) those schemas are dropped first.
  - With both, the dump is loaded right after it was taken; with O(keep=false) the file is removed
    afterwards, also when anything failed.
  - The password goes to the clients through the environment (C(MYSQL_PWD)), never on a command line.
author:
  - edgefleet maintainers (@edgefleet)
options:
  purpose:
    description:
      - V(seed) dumps a device through its tunnel with the read-only check account and returns the
        dump's GTID position; V(move) dumps a device's schemas from its old replica (routines and
        events included, no position; the caller reads it from the stopped channel).
    type: str
    choices: [seed, move]
    required: true
  databases:
    description:
      - Schemas to dump, as named on the source. An empty list writes a placeholder dump (nothing
        to copy yet; loading it is a no-op).
    type: list
    elements: str
    default: []
  path:
    description:
      - The dump file on the managed host; compressed with gzip when it ends in C(.gz). Its
        directory is created with mode C(0700) when missing.
    type: path
    required: true
  dump:
    description: Where to dump from (omit to only load O(path)).
    type: dict
    suboptions:
      login_unix_socket: {description: Socket of the source server., type: path}
      login_host: {description: Host of the source server (a device's tunnel is C(127.0.0.1))., type: str}
      login_port: {description: Its port., type: int}
      login_user: {description: Account that dumps., type: str}
      login_password: {description: Its password., type: str}
  load:
    description: The replica to load into (omit to only dump).
    type: dict
    suboptions:
      login_unix_socket: {description: Socket of the replica instance., type: path, required: true}
      login_user: {description: Account that loads., type: str, default: root}
  rename_prefix:
    description:
      - Load each schema of O(databases) as C(<prefix><schema>) (a device's schema prefix on a
        shared replica instance, channel mode). Empty keeps the names.
    type: str
    default: ''
  replace:
    description: Drop the loaded schemas (named with O(rename_prefix)) on the replica before loading.
    type: bool
    default: false
  keep:
    description: Keep O(path) after loading (V(false) removes it, also after a failure).
    type: bool
    default: true
  loaded_marker:
    description: A file created after a successful load (a datadir's C(.edgefleet-imported)).
    type: path
notes:
  - Check mode does nothing and reports a change.
  - Needs C(mariadb-dump) and C(mariadb) on the managed host.
seealso:
  - module: edgefleet.mysql_backup.replication_source
'''

EXAMPLES = r'''
- name: Seed a device's replica through its tunnel
  edgefleet.mysql_backup.schema_copy:
    purpose: seed
    databases: [app]
    path: /var/lib/edgefleet/seed/device07.sql
    dump: {login_host: 127.0.0.1, login_port: 40007, login_user: edgefleet_check, login_password: "{{ pw }}"}
    load: {login_unix_socket: /run/mysqld/edgefleet-shared1.sock}
    rename_prefix: p7_
    replace: true
    keep: false
  register: seed

- name: Export a device from its old replica (kept for the move's journal)
  edgefleet.mysql_backup.schema_copy:
    purpose: move
    databases: [app]
    path: /var/lib/edgefleet/moves/device07/dump.sql.gz
    dump: {login_unix_socket: /run/mysqld/edgefleet-device07.sock, login_user: root}
'''

RETURN = r'''
gtid_pos:
  description: The dump's GTID position (O(purpose=seed) with O(dump)); empty when the source has logged no transaction yet.
  returned: when a seed dump ran
  type: str
  sample: 501-501-7
bytes:
  description: Size of the dump file as written (compressed size for C(.gz)).
  returned: when a dump ran
  type: int
loaded_bytes:
  description: Uncompressed bytes loaded into the replica.
  returned: when a load ran
  type: int
'''


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import dump_load as D


def run(params):
    """Dump, load or both as the params say; returns the module result (raises DumpLoadError)."""
    return D.copy_schemas(params['purpose'], params['databases'], params['path'], dump=params['dump'],
                          load=params['load'], rename_prefix=params['rename_prefix'],
                          replace=params['replace'], keep=params['keep'],
                          loaded_marker=params['loaded_marker'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            purpose=dict(type='str', choices=['seed', 'move'], required=True),
            databases=dict(type='list', elements='str', default=[]),
            path=dict(type='path', required=True),
            dump=dict(type='dict', options=dict(
                login_unix_socket=dict(type='path'),
                login_host=dict(type='str'),
                login_port=dict(type='int'),
                login_user=dict(type='str'),
                login_password=dict(type='str', no_log=True),
            )),
            load=dict(type='dict', options=dict(
                login_unix_socket=dict(type='path', required=True),
                login_user=dict(type='str', default='root'),
            )),
            rename_prefix=dict(type='str', default=''),
            replace=dict(type='bool', default=False),
            keep=dict(type='bool', default=True),
            loaded_marker=dict(type='path'),
        ),
        required_one_of=[('dump', 'load')],
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=True)
    try:
        module.exit_json(**run(module.params))
    except (D.DumpLoadError, OSError) as exc:
        module.fail_json(msg=to_native(exc))


if __name__ == '__main__':
    main()
