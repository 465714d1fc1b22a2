# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Status parsing, GTID merging, planning and diagnosis (no server needed)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    MASK, Dialect,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_state import (
    PlanError, apply_connection_config, diagnose, diff_options, format_gtid_pos,
    merge_gtid_pos, parse_gtid_pos, parse_rewrite_rules, parse_status_row, plan_channels,
)

MARIADB = Dialect('mariadb', (10, 11, 19))
MYSQL = Dialect('mysql', (8, 0, 36))


def mariadb_row(name='dev1', port=33001, io='Yes', sql='Yes', **extra):
    """One row of MariaDB 10.11 SHOW ALL SLAVES STATUS (columns as the server sends them)."""
    row = {
        'Connection_name': name, 'Slave_SQL_State': '', 'Slave_IO_State': '',
        'Master_Host': '127.0.0.1', 'Master_User': 'repl', 'Master_Port': port,
        'Connect_Retry': 60, 'Master_Log_File': 'binlog.000001', 'Read_Master_Log_Pos': 1234,
        'Relay_Log_File': 'mysqld-relay-bin-%s.000002' % name, 'Relay_Log_Pos': 700,
        'Relay_Master_Log_File': 'binlog.000001', 'Slave_IO_Running': io,
        'Slave_SQL_Running': sql, 'Replicate_Do_DB': '', 'Replicate_Ignore_DB': '',
        'Replicate_Do_Table': '', 'Replicate_Ignore_Table': '', 'Replicate_Wild_Do_Table': '',
        'Replicate_Wild_Ignore_Table': '', 'Last_Errno': 0, 'Last_Error': '', 'Skip_Counter': 0,
        'Exec_Master_Log_Pos': 1234, 'Relay_Log_Space': 1100, 'Until_Condition': 'None',
        'Until_Log_File': '', 'Until_Log_Pos': 0, 'Master_SSL_Allowed': 'No',
        'Master_SSL_CA_File': '', 'Master_SSL_CA_Path': '', 'Master_SSL_Cert': '',
        'Master_SSL_Cipher': '', 'Master_SSL_Key': '',
        'Seconds_Behind_Master': 0 if io == 'Yes' and sql == 'Yes' else None,
        'Master_SSL_Verify_Server_Cert': 'No', 'Last_IO_Errno': 0, 'Last_IO_Error': '',
        'Last_SQL_Errno': 0, 'Last_SQL_Error': '', 'Replicate_Ignore_Server_Ids': '',
        'Master_Server_Id': 301, 'Master_SSL_Crl': '', 'Master_SSL_Crlpath': '',
        'Using_Gtid': 'Slave_Pos', 'Gtid_IO_Pos': '301-301-5', 'Replicate_Do_Domain_Ids': '',
        'Replicate_Ignore_Domain_Ids': '', 'Parallel_Mode': 'optimistic', 'SQL_Delay': 0,
        'SQL_Remaining_Delay': None, 'Slave_SQL_Running_State': '', 'Slave_DDL_Groups': 2,
        'Slave_Non_Transactional_Groups': 0, 'Slave_Transactional_Groups': 3,
        'Replicate_Rewrite_DB': '', 'Retried_transactions': 0,
        'Max_relay_log_size': 1073741824, 'Executed_log_entries': 20,
        'Slave_received_heartbeats': 0, 'Slave_heartbeat_period': 30.0,
        'Gtid_Slave_Pos': '301-301-5',
    }
    row.update(extra)
    return row


