# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistency check logic without servers: SQL, comparison, and the pause/restore sequence."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import consistency as cc
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import Dialect

MARIADB = Dialect('mariadb', (10, 11, 6))


def test_columns_hashed_by_value():
    assert cc.column_expr('name', 'varchar') == 'HEX(`name`)'
    assert cc.column_expr('blob`x', 'BLOB') == 'HEX(`blob``x`)'
    assert cc.column_expr('price', 'decimal') == 'CAST(`price` AS CHAR)'
    sql = cc.row_hash_sql([('id', 'int'), ('v', 'text')])
    assert sql == ("MD5(CONCAT_WS('#', CAST(`id` AS CHAR), HEX(`v`), "
                   "CONCAT(ISNULL(`id`), ISNULL(`v`))))")


def test_table_checksum_sql_sums_both_halves():
    sql = cc.table_checksum_sql('app', 't', [('id', 'int')])
    assert 'COUNT(*) AS row_count' in sql
    assert 'SUBSTRING(h, 1, 16)' in sql and 'SUBSTRING(h, 17, 16)' in sql
    assert 'BIT_XOR' not in sql  # identical rows must not cancel out
    assert sql.endswith('FROM `app`.`t`) AS edgefleet_rows')


def test_row_hashes_sql_names_the_key():
    sql = cc.row_hashes_sql('app', 't', [('a', 'int'), ('b', 'int')], ['a', 'b'])
    assert sql.startswith("SELECT CONCAT_WS(',', CONCAT('a', '=', COALESCE(CAST(`a` AS CHAR)")


def entry(rows, checksum, columns=('id int',), key=('id',)):
    return {'rows': rows, 'checksum': checksum, 'column_types': list(columns),
            'key': list(key), 'schema': 's', 'table': 't', 'columns': []}


def test_compare_every_status():
    device = {('app', 'same'): entry(2, 'x'), ('app', 'diff'): entry(2, 'x'),
              ('app', 'count'): entry(2, 'x'), ('app', 'gone'): entry(1, 'y'),
              ('app', 'cols'): entry(1, 'z', columns=('id int', 'v int'))}
    replica = {('app', 'same'): entry(2, 'x'), ('app', 'diff'): entry(2, 'q'),
               ('app', 'count'): entry(3, 'x'), ('app', 'extra'): entry(1, 'e'),
               ('app', 'cols'): entry(1, 'z', columns=('id int',))}
    results = dict((r['table'], r) for r in cc.compare(device, replica, [('app', 'dev1_app')]))
    assert results['app.same']['status'] == 'same'
    assert results['app.diff']['status'] == 'differs'
    assert results['app.count']['status'] == 'differs'
    assert results['app.gone']['status'] == 'missing_on_replica'
    assert results['app.extra']['status'] == 'missing_on_device'
    assert results['app.cols']['status'] == 'columns_differ'
    assert results['app.same']['replica_table'] == 'dev1_app.same'


def test_diff_rows_and_limit():
    diff = cc.diff_rows({'id=1': 'a', 'id=2': 'b', 'id=3': 'c'},
                        {'id=1': 'a', 'id=2': 'X', 'id=4': 'd'}, limit=1)
    assert diff['different'] == ['id=2'] and diff['missing_on_replica'] == ['id=3']
    assert diff['extra_on_replica'] == ['id=4']
    big = cc.diff_rows(dict(('id=%d' % i, 'a') for i in range(5)), {}, limit=2)
    assert big['missing_on_replica'] == ['id=0', 'id=1'] and big['counts']['missing_on_replica'] == 5


def test_describe_table():
    line = cc.describe_table({'table': 'app.t', 'status': 'differs', 'device_rows': 3,
                              'replica_rows': 3, 'keys': {
                                  'different': ['id=2'], 'missing_on_replica': [],
                                  'extra_on_replica': [], 'counts': {'different': 1}}})
    assert line == 'app.t differs (3/3 rows; different: id=2)'
    assert cc.describe_table({'table': 'app.u', 'status': 'missing_on_replica'}) == \
        'app.u missing on the replica'


