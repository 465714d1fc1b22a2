#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: seed_probe
short_description: Find the new devices that hold data to seed, through their tunnels
version_added: 0.1.0
description:
  - Runs on a cloud host and asks each device's MySQL, through its tunnel port on loopback, which
    of O(databases) exist there (several devices at once). A device whose schemas exist was written
    to before its binlog was on, so its replica must be seeded
    (C(roles/replication) C(tasks/seed.yml)) before its channel starts; a device without them needs
    no seed; a device that does not answer is reported with the error, so that its channel can wait
    until its data can be checked.
  - Reads only; never reports a change.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.read_only
options:
  devices:
    description: Devices to probe, each with C(id) and C(tunnel_mysql_port) (allocation records).
    type: list
    elements: dict
    required: true
  databases:
    description: Schemas to look for, as named on the devices.
    type: list
    elements: str
    required: true
  login_user:
    description: Read-only account on the devices (it needs to see only these schemas).
    type: str
    required: true
  login_password:
    description: Its password.
    type: str
  connect_timeout:
    description: Seconds to wait for each device.
    type: int
    default: 5
  parallel:
    description: Devices probed at once.
    type: int
    default: 8
requirements:
  - PyMySQL
'''

EXAMPLES = r'''
- name: Look for data to seed on the devices without a channel
  edgefleet.mysql_backup.seed_probe:
    devices: "{{ new_devices }}"
    databases: [app]
    login_user: edgefleet_check
    login_password: "{{ check_password }}"
  register: probe
'''

RETURN = r'''
seed:
  description: Devices holding some of the schemas, with those schemas (sorted).
  returned: always
  type: dict
  sample: {device07: [app]}
empty:
  description: Devices that answered without any of the schemas (sorted).
  returned: always
  type: list
  elements: str
unreached:
  description: Devices that did not answer, with the error (named so that Ansible does not read it as the cloud host being unreachable).
  returned: always
  type: dict
  sample: {device09: "(2003, \"Can't connect to MySQL server on '127.0.0.1'\")"}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import mysql_connection as C
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.seed_probe import probe, schemata_query


def main():
    module = AnsibleModule(
        argument_spec=dict(
            devices=dict(type='list', elements='dict', required=True),
            databases=dict(type='list', elements='str', required=True),
            login_user=dict(type='str', required=True),
            login_password=dict(type='str', no_log=True),
            connect_timeout=dict(type='int', default=5),
            parallel=dict(type='int', default=8),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for device in params['devices']:
        if 'id' not in device or 'tunnel_mysql_port' not in device:
            module.fail_json(msg='every device needs id and tunnel_mysql_port: %s' % device.get('id', device))
    if not params['databases'] or params['parallel'] < 1 or params['connect_timeout'] < 1:
        module.fail_json(msg='databases must not be empty; parallel and connect_timeout at least 1')
    C.require_pymysql(module)
    sql, args = schemata_query(params['databases'])

    def schemas_of(port):
        # The tunnel's listener on the cloud host's loopback; no option file (the account is given).
        connection = C.pymysql.connect(**C.connection_kwargs({
            'login_host': '127.0.0.1', 'login_port': port, 'login_user': params['login_user'],
            'login_password': params['login_password'], 'connect_timeout': params['connect_timeout'],
            'config_file': None}))
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()

    module.exit_json(changed=False, **probe(params['devices'], schemas_of, params['parallel']))


if __name__ == '__main__':
    main()