def mysql_row(name='dev1', port=33001, io='Yes', sql='Yes', **extra):
    """One row of MySQL 8.0.22+ SHOW REPLICA STATUS."""
    row = {
        'Replica_IO_State': 'Waiting for source to send event', 'Source_Host': '127.0.0.1',
        'Source_User': 'repl', 'Source_Port': port, 'Connect_Retry': 60,
        'Source_Log_File': 'binlog.000003', 'Read_Source_Log_Pos': 157,
        'Relay_Log_File': 'relay-%s.000002' % name, 'Relay_Log_Pos': 373,
        'Relay_Source_Log_File': 'binlog.000003', 'Replica_IO_Running': io,
        'Replica_SQL_Running': sql, 'Replicate_Do_DB': '', 'Replicate_Ignore_DB': '',
        'Last_Errno': 0, 'Last_Error': '', 'Skip_Counter': 0, 'Exec_Source_Log_Pos': 157,
        'Relay_Log_Space': 750, 'Until_Condition': 'None', 'Source_SSL_Allowed': 'No',
        'Source_SSL_CA_File': '', 'Source_SSL_CA_Path': '', 'Source_SSL_Cert': '',
        'Source_SSL_Cipher': '', 'Source_SSL_Key': '',
        'Seconds_Behind_Source': 0 if io == 'Yes' and sql == 'Yes' else None,
        'Source_SSL_Verify_Server_Cert': 'No', 'Last_IO_Errno': 0, 'Last_IO_Error': '',
        'Last_SQL_Errno': 0, 'Last_SQL_Error': '', 'Replicate_Ignore_Server_Ids': '',
        'Source_Server_Id': 11, 'Source_UUID': '3e11fa47-71ca-11e1-9e33-c80aa9429562',
        'Source_Info_File': 'mysql.slave_master_info', 'SQL_Delay': 0,
        'SQL_Remaining_Delay': None,
        'Replica_SQL_Running_State': 'Replica has read all relay log; waiting for more updates',
        'Source_Retry_Count': 86400, 'Source_SSL_Crl': '', 'Source_SSL_Crlpath': '',
        'Retrieved_Gtid_Set': '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5',
        'Executed_Gtid_Set': '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n'
                             'aaaaaaaa-71ca-11e1-9e33-c80aa9429562:1-2',
        'Auto_Position': 1, 'Replicate_Rewrite_DB': '', 'Channel_Name': name,
        'Source_TLS_Version': '', 'Source_public_key_path': '', 'Get_Source_public_key': 0,
        'Network_Namespace': '',
    }
    row.update(extra)
    return row


def mariadb_live(*rows):
    return [parse_status_row(row, True) for row in rows]


def mysql_live(*rows):
    return [parse_status_row(row, False) for row in rows]


def desired(name, **options):
    channel = {'name': name, 'state': 'running', 'use_gtid': True}
    channel.update(options)
    return channel


def queries(plan):
    return plan.queries()


# --- parsing ---------------------------------------------------------------------------

def test_parse_mariadb_row():
    status = parse_status_row(mariadb_row(Replicate_Rewrite_DB='app->dev1_app,x->y'), True)
    assert status['name'] == 'dev1'
    assert status['source_port'] == 33001 and status['source_user'] == 'repl'
    assert status['use_gtid'] is True and status['gtid_mode'] == 'slave_pos'
    assert status['io_thread'] and status['sql_thread']
    assert status['heartbeat_period'] == 30.0 and status['connect_retry'] == 60
    assert status['retry_count'] is None
    assert status['gtid_io_pos'] == '301-301-5'
    assert status['rewrite_db'] == [{'from': 'app', 'to': 'dev1_app'}, {'from': 'x', 'to': 'y'}]
    assert status['ssl'] is False and status['ssl_verify_server_cert'] is False


def test_parse_mariadb_current_pos_is_not_slave_pos():
    status = parse_status_row(mariadb_row(Using_Gtid='Current_Pos'), True)
    assert status['use_gtid'] is False and status['gtid_mode'] == 'current_pos'


def test_parse_mysql_row():
    status = parse_status_row(mysql_row(), False)
    assert status['name'] == 'dev1'
    assert status['use_gtid'] is True and status['gtid_mode'] == 'auto_position'
    assert status['retry_count'] == 86400
    assert status['seconds_behind'] == 0
    assert '\n' not in status['executed_gtid_set']
    assert status['retrieved_gtid_set'].endswith(':1-5')


def test_parse_old_mysql_row_names():
    row = dict((key.replace('Source', 'Master').replace('Replica', 'Slave'), value)
               for key, value in mysql_row().items())
    status = parse_status_row(row, False)
    assert status['source_host'] == '127.0.0.1' and status['io_thread']
    assert status['retry_count'] == 86400


def test_connecting_counts_as_running_io_thread():
    status = parse_status_row(mariadb_row(io='Connecting'), True)
    assert status['io_thread'] is True and status['io_running'] == 'Connecting'


