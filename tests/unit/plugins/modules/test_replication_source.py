# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""replication_source main() with a fake server session (no database)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import Dialect
from ansible_collections.edgefleet.mysql_backup.plugins.modules import replication_source

from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.test_replication_fakes import FakeSession, mariadb_row, run_module

PASSWORD = 'S3cret-pw'


def channel(name, port, **extra):
    spec = {'name': name, 'source_host': '127.0.0.1', 'source_port': port,
            'source_user': 'repl', 'source_password': PASSWORD}
    spec.update(extra)
    return spec


def test_creates_two_channels_and_masks_password(mocker, capsys):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[])
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001), channel('dev2', 33002)]})
    assert result['changed'] is True
    assert [c['actions'] for c in result['channels']] == [['created', 'started']] * 2
    assert len(session.executed) == 4
    assert session.executed[0][1][-1] == PASSWORD  # the real value reaches the server
    assert PASSWORD not in json.dumps(result)


def test_unchanged_runs_nothing(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)),
                          rows=[mariadb_row('dev1', 33001), mariadb_row('dev2', 33002)])
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001), channel('dev2', 33002)]})
    assert result['changed'] is False and session.executed == []


def test_check_mode_runs_nothing_but_reports(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[mariadb_row('dev1', 33001)])
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 34001)], '_ansible_check_mode': True,
                         '_ansible_diff': True})
    assert result['changed'] is True
    assert result['queries'] == ["STOP REPLICA 'dev1'", "CHANGE MASTER 'dev1' TO MASTER_PORT=34001",
                                 "START REPLICA 'dev1'"]
    assert session.executed == []
    assert result['diff']['before']['channels']['dev1']['source_port'] == 33001
    assert result['diff']['after']['channels']['dev1']['source_port'] == 34001


def test_invalid_name_fails_before_connecting(mocker):
    connect = mocker.patch.object(replication_source, 'open_session')
    result = run_module(mocker, replication_source, None,
                        {'channels': [channel("x'; DROP TABLE y; --", 1)]}, connect=connect)
    assert result['failed'] and 'invalid channel name' in result['msg']
    connect.assert_not_called()


def test_bad_port_and_seed(mocker):
    result = run_module(mocker, replication_source, FakeSession(Dialect('mariadb', (10, 11, 0))),
                        {'channels': [channel('a', 70000, gtid_pos='x')]})
    assert result['failed']
    assert 'not a TCP port' in result['msg'] and 'gtid_pos' in result['msg']


def test_retry_count_rejected_on_mariadb_1011(mocker):
    result = run_module(mocker, replication_source, FakeSession(Dialect('mariadb', (10, 11, 0))),
                        {'channels': [channel('a', 3306, retry_count=5)]})
    assert result['failed'] and 'master_retry_count' in result['msg']


def test_mysql_84_statements(mocker):
    session = FakeSession(Dialect('mysql', (8, 4, 2)), rows=[])
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001, retry_count=5)]})
    assert result['queries'][0].startswith('CHANGE REPLICATION SOURCE TO SOURCE_HOST=')
    assert 'SOURCE_RETRY_COUNT=5' in result['queries'][0]
    assert result['queries'][1] == "START REPLICA FOR CHANNEL 'dev1'"


def test_failed_statement_reports_masked_query(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[], fail_on='START')
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001)]})
    assert result['failed'] and 'START REPLICA' in result['msg']
    assert len(result['queries']) == 1 and PASSWORD not in json.dumps(result)


def test_lock_is_taken_before_reading_and_refusal_fails(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[])
    run_module(mocker, replication_source, session, {'channels': [channel('dev1', 1)]})
    assert session.queries[0].startswith('SELECT GET_LOCK')
    busy = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[], lock=0)
    result = run_module(mocker, replication_source, busy,
                        {'channels': [channel('dev1', 1)], 'lock_timeout': 1})
    assert result['failed'] and 'holds the lock' in result['msg'] and busy.executed == []
    check = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[], lock=0)
    result = run_module(mocker, replication_source, check,
                        {'channels': [channel('dev1', 1)], '_ansible_check_mode': True})
    assert result['changed'] is True and not any('GET_LOCK' in q for q in check.queries)


def test_failed_change_restarts_what_it_stopped(mocker):
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[mariadb_row('dev1', 33001)],
                          fail_on='CHANGE')
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 34001)]})
    assert result['failed'] and 'CHANGE MASTER' in result['msg']
    assert result['queries'] == ["STOP REPLICA 'dev1'"]
    assert result['recovery_queries'] == ["START REPLICA 'dev1'"]
    assert result['still_stopped'] == []


def test_started_channel_health_is_reported(mocker):
    failing = mariadb_row('dev1', 33001, io='No', sql='No', Last_IO_Errno=1236,
                          Last_IO_Error='Could not find GTID state requested by slave')
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[failing])
    warn = mocker.patch.object(replication_source.AnsibleModule, 'warn')
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001)], 'start_wait': 1})
    assert result['channels'][0]['action'] == 'started'
    assert result['channels'][0]['health'] == 'error'
    assert 're-seed' in result['channels'][0]['diagnosis']
    assert 'dev1' in warn.call_args[0][0]


@pytest.mark.parametrize('option', ['source_password', 'login_password'])
def test_no_log_on_secrets(option):
    spec = replication_source.argument_spec()
    if option == 'source_password':
        assert spec['channels']['options'][option]['no_log'] is True
    else:
        assert spec[option]['no_log'] is True


def test_patch_module_args_is_used():
    # keeps the import honest for ansible-core 2.19 (patch_module_args is the supported way)
    assert callable(patch_module_args)


def test_mysql_stored_password_makes_always_idempotent(mocker):
    from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.test_replication_fakes import mysql_row
    session = FakeSession(Dialect('mysql', (8, 0, 36)), rows=[mysql_row('dev1', 33001)])
    mocker.patch.object(session, 'try_query', side_effect=lambda sql, params=None: (
        [{'Channel_name': 'dev1', 'User_password': PASSWORD.encode()}]
        if 'slave_master_info' in sql else []))
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001)], 'update_password': 'always'})
    assert result['changed'] is False and session.executed == []
    session.executed = []
    result = run_module(mocker, replication_source, session,
                        {'channels': [channel('dev1', 33001, source_password='rotated')]})
    assert result['channels'][0]['changed_options'] == ['source_password']
    assert result['queries'][0] == "STOP REPLICA IO_THREAD FOR CHANNEL 'dev1'"
