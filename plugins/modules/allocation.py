#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: allocation
short_description: Sticky allocation of cloud host, tunnel ports, ids and replica slot per device
version_added: 0.1.0
description:
  - For every active device of the registry that has no allocation yet, picks a cloud host by
    capacity and records on it a tunnel MySQL port and an SSH back-channel port, a fleet-wide
    unique C(server_id) and C(gtid_domain_id), a replica placement and a replica schema prefix.
  - "Replica placement, mode V(instance): one replica mysqld per device - its instance name
    (= device id), port and datadir. Mode V(channel): a shared replica instance on the cloud
    host carrying at most O(allocation.channels_per_instance) replication channels; the channel
    name is the device id and the device's schemas are renamed to C(<device id>_<db>)."
  - Allocation is sticky. Adding, disabling or retiring a device never moves another device.
    Existing allocations are never changed, even when the policy changes later.
  - Devices that are disabled or retired (or gone from the registry) are released; their ports
    rest in quarantine for O(allocation.quarantine_days) before they can be handed out again.
    A device keeps its C(server_id) and C(gtid_domain_id) for ever; they are never reused.
  - Runs are safe to start concurrently (AWX sliced jobs). The file backend serializes on an
    exclusive C(fcntl) lock and writes atomically; the MySQL backend serializes on a row lock
    and enforces uniqueness with UNIQUE keys, retrying on conflicts.
  - Bad input fails with a message naming the device or cloud host and the field, and nothing
    is written - duplicate or unsafe ids, overlapping or exhausted port ranges, reserved ports
    inside a range, an unreadable registry, a cloud host removed while devices still live on it.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.fleet_config
  - edgefleet.mysql_backup.fleet_config.registry