def test_bytes_values_are_decoded():
    status = parse_status_row(mariadb_row(Connection_name=b'dev1', Master_Host=b'h'), True)
    assert status['name'] == 'dev1' and status['source_host'] == 'h'


def test_mysql_connection_config_folds_in():
    statuses = mysql_live(mysql_row())
    apply_connection_config(statuses, [{'CHANNEL_NAME': 'DEV1', 'HEARTBEAT_INTERVAL': '15.000',
                                        'CONNECTION_RETRY_INTERVAL': 30,
                                        'CONNECTION_RETRY_COUNT': 10}])
    assert statuses[0]['heartbeat_period'] == 15.0
    assert statuses[0]['connect_retry'] == 30 and statuses[0]['retry_count'] == 10


def test_parse_rewrite_rules_empty():
    assert parse_rewrite_rules('') == [] and parse_rewrite_rules(None) == []


# --- GTID positions ----------------------------------------------------------------------

def test_gtid_parse_format_roundtrip():
    positions = parse_gtid_pos('5-5-100, 0-1-7')
    assert positions == {0: (0, 1, 7), 5: (5, 5, 100)}
    assert format_gtid_pos(positions) == '0-1-7,5-5-100'
    assert parse_gtid_pos('') == {}


@pytest.mark.parametrize('bad', ['1-2', 'a-b-c', '1-1-1,1-2-3', '1-1-1;2-2-2', '-1-1-1'])
def test_gtid_parse_rejects(bad):
    with pytest.raises(ValueError):
        parse_gtid_pos(bad)


def test_gtid_merge_keeps_other_domains():
    current = parse_gtid_pos('1-1-40,2-2-9')
    merged = merge_gtid_pos(current, parse_gtid_pos('3-3-1842,2-2-12'))
    assert format_gtid_pos(merged) == '1-1-40,2-2-12,3-3-1842'
    assert format_gtid_pos(current) == '1-1-40,2-2-9'


# --- diff ---------------------------------------------------------------------------------

def test_diff_ignores_unset_and_compares_types():
    live = parse_status_row(mariadb_row(), True)
    assert diff_options(desired('dev1', source_port=33001, heartbeat_period=30,
                                source_host='127.0.0.1'), live) == {}
    assert diff_options(desired('dev1', heartbeat_period=30.0004), live) == {}
    assert diff_options(desired('dev1', source_port=33002, connect_retry=60), live) == \
        {'source_port': 33002}
    assert diff_options(desired('dev1', use_gtid=False), live) == {'use_gtid': False}
    assert diff_options(desired('dev1', source_password='x'), live) == {}
    assert diff_options(desired('dev1', source_password='x'), live, password_differs=True) == \
        {'source_password': 'x'}


# --- planning -------------------------------------------------------------------------------

def test_plan_create_two_channels_in_one_call():
    plan = plan_channels(MARIADB, [
        desired('dev1', source_host='127.0.0.1', source_port=33001, source_user='repl',
                source_password='pw'),
        desired('dev2', source_host='127.0.0.1', source_port=33002, source_user='repl',
                source_password='pw', state='stopped'),
    ], [])
    assert queries(plan) == [
        "CHANGE MASTER 'dev1' TO MASTER_HOST='127.0.0.1', MASTER_PORT=33001, MASTER_USER='repl',"
        " MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos" % MASK,
        "CHANGE MASTER 'dev2' TO MASTER_HOST='127.0.0.1', MASTER_PORT=33002, MASTER_USER='repl',"
        " MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos" % MASK,
        "START REPLICA 'dev1'",
    ]
    assert plan.channels['dev1']['actions'] == ['created', 'started']
    assert plan.channels['dev2']['actions'] == ['created']
    assert plan.diff_after['dev1']['source_password'] == MASK
    assert plan.diff_after['dev2']['state'] == 'stopped'


def test_plan_equal_is_unchanged():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2', port=33002))
    plan = plan_channels(MARIADB, [
        desired('dev1', source_host='127.0.0.1', source_port=33001, source_user='repl',
                source_password='pw'),
        desired('DEV2', source_port=33002),
    ], live)
    assert plan.statements == [] and not plan.changed
    assert set(r['action'] for r in plan.channels.values()) == {'unchanged'}


