#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: proxysql_endpoint
short_description: ProxySQL backends and routing for the fleet's replicas, in one batch
version_added: 0.2.0
description:
  - Renders ProxySQL's backends (C(mysql_servers), one hostgroup per replica instance) and
    routing (C(mysql_query_rules) or C(mysql_query_rules_fast_routing) by schema, or one
    C(mysql_users) row per device) from the allocation of the cloud hosts, compares them with
    the rows ProxySQL has, and sends one batch of admin statements only when they differ.
  - Each changed table is rewritten, then C(LOAD ... TO RUNTIME) and C(SAVE ... TO DISK) run once
    per changed table, never per row or per server. All reads and writes use one connection.
  - Only rows whose C(comment) starts with C(<comment_marker>:) are managed; rows of others are
    never touched, and a managed row that would collide with one of them (same C(rule_id),
    user name or server) fails the module before anything is written.
  - The hostgroup of an instance is O(hostgroup_base) + its replica C(server_id) -
    O(server_id_base); server ids are allocated once and never change, so hostgroups are stable.
  - Used by the P(edgefleet.mysql_backup.proxysql#role) role. Tested against a stand-in of the admin interface
    (SQLite with ProxySQL 2.x admin tables behind the MySQL protocol), not a live ProxySQL.
author:
  - edgefleet maintainers (@edgefleet)
attributes:
  check_mode:
    support: full
    description: Reads the rows and reports what would change (RV(changed_tables), RV(summary)) without writing.
  diff_mode:
    support: none
    description: RV(summary) gives the rows added and removed per table.
options:
  login_host:
    description: Address of ProxySQL's admin interface (not a replica or a device).
    type: str
    default: 127.0.0.1
  login_port:
    description: Port of the admin interface.
    type: int
    default: 6032
  login_user:
    description: Admin user.
    type: str
    default: admin
  login_password:
    description: Password of O(login_user). Never logged.
    type: str
    required: true
  connect_timeout:
    description: Seconds to wait for the admin interface to accept the connection.
    type: int
    default: 30
  clouds:
    description:
      - The cloud hosts whose replica instances sit behind this endpoint, as the fleet inventory
        describes them. The option names are also accepted under the inventory variable names
        (C(inventory_hostname), C(ansible_host), C(edgefleet_cloud_instances),
        C(edgefleet_cloud_devices)), so a cloud host's hostvars can be passed as they are.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Inventory name of the cloud host.
        type: str
        required: true
        aliases: [inventory_hostname]
      address:
        description: Its inventory address; used for its backends unless O(backend_hosts) names another.
        type: str
        aliases: [ansible_host]
      instances:
        description:
          - Its replica instances (C(name), C(port), C(server_id)), the fleet inventory's
            C(edgefleet_cloud_instances).
        type: list
        elements: dict
        default: []
        aliases: [edgefleet_cloud_instances]
      devices:
        description:
          - The devices it carries (C(id), C(replica_instance), C(schema_prefix)), the fleet
            inventory's C(edgefleet_cloud_devices).
        type: list
        elements: dict
        default: []
        aliases: [edgefleet_cloud_devices]
  backend_hosts:
    description:
      - Cloud host name to the address ProxySQL uses for its replicas. Hosts not listed use their
        O(clouds[].address), else their name.
    type: dict
    default: {}
  databases:
    description: Source schemas of every device; in channel mode a device's schema is C(<schema_prefix><db>).
    type: list
    elements: str
    required: true
  routing:
    description:
      - V(schema) routes by schema name (channel mode, where every device's schemas are unique).
      - V(user) gives every device a frontend user C(<user_prefix><device id>) whose default
        hostgroup is its replica (instance mode, where devices keep the source schema names).
    type: str
    choices: [schema, user]
    default: schema
  rules_table:
    description:
      - With O(routing=schema), V(query_rules) writes C(mysql_query_rules) rows matched on the
        schema name for any user; V(fast_routing) writes C(mysql_query_rules_fast_routing) rows
        (a hash lookup, for thousands of schemas), one per user of O(route_users).
    type: str
    choices: [query_rules, fast_routing]
    default: query_rules
  route_users:
    description: Frontend users that get fast-routing rows. Required with O(rules_table=fast_routing).
    type: list
    elements: str
    default: []
  route_qualified:
    description: Also route statements that name C(<schema>.table) without a default schema (one regex rule per schema).
    type: bool
    default: false
  user_prefix:
    description: Prefix of the per-device user names (O(routing=user)).
    type: str
    default: r_
  user_password:
    description:
      - Password of the per-device users. Required with O(routing=user); no quotes or backslashes.
        Never logged; the statements that carry it are masked in RV(statements).
    type: str
  hostgroup_base:
    description: Hostgroup of the instance whose server id is O(server_id_base).
    type: int
    default: 1000
  server_id_base:
    description: The allocation's C(replica_server_id_base).
    type: int
    default: 2000000000
  rule_id_base:
    description: First C(rule_id) of the managed query rules.
    type: int
    default: 10000
  max_connections:
    description: C(max_connections) of each backend (and of each per-device user).
    type: int
    default: 10
  max_replication_lag:
    description: C(max_replication_lag) of each backend in seconds; V(0) turns the check off.
    type: int
    default: 0
  comment_marker:
    description: Prefix of the C(comment) of managed rows (letters, digits, C(_), C(-)).
    type: str
    default: edgefleet
  load_to_runtime:
    description: Run C(LOAD ... TO RUNTIME) for each changed table.
    type: bool
    default: true
  save_to_disk:
    description: Run C(SAVE ... TO DISK) for each changed table.
    type: bool
    default: true
  insert_chunk:
    description: Rows per C(INSERT) statement (all statements go in one batch on one connection).
    type: int
    default: 200
requirements:
  - PyMySQL (on the host that runs the module)
seealso:
  - name: ProxySQL admin tables
    description: C(mysql_servers), C(mysql_query_rules), C(mysql_query_rules_fast_routing), C(mysql_users).
    link: https://proxysql.com/documentation/main-runtime/
'''

EXAMPLES = r'''
- name: Route every device schema to the replica instance that carries it
  edgefleet.mysql_backup.proxysql_endpoint:
    login_password: "{{ vault_proxysql_admin_password }}"
    databases: [app]
    clouds:
      - name: cloud01
        address: 10.0.0.10
        instances: [{name: multi-01, port: 30000, server_id: 2000000000}]
        devices:
          - {id: shop01, replica_instance: multi-01, schema_prefix: shop01_}
          - {id: shop02, replica_instance: multi-01, schema_prefix: shop02_}

- name: The same from the fleet inventory (what the proxysql role does)
  edgefleet.mysql_backup.proxysql_endpoint:
    login_password: "{{ vault_proxysql_admin_password }}"
    databases: "{{ edgefleet_databases }}"
    clouds: >-
      {{ groups['cloud'] | sort | map('extract', hostvars) | map('dict2items')
         | map('selectattr', 'key', 'in', ['inventory_hostname', 'ansible_host',
                                           'edgefleet_cloud_instances', 'edgefleet_cloud_devices'])
         | map('items2dict') | list }}

- name: Instance mode - one frontend user per device
  edgefleet.mysql_backup.proxysql_endpoint:
    login_password: "{{ vault_proxysql_admin_password }}"
    databases: [app]
    routing: user
    user_password: "{{ vault_proxysql_reader_password }}"
    clouds: "{{ proxysql_clouds }}"
'''

RETURN = r'''
changed_tables:
  description: Tables whose managed rows were (or, in check mode, would be) rewritten.
  returned: always
  type: list
  elements: str
  sample: [rules]
summary:
  description: Per table the managed rows wanted, the rows before, and how many are added and removed.
  returned: always
  type: dict
  sample: {servers: {rows: 6, before: 6, added: 0, removed: 0}, rules: {rows: 40, before: 40, added: 1, removed: 1}}
counts:
  description: Number of managed rows per table after this run.
  returned: always
  type: dict
  sample: {servers: 6, rules: 40, fast_routing: 0, users: 0}
statements:
  description:
    - The admin statements run (in check mode, that would run); C(INSERT INTO mysql_users)
      statements are masked.
  returned: always
  type: list
  elements: str
  sample: ["DELETE FROM mysql_query_rules WHERE comment LIKE 'edgefleet:%'", "LOAD MYSQL QUERY RULES TO RUNTIME"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    connection_kwargs, pymysql, require_pymysql,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.proxysql_endpoint import (
    ProxySQLConfigError, apply_statements, clouds_from_hosts, masked, proxysql_desired, proxysql_plan,
    read_current,
)


def argument_spec():
    return dict(
        login_host=dict(type='str', default='127.0.0.1'),
        login_port=dict(type='int', default=6032),
        login_user=dict(type='str', default='admin'),
        login_password=dict(type='str', required=True, no_log=True),
        connect_timeout=dict(type='int', default=30),
        clouds=dict(type='list', elements='dict', required=True, options=dict(
            name=dict(type='str', required=True, aliases=['inventory_hostname']),
            address=dict(type='str', aliases=['ansible_host']),
            instances=dict(type='list', elements='dict', default=[], aliases=['edgefleet_cloud_instances']),
            devices=dict(type='list', elements='dict', default=[], aliases=['edgefleet_cloud_devices']),
        )),
        backend_hosts=dict(type='dict', default={}),
        databases=dict(type='list', elements='str', required=True),
        routing=dict(type='str', default='schema', choices=['schema', 'user']),
        rules_table=dict(type='str', default='query_rules', choices=['query_rules', 'fast_routing']),
        route_users=dict(type='list', elements='str', default=[]),
        route_qualified=dict(type='bool', default=False),
        user_prefix=dict(type='str', default='r_'),
        user_password=dict(type='str', no_log=True),
        hostgroup_base=dict(type='int', default=1000),
        server_id_base=dict(type='int', default=2000000000),
        rule_id_base=dict(type='int', default=10000),
        max_connections=dict(type='int', default=10),
        max_replication_lag=dict(type='int', default=0),
        comment_marker=dict(type='str', default='edgefleet'),
        load_to_runtime=dict(type='bool', default=True),
        save_to_disk=dict(type='bool', default=True),
        insert_chunk=dict(type='int', default=200),
    )


def desired_rows(params):
    """The managed rows the options describe (raises ProxySQLConfigError)."""
    return proxysql_desired(
        clouds_from_hosts(params['clouds'], params['backend_hosts']), params['databases'],
        routing=params['routing'], rules_table=params['rules_table'], route_users=params['route_users'],
        hostgroup_base=params['hostgroup_base'], server_id_base=params['server_id_base'],
        rule_id_base=params['rule_id_base'], max_connections=params['max_connections'],
        max_replication_lag=params['max_replication_lag'], marker=params['comment_marker'],
        user_prefix=params['user_prefix'], user_password=params['user_password'],
        route_qualified=params['route_qualified'])


def admin_connection(params):
    """One pymysql connection to the admin interface. ProxySQL is not a MySQL server: no option
    file, no version detection, dict rows."""
    kwargs = connection_kwargs(dict(login_host=params['login_host'], login_port=params['login_port'],
                                    login_user=params['login_user'], login_password=params['login_password'],
                                    connect_timeout=params['connect_timeout'], config_file=None))
    kwargs['cursorclass'] = pymysql.cursors.DictCursor
    return pymysql.connect(**kwargs)


def run_module():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_if=[('routing', 'user', ['user_password']),
                                        ('rules_table', 'fast_routing', ['route_users'])])
    require_pymysql(module)
    params = module.params
    try:
        desired = desired_rows(params)
    except ProxySQLConfigError as exc:
        module.fail_json(msg=to_native(exc))
    try:
        connection = admin_connection(params)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='unable to connect to the ProxySQL admin interface at %s:%s: %s'
                         % (params['login_host'], params['login_port'], to_native(exc)))
    plan = None
    try:
        plan = proxysql_plan(desired, read_current(connection, params['comment_marker']),
                             marker=params['comment_marker'], load_to_runtime=params['load_to_runtime'],
                             save_to_disk=params['save_to_disk'], chunk=params['insert_chunk'])
        if plan['statements'] and not module.check_mode:
            apply_statements(connection, plan['statements'])
    except ProxySQLConfigError as exc:
        module.fail_json(msg=to_native(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='ProxySQL admin interface: %s' % to_native(exc))
    finally:
        connection.close()
    module.exit_json(changed=bool(plan['changed']), changed_tables=plan['changed'], summary=plan['summary'],
                     counts=dict((table, len(rows)) for table, rows in desired.items()),
                     statements=masked(plan['statements'], plan['secret']))


def main():
    run_module()


if __name__ == '__main__':
    main()