def test_reached_compares_sequence_per_domain():
    assert cc.reached('0-1-5,1000-1000-42', '1000-1000-42')
    assert not cc.reached('1000-1000-41', '1000-1000-42')
    assert not cc.reached('0-1-5', '1000-1000-42')
    assert cc.schema_map_for(['app', 'log'], 'dev1_') == [('app', 'dev1_app'), ('log', 'dev1_log')]


# --- the pause / restore sequence against scripted fake connections --------------------

class FakeCursor(object):
    def __init__(self, conn):
        self.conn = conn
        self.rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.conn.log.append((sql, list(params or [])))
        self.rows = self.conn.answer(sql, params or [])

    def fetchall(self):
        return self.rows


class FakeConn(object):
    def __init__(self, answer):
        self.answer = answer
        self.log = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


def status_row(io='Yes', sql='Yes', sql_errno=0):
    return {'Connection_name': 'dev1', 'Slave_IO_Running': io, 'Slave_SQL_Running': sql,
            'Last_SQL_Errno': sql_errno, 'Last_SQL_Error': 'boom' if sql_errno else '',
            'Using_Gtid': 'Slave_Pos', 'Gtid_IO_Pos': '7-7-10'}


def replica_answer(state):
    def answer(sql, params):
        if sql.startswith('SHOW ALL'):
            return [status_row(*state['threads'])]
        if sql.startswith('SELECT GET_LOCK'):
            return [{'l': 1}]
        if sql.startswith('SELECT @@GLOBAL.gtid_slave_pos'):
            return [{'p': state['pos']}]
        if sql.startswith('STOP'):
            state['threads'] = ('No', 'No')
        if sql.startswith('START') and 'UNTIL' in sql:
            state['threads'] = ('No', 'No')
            state['pos'] = params[-1]
        elif sql.startswith('START'):
            state['threads'] = ('Yes', 'Yes')
        if sql.startswith('SELECT SCHEMA_NAME'):
            return [{'SCHEMA_NAME': 'app'}]
        if 'information_schema.TABLES' in sql:
            return [{'t': 't'}]
        if 'information_schema.COLUMNS' in sql:
            return [{'t': 't', 'c': 'id', 'd': 'int', 'ct': 'int(11)'}]
        if 'information_schema.STATISTICS' in sql:
            return [{'t': 't', 'c': 'id'}]
        if 'row_count' in sql:
            return [{'row_count': 2, 'sum_a': 5, 'sum_b': state.get('sum_b', 6)}]
        if sql.startswith('SELECT CONCAT_WS'):
            return [{'k': 'id=1', 'h': 'a'}, {'k': 'id=2', 'h': state.get('h2', 'b')}]
        return []
    return answer


def device_answer(sql, params):
    if sql.startswith('SHOW STATUS'):
        return [{'Variable_name': 'Binlog_snapshot_file', 'Value': 'mysql-bin.000002'},
                {'Variable_name': 'Binlog_snapshot_position', 'Value': '900'}]
    if sql.startswith('SELECT BINLOG_GTID_POS'):
        return [{'g': '7-7-12'}]
    if sql.startswith('SELECT SCHEMA_NAME'):
        return [{'SCHEMA_NAME': 'app'}]
    if 'information_schema.TABLES' in sql:
        return [{'t': 't'}]
    if 'information_schema.COLUMNS' in sql:
        return [{'t': 't', 'c': 'id', 'd': 'int', 'ct': 'int(11)'}]
    if 'information_schema.STATISTICS' in sql:
        return [{'t': 't', 'c': 'id'}]
    if 'row_count' in sql:
        return [{'row_count': 2, 'sum_a': 5, 'sum_b': 6}]
    if sql.startswith('SELECT CONCAT_WS'):
        return [{'k': 'id=1', 'h': 'a'}, {'k': 'id=2', 'h': 'b'}]
    return []


