#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: replication_info
short_description: State and health of every replication channel of a MySQL/MariaDB replica
version_added: 0.1.0
description:
  - Reads the status of every replication channel (MariaDB C(SHOW ALL SLAVES STATUS) /
    C(SHOW ALL REPLICAS STATUS), MySQL C(SHOW REPLICA STATUS)) and the server's GTID state,
    and returns them in one shape for both flavors.
  - Gives each channel a RV(channels[].health) and a RV(channels[].diagnosis) in plain words,
    including the channel-mode sharp edge where qualified DDL (C(ALTER TABLE app.t ...) with
    no default database) is not rewritten by C(replicate_rewrite_db) and stops the SQL thread.
  - Never changes anything.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.mysql_connection
  - edgefleet.mysql_backup.replica_instances
  - edgefleet.mysql_backup.read_only
options:
  channels:
    description:
      - Only report these channels (case-insensitive). Default is every channel.
      - A listed channel that does not exist is reported with RV(channels[].health=missing).
    type: list
    elements: str
  lag_threshold:
    description:
      - A running channel more than this many seconds behind its source is V(lagging).
    type: int
    default: 300
notes:
  - C(seconds_behind) is C(null) while a thread is stopped or connecting.
  - With O(instances), the servers are read in the order given; the first one that cannot be
    read fails the module.
  - The login user needs C(REPLICA MONITOR) (MariaDB 10.5.9+), C(REPLICATION CLIENT) or
    C(SUPER) (older MariaDB), or C(REPLICATION CLIENT) (MySQL).
seealso:
  - module: edgefleet.mysql_backup.replication_source
'''

EXAMPLES = r'''
- name: Read every channel of the replica
  edgefleet.mysql_backup.replication_info:
    login_unix_socket: /run/mysqld/mysqld.sock
    lag_threshold: 120
  register: replication

- name: Fail when any channel is broken, and say why
  ansible.builtin.assert:
    that: item.health != 'error'
    fail_msg: "{{ item.name }}: {{ item.diagnosis }}"
    quiet: true
  loop: "{{ replication.channels }}"
  loop_control:
    label: "{{ item.name }}"

- name: Every replica instance of a cloud host in one task (as the replication role does)
  edgefleet.mysql_backup.replication_info:
    login_user: root
    instances:
      - {name: multi-01, login_unix_socket: /run/mysqld/edgefleet-multi-01.sock}
      - {name: kiosk01, login_unix_socket: /run/mysqld/edgefleet-kiosk01.sock}
  register: replicas

- name: Channels with a problem, on any instance
  ansible.builtin.debug:
    msg: "{{ replicas.instances | map(attribute='channels') | flatten | rejectattr('health', 'equalto', 'ok') | list }}"

- name: Channels by name
  ansible.builtin.debug:
    msg: "{{ (replication.channels | items2dict(key_name='name', value_name='health')) }}"
'''

RETURN = r'''
server:
  description: The replica server.
  returned: without O(instances)
  type: dict
  contains:
    flavor:
      description: V(mariadb) or V(mysql).
      type: str
    version:
      description: Server version (numbers only).
      type: str
      sample: 10.11.19
    version_string:
      description: Full C(VERSION()).
      type: str
    dialect:
      description: The version-table row used for SQL.
      type: str
      sample: mariadb-10.5
    read_only:
      description: C(@@read_only).
      type: bool
    server_id:
      description: C(@@server_id).
      type: int
    gtid_slave_pos:
      description: MariaDB C(@@gtid_slave_pos), one position per GTID domain.
      type: str
      returned: MariaDB
    gtid_binlog_pos:
      description: MariaDB C(@@gtid_binlog_pos).
      type: str
      returned: MariaDB
    gtid_domain_id:
      description: MariaDB C(@@gtid_domain_id) of the replica itself.
      type: int
      returned: MariaDB
    gtid_executed:
      description: MySQL C(@@gtid_executed).
      type: str
      returned: MySQL
    gtid_mode:
      description: MySQL C(@@gtid_mode).
      type: str
      returned: MySQL