options:
  allocation:
    description:
      - Allocation policy, merged key by key over the C(allocation) mapping of O(config).
    type: dict
    suboptions:
      replica_mode:
        description:
          - Default replica mode for devices whose registry entry sets no C(replica_mode).
          - Default C(instance).
        type: str
        choices: [instance, channel]
      channels_per_instance:
        description:
          - Most channels on one shared replica instance in mode V(channel) (MySQL allows 256).
          - Default C(64).
        type: int
      tunnel_ports:
        description:
          - Default tunnel port ranges on every cloud host (C("20000-29999"), a port, or a list of
            both). Each device takes two ports. A cloud host's own C(tunnel_ports) replace this.
          - Keep ranges out of the kernel's ephemeral range (C(ip_local_port_range), usually 32768-60999).
          - Default C(20000-29999).
        type: raw
      replica_ports:
        description:
          - Default port ranges for replica instances (one per device in mode V(instance), one per
            shared instance in mode V(channel)). Must not overlap O(allocation.tunnel_ports).
          - Default C(30000-32767).
        type: raw
      reserved_ports:
        description:
          - Ports never handed out on any cloud host. A configured range that contains one of them
            is an error (a misconfiguration like C(3000-4000) over MySQL's 3306). A cloud host's own
            C(reserved_ports) in the registry are carved out of its ranges instead (skipped).
          - Default C([22, 80, 443, 3306, 3307, 33060, 33061, 33062]).
        type: list
        elements: raw
      capacity:
        description:
          - Default number of devices per cloud host; a cloud host's C(capacity) replaces it. Unset
            means as many as the tunnel port ranges allow. New devices go to the host with the
            lowest fill ratio.
        type: int
      quarantine_days:
        description:
          - Days a freed port rests before it can be handed out again.
          - Default C(7).
        type: float
      server_id_base:
        description:
          - First device C(server_id). Device ids stay below O(allocation.replica_server_id_base).
          - Default C(1000).
        type: int
      gtid_domain_id_base:
        description:
          - First device C(gtid_domain_id).
          - Default C(1000).
        type: int
      replica_server_id_base:
        description:
          - First C(server_id) for replica instances on cloud hosts.
          - Default C(2000000000).
        type: int
      replica_datadir_base:
        description:
          - Directory under which replica datadirs (C(<base>/<instance>)) live.
          - Default C(/var/lib/edgefleet/replicas).
        type: str
      channel_instance_prefix:
        description:
          - Name prefix of shared channel-mode instances (C(multi-01), C(multi-02), ...). Must
            contain C(-) so an instance name can never equal a device id.
          - Default C(multi-).
        type: str
      free_disabled:
        description:
          - Release the allocation of disabled devices (retired ones are always released).
          - Default C(true).
        type: bool
      lock_timeout:
        description:
          - Seconds to wait for a concurrent run to finish.
          - Default C(60).
        type: float
  devices:
    description:
      - Only allocate or release these device ids; others are left as they are. Lets AWX job
        slices each handle their own hosts (C("{{ ansible_play_hosts }}")).
    type: list
    elements: str
  move:
    description:
      - Move these allocated, active devices to another cloud host instead of allocating
        (rebalance). Each gets new tunnel ports and a new replica placement there and keeps its
        C(server_id), C(gtid_domain_id) and replica mode; its old ports rest in quarantine. No other
        device changes.
      - A device already on O(move_to) is left alone, so repeating a move reports no change.
      - Moving the data is the job of C(playbooks/rebalance.yml), which calls this option.
    type: list
    elements: str
  move_from:
    description:
      - "Move every active device allocated on this cloud host (drain it). Set C(drain: true) on the
        host in the registry first (the M(edgefleet.mysql_backup.registry) module) so that new
        devices are not placed on it again; the module warns otherwise."
      - Devices that are allocated there but not active stay (with a warning).
    type: str
  move_to:
    description:
      - The cloud host that O(move) or O(move_from) devices go to. Unset picks, device by device, the
        host with the lowest fill ratio among the hosts that are not the device's own and do not drain.
      - Capacity and port ranges of the target are respected; a full or draining target is an error.
    type: str
  listening_ports:
    description:
      - Ports seen listening on cloud hosts (for example from M(community.general.listen_ports_facts)),
        as a mapping of cloud host name to a list of ports. They are never handed out.
    type: dict
attributes:
  check_mode:
    support: full
    description: Computes and returns what would be allocated and released, writes nothing.
  diff_mode:
    support: full
    description: Shows the allocations added and released.
"""

EXAMPLES = r"""
- name: Allocate every new device of the lab fleet
  edgefleet.mysql_backup.allocation:
    config: "{{ inventory_dir }}/lab.fleet.yml"
  delegate_to: localhost
  run_once: true
  register: alloc

- name: Show what would change, write nothing
  edgefleet.mysql_backup.allocation:
    config: inventories/prod/prod.fleet.yml
  check_mode: true
  diff: true

- name: One AWX job slice allocates only its own devices
  edgefleet.mysql_backup.allocation:
    config: "{{ edgefleet_fleet_config }}"
    devices: "{{ ansible_play_hosts | select('in', groups['devices']) | list }}"
  delegate_to: localhost
  run_once: true

- name: Move one device to cloud02 (new ports there, old ones quarantined; data - playbooks/rebalance.yml)
  edgefleet.mysql_backup.allocation:
    config: "{{ edgefleet_fleet_config }}"
    move: [device07]
    move_to: cloud02

- name: Plan a drain of cloud01 by capacity (check mode shows where every device would go)
  edgefleet.mysql_backup.allocation:
    config: "{{ edgefleet_fleet_config }}"
    move_from: cloud01
  check_mode: true
  register: drain_plan

- name: Explicit registry and policy, channel mode with 100 channels per replica
  edgefleet.mysql_backup.allocation:
    registry:
      type: mysql
      host: registry.db.internal
      user: edgefleet
      password: "{{ vault_registry_password }}"
      database: edgefleet
    allocation:
      replica_mode: channel
      channels_per_instance: 100
      tunnel_ports: [20000-24999, 26000-26999]
      quarantine_days: 14
  no_log: true
"""

RETURN = r"""
allocations:
  description: Every allocation after the run (in check mode, what it would be), by device id.
  returned: success
  type: dict
  sample:
    device01:
      id: device01
      cloud_host: cloud01
      tunnel_mysql_port: 20000
      tunnel_ssh_port: 20001
      server_id: 1000
      gtid_domain_id: 1000
      replica_mode: instance
      replica_instance: device01
      replica_port: 30000
      replica_datadir: /var/lib/edgefleet/replicas/device01
      replica_server_id: 2000000000
      channel_name: device01
      schema_prefix: ""
      allocated_at: "2026-11-23T19:20:00Z"
changes:
  description: What this run did (or would do), one entry per action.
  returned: success
  type: list
  elements: dict
  sample:
    - {action: allocate, device: device02, cloud_host: cloud01, tunnel_mysql_port: 20002,
       tunnel_ssh_port: 20003, replica_mode: instance, replica_instance: device02}
    - {action: release, device: device07, cloud_host: cloud01, ports: [20012, 20013, 30006], status: retired}
    - {action: create_instance, cloud_host: cloud02, instance: multi-01, port: 30000}
    - {action: unquarantine, cloud_host: cloud01, port: 20010}
    - {action: move, device: device07, from_host: cloud01, to_host: cloud02, from_ports: [20012, 20013],
       to_ports: [20000, 20001], replica_mode: instance, from_instance: device07, to_instance: device07}
allocated:
  description: Ids of devices allocated by this run.
  returned: success
  type: list
  elements: str
released:
  description: Ids of devices whose allocation this run released into quarantine.
  returned: success
  type: list
  elements: str
moved:
  description:
    - Devices this run moved (or would move, in check mode), with the whole allocation record
      before (C(from)) and after (C(to)); the sample shows a few of its keys.
    - Only returned with O(move) or O(move_from).
  returned: when moving
  type: dict
  sample:
    device07:
      from: {cloud_host: cloud01, tunnel_mysql_port: 20012, tunnel_ssh_port: 20013, replica_port: 30006}
      to: {cloud_host: cloud02, tunnel_mysql_port: 20000, tunnel_ssh_port: 20001, replica_port: 30000}
unchanged:
  description: Devices asked to move that already are on O(move_to).
  returned: when moving
  type: list
  elements: str
registry:
  description: Where the registry is (file path or mysql URL without password).
  returned: success
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    HAS_PYMYSQL, PYMYSQL_IMPORT_ERROR, fleet_config_argument_spec, open_registry,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import (
    allocation_diff, run_allocation, run_move,
)


def _listening(value):
    out = {}
    for host, ports in (value or {}).items():
        if not isinstance(ports, (list, tuple, set)):
            raise FleetError('listening_ports: value for cloud host %s must be a list of ports' % host)
        clean = set()
        for port in ports:
            if isinstance(port, dict):  # listen_ports_facts entries
                port = port.get('port')
            try:
                clean.add(int(port))
            except (TypeError, ValueError):
                raise FleetError('listening_ports: cloud host %s: %r is not a port' % (host, port))
        out[host] = clean
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fleet_config_argument_spec(),
            allocation=dict(type='dict', options=dict(
                replica_mode=dict(type='str', choices=['instance', 'channel']),
                channels_per_instance=dict(type='int'),
                tunnel_ports=dict(type='raw'),
                replica_ports=dict(type='raw'),
                reserved_ports=dict(type='list', elements='raw'),
                capacity=dict(type='int'),
                quarantine_days=dict(type='float'),
                server_id_base=dict(type='int'),
                gtid_domain_id_base=dict(type='int'),
                replica_server_id_base=dict(type='int'),
                replica_datadir_base=dict(type='str'),
                channel_instance_prefix=dict(type='str'),
                free_disabled=dict(type='bool'),
                lock_timeout=dict(type='float'),
            )),
            devices=dict(type='list', elements='str'),
            move=dict(type='list', elements='str'),
            move_from=dict(type='str'),
            move_to=dict(type='str'),
            listening_ports=dict(type='dict'),
        ),
        required_one_of=[('config', 'registry')],
        mutually_exclusive=[('devices', 'move'), ('devices', 'move_from'), ('devices', 'move_to')],
        supports_check_mode=True,
    )
    moving = module.params['move'] is not None or module.params['move_from'] is not None
    if module.params['move_to'] is not None and not moving:
        module.fail_json(msg='move_to needs move (device ids) or move_from (a cloud host)')
    registry = None
    try:
        spec, policy, _raw = resolve(module.params['config'], module.params['registry'], module.params['allocation'])
        if spec['type'] == 'mysql' and not HAS_PYMYSQL:
            module.fail_json(msg=missing_required_lib('PyMySQL'), exception=str(PYMYSQL_IMPORT_ERROR))
        if spec.get('password'):
            module.no_log_values.add(spec['password'])
        registry = open_registry(spec, policy['lock_timeout'])
        if moving:
            result, allocations = run_move(registry, policy, move_ids=module.params['move'],
                                           move_from=module.params['move_from'], move_to=module.params['move_to'],
                                           check_mode=module.check_mode,
                                           listening=_listening(module.params['listening_ports']))
        else:
            result, allocations = run_allocation(registry, policy, check_mode=module.check_mode,
                                                 only=module.params['devices'],
                                                 listening=_listening(module.params['listening_ports']))
    except FleetError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='allocation failed: %s' % exc, exception=traceback.format_exc())
    finally:
        if registry is not None:
            registry.close()
    for warning in result.warnings:
        module.warn(warning)
    output = dict(
        changed=result.changed,
        allocations=allocations,
        changes=result.changes,
        allocated=sorted(result.alloc_add),
        released=sorted(result.alloc_del),
        registry=registry.describe(),
    )
    if moving:
        output['moved'] = dict((dev_id, {'from': result.released[dev_id], 'to': result.alloc_add[dev_id]})
                               for dev_id in result.alloc_add)
        output['unchanged'] = result.skipped
    if module._diff:
        output['diff'] = allocation_diff(result)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
