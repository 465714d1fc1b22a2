#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: table_checksum
short_description: Compare per-table checksums of devices and their replicas at one GTID position
version_added: 0.1.0
description:
  - Runs on a cloud host and checks, for every device in O(devices), that its replica holds
    exactly the device's data, table by table, without pausing the device.
  - "For each device: the device's channel is stopped on its replica instance; a consistent
    snapshot is opened on the device through its tunnel and its GTID position read (as
    C(mariadb-dump --single-transaction --gtid) does); the device's tables are checksummed in
    that snapshot; the replica is run to exactly that position
    (C(START REPLICA 'ch' UNTIL master_gtid_pos=...)) and checksummed; the channel is started
    again if it was running."
  - A table checksum is the row count and the sums of both halves of every row's MD5 (all
    columns by value plus a NULL map), computed by the servers. For tables that differ and have
    a primary key, the differing keys are named (C(keys) in RV(devices[].tables)).
  - One call for all devices of the host; devices are checked one after the other, so each
    channel is paused only for its own check (seconds for small databases).
  - Takes the same server lock as M(edgefleet.mysql_backup.replication_source) while a channel
    is paused, so a replication run cannot restart it mid-check.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.replica_sockets
attributes:
  check_mode:
    support: full
    description:
      - The check only reads data and leaves every channel as it found it, so it runs in check
        mode too; O(results_dir) is not written in check mode.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  devices:
    description:
      - Devices to check (allocation records, items of C(edgefleet_cloud_devices)). Each needs
        C(id), C(tunnel_mysql_port) and C(replica_instance); C(channel_name) (default the id)
        and C(schema_prefix) (channel mode) are used when present.
    type: list
    elements: dict
    required: true
  databases:
    description: Schemas to compare, as named on the device (C(edgefleet_databases)).
    type: list
    elements: str
    default: [app]
  tables:
    description: Only these tables (C(schema.table) or C(table)). Default is every base table.
    type: list
    elements: str
  source_host:
    description: Host where the device tunnels listen.
    type: str
    default: 127.0.0.1
  source_user:
    description: Read-only check account on the devices (C(SELECT) on the compared schemas).
    type: str
    default: edgefleet_check
  source_password:
    description: Password of O(source_user).
    type: str
    required: true
  connect_timeout:
    description: Seconds to wait for a connection to a device or an instance.
    type: int
    default: 10
  until_timeout:
    description: Seconds to wait for a replica to reach the device's snapshot position.
    type: int
    default: 300
  lock_timeout:
    description: Seconds to wait for the replica's server lock.
    type: int
    default: 60
  locate_max_rows:
    description: Name differing keys only in tables with at most this many rows (0 never).
    type: int
    default: 1000000
  locate_limit:
    description: At most this many keys reported per kind of difference and table.
    type: int
    default: 20
  results_dir:
    description:
      - Write each device's result to C(<results_dir>/<device_id>.json) (atomically), where the
        status collector and M(edgefleet.mysql_backup.fleet_status) pick it up.
      - The directory must exist. Not written in check mode; RV(written) lists the files.
    type: path