def test_plan_change_one_channel_stops_only_it():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2', port=33002))
    plan = plan_channels(MARIADB, [desired('dev1', source_port=34001),
                                   desired('dev2', source_port=33002)], live)
    assert queries(plan) == ["STOP REPLICA 'dev1'", "CHANGE MASTER 'dev1' TO MASTER_PORT=34001",
                             "START REPLICA 'dev1'"]
    assert plan.channels['dev1']['action'] == 'changed'
    assert plan.channels['dev1']['changed_options'] == ['source_port']
    assert plan.channels['dev2']['action'] == 'unchanged'


def test_plan_mysql_stops_only_the_io_thread_for_connection_options():
    live = mysql_live(mysql_row('dev1'))
    plan = plan_channels(Dialect('mysql', (8, 0, 22)), [desired('dev1', source_port=34001)], live)
    assert queries(plan)[1] == "CHANGE MASTER TO MASTER_PORT=34001 FOR CHANNEL 'dev1'"
    plan = plan_channels(MYSQL, [desired('dev1', source_port=34001)], live)
    assert queries(plan) == ["STOP REPLICA IO_THREAD FOR CHANNEL 'dev1'",
                             "CHANGE REPLICATION SOURCE TO SOURCE_PORT=34001 FOR CHANNEL 'dev1'",
                             "START REPLICA IO_THREAD FOR CHANNEL 'dev1'"]
    plan = plan_channels(Dialect('mysql', (8, 4, 2)), [desired('dev1', delay=3600)], live)
    assert queries(plan) == ["STOP REPLICA SQL_THREAD FOR CHANNEL 'dev1'",
                             "CHANGE REPLICATION SOURCE TO SOURCE_DELAY=3600 FOR CHANNEL 'dev1'",
                             "START REPLICA SQL_THREAD FOR CHANNEL 'dev1'"]


def test_plan_change_of_stopped_channel_needs_no_stop_and_no_start():
    live = mariadb_live(mariadb_row('dev1', io='No', sql='No'))
    plan = plan_channels(MARIADB, [desired('dev1', connect_retry=5, state='stopped')], live)
    assert queries(plan) == ["CHANGE MASTER 'dev1' TO MASTER_CONNECT_RETRY=5"]


def test_plan_start_and_stop():
    live = mariadb_live(mariadb_row('dev1', io='No', sql='No'), mariadb_row('dev2'),
                        mariadb_row('dev3', io='Yes', sql='No'))
    plan = plan_channels(MARIADB, [desired('dev1'), desired('dev2', state='stopped'),
                                   desired('dev3')], live)
    assert queries(plan) == ["START REPLICA 'dev1'", "STOP REPLICA 'dev2'",
                             "START REPLICA 'dev3' SQL_THREAD"]
    assert [plan.channels[k]['action'] for k in ('dev1', 'dev2', 'dev3')] == \
        ['started', 'stopped', 'started']


def test_plan_absent_and_prune():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2', io='No', sql='No'),
                        mariadb_row('old'))
    plan = plan_channels(MARIADB, [desired('dev1', state='absent'), desired('dev2'),
                                   desired('ghost', state='absent')], live, prune_unlisted=True)
    assert queries(plan) == ["STOP REPLICA 'dev1'", "RESET REPLICA 'dev1' ALL",
                             "STOP REPLICA 'old'", "RESET REPLICA 'old' ALL",
                             "START REPLICA 'dev2'"]
    assert plan.channels['dev1']['action'] == 'removed' and not plan.channels['dev1']['pruned']
    assert plan.channels['old']['action'] == 'removed' and plan.channels['old']['pruned']
    assert plan.channels['ghost']['action'] == 'unchanged'
    assert 'old' in plan.diff_before and 'old' not in plan.diff_after


def test_plan_without_prune_leaves_unlisted_alone():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('old'))
    plan = plan_channels(MARIADB, [desired('dev1')], live)
    assert plan.statements == [] and 'old' not in plan.channels


