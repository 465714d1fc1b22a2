# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""proxysql_endpoint module: reads, plans and writes over one connection; check mode writes nothing;
changed only when a managed table differs; the user password never appears in the result. The
admin interface is SQLite with ProxySQL 2.x's admin tables (molecule/proxysql/fake_admin.py)."""

from __future__ import annotations

import importlib.util
import os
import sqlite3

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import proxysql_endpoint as P
from ansible_collections.edgefleet.mysql_backup.plugins.modules import proxysql_endpoint
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
_SPEC = importlib.util.spec_from_file_location('edgefleet_fake_admin', os.path.join(ROOT, 'molecule/proxysql/fake_admin.py'))
FAKE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(FAKE)


class Cursor(object):
    """DB-API cursor over SQLite returning dict rows as text, like pymysql's DictCursor on ProxySQL."""

    def __init__(self, connection):
        self.connection = connection
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        self.connection.log.append(sql)
        if sql.startswith(('LOAD ', 'SAVE ')):
            assert FAKE.LOAD_SAVE.match(sql), sql
            return
        cur = self.connection.db.execute(sql)
        names = [c[0] for c in cur.description or []]
        self.rows = [dict(zip(names, [None if v is None else str(v) for v in row])) for row in cur.fetchall()]

    def fetchall(self):
        return self.rows


class Admin(object):
    def __init__(self):
        self.db = sqlite3.connect(':memory:')
        for ddl in FAKE.SCHEMA.values():
            self.db.execute(ddl)
        self.log = []
        self.closed = False

    def cursor(self):
        return Cursor(self)

    def close(self):
        self.closed = True

    def writes(self):
        return [s for s in self.log if not s.startswith('SELECT')]


CLOUDS = [
    {'inventory_hostname': 'cloud01', 'ansible_host': '10.0.0.1',
     'edgefleet_cloud_instances': [{'name': 'multi-01', 'port': 30000, 'server_id': 2000000000}],
     'edgefleet_cloud_devices': [{'id': 'shop01', 'replica_instance': 'multi-01', 'schema_prefix': 'shop01_'},
                                 {'id': 'shop02', 'replica_instance': 'multi-01', 'schema_prefix': 'shop02_'}]},
    {'name': 'cloud02', 'instances': [{'name': 'kiosk01', 'port': 30001, 'server_id': 2000000001}],
     'devices': [{'id': 'kiosk01', 'replica_instance': 'kiosk01', 'schema_prefix': ''}]},
]


def run(mocker, admin, check=False, **args):
    mocker.patch.object(proxysql_endpoint, 'admin_connection', return_value=admin)
    mocker.patch.object(proxysql_endpoint, 'require_pymysql')
    args = dict({'login_password': 'pw', 'databases': ['app'], 'clouds': CLOUDS,
                 'routing': 'user', 'user_password': 's3cret'}, **args)
    if check:
        args['_ansible_check_mode'] = True
    return run_main(mocker, proxysql_endpoint, args)


def test_check_mode_reports_the_change_and_writes_nothing(mocker):
    admin = Admin()
    result = run(mocker, admin, check=True)
    assert result['changed'] is True and result['changed_tables'] == ['servers', 'users']
    assert admin.writes() == [] and admin.closed
    assert result['counts'] == {'servers': 2, 'rules': 0, 'fast_routing': 0, 'users': 3}


def test_applies_once_then_unchanged_and_never_shows_the_password(mocker):
    admin = Admin()
    result = run(mocker, admin)
    assert result['changed'] is True
    assert admin.writes()[-2:] == ['LOAD MYSQL USERS TO RUNTIME', 'SAVE MYSQL USERS TO DISK']
    assert 's3cret' not in repr(result)
    assert admin.db.execute('SELECT COUNT(*) FROM mysql_users').fetchone()[0] == 3
    # the cloud without ansible_host is reached by its name; with one, by its address
    assert sorted(admin.db.execute('SELECT hostname FROM mysql_servers').fetchall()) == [('10.0.0.1',), ('cloud02',)]
    before = len(admin.log)
    again = run(mocker, admin)
    assert again['changed'] is False and again['statements'] == []
    assert [s for s in admin.log[before:] if not s.startswith('SELECT')] == []


def test_backend_hosts_override_the_inventory_address(mocker):
    admin = Admin()
    run(mocker, admin, backend_hosts={'cloud01': '192.0.2.7'})
    assert ('192.0.2.7',) in admin.db.execute('SELECT hostname FROM mysql_servers').fetchall()


def test_bad_input_fails_before_connecting(mocker):
    connect = mocker.patch.object(proxysql_endpoint, 'admin_connection')
    mocker.patch.object(proxysql_endpoint, 'require_pymysql')
    result = run_main(mocker, proxysql_endpoint, {'login_password': 'pw', 'databases': ["app'"], 'clouds': CLOUDS})
    assert result['failed'] and 'not a plain identifier' in result['msg']
    assert not connect.called


def test_read_queries_select_managed_and_foreign_rows():
    queries = dict(P.read_queries('edgefleet'))
    assert queries['servers'].startswith('SELECT hostgroup_id, hostname, port, status')
    assert queries['servers'].endswith("WHERE comment LIKE 'edgefleet:%'")
    assert queries['foreign_rule_ids'].endswith("WHERE comment IS NULL OR comment NOT LIKE 'edgefleet:%'")
    assert sorted(queries) == ['fast_routing', 'foreign_rule_ids', 'foreign_servers', 'foreign_users',
                               'rules', 'servers', 'users']


def test_current_from_rows_and_masking():
    current = P.current_from_rows({'foreign_servers': [{'hostgroup_id': '5', 'hostname': 'h', 'port': '1'}],
                                   'foreign_users': [{'username': 'u'}], 'foreign_rule_ids': [{'rule_id': '7'}]})
    assert current['foreign_servers'] == [['5', 'h', '1']]
    assert current['foreign_users'] == ['u'] and current['foreign_rule_ids'] == ['7']
    assert current['servers'] == [] and current['users'] == []
    statements = ["INSERT INTO mysql_users (username, password) VALUES ('a', 'secret')", 'LOAD MYSQL USERS TO RUNTIME']
    assert 'secret' not in repr(P.masked(statements, True))
    assert P.masked(statements, False) == statements


def test_clouds_from_hosts_fallbacks():
    clouds = P.clouds_from_hosts([{'name': 'a', 'address': '10.0.0.1'}, {'name': 'b'}], {'a': '192.0.2.1'})
    assert [c['backend_host'] for c in clouds] == ['192.0.2.1', 'b']
    assert clouds[1]['instances'] == [] and clouds[1]['devices'] == []
