#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: fleet_status
short_description: Status of every device a cloud host carries, in one call
version_added: 0.1.0
description:
  - Runs on a cloud host and reports, for every device given in O(devices), whether its
    reverse tunnel is up, the state of its replication channel, its last backup and its last
    consistency check, with one overall RV(devices[].state) and the problems in plain words.
  - One call gathers everything. The host's listening sockets are read once (a device's
    tunnel is up when C(127.0.0.1:<tunnel_mysql_port>) listens), each replica instance is
    asked once for all its channels, and one status file per device is read. The number of
    tasks does not grow with the fleet.
  - The result is what the C(status_table), C(status_html) and C(status_metrics) filters and
    the C(edgefleet-monitor) collector of the monitoring role render; the collector runs the
    same code outside Ansible on a timer.
  - Never changes anything.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.read_only
  - edgefleet.mysql_backup.replica_sockets
options:
  devices:
    description:
      - The devices of this cloud host, as allocated (the inventory's C(edgefleet_cloud_devices)).
      - Each needs C(id), C(tunnel_mysql_port) and C(replica_instance); C(site), C(status),
        C(tunnel_ssh_port), C(replica_mode) and C(channel_name) are used when present.
    type: list
    elements: dict
    required: true
  instances:
    description:
      - The replica instances of this host (C(edgefleet_cloud_instances)); each needs C(name).
      - Instances named by a device are read even when not listed here.
    type: list
    elements: dict
    default: []
  cloud_host:
    description: Name of this cloud host, shown in every record.
    type: str
    required: true
  connect_timeout:
    description: Seconds to wait for each replica instance.
    type: int
    default: 5
  backup_status_dir:
    description:
      - Directory of the backup role's status files, one C(<device_id>.json) per device.
      - A missing file means the device was never backed up.
    type: path
    default: /var/lib/edgefleet/backup/status
  consistency_dir:
    description: Directory of the last consistency results (C(<device_id>.json), written by
      M(edgefleet.mysql_backup.table_checksum) or the monitoring role's timer).
    type: path
    default: /var/lib/edgefleet/consistency
  lag_threshold:
    description: A device more than this many seconds behind is V(lagging). Not negative.
    type: int
    default: 300
  backup_max_age:
    description: A device whose last good backup is older than this many seconds is V(unbacked). Not negative.
    type: int
    default: 93600
notes:
  - Device states, worst first; a device has the worst that applies.
    V(error) replication stopped on an error, its channel or replica instance is missing, or the
    last consistency check found differences;
    V(offline) the tunnel is down, or it is up but the device database does not answer;
    V(stopped) replication stopped without an error;
    V(lagging) further behind than O(lag_threshold);
    V(unbacked) never backed up, last good backup older than O(backup_max_age), last backup
    attempt failed or last restore verify failed;
    V(ok) none of these; V(inactive) not active in the registry.
  - Needs PyMySQL on the cloud host (the replica role installs it).
seealso:
  - module: edgefleet.mysql_backup.replication_info
  - module: edgefleet.mysql_backup.table_checksum
'''

EXAMPLES = r'''
- name: Status of every device of this cloud host
  edgefleet.mysql_backup.fleet_status:
    devices: "{{ edgefleet_cloud_devices }}"
    instances: "{{ edgefleet_cloud_instances }}"
    cloud_host: "{{ inventory_hostname }}"
  register: status

- name: Fail when a device is broken
  ansible.builtin.assert:
    that: status.summary.error == 0
    fail_msg: "{{ status.devices | selectattr('state', 'equalto', 'error') | map(attribute='device') | join(', ') }}"

- name: Terminal table (on the controller)
  ansible.builtin.debug:
    msg: "{{ status | edgefleet.mysql_backup.status_table }}"
'''

RETURN = r'''
devices:
  description: One record per device, worst state first.
  returned: always
  type: list
  elements: dict
  contains:
    device:
      description: Device id.
      type: str
    site:
      description: Site of the device.
      type: str
    cloud_host:
      description: This cloud host.
      type: str
    instance:
      description: Replica instance carrying the device.
      type: str
    mode:
      description: V(instance) or V(channel).
      type: str
    channel:
      description: Replication channel (connection) name.
      type: str
    status:
      description: Registry status of the device.
      type: str
    state:
      description: V(error), V(offline), V(stopped), V(lagging), V(unbacked), V(ok) or V(inactive).
      type: str
      sample: offline
    problems:
      description: Every problem found, in plain words, worst first.
      type: list
      elements: str
    tunnel:
      description: C(mysql_port), C(ssh_port), C(up) (MySQL port listens), C(ssh_up).
      type: dict
    replication:
      description:
        - C(health) (replication_info health, or V(unknown) when the instance does not answer),
          C(running), C(io_running), C(sql_running), C(seconds_behind), C(last_io_errno),
          C(last_io_error), C(last_sql_errno), C(last_sql_error), C(last_errno) and
          C(last_error) (the error that explains the state), C(diagnosis), C(gtid_io_pos),
          C(gtid_applied_pos), C(instance_reachable).
      type: dict
    backup:
      description:
        - The backup status document's keys plus C(state) (V(ok), V(never), V(stale),
          V(failed), V(verify_failed), V(invalid)), C(age_s) and C(problem).
      type: dict
    consistency:
      description:
        - C(state) (V(ok), V(diverged), V(error), V(never)), C(checked_ts), C(gtid_pos),
          C(tables_checked), C(tables_differing), C(differing), C(detail).
      type: dict
summary:
  description: Devices per state, plus fleet counters.
  returned: always
  type: dict
  sample: {total: 2, error: 1, offline: 1, stopped: 0, lagging: 0, unbacked: 0, ok: 0,
           tunnels_up: 1, replication_running: 1, backups_ok: 0, verify_failed: 0}
hosts:
  description: How the collection went on this host (C(cloud_host), C(collected_at),
    C(duration_s), C(devices), C(instances) with C(name), C(reachable), C(error)).
  returned: always
  type: list
  elements: dict
generated_at:
  description: Unix time of the collection.
  returned: always
  type: int
thresholds:
  description: C(lag_threshold) and C(backup_max_age) used.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.args_common import replica_sockets_argument_spec
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import device_records_error
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_collect import collect
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import require_pymysql


def main():
    module = AnsibleModule(
        argument_spec=dict(
            devices=dict(type='list', elements='dict', required=True),
            instances=dict(type='list', elements='dict', default=[]),
            cloud_host=dict(type='str', required=True),
            connect_timeout=dict(type='int', default=5),
            backup_status_dir=dict(type='path', default='/var/lib/edgefleet/backup/status'),
            consistency_dir=dict(type='path', default='/var/lib/edgefleet/consistency'),
            lag_threshold=dict(type='int', default=300),
            backup_max_age=dict(type='int', default=93600),
            **replica_sockets_argument_spec()
        ),
        supports_check_mode=True,
    )
    require_pymysql(module)
    params = module.params
    records_error = device_records_error(params['devices'])
    if records_error:
        module.fail_json(msg=records_error)
    if params['lag_threshold'] < 0 or params['backup_max_age'] < 0:
        module.fail_json(msg='lag_threshold and backup_max_age must not be negative')
    options = dict((key, params[key]) for key in (
        'socket_dir', 'login_user', 'login_password', 'connect_timeout', 'backup_status_dir',
        'consistency_dir', 'lag_threshold', 'backup_max_age'))
    report = collect(params['devices'], params['instances'], params['cloud_host'], options)
    module.exit_json(changed=False, **report)


if __name__ == '__main__':
    main()