channels:
  description: One entry per channel, sorted by name.
  returned: without O(instances)
  type: list
  elements: dict
  contains:
    name:
      description: Channel / connection name (V('') is the default channel).
      type: str
    health:
      description:
        - V(ok) both threads run and the lag is within O(lag_threshold).
        - V(lagging) both threads run but the channel is more than O(lag_threshold) behind.
        - V(connecting) the IO thread is (re)connecting; the source or its tunnel is
          unreachable. Not an error by itself for devices on flaky links.
        - V(stopped) a thread is stopped without an error (paused on purpose).
        - V(error) a thread stopped on an error, or the source refuses the connection.
        - V(missing) a channel named in O(channels) does not exist.
      type: str
      sample: ok
    diagnosis:
      description: Plain-words explanation with the likely fix; empty when healthy.
      type: str
    io_running:
      description: Raw IO thread state (V(Yes), V(No), V(Connecting)).
      type: str
    sql_running:
      description: Raw SQL thread state (V(Yes), V(No)).
      type: str
    seconds_behind:
      description: Seconds behind the source, or C(null).
      type: int
    last_io_errno:
      description: Last IO thread error number (0 = none).
      type: int
    last_io_error:
      description: Last IO thread error text.
      type: str
    last_sql_errno:
      description: Last SQL thread error number (0 = none).
      type: int
    last_sql_error:
      description: Last SQL thread error text.
      type: str
    source_host:
      description: Source host.
      type: str
    source_port:
      description: Source port.
      type: int
    source_user:
      description: Replication user.
      type: str
    using_gtid:
      description:
        - MariaDB C(Using_Gtid) lower-cased (V(slave_pos), V(current_pos), V(no)); MySQL
          V(auto_position) or V(no).
      type: str
    gtid_io_pos:
      description: MariaDB C(Gtid_IO_Pos), the last GTID received.
      type: str
      returned: MariaDB
    gtid_applied_pos:
      description:
        - MariaDB. The entries of C(gtid_slave_pos) for the GTID domains this channel receives,
          that is the last transaction applied from its source (empty until it has received
          anything).
      type: str
      returned: MariaDB
      sample: 301-301-1042
    retrieved_gtid_set:
      description: MySQL C(Retrieved_Gtid_Set).
      type: str
      returned: MySQL
    executed_gtid_set:
      description: MySQL C(Executed_Gtid_Set).
      type: str
      returned: MySQL
    rewrite_db:
      description: MariaDB C(Replicate_Rewrite_DB) rules of this connection.
      type: list
      elements: dict
      sample: [{from: app, to: dev1_app}]
    connect_retry:
      description: Seconds between connection attempts.
      type: int
    heartbeat_period:
      description: Heartbeat interval in seconds.
      type: float
    delay:
      description: Configured delay in seconds.
      type: int
    ssl:
      description: Whether TLS to the source is configured.
      type: bool
summary:
  description: Number of channels per health value, plus C(total).
  returned: without O(instances)
  type: dict
  sample: {total: 3, ok: 2, error: 1, lagging: 0, connecting: 0, stopped: 0, missing: 0}