notes:
  - The timeouts and limits (O(connect_timeout), O(until_timeout), O(lock_timeout),
    O(locate_max_rows), O(locate_limit)) must not be negative.
  - MariaDB replicas only (the check relies on C(START REPLICA ... UNTIL master_gtid_pos)).
  - O(login_user) needs C(SUPER) or C(REPLICATION SLAVE ADMIN) on the replica instances to stop
    and start channels; O(source_user) needs only C(SELECT) on the devices.
  - A device whose channel is stopped on an SQL error is not compared (no common position can
    be reached); it is reported V(error) with the reason. Re-seed it with C(playbooks/resync.yml).
  - A table checksum is a full scan inside the device's snapshot; very large tables make the
    check (and the channel's pause) last longer.
seealso:
  - module: edgefleet.mysql_backup.fleet_status
  - module: edgefleet.mysql_backup.replication_source
'''

EXAMPLES = r'''
- name: Compare every device of this cloud host with its replica
  edgefleet.mysql_backup.table_checksum:
    devices: "{{ edgefleet_cloud_devices }}"
    databases: "{{ edgefleet_databases }}"
    source_password: "{{ edgefleet_check_password }}"
    results_dir: /var/lib/edgefleet/consistency
  register: consistency

- name: Fail on differences
  ansible.builtin.assert:
    that: consistency.summary.diverged == 0
    fail_msg: "{{ consistency.devices | selectattr('state', 'equalto', 'diverged') | map(attribute='device') | list }}"
'''

RETURN = r'''
devices:
  description: One result per device, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    device:
      description: Device id.
      type: str
    channel:
      description: Channel name on the replica.
      type: str
    state:
      description: V(ok) (every table equal), V(diverged) (some differ) or V(error) (not compared).
      type: str
    error:
      description: Why the device could not be compared.
      type: str
    gtid_pos:
      description: The device snapshot's GTID position, where both sides were compared.
      type: str
      sample: 1000-1000-42
    replica_pos_before:
      description: The replica's C(gtid_slave_pos) when its channel was stopped.
      type: str
    tables_checked:
      description: Tables compared.
      type: int
    differing_tables:
      description: Tables (device names, C(schema.table)) that are not equal.
      type: list
      elements: str
    tables:
      description:
        - Per table C(table), C(replica_table), C(status) (V(same), V(differs),
          V(missing_on_replica), V(missing_on_device), V(columns_differ)), C(device_rows),
          C(replica_rows), C(device_checksum), C(replica_checksum); for V(differs) also
          C(rows_located) and C(keys) (C(missing_on_replica), C(extra_on_replica),
          C(different), C(counts)) or C(locate_note).
      type: list
      elements: dict
    missing_schemas:
      description: Schemas missing on the C(device) or the C(replica) side.
      type: dict
    paused_s:
      description: Seconds the channel was stopped.
      type: float
    duration_s:
      description: Seconds the whole check of this device took.
      type: float
    restarted:
      description: Whether the channel was started again (it was running before).
      type: bool
    checked_ts:
      description: Unix time of the check.
      type: int
summary:
  description: Devices per state and table counters.
  returned: always
  type: dict
  sample: {devices: 2, ok: 1, diverged: 1, error: 0, tables_checked: 8, tables_differing: 1}
written:
  description: Result files written to O(results_dir).
  returned: always
  type: list
  elements: str
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.args_common import replica_sockets_argument_spec
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.consistency import (
    check_device, connect, schema_map_for, summarize,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import Dialect
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import device_records_error
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_collect import (
    write_atomic,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import require_pymysql


def check_all(params, devices):
    """Check every device; one replica connection per instance, reused across its devices."""
    results, replicas = [], {}
    options = dict((key, params[key]) for key in (
        'until_timeout', 'lock_timeout', 'locate_max_rows', 'locate_limit', 'tables'))
    try:
        for device in devices:
            instance = device.get('replica_instance') or device['id']
            channel = device.get('channel_name') or device['id']
            base = {'device': device['id'], 'channel': channel, 'instance': instance}
            if instance not in replicas:
                socket_path = os.path.join(params['socket_dir'], 'edgefleet-%s.sock' % instance)
                try:
                    conn = connect(unix_socket=socket_path, user=params['login_user'],
                                   password=params['login_password'],
                                   connect_timeout=params['connect_timeout'])
                    replicas[instance] = (conn, Dialect.from_version_string(
                        conn.get_server_info()))
                except Exception as exc:  # pylint: disable=broad-except
                    replicas[instance] = (None, 'replica instance %s not reachable at %s: %s'
                                          % (instance, socket_path, to_native(exc)))
            replica, dialect = replicas[instance]
            if replica is None:
                base.update(state='error', error=dialect, tables=[], differing_tables=[],
                            tables_checked=0)
                results.append(base)
                continue

            def device_connect(port=device['tunnel_mysql_port']):
                return connect(host=params['source_host'], port=int(port),
                               user=params['source_user'], password=params['source_password'],
                               connect_timeout=params['connect_timeout'])

            schema_map = schema_map_for(params['databases'], device.get('schema_prefix') or '')
            result = check_device(device_connect, replica, dialect, channel, schema_map, options)
            base.update(result)
            results.append(base)
    finally:
        for conn, _dialect in replicas.values():
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass
    return results


def main():
    module = AnsibleModule(
        argument_spec=dict(
            devices=dict(type='list', elements='dict', required=True),
            databases=dict(type='list', elements='str', default=['app']),
            tables=dict(type='list', elements='str'),
            source_host=dict(type='str', default='127.0.0.1'),
            source_user=dict(type='str', default='edgefleet_check'),
            source_password=dict(type='str', required=True, no_log=True),
            connect_timeout=dict(type='int', default=10),
            until_timeout=dict(type='int', default=300),
            lock_timeout=dict(type='int', default=60),
            locate_max_rows=dict(type='int', default=1000000),
            locate_limit=dict(type='int', default=20),
            results_dir=dict(type='path'),
            **replica_sockets_argument_spec()
        ),
        supports_check_mode=True,
    )
    require_pymysql(module)
    params = module.params
    records_error = device_records_error(params['devices'])
    if records_error:
        module.fail_json(msg=records_error)
    for key in ('until_timeout', 'lock_timeout', 'locate_max_rows', 'locate_limit',
                'connect_timeout'):
        if params[key] < 0:
            module.fail_json(msg='%s must not be negative' % key)
    if params['results_dir'] and not module.check_mode \
            and not os.path.isdir(params['results_dir']):
        module.fail_json(msg='results_dir %s does not exist' % params['results_dir'])
    results = check_all(params, params['devices'])
    written = []
    if params['results_dir'] and not module.check_mode:
        for result in results:
            path = os.path.join(params['results_dir'], '%s.json' % result['device'])
            write_atomic(path, json.dumps(result, indent=2, sort_keys=True) + '\n', 0o640)
            written.append(path)
    module.exit_json(changed=bool(written), devices=results, summary=summarize(results),
                     written=written)


if __name__ == '__main__':
    main()