def test_plan_mysql_remove():
    plan = plan_channels(MYSQL, [desired('dev1', state='absent')], mysql_live(mysql_row()))
    assert queries(plan) == ["STOP REPLICA FOR CHANNEL 'dev1'",
                             "RESET REPLICA ALL FOR CHANNEL 'dev1'"]


def test_plan_password_policy():
    live = mariadb_live(mariadb_row('dev1'))
    wanted = [desired('dev1', source_password='new')]
    assert plan_channels(MARIADB, wanted, live).statements == []
    plan = plan_channels(MARIADB, wanted, live, update_password='always')
    assert queries(plan)[1] == "CHANGE MASTER 'dev1' TO MASTER_PASSWORD='%s'" % MASK
    assert plan.diff_after['dev1']['source_password'] == MASK
    assert 'new' not in repr(plan.queries()) and 'new' not in repr(plan.diff_after)


def test_plan_mysql_reads_stored_password():
    live = mysql_live(mysql_row('dev1'))
    wanted = [desired('dev1', source_password='same')]
    assert plan_channels(MYSQL, wanted, live, update_password='always',
                         stored_passwords={'dev1': 'same'}).statements == []
    plan = plan_channels(MYSQL, wanted, live, stored_passwords={'dev1': 'old'})
    assert plan.channels['dev1']['changed_options'] == ['source_password']


def test_plan_use_gtid_on_mysql_stops_both_threads():
    live = mysql_live(mysql_row('dev1', Auto_Position=0))
    plan = plan_channels(MYSQL, [desired('dev1')], live)
    assert queries(plan) == ["STOP REPLICA FOR CHANNEL 'dev1'",
                             "CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=1 FOR CHANNEL 'dev1'",
                             "START REPLICA FOR CHANNEL 'dev1'"]


def test_recovery_restarts_only_channels_meant_to_run():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2'), mariadb_row('dev3'))
    plan = plan_channels(MARIADB, [desired('dev1', source_port=1), desired('dev2', state='absent'),
                                   desired('dev3', source_port=3, state='stopped')], live)
    assert queries(plan) == ["STOP REPLICA 'dev2'", "RESET REPLICA 'dev2' ALL",
                             "STOP REPLICA 'dev1'", "CHANGE MASTER 'dev1' TO MASTER_PORT=1",
                             "STOP REPLICA 'dev3'", "CHANGE MASTER 'dev3' TO MASTER_PORT=3",
                             "START REPLICA 'dev1'"]
    assert plan.recovery(3) == [('dev1', frozenset(['io', 'sql']))]
    assert plan.recovery(1) == []          # dev2 is being removed
    assert plan.recovery(7) == []          # nothing failed
    assert plan.recovery(5) == [('dev1', frozenset(['io', 'sql']))]  # dev3 stays stopped


def test_plan_create_needs_source_host():
    with pytest.raises(PlanError) as exc:
        plan_channels(MARIADB, [desired('dev9')], [])
    assert 'source_host is required' in str(exc.value)


def test_plan_duplicate_names():
    with pytest.raises(PlanError):
        plan_channels(MARIADB, [desired('a', source_host='h'), desired('A', source_host='h')], [])


# --- gtid_pos seeds ------------------------------------------------------------------------

def test_seed_new_channel_merges_by_domain_in_one_stop_window():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2', io='No', sql='No'),
                        mariadb_row('other'))
    plan = plan_channels(MARIADB, [
        desired('dev1'),
        desired('dev2'),
        desired('dev3', source_host='127.0.0.1', source_port=33003, gtid_pos='303-303-9'),
    ], live, gtid_slave_pos='301-301-5,302-302-7,304-304-1')
    assert plan.gtid == {'before': '301-301-5,302-302-7,304-304-1',
                         'after': '301-301-5,302-302-7,303-303-9,304-304-1', 'changed': True}
    assert queries(plan) == [
        "CHANGE MASTER 'dev3' TO MASTER_HOST='127.0.0.1', MASTER_PORT=33003, "
        "MASTER_USE_GTID=slave_pos",
        "STOP REPLICA 'dev1'", "STOP REPLICA 'other'",
        "SET GLOBAL gtid_slave_pos = '301-301-5,302-302-7,303-303-9,304-304-1'",
        "START REPLICA 'other'",
        "START REPLICA 'dev1'", "START REPLICA 'dev2'", "START REPLICA 'dev3'",
    ]
    assert plan.channels['dev1']['action'] == 'unchanged' and plan.channels['dev1']['restarted']
    assert plan.channels['other']['restarted']
    assert plan.channels['dev2']['action'] == 'started'
    assert plan.channels['dev3']['actions'] == ['created', 'started']
    assert plan.channels['dev3']['gtid_seeded'] == ['303-303-9']


