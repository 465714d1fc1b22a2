# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""proxysql_endpoint (module_utils, used by the module of that name and the proxysql role): rows
rendered from the allocation and the admin SQL batch, executed against SQLite with ProxySQL 2.x's
admin table definitions (the stand-in of molecule/proxysql)."""

from __future__ import annotations

import importlib.util
import os
import sqlite3

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import proxysql_endpoint as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE = _load('edgefleet_fake_admin', 'molecule/proxysql/fake_admin.py')


def clouds(extra_instance_devices=()):
    """Two cloud hosts: channel-mode shared instances and one instance-mode device."""
    c1 = {'name': 'cloud01', 'backend_host': '10.0.0.1',
          'instances': [{'name': 'multi-01', 'mode': 'channel', 'port': 30000, 'server_id': 2000000000},
                        {'name': 'kiosk01', 'mode': 'instance', 'port': 30001, 'server_id': 2000000002}],
          'devices': [{'id': 'shop01', 'replica_instance': 'multi-01', 'schema_prefix': 'shop01_'},
                      {'id': 'shop02', 'replica_instance': 'multi-01', 'schema_prefix': 'shop02_'},
                      {'id': 'kiosk01', 'replica_instance': 'kiosk01', 'schema_prefix': ''}]}
    c2 = {'name': 'cloud02', 'backend_host': '10.0.0.2',
          'instances': [{'name': 'multi-01', 'mode': 'channel', 'port': 30000, 'server_id': 2000000001}],
          'devices': [{'id': 'shop03', 'replica_instance': 'multi-01', 'schema_prefix': 'shop03_'}]}
    for dev in extra_instance_devices:
        c2['instances'].append({'name': dev, 'mode': 'instance', 'port': 30100, 'server_id': 2000000100})
        c2['devices'].append({'id': dev, 'replica_instance': dev, 'schema_prefix': ''})
    return [c2, c1]


def admin_db():
    db = sqlite3.connect(':memory:')
    for ddl in FAKE.SCHEMA.values():
        db.execute(ddl)
    return db


def apply(db, statements):
    """Run a plan like the admin interface would; LOAD/SAVE are counted, not executed."""
    loads = []
    for statement in statements:
        if statement.startswith(('LOAD ', 'SAVE ')):
            assert FAKE.LOAD_SAVE.match(statement), statement
            loads.append(statement)
        else:
            db.execute(statement)
    return loads


def read_current(db, marker='edgefleet'):
    """What the role's read task returns: every value as a string (ProxySQL's text protocol)."""
    def rows(sql):
        cur = db.execute(sql)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, [None if v is None else str(v) for v in row])) for row in cur.fetchall()]
    like = "'%s:%%'" % marker
    return {
        'servers': rows('SELECT hostgroup_id, hostname, port, status, weight, max_connections, max_replication_lag, '
                        'use_ssl, comment FROM mysql_servers WHERE comment LIKE ' + like),
        'rules': rows('SELECT rule_id, active, username, schemaname, match_digest, destination_hostgroup, apply, '
                      'comment FROM mysql_query_rules WHERE comment LIKE ' + like),
        'fast_routing': rows('SELECT username, schemaname, flagIN, destination_hostgroup, comment FROM '
                             'mysql_query_rules_fast_routing WHERE comment LIKE ' + like),
        'users': rows('SELECT username, password, active, default_hostgroup, default_schema, transaction_persistent, '
                      'max_connections, comment FROM mysql_users WHERE comment LIKE ' + like),
        'foreign_rule_ids': [r['rule_id'] for r in rows(
            'SELECT rule_id FROM mysql_query_rules WHERE comment IS NULL OR comment NOT LIKE ' + like)],
        'foreign_users': [r['username'] for r in rows('SELECT username FROM mysql_users WHERE comment NOT LIKE ' + like)],
        'foreign_servers': [[r['hostgroup_id'], r['hostname'], r['port']] for r in rows(
            'SELECT hostgroup_id, hostname, port FROM mysql_servers WHERE comment NOT LIKE ' + like)],
    }


def test_one_hostgroup_per_instance_from_its_server_id():
    desired = P.proxysql_desired(clouds(), ['app'])
    servers = sorted((s['hostgroup_id'], s['hostname'], s['port'], s['comment']) for s in desired['servers'])
    assert servers == [(1000, '10.0.0.1', 30000, 'edgefleet:cloud01:multi-01'),
                       (1001, '10.0.0.2', 30000, 'edgefleet:cloud02:multi-01'),
                       (1002, '10.0.0.1', 30001, 'edgefleet:cloud01:kiosk01')]


def test_schema_routing_sends_each_device_schema_to_its_instance():
    desired = P.proxysql_desired(clouds(), ['app', 'audit'], rule_id_base=500)
    routes = dict((r['schemaname'], r['destination_hostgroup']) for r in desired['rules'])
    assert routes == {'shop01_app': 1000, 'shop01_audit': 1000, 'shop02_app': 1000, 'shop02_audit': 1000,
                      'app': 1002, 'audit': 1002, 'shop03_app': 1001, 'shop03_audit': 1001}
    assert [r['rule_id'] for r in desired['rules']] == list(range(500, 508))
    assert all(r['apply'] == 1 and r['active'] == 1 and r['username'] is None for r in desired['rules'])


def test_instance_mode_schemas_collide_and_user_routing_solves_it():
    with pytest.raises(P.ProxySQLConfigError, match='schema app would route to hostgroups .*proxysql_routing: user'):
        P.proxysql_desired(clouds(['kiosk02']), ['app'])
    with pytest.raises(P.ProxySQLConfigError, match='needs proxysql_user_password'):
        P.proxysql_desired(clouds(['kiosk02']), ['app'], routing='user')
    desired = P.proxysql_desired(clouds(['kiosk02']), ['app'], routing='user', user_password='s3cret')
    users = dict((u['username'], (u['default_hostgroup'], u['default_schema'])) for u in desired['users'])
    assert users['r_kiosk01'] == (1002, 'app') and users['r_kiosk02'] == (1100, 'app')
    assert users['r_shop01'] == (1000, 'shop01_app')
    assert desired['rules'] == [] and desired['fast_routing'] == []


def test_fast_routing_rows_per_user_and_schema():
    with pytest.raises(P.ProxySQLConfigError, match='fast routing needs proxysql_route_users'):
        P.proxysql_desired(clouds(), ['app'], rules_table='fast_routing')
    desired = P.proxysql_desired(clouds(), ['app'], rules_table='fast_routing', route_users=['reader', 'report'])
    assert len(desired['fast_routing']) == 2 * 4 and desired['rules'] == []
    assert {'username': 'reader', 'schemaname': 'shop03_app', 'flagIN': 0, 'destination_hostgroup': 1001,
            'comment': 'edgefleet:shop03:app'} in desired['fast_routing']


def test_qualified_names_get_a_regex_rule():
    desired = P.proxysql_desired(clouds(), ['app'], route_qualified=True)
    digests = [r['match_digest'] for r in desired['rules'] if r['match_digest']]
    assert '(^|[^A-Za-z0-9_$])`?shop01_app`?\\.' in digests and len(digests) == 4


def test_plan_applies_on_the_proxysql_schema_and_converges():
    db = admin_db()
    # rows somebody else manages stay untouched
    db.execute("INSERT INTO mysql_servers (hostgroup_id, hostname, port, comment) VALUES (1, 'writer', 3306, 'app')")
    db.execute("INSERT INTO mysql_query_rules (rule_id, active, match_digest, destination_hostgroup, apply) "
               "VALUES (1, 1, '^SELECT .* FOR UPDATE', 1, 1)")
    desired = P.proxysql_desired(clouds(), ['app', 'audit'], route_qualified=True)
    plan = P.proxysql_plan(desired, read_current(db))
    assert plan['changed'] == ['servers', 'rules']
    loads = apply(db, plan['statements'])
    assert loads == ['LOAD MYSQL SERVERS TO RUNTIME', 'SAVE MYSQL SERVERS TO DISK',
                     'LOAD MYSQL QUERY RULES TO RUNTIME', 'SAVE MYSQL QUERY RULES TO DISK']
    assert db.execute('SELECT COUNT(*) FROM mysql_servers').fetchone()[0] == 4
    assert db.execute("SELECT hostname FROM mysql_servers WHERE hostgroup_id = 1").fetchone() == ('writer',)
    assert db.execute('SELECT COUNT(*) FROM mysql_query_rules WHERE rule_id = 1').fetchone()[0] == 1
    again = P.proxysql_plan(desired, read_current(db))
    assert again['statements'] == [] and again['changed'] == []


def test_a_moved_device_changes_only_the_rules():
    db = admin_db()
    first = P.proxysql_desired(clouds(), ['app'])
    apply(db, P.proxysql_plan(first, read_current(db))['statements'])
    moved = clouds()
    shop02 = moved[1]['devices'].pop(1)
    moved[0]['devices'].append(dict(shop02))
    plan = P.proxysql_plan(P.proxysql_desired(moved, ['app']), read_current(db))
    assert plan['changed'] == ['rules']
    assert apply(db, plan['statements']) == ['LOAD MYSQL QUERY RULES TO RUNTIME', 'SAVE MYSQL QUERY RULES TO DISK']
    assert db.execute("SELECT destination_hostgroup FROM mysql_query_rules WHERE schemaname = 'shop02_app'"
                      ).fetchone() == (1001,)


def test_users_are_secret_and_loaded_once():
    db = admin_db()
    desired = P.proxysql_desired(clouds(['kiosk02']), ['app'], routing='user', user_password='s3cret')
    plan = P.proxysql_plan(desired, read_current(db))
    assert plan['secret'] and plan['changed'] == ['servers', 'users']
    assert apply(db, plan['statements'])[-2:] == ['LOAD MYSQL USERS TO RUNTIME', 'SAVE MYSQL USERS TO DISK']
    assert P.proxysql_plan(desired, read_current(db))['statements'] == []


def test_conflicts_with_foreign_rows_are_refused():
    db = admin_db()
    db.execute("INSERT INTO mysql_query_rules (rule_id, active, apply) VALUES (10001, 1, 1)")
    with pytest.raises(P.ProxySQLConfigError, match='rule_id 10001 is used by a query rule this role does not manage'):
        P.proxysql_plan(P.proxysql_desired(clouds(), ['app']), read_current(db))
    db = admin_db()
    db.execute("INSERT INTO mysql_users (username, password) VALUES ('r_shop01', 'x')")
    with pytest.raises(P.ProxySQLConfigError, match='user r_shop01 exists in mysql_users without'):
        P.proxysql_plan(P.proxysql_desired(clouds(), ['app'], routing='user', user_password='p'), read_current(db))


def test_big_fleets_insert_in_chunks_within_one_batch():
    big = [{'name': 'cloud01', 'backend_host': '10.0.0.1',
            'instances': [{'name': 'multi-%02d' % i, 'port': 30000 + i, 'server_id': 2000000000 + i}
                          for i in range(8)],
            'devices': [{'id': 'd%04d' % i, 'replica_instance': 'multi-%02d' % (i % 8), 'schema_prefix': 'd%04d_' % i}
                        for i in range(450)]}]
    plan = P.proxysql_plan(P.proxysql_desired(big, ['app']), {}, chunk=200)
    inserts = [s for s in plan['statements'] if s.startswith('INSERT INTO mysql_query_rules ')]
    assert len(inserts) == 3
    db = admin_db()
    apply(db, plan['statements'])
    assert db.execute('SELECT COUNT(*) FROM mysql_query_rules').fetchone()[0] == 450


def test_unsafe_input_is_refused():
    bad = clouds()
    bad[0]['backend_host'] = "10.0.0.2'; DROP TABLE mysql_servers; --"
    with pytest.raises(P.ProxySQLConfigError, match='backend address'):
        P.proxysql_desired(bad, ['app'])
    with pytest.raises(P.ProxySQLConfigError, match='not a plain identifier'):
        P.proxysql_desired(clouds(), ["app'"])
    with pytest.raises(P.ProxySQLConfigError, match='outside 1..'):
        P.proxysql_desired(clouds(), ['app'], server_id_base=0, hostgroup_base=2147483000)
    with pytest.raises(P.ProxySQLConfigError, match='quotes or backslashes'):
        P.proxysql_desired(clouds(), ['app'], routing='user', user_password="it's")


def test_request_interface_counts_and_refuses_unknown_input():
    request = {'clouds': clouds(), 'databases': ['app'], 'options': {'rule_id_base': 20000}, 'current': {}}
    out = P.run(request)
    assert out['counts'] == {'servers': 3, 'rules': 4, 'fast_routing': 0, 'users': 0}
    request['options']['routing'] = 'nonsense'
    with pytest.raises(P.ProxySQLConfigError, match='proxysql_routing must be schema or user'):
        P.run(request)
    with pytest.raises(P.ProxySQLConfigError, match='unknown option'):
        P.run({'clouds': clouds(), 'databases': ['app'], 'options': {'colour': 'red'}})