def run(state, device_connect=None):
    replica = FakeConn(replica_answer(state))
    device = FakeConn(device_answer)
    result = cc.check_device(device_connect or (lambda: device), replica, MARIADB, 'dev1',
                             [('app', 'app')], {'until_timeout': 1})
    return result, replica, device


def statements(conn):
    return [entry[0] for entry in conn.log]


def test_equal_tables_and_channel_restarted():
    state = {'threads': ('Yes', 'Yes'), 'pos': '7-7-10'}
    result, replica, device = run(state)
    assert result['state'] == 'ok' and result['error'] is None, result
    assert result['gtid_pos'] == '7-7-12' and result['replica_pos_before'] == '7-7-10'
    sqls = statements(replica)
    stop = sqls.index('STOP REPLICA %s')
    until = [i for i, s in enumerate(sqls) if 'UNTIL master_gtid_pos' in s][0]
    assert stop < until and sqls[-2] == 'START REPLICA %s'
    assert replica.log[until][1] == ['dev1', '7-7-12']
    assert sqls[-1] == 'SELECT RELEASE_LOCK(%s)'
    assert state['threads'] == ('Yes', 'Yes') and result['restarted'] is True
    assert 'START TRANSACTION WITH CONSISTENT SNAPSHOT' in statements(device)
    assert statements(device)[-1] == 'ROLLBACK' and device.closed


def test_difference_is_located_by_key():
    state = {'threads': ('Yes', 'Yes'), 'pos': '7-7-10', 'sum_b': 99, 'h2': 'changed'}
    result = run(state)[0]
    assert result['state'] == 'diverged' and result['differing_tables'] == ['app.t']
    assert result['tables'][0]['keys']['different'] == ['id=2']


def test_stopped_channel_stays_stopped():
    state = {'threads': ('No', 'No'), 'pos': '7-7-10'}
    result, replica = run(state)[:2]
    assert result['state'] == 'ok' and result['restarted'] is False
    assert state['threads'] == ('No', 'No')
    assert 'START REPLICA %s' not in statements(replica)


def test_unreachable_device_leaves_the_channel_alone():
    def refuse():
        raise OSError('connection refused')
    state = {'threads': ('Yes', 'Yes'), 'pos': '7-7-10'}
    result, replica = run(state, device_connect=refuse)[:2]
    assert result['state'] == 'error' and 'not reachable' in result['error']
    assert not any(s.startswith(('STOP', 'START')) for s in statements(replica))


def test_channel_in_error_is_not_compared():
    state = {'threads': ('Yes', 'No'), 'pos': '7-7-10'}
    replica = FakeConn(lambda sql, params: [status_row('Yes', 'No', 1062)]
                       if sql.startswith('SHOW ALL') else [])
    result = cc.check_device(lambda: pytest.fail('device must not be contacted'), replica, MARIADB,
                             'dev1', [('app', 'app')])
    assert result['state'] == 'error' and 'SQL error 1062' in result['error']
    assert state['threads'] == ('Yes', 'No')


def test_failure_after_pause_still_restarts():
    state = {'threads': ('Yes', 'Yes'), 'pos': '7-7-10'}

    def broken_device(sql, params):
        if sql.startswith('SHOW STATUS'):
            raise RuntimeError('lost connection')
        return device_answer(sql, params)
    device = FakeConn(broken_device)
    replica = FakeConn(replica_answer(state))
    result = cc.check_device(lambda: device, replica, MARIADB, 'dev1', [('app', 'app')])
    assert result['state'] == 'error' and 'lost connection' in result['error']
    assert state['threads'] == ('Yes', 'Yes') and result['restarted'] is True


def test_mysql_is_refused_clearly():
    replica = FakeConn(lambda sql, params: [])
    result = cc.check_device(lambda: None, replica, Dialect('mysql', (8, 4, 0)), 'dev1',
                             [('app', 'app')])
    assert result['state'] == 'error' and 'needs MariaDB' in result['error']
    assert replica.log == []
