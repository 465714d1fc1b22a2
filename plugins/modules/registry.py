#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: registry
short_description: Register, update, disable or retire a device (or a cloud host) in the edgefleet registry
version_added: 0.1.0
description:
  - Creates or updates one device in the registry (a YAML file or a MySQL/MariaDB table), marks
    it disabled or retired, or records the public key of its tunnel SSH key.
  - Only the fields given are changed; give an empty string (or an empty mapping for O(labels)
    and O(vars)) to clear a field.
  - The registry is the single source of truth. Run M(edgefleet.mysql_backup.allocation) after
    registering or retiring devices to hand out or release their ports and replica slots.
  - Retired devices stay in the registry (their C(server_id) and C(gtid_domain_id) are never
    reused); they are left out of the P(edgefleet.mysql_backup.fleet#inventory) inventory.
  - With O(cloud_host) instead of O(id) the module creates, updates or removes (O(state=absent))
    a cloud host; removing one that still carries allocated devices fails.
  - "File registry: the file is rewritten with one flow mapping per device (comments are not
    kept) under an exclusive lock and replaced atomically. MySQL registry: devices may register
    themselves concurrently; each write is one transaction with the device row locked."
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.fleet_config
  - edgefleet.mysql_backup.fleet_config.registry
options:
  id:
    description:
      - Device id. Must match C(^[a-z][a-z0-9_]{0,31}$) and not be C(all), C(ungrouped),
        C(devices), C(cloud), C(localhost) or start with C(cloud_), C(site_), C(status_), C(mode_).
      - It becomes the inventory host name, the replication channel name, the replica instance
        name and datadir, and the replica schema prefix C(<id>_).
      - Exactly one of O(id) and O(cloud_host) is required.
    type: str
    aliases: [device_id]
  cloud_host:
    description:
      - Name of a cloud host to create, update or remove, instead of a device. Takes O(address),
        O(capacity), O(tunnel_ports), O(replica_ports), O(reserved_ports), O(drain) and O(vars).
    type: str
  state:
    description:
      - V(present) creates or updates the device (new devices are V(active) unless O(status) says otherwise).
      - V(disabled) and V(retired) set the status of an existing device.
      - V(absent) removes a cloud host (only with O(cloud_host)); devices are retired, never removed.
    type: str
    choices: [present, disabled, retired, absent]
    default: present
  capacity:
    description: Most devices on this cloud host (only with O(cloud_host)).
    type: int
  tunnel_ports:
    description: Tunnel port ranges of this cloud host, for example C(20000-29999) (only with O(cloud_host)).
    type: list
    elements: raw
  replica_ports:
    description: Replica port ranges of this cloud host (only with O(cloud_host)).
    type: list
    elements: raw
  reserved_ports:
    description: Ports never handed out on this cloud host (only with O(cloud_host)).
    type: list
    elements: raw
  drain:
    description: A draining cloud host keeps its devices but gets no new ones (only with O(cloud_host)).
    type: bool
  status:
    description: Status to set with O(state=present).
    type: str
    choices: [active, disabled, retired]
  site:
    description: Site of the device (group C(site_<site>)); C(^[a-z0-9][a-z0-9_]{0,62}$).
    type: str
  address:
    description:
      - Device - first-contact address (IP or DNS name), used before the tunnel exists.
      - Cloud host - its address (C(ansible_host) of the cloud host, the jump host of tunnels).
    type: str
  labels:
    description: String labels (for C(keyed_groups)); replaces all labels.
    type: dict
  vars:
    description: Host variables merged into the device's (or cloud host's) inventory host; replaces all vars.
    type: dict
  replica_mode:
    description: Replica mode for this device, overriding the policy default.
    type: str
    choices: [instance, channel]
  reach:
    description: How the inventory reaches this device, overriding the inventory's O(reach).
    type: str
    choices: [auto, address, tunnel]
  public_key:
    description:
      - The OpenSSH public key (one line) of the device's tunnel key. The cloud side renders
        C(authorized_keys) from these.
    type: str
attributes:
  check_mode:
    support: full
    description: Returns the device as it would be stored, writes nothing.
  diff_mode:
    support: full
    description: Shows the registry entry before and after.
"""

EXAMPLES = r"""
- name: Register a new device (file registry in the fleet config)
  edgefleet.mysql_backup.registry:
    config: inventories/lab/lab.fleet.yml
    id: device42
    site: berlin
    address: 192.0.2.42
    labels: {hw: rpi4, lab: "true"}
  delegate_to: localhost

- name: A device registers itself in the MySQL registry with its tunnel key
  edgefleet.mysql_backup.registry:
    registry:
      type: mysql
      host: registry.example.com
      user: enroll
      password: "{{ vault_enroll_password }}"
      database: edgefleet
    id: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', 'tunnel_ed25519.pub') }}"
  no_log: true

- name: Record the tunnel public key generated on the device
  edgefleet.mysql_backup.registry:
    config: "{{ edgefleet_fleet_config }}"
    id: "{{ inventory_hostname }}"
    public_key: "{{ tunnel_key.public_key }}"
  delegate_to: localhost