def test_seed_is_not_applied_twice_nor_rewinds():
    live = mariadb_live(mariadb_row('dev3'))
    plan = plan_channels(MARIADB, [desired('dev3', gtid_pos='303-303-9')], live,
                         gtid_slave_pos='301-301-5,303-303-50')
    assert plan.statements == []
    assert plan.gtid['changed'] is False
    assert 'domain 303 keeps 303-303-50' in plan.channels['dev3']['gtid_seed_skipped'][0]
    forced = plan_channels(MARIADB, [desired('dev3', gtid_pos='303-303-9', gtid_pos_force=True)],
                           live, gtid_slave_pos='301-301-5,303-303-50')
    assert "SET GLOBAL gtid_slave_pos = '301-301-5,303-303-9'" in queries(forced)


def test_seed_for_existing_channel_with_empty_domain():
    live = mariadb_live(mariadb_row('dev3', io='No', sql='No'))
    plan = plan_channels(MARIADB, [desired('dev3', gtid_pos='303-303-9', state='stopped')], live,
                         gtid_slave_pos='')
    assert queries(plan) == ["SET GLOBAL gtid_slave_pos = '303-303-9'"]
    assert plan.channels['dev3']['changed'] is True


def test_seed_already_equal_is_unchanged():
    live = mariadb_live(mariadb_row('dev3'))
    plan = plan_channels(MARIADB, [desired('dev3', gtid_pos='303-303-9')], live,
                         gtid_slave_pos='303-303-9')
    assert plan.statements == []


def test_seed_conflict_and_mysql():
    with pytest.raises(PlanError) as exc:
        plan_channels(MARIADB, [desired('a', source_host='h', gtid_pos='5-5-1'),
                                desired('b', source_host='h', gtid_pos='5-5-2')], [],
                      gtid_slave_pos='')
    assert 'domain 5' in str(exc.value)
    with pytest.raises(PlanError) as exc:
        plan_channels(MYSQL, [desired('a', source_host='h', gtid_pos='5-5-1')], [])
    assert 'only on MariaDB' in str(exc.value)


def test_seed_stopped_channel_stays_stopped():
    live = mariadb_live(mariadb_row('dev1'), mariadb_row('dev2'))
    plan = plan_channels(MARIADB, [desired('dev1', state='stopped'),
                                   desired('dev2', gtid_pos='9-9-9', gtid_pos_force=True)],
                         live, gtid_slave_pos='9-9-1')
    assert queries(plan) == ["STOP REPLICA 'dev1'", "STOP REPLICA 'dev2'",
                             "SET GLOBAL gtid_slave_pos = '9-9-9'", "START REPLICA 'dev2'"]
    assert plan.channels['dev1']['action'] == 'stopped'


# --- health and diagnosis -------------------------------------------------------------------

def health(row, threshold=300, mariadb=True):
    return diagnose(parse_status_row(row, mariadb), threshold)


def test_health_ok_lagging_stopped():
    assert health(mariadb_row()) == ('ok', '')
    assert health(mariadb_row(Seconds_Behind_Master=900))[0] == 'lagging'
    assert health(mariadb_row(Seconds_Behind_Master=900), threshold=1000)[0] == 'ok'
    assert health(mariadb_row(io='No', sql='No'))[0] == 'stopped'
    assert health(mariadb_row(io='Yes', sql='No'))[0] == 'stopped'
    assert health(mysql_row(Seconds_Behind_Source=400), mariadb=False)[0] == 'lagging'


