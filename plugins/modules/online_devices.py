#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: online_devices
short_description: Find the devices that can be reached now, without a task per device
version_added: 0.1.0
description:
  - Runs on the controller (C(localhost)) and splits devices into online and offline, so that
    device plays target only the devices that answer and an offline device costs nothing (no
    SSH attempt and timeout per device per play).
  - A device reached through its reverse tunnel (C(reach=tunnel)) is online when its SSH
    back-channel port listens on its cloud host (pass what C(ss -Htln) printed there in
    O(listening)). A device reached by address (C(reach=address)) is online when its SSH port
    accepts a TCP connection; those probes run concurrently. Any other device is offline.
  - C(playbooks/online.yml) runs it in C(site.yml) right after the allocation.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.read_only
options:
  devices:
    description:
      - Devices to classify. Each has C(name), C(reach) (C(tunnel), C(address) or C(none); missing
        means C(none)) and, by reach, C(cloud_host) and C(tunnel_ssh_port), or C(host) (required)
        and C(port) (default 22).
      - C(playbooks/online.yml) builds this list from the fleet inventory's host variables.
    type: list
    elements: dict
    required: true
  listening:
    description:
      - Per cloud host, the lines C(ss -Htln) printed there. A cloud host missing here (or with
        a null value) was not reachable, so its tunnel devices count as offline.
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for each address probe; must be positive.
    type: float
    default: 3
  concurrency:
    description: Address probes at once; at least 1.
    type: int
    default: 256
'''

EXAMPLES = r'''
- name: Devices that can be reached
  edgefleet.mysql_backup.online_devices:
    devices:
      - {name: device01, reach: address, host: 10.0.0.5}
      - {name: device02, reach: tunnel, cloud_host: cloud01, tunnel_ssh_port: 40001}
    listening:
      cloud01: "{{ hostvars.cloud01.listening.stdout_lines }}"
  register: reach
'''

RETURN = r'''
online:
  description: Names of the devices that answered, sorted.
  returned: always
  type: list
  elements: str
  sample: [device01]
offline:
  description: Offline devices and why.
  returned: always
  type: dict
  sample: {device02: "tunnel down (port 40001 not listening on cloud01)"}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.reachability import (
    classify, device_error, listening_ports,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            devices=dict(type='list', elements='dict', required=True),
            listening=dict(type='dict', default={}),
            timeout=dict(type='float', default=3),
            concurrency=dict(type='int', default=256),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for device in params['devices']:
        error = device_error(device)
        if error:
            module.fail_json(msg=error)
    if params['timeout'] <= 0 or params['concurrency'] < 1:
        module.fail_json(msg='timeout must be positive and concurrency at least 1')
    listening = dict((cloud, listening_ports(lines)) for cloud, lines in params['listening'].items()
                     if lines is not None)
    online, offline = classify(params['devices'], listening, params['timeout'], params['concurrency'])
    module.exit_json(changed=False, online=online, offline=offline)


if __name__ == '__main__':
    main()
