# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""replication_info main() with a fake server session (no database)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import Dialect
from ansible_collections.edgefleet.mysql_backup.plugins.modules import replication_info

from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.test_replication_fakes import FakeSession, mariadb_row, run_module


def test_reports_every_channel_with_health(mocker):
    broken = mariadb_row('dev2', 33002, sql='No', Replicate_Rewrite_DB='app->dev2_app',
                         Last_SQL_Errno=1146,
                         Last_SQL_Error="Error 'Table 'app.t' doesn't exist' on query. Default "
                                        "database: ''. Query: 'DROP TABLE app.t'")
    session = FakeSession(Dialect('mariadb', (10, 11, 19)),
                          rows=[broken, mariadb_row('dev1', 33001)],
                          facts={'read_only': 1, 'server_id': 9, 'gtid_slave_pos': '1-1-1,301-301-4',
                                 'gtid_binlog_pos': '', 'gtid_domain_id': 9,
                                 'gtid_strict_mode': 0})
    result = run_module(mocker, replication_info, session, {'lag_threshold': 10,
                                                            '_ansible_check_mode': True})
    assert result['changed'] is False and session.executed_changes == []
    assert [c['name'] for c in result['channels']] == ['dev1', 'dev2']
    assert result['channels'][0]['health'] == 'ok'
    assert result['channels'][1]['health'] == 'error'
    assert result['channels'][1]['diagnosis'].startswith('qualified DDL not rewritten')
    assert result['channels'][1]['gtid_io_pos'] == '301-301-5'
    assert result['channels'][1]['gtid_applied_pos'] == '301-301-4'
    assert result['server']['read_only'] is True and result['server']['gtid_domain_id'] == 9
    assert result['summary']['error'] == 1 and result['summary']['total'] == 2


def test_applied_pos_per_channel():
    assert replication_info.applied_pos('301-301-9,7-7-1', '1-1-1,301-301-8,7-7-1') == \
        '7-7-1,301-301-8'
    assert replication_info.applied_pos('', '1-1-1') == ''
    assert replication_info.applied_pos('bad', '1-1-1') == ''


def test_mysql_fields(mocker):
    from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.test_replication_fakes import mysql_row
    session = FakeSession(Dialect('mysql', (8, 0, 36)), rows=[mysql_row('dev1', 3306)],
                          facts={'read_only': 0, 'server_id': 2, 'gtid_executed': 'x:1-5',
                                 'gtid_mode': 'ON', 'super_read_only': 0})
    result = run_module(mocker, replication_info, session, {})
    channel = result['channels'][0]
    assert channel['using_gtid'] == 'auto_position'
    assert channel['executed_gtid_set'].endswith(':1-2') and 'gtid_io_pos' not in channel
    assert result['server']['gtid_executed'] == 'x:1-5'


def test_filter_and_missing(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[mariadb_row('dev1', 1)])
    result = run_module(mocker, replication_info, session, {'channels': ['DEV1', 'gone']})
    assert [(c['name'], c['health']) for c in result['channels']] == [('dev1', 'ok'),
                                                                      ('gone', 'missing')]


def test_negative_threshold_fails(mocker):
    result = run_module(mocker, replication_info, FakeSession(Dialect('mariadb', (10, 11, 0))),
                        {'lag_threshold': -1})
    assert result['failed']