instances:
  description: With O(instances), per server (in the order given) its C(name) and the RV(server), RV(channels) and RV(summary) above.
  returned: with O(instances)
  type: list
  elements: dict
  sample: [{name: multi-01, server: {flavor: mariadb}, channels: [], summary: {total: 0}}]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    channel_key, format_version,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.args_common import (
    INSTANCES_EXCLUSIVE, instances_argument_spec, mysql_connection_argument_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    connect, require_pymysql,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_state import (
    HEALTH_VALUES, applied_pos, diagnose, read_channel_statuses,
)

REPORTED_KEYS = ('name', 'health', 'diagnosis', 'io_running', 'sql_running', 'seconds_behind',
                 'last_io_errno', 'last_io_error', 'last_sql_errno', 'last_sql_error',
                 'source_host', 'source_port', 'source_user', 'using_gtid', 'rewrite_db',
                 'connect_retry', 'retry_count', 'heartbeat_period', 'delay', 'ssl',
                 'io_state', 'sql_state')


def channel_report(status, is_mariadb, lag_threshold, gtid_slave_pos=None):
    health, diagnosis = diagnose(status, lag_threshold)
    report = dict(status)
    report['health'] = health
    report['diagnosis'] = diagnosis
    report['using_gtid'] = status['gtid_mode']
    out = dict((key, report.get(key)) for key in REPORTED_KEYS)
    if is_mariadb:
        out['gtid_io_pos'] = status['gtid_io_pos'] or ''
        out['gtid_applied_pos'] = applied_pos(status['gtid_io_pos'], gtid_slave_pos)
    else:
        out['retrieved_gtid_set'] = status['retrieved_gtid_set'] or ''
        out['executed_gtid_set'] = status['executed_gtid_set'] or ''
    return out


def summarize(reports):
    summary = dict((health, 0) for health in HEALTH_VALUES + ('missing',))
    for report in reports:
        summary[report['health']] = summary.get(report['health'], 0) + 1
    summary['total'] = len(reports)
    return summary


def server_report(session, facts):
    dialect = session.dialect
    server = {
        'flavor': dialect.flavor,
        'version': format_version(dialect.version),
        'version_string': session.version_string,
        'dialect': dialect.label,
        'read_only': bool(int(facts.get('read_only') or 0)),
        'server_id': int(facts.get('server_id') or 0),
    }
    for key in ('gtid_slave_pos', 'gtid_binlog_pos', 'gtid_executed', 'gtid_mode'):
        if key in facts:
            value = facts[key]
            if isinstance(value, bytes):
                value = value.decode('utf-8', 'replace')
            server[key] = (value or '').replace('\n', '')
    if 'gtid_domain_id' in facts:
        server['gtid_domain_id'] = int(facts['gtid_domain_id'] or 0)
    return server


def read_server(module, params):
    """(server, channel reports sorted by name) of one server; fail_json when it cannot be read."""
    session = connect(module, params)
    dialect = session.dialect
    try:
        facts = session.query_one(*dialect.server_facts_query()) or {}
        statuses = read_channel_statuses(session)
    except Exception as exc:  # pylint: disable=broad-except
        session.close()
        where = params.get('login_unix_socket') or params.get('login_host') or 'the server'
        module.fail_json(msg='cannot read replication status of %s: %s' % (where, to_native(exc)))
    server = server_report(session, facts)
    session.close()

    reports = [channel_report(status, dialect.is_mariadb, params['lag_threshold'], server.get('gtid_slave_pos'))
               for status in statuses]
    wanted = params['channels']
    if wanted is not None:
        by_key = dict((channel_key(report['name']), report) for report in reports)
        reports = []
        for name in wanted:
            report = by_key.get(channel_key(name))
            if report is None:
                report = dict((key, None) for key in REPORTED_KEYS)
                report.update(name=name, health='missing',
                              diagnosis='no replication channel named %r on this server' % name)
            reports.append(report)
    reports.sort(key=lambda report: channel_key(report['name']))
    return server, reports


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mysql_connection_argument_spec(),
            channels=dict(type='list', elements='str'),
            lag_threshold=dict(type='int', default=300),
            **instances_argument_spec()
        ),
        mutually_exclusive=INSTANCES_EXCLUSIVE,
        supports_check_mode=True,
    )
    require_pymysql(module)
    if module.params['lag_threshold'] < 0:
        module.fail_json(msg='lag_threshold must not be negative')
    if module.params['instances'] is None:
        server, reports = read_server(module, module.params)
        module.exit_json(changed=False, server=server, channels=reports, summary=summarize(reports))
    names = [instance['name'] for instance in module.params['instances']]
    if len(set(names)) != len(names):
        module.fail_json(msg='instances: every name must be unique')
    results = []
    for instance in module.params['instances']:
        server, reports = read_server(module, dict(module.params, login_unix_socket=instance['login_unix_socket']))
        results.append(dict(name=instance['name'], server=server, channels=reports, summary=summarize(reports)))
    module.exit_json(changed=False, instances=results)


if __name__ == '__main__':
    main()