- name: Add a cloud host to a MySQL registry
  edgefleet.mysql_backup.registry:
    config: inventories/prod/prod.fleet.yml
    cloud_host: cloud03
    address: 203.0.113.30
    capacity: 800
    tunnel_ports: [20000-21999]

- name: Take a device out of service (its ports go to quarantine on the next allocation)
  edgefleet.mysql_backup.registry:
    config: inventories/lab/lab.fleet.yml
    id: device42
    state: retired
  delegate_to: localhost
"""

RETURN = r"""
device:
  description: The device (or cloud host) as stored after the call (in check mode, as it would be stored).
  returned: success
  type: dict
  sample: {id: device42, site: berlin, status: active, address: 192.0.2.42, labels: {hw: rpi4}}
created:
  description: Whether the device (or cloud host) was new.
  returned: success
  type: bool
registry:
  description: Where the registry is (file path or mysql URL without password).
  returned: success
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, check_cloud_host_name, check_device_id,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    HAS_PYMYSQL, PYMYSQL_IMPORT_ERROR, fleet_config_argument_spec, open_registry,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import (
    update_cloud_host, update_device,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fleet_config_argument_spec(),
            id=dict(type='str', aliases=['device_id']),
            cloud_host=dict(type='str'),
            state=dict(type='str', default='present', choices=['present', 'disabled', 'retired', 'absent']),
            capacity=dict(type='int'),
            tunnel_ports=dict(type='list', elements='raw'),
            replica_ports=dict(type='list', elements='raw'),
            reserved_ports=dict(type='list', elements='raw'),
            drain=dict(type='bool'),
            status=dict(type='str', choices=['active', 'disabled', 'retired']),
            site=dict(type='str'),
            address=dict(type='str'),
            labels=dict(type='dict'),
            vars=dict(type='dict'),
            replica_mode=dict(type='str', choices=['instance', 'channel']),
            reach=dict(type='str', choices=['auto', 'address', 'tunnel']),
            public_key=dict(type='str', no_log=False),
        ),
        required_one_of=[('config', 'registry'), ('id', 'cloud_host')],
        mutually_exclusive=[('id', 'cloud_host')],
        supports_check_mode=True,
    )
    params = module.params
    device_only = ('status', 'site', 'labels', 'replica_mode', 'reach', 'public_key')
    cloud_only = ('capacity', 'tunnel_ports', 'replica_ports', 'reserved_ports', 'drain')
    if params['cloud_host'] is not None:
        wrong = [k for k in device_only if params[k] is not None]
        if params['state'] not in ('present', 'absent'):
            wrong.append('state=%s' % params['state'])
    else:
        wrong = [k for k in cloud_only if params[k] is not None]
        if params['state'] == 'absent':
            wrong.append('state=absent (devices are retired, never removed)')
    if wrong:
        module.fail_json(msg='not valid for a %s: %s' % ('cloud host' if params['cloud_host'] else 'device', ', '.join(wrong)))
    if params['state'] != 'present' and params['status'] is not None:
        module.fail_json(msg='status is only used with state=present (state=%s sets the status itself)' % params['state'])
    registry = None
    try:
        spec, policy, _raw = resolve(params['config'], params['registry'], None)
        if spec['type'] == 'mysql' and not HAS_PYMYSQL:
            module.fail_json(msg=missing_required_lib('PyMySQL'), exception=str(PYMYSQL_IMPORT_ERROR))
        if spec.get('password'):
            module.no_log_values.add(spec['password'])
        fields = {
            'site': params['site'],
            'address': params['address'],
            'labels': params['labels'],
            'vars': params['vars'],
            'replica_mode': params['replica_mode'],
            'reach': params['reach'],
            'ssh_public_key': params['public_key'],
            'status': params['status'] if params['state'] == 'present' else params['state'],
        }
        registry = open_registry(spec, policy['lock_timeout'])
        if params['cloud_host'] is not None:
            name = check_cloud_host_name(params['cloud_host'], 'cloud host %r' % params['cloud_host'])
            cloud_fields = dict((k, params[k]) for k in ('address', 'capacity', 'tunnel_ports', 'replica_ports',
                                                         'reserved_ports', 'drain', 'vars'))
            changed, before, after = update_cloud_host(registry, name, cloud_fields, absent=params['state'] == 'absent',
                                                       check_mode=module.check_mode)
        else:
            dev_id = check_device_id(params['id'], 'device %r' % params['id'])
            changed, before, after = update_device(registry, dev_id, fields, check_mode=module.check_mode,
                                                   create=params['state'] == 'present')
    except FleetError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='registry update failed: %s' % exc, exception=traceback.format_exc())
    finally:
        if registry is not None:
            registry.close()
    output = dict(changed=changed, device=after, created=not before, registry=registry.describe())
    if module._diff:
        output['diff'] = dict(before=before, after=after)
    module.exit_json(**output)


if __name__ == '__main__':
    main()