def test_health_connecting_vs_error():
    offline = mariadb_row(io='Connecting', Last_IO_Errno=2003,
                          Last_IO_Error="error connecting to master 'repl@127.0.0.1:33001'")
    assert health(offline)[0] == 'connecting' and 'unreachable' in health(offline)[1]
    denied = mariadb_row(io='Connecting', Last_IO_Errno=1045, Last_IO_Error='Access denied')
    assert health(denied)[0] == 'error' and 'password' in health(denied)[1]
    purged = mariadb_row(io='No', Last_IO_Errno=1236,
                         Last_IO_Error='Could not find GTID state requested by slave')
    assert health(purged)[0] == 'error' and 're-seed' in health(purged)[1]


def test_health_sql_error_generic():
    row = mariadb_row(sql='No', Last_SQL_Errno=1062,
                      Last_SQL_Error="Could not execute Write_rows_v1 event: Duplicate entry")
    state, text = health(row)
    assert state == 'error' and 'data drift' in text and '1062' in text


def test_diagnosis_qualified_ddl_under_rewrite():
    row = mariadb_row(
        sql='No', Replicate_Rewrite_DB='app->dev1_app', Last_SQL_Errno=1146,
        Last_SQL_Error="Error 'Table 'app.t' doesn't exist' on query. Default database: ''. "
                       "Query: 'ALTER TABLE app.t ADD COLUMN extra INT'")
    state, text = health(row)
    assert state == 'error'
    assert text.startswith('qualified DDL not rewritten by replicate_rewrite_db')
    assert 'app.t' in text and 'app->dev1_app' in text and 'no default database' in text
    assert 'Fix: run ALTER TABLE dev1_app.t ADD COLUMN extra INT on the replica' in text
    assert "SET @@default_master_connection='dev1'" in text


def test_diagnosis_backquoted_and_unknown_database():
    row = mariadb_row(
        sql='No', Replicate_Rewrite_DB='app->dev1_app', Last_SQL_Errno=1049,
        Last_SQL_Error="Error 'Unknown database 'app'' on query. Default database: 'other'. "
                       "Query: 'CREATE TABLE `app`.`t2` (id int)'")
    state, text = health(row)
    assert state == 'error' and text.startswith('qualified DDL not rewritten')
    assert 'CREATE TABLE `dev1_app`.`t2`' in text
    assert "default database 'other'" in text


def test_1146_without_rewrite_rule_is_plain():
    row = mariadb_row(sql='No', Last_SQL_Errno=1146,
                      Last_SQL_Error="Error 'Table 'app.t' doesn't exist' on query.")
    state, text = health(row)
    assert state == 'error' and 'rewrite' not in text and 'seeded' in text


def test_diagnosis_row_event_for_a_table_the_isolation_filter_never_created():
    row = mariadb_row(
        sql='No', Replicate_Rewrite_DB='app->dev1_app', Last_SQL_Errno=1146,
        Last_SQL_Error="Error executing row event: 'Table 'dev1_app.orders' doesn't exist'")
    state, text = health(row)
    assert state == 'error' and text.startswith('table dev1_app.orders is missing on the replica')
    assert 'app.orders without USE app' in text and "START SLAVE 'dev1'" in text


def test_health_1236_for_a_position_another_server_wrote():
    """A device that forged its neighbour's GTID domain on a shared instance (docs/security.md)
    moves the neighbour's position to a GTID of another server id: said so, not 'purged'."""
    text = ("Got fatal error 1236 from master when reading data from binary log: 'Error: connecting slave "
            "requested to start from GTID 301-302-4000000000, which is not in the master's binlog'")
    forged = mariadb_row(io='No', Last_IO_Errno=1236, Last_IO_Error=text, Master_Server_Id=301)
    state, diagnosis = health(forged)
    assert state == 'error'
    assert 'GTID domain 301 (301-302-4000000000) was written by server 302, not by this channel\'s source ' \
           '(server 301)' in diagnosis and 'resync.yml' in diagnosis and 'purged' not in diagnosis
    own = mariadb_row(io='No', Last_IO_Errno=1236, Last_IO_Error=text.replace('301-302-', '301-301-'),
                      Master_Server_Id=301)
    assert 'purged' in health(own)[1]  # its own server's GTID: the usual purged-binlog case
    unknown = mariadb_row(io='No', Last_IO_Errno=1236, Last_IO_Error=text, Master_Server_Id=0)
    assert 'purged' in health(unknown)[1]
