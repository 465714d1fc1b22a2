"""replication_source / replication_info against real MariaDB servers on loopback.

Each module runs as Ansible runs it: a separate Python process reading its arguments from a
JSON file (the collection resolved from ./collections), so argument parsing, no_log handling
and exit JSON are exercised for real.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.live.support import wait_for
from tests.support.mariadb import mariadb_server

pytestmark = pytest.mark.mariadb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = 'Pw-1s-s3cret!'
MODULE_PACKAGE = 'ansible_collections.edgefleet.mysql_backup.plugins.modules.'


def run_module(name, args, check_mode=False, diff=False):
    """Run a module like Ansible does; return its result dict."""
    return run_module_raw(name, args, check_mode, diff)[0]


def run_module_raw(name, args, check_mode=False, diff=False):
    """Run a module like Ansible does; return (result dict, raw stdout)."""
    payload = dict(args)
    payload['_ansible_check_mode'] = check_mode
    payload['_ansible_diff'] = diff
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': payload}, handle)
        path = handle.name
    try:
        env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'collections'))
        proc = subprocess.run([sys.executable, '-m', MODULE_PACKAGE + name, path],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                              check=False)
    finally:
        os.unlink(path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('module %s printed no JSON:\n%s\n%s' % (name, proc.stdout,
                                                                     proc.stderr))
    assert PASSWORD not in proc.stdout, 'replication password leaked into module output'
    assert PASSWORD not in proc.stderr, 'replication password leaked into stderr'
    return result, proc.stdout


def login(server):
    return {'login_host': server.host, 'login_port': server.port, 'login_user': 'root',
            'login_password': '', 'config_file': '/nonexistent/.my.cnf'}


def prepare_source(server, schema):
    server.execute(
        'SET sql_log_bin=0',
        "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
        "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
        'SET sql_log_bin=1',
        'CREATE DATABASE %s' % schema,
        'CREATE TABLE %s.t (id INT PRIMARY KEY, note VARCHAR(20))' % schema,
    )


def channel(name, source, **extra):
    spec = {'name': name, 'source_host': source.host, 'source_port': source.port,
            'source_user': 'repl', 'source_password': PASSWORD}
    spec.update(extra)
    return spec


def rows(server, table):
    try:
        return [row[0] for row in server.execute('SELECT id FROM %s ORDER BY id' % table)]
    except Exception:  # table not there yet
        return []


def status(server):
    import pymysql
    with contextlib.closing(server.connect()) as conn, \
            conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute('SHOW ALL SLAVES STATUS')
        return dict((row['Connection_name'], row) for row in cur.fetchall())


def gtid_slave_pos(server):
    return server.execute('SELECT @@GLOBAL.gtid_slave_pos')[0][0]


@pytest.fixture
def fleet():
    """Two sources with their own gtid_domain_id (301, 302) and one replica (303)."""
    with mariadb_server(server_id=301) as src1, mariadb_server(server_id=302) as src2, \
            mariadb_server(server_id=303) as replica:
        prepare_source(src1, 'app1')
        prepare_source(src2, 'app2')
        yield src1, src2, replica


def test_two_channels_in_one_call_then_idempotent(fleet):
    src1, src2, replica = fleet
    channels = [channel('dev1', src1),
                channel('dev2', src2, heartbeat_period=10, connect_retry=5)]
    src1.execute("INSERT INTO app1.t VALUES (1, 'before')")

    result = run_module('replication_source', dict(login(replica), channels=channels))
    assert result['changed'] is True, result
    assert [(c['name'], c['actions'], c['health']) for c in result['channels']] == [
        ('dev1', ['created', 'started'], 'ok'), ('dev2', ['created', 'started'], 'ok')]
    assert all('********' in q for q in result['queries'] if 'PASSWORD' in q)

    src1.execute("INSERT INTO app1.t VALUES (2, 'after')")
    src2.execute("INSERT INTO app2.t VALUES (7, 'x')")
    wait_for(lambda: rows(replica, 'app1.t') == [1, 2], what='dev1 rows')
    wait_for(lambda: rows(replica, 'app2.t') == [7], what='dev2 rows')
    live = status(replica)
    assert live['dev2']['Slave_heartbeat_period'] == 10.0
    assert live['dev2']['Connect_Retry'] == 5
    assert live['dev1']['Using_Gtid'] == 'Slave_Pos'

    again = run_module('replication_source', dict(login(replica), channels=channels))
    assert again['changed'] is False, again
    assert again['queries'] == []
    assert {c['action'] for c in again['channels']} == {'unchanged'}

    # both sources' domains are in the one global position
    domains = sorted(int(g.split('-')[0]) for g in gtid_slave_pos(replica).split(','))
    assert domains == [301, 302]


def test_check_mode_and_diff_change_nothing(fleet):
    src1, src2, replica = fleet
    run_module('replication_source', dict(login(replica), channels=[channel('dev1', src1)]))
    before = status(replica)

    planned, raw = run_module_raw(
        'replication_source',
        dict(login(replica), channels=[channel('dev1', src1, connect_retry=7),
                                       channel('dev2', src2)]),
        check_mode=True, diff=True)
    assert planned['changed'] is True
    assert any("CHANGE MASTER 'dev2'" in q for q in planned['queries'])
    assert planned['diff']['before']['channels']['dev1']['connect_retry'] == 60
    assert planned['diff']['after']['channels']['dev1']['connect_retry'] == 7
    assert planned['diff']['after']['channels']['dev2']['source_password'] == '********'
    assert PASSWORD not in raw

    after = status(replica)
    assert sorted(after) == ['dev1']
    assert after['dev1']['Connect_Retry'] == before['dev1']['Connect_Retry'] == 60
    assert after['dev1']['Slave_SQL_Running'] == 'Yes'


def test_port_change_touches_only_that_channel(fleet):
    src1, src2, replica = fleet
    channels = [channel('dev1', src1), channel('dev2', src2)]
    run_module('replication_source', dict(login(replica), channels=channels))
    wait_for(lambda: status(replica)['dev2']['Slave_IO_Running'] == 'Yes', what='dev2 io')

    moved = [channel('dev1', src1, source_port=src2.port + 1000), channel('dev2', src2)]
    result = run_module('replication_source', dict(login(replica), channels=moved))
    by_name = dict((c['name'], c) for c in result['channels'])
    assert by_name['dev1']['actions'] == ['changed']
    assert by_name['dev1']['changed_options'] == ['source_port']
    assert by_name['dev2']['action'] == 'unchanged'
    assert all("'dev1'" in q for q in result['queries']), result['queries']
    assert [q.split(' ')[0] for q in result['queries']] == ['STOP', 'CHANGE', 'START']

    live = status(replica)
    assert live['dev1']['Master_Port'] == src2.port + 1000
    assert live['dev2']['Slave_IO_Running'] == 'Yes'

    # and back: the channel resumes by GTID and rows flow again
    back = run_module('replication_source', dict(login(replica), channels=channels))
    assert back['changed'] is True
    src1.execute("INSERT INTO app1.t VALUES (3, 'back')")
    wait_for(lambda: rows(replica, 'app1.t') == [3], what='dev1 resumes')


def test_stopped_absent_and_prune(fleet):
    src1, src2, replica = fleet
    run_module('replication_source',
               dict(login(replica), channels=[channel('dev1', src1), channel('dev2', src2)]))

    stopped = run_module('replication_source',
                         dict(login(replica), channels=[{'name': 'dev1', 'state': 'stopped'}]))
    assert stopped['channels'][0]['action'] == 'stopped'
    assert status(replica)['dev1']['Slave_SQL_Running'] == 'No'
    again = run_module('replication_source',
                       dict(login(replica), channels=[{'name': 'dev1', 'state': 'stopped'}]))
    assert again['changed'] is False

    removed = run_module('replication_source',
                         dict(login(replica), channels=[{'name': 'dev1', 'state': 'absent'}]))
    assert removed['channels'][0]['action'] == 'removed'
    assert sorted(status(replica)) == ['dev2']
    gone = run_module('replication_source',
                      dict(login(replica), channels=[{'name': 'dev1', 'state': 'absent'}]))
    assert gone['changed'] is False

    # prune: the list is the whole fleet of this instance; dev2 is retired, dev1 comes back
    pruned = run_module('replication_source',
                        dict(login(replica), channels=[channel('dev1', src1)],
                             prune_unlisted=True))
    by_name = dict((c['name'], c) for c in pruned['channels'])
    assert by_name['dev2']['action'] == 'removed' and by_name['dev2']['pruned'] is True
    assert by_name['dev1']['actions'] == ['created', 'started']
    assert sorted(status(replica)) == ['dev1']


def test_gtid_pos_seed_merges_by_domain(fleet):
    src1, src2, replica = fleet
    run_module('replication_source', dict(login(replica), channels=[channel('dev1', src1)]))
    src1.execute("INSERT INTO app1.t VALUES (1, 'a')")
    wait_for(lambda: rows(replica, 'app1.t') == [1], what='dev1 rows')
    src1_pos = src1.execute('SELECT @@GLOBAL.gtid_binlog_pos')[0][0]
    wait_for(lambda: gtid_slave_pos(replica) == src1_pos, what='dev1 position applied')
    pos_dev1 = gtid_slave_pos(replica)
    assert pos_dev1.startswith('301-')

    # device 2 already has data; the replica is "seeded" with the same row by hand (as a dump
    # load would), and the channel starts at the position the dump recorded
    src2.execute("INSERT INTO app2.t VALUES (1, 'seeded')")
    seed = src2.execute('SELECT @@GLOBAL.gtid_binlog_pos')[0][0]
    replica.execute('SET sql_log_bin=0', 'CREATE DATABASE app2',
                    'CREATE TABLE app2.t (id INT PRIMARY KEY, note VARCHAR(20))',
                    "INSERT INTO app2.t VALUES (1, 'seeded')")
    src2.execute("INSERT INTO app2.t VALUES (2, 'new')")

    result = run_module('replication_source', dict(
        login(replica), channels=[channel('dev1', src1), channel('dev2', src2, gtid_pos=seed)]))
    assert result['gtid_slave_pos']['changed'] is True
    assert result['gtid_slave_pos']['after'] == ','.join([pos_dev1, seed])
    by_name = dict((c['name'], c) for c in result['channels'])
    assert by_name['dev2']['gtid_seeded'] == [seed]
    assert by_name['dev1']['action'] == 'unchanged' and by_name['dev1']['restarted'] is True
    # gtid_slave_pos is set while every thread is stopped, and dev1 is running afterwards
    verbs = [q.split(' ')[0] + ' ' + q.split(' ')[-1] for q in result['queries']]
    assert verbs.index("STOP 'dev1'") < verbs.index('SET ' + repr(','.join([pos_dev1, seed])))

    wait_for(lambda: rows(replica, 'app2.t') == [1, 2], what='dev2 from the seed')
    src1.execute("INSERT INTO app1.t VALUES (2, 'b')")
    wait_for(lambda: rows(replica, 'app1.t') == [1, 2], what='dev1 still replicating')
    live = status(replica)
    assert live['dev2']['Last_SQL_Errno'] == 0

    # the seed is not applied again: dev2's domain moved on and must never be rewound
    again = run_module('replication_source', dict(
        login(replica), channels=[channel('dev1', src1), channel('dev2', src2, gtid_pos=seed)]))
    assert again['changed'] is False, again['queries']
    assert again['gtid_slave_pos']['changed'] is False
    skipped = dict((c['name'], c) for c in again['channels'])['dev2']['gtid_seed_skipped']
    assert 'domain 302 keeps' in skipped[0]


def test_update_password_on_create_and_always(fleet):
    src1, replica = fleet[0], fleet[2]
    run_module('replication_source', dict(login(replica), channels=[channel('dev1', src1)]))
    other = dict(channel('dev1', src1), source_password=PASSWORD + 'x')
    kept = run_module('replication_source', dict(login(replica), channels=[other]))
    assert kept['changed'] is False
    forced, raw = run_module_raw('replication_source',
                                 dict(login(replica), channels=[channel('dev1', src1)],
                                      update_password='always'), diff=True)
    assert forced['channels'][0]['changed_options'] == ['source_password']
    assert "MASTER_PASSWORD='********'" in forced['queries'][1]
    assert PASSWORD not in raw


def test_bad_input_fails_clearly(fleet):
    src1, replica = fleet[0], fleet[2]
    bad = run_module('replication_source',
                     dict(login(replica), channels=[channel("dev1'; DROP", src1)]))
    assert bad['failed'] is True and 'invalid channel name' in bad['msg']
    dup = run_module('replication_source',
                     dict(login(replica), channels=[channel('Dev1', src1),
                                                    channel('dev1', src1)]))
    assert dup['failed'] is True and 'listed twice' in dup['msg']
    retry = run_module('replication_source',
                       dict(login(replica), channels=[channel('dev1', src1, retry_count=3)]))
    assert retry['failed'] is True and 'master_retry_count' in retry['msg']
    nohost = run_module('replication_source',
                        dict(login(replica), channels=[{'name': 'dev9'}]))
    assert nohost['failed'] is True and 'source_host is required' in nohost['msg']
    seed = run_module('replication_source',
                      dict(login(replica), channels=[channel('dev1', src1, gtid_pos='1-2')]))
    assert seed['failed'] is True and 'gtid_pos' in seed['msg']
    assert status(replica) == {}


def test_replication_info_health(fleet):
    src1, src2, replica = fleet
    run_module('replication_source', dict(login(replica), channels=[
        channel('dev1', src1), channel('dev2', src2, state='stopped')]))
    wait_for(lambda: status(replica)['dev1']['Slave_IO_Running'] == 'Yes', what='dev1 io')
    src1.execute("INSERT INTO app1.t VALUES (1, 'a')")
    wait_for(lambda: rows(replica, 'app1.t') == [1], what='dev1 applied')
    info = run_module('replication_info', dict(login(replica), lag_threshold=60))
    assert info['changed'] is False
    assert info['server']['flavor'] == 'mariadb'
    assert info['server']['gtid_domain_id'] == 303
    by_name = dict((c['name'], c) for c in info['channels'])
    assert by_name['dev1']['health'] == 'ok'
    assert by_name['dev1']['using_gtid'] == 'slave_pos'
    assert by_name['dev1']['source_port'] == src1.port
    assert by_name['dev1']['gtid_applied_pos'].startswith('301-301-')
    assert by_name['dev1']['gtid_applied_pos'] == by_name['dev1']['gtid_io_pos']
    assert by_name['dev2']['health'] == 'stopped'
    assert info['summary'] == {'ok': 1, 'stopped': 1, 'lagging': 0, 'connecting': 0,
                               'error': 0, 'missing': 0, 'total': 2}

    filtered = run_module('replication_info', dict(login(replica), channels=['DEV1', 'nope']))
    assert [(c['name'], c['health']) for c in filtered['channels']] == [('DEV1', 'ok'),
                                                                        ('nope', 'missing')] \
        or [(c['name'], c['health']) for c in filtered['channels']] == [('dev1', 'ok'),
                                                                        ('nope', 'missing')]

    # a channel whose source is gone is "connecting", with the reason
    src2_port = src2.port
    run_module('replication_source', dict(login(replica), channels=[
        dict(channel('dev2', src2), source_port=src2_port + 1000, connect_retry=1)]))
    info = wait_for(lambda: _health(replica, 'dev2', 'connecting'), what='dev2 connecting')
    assert 'unreachable' in info['diagnosis']


def test_replication_info_reads_several_instances_in_one_call(fleet):
    src1, src2, replica = fleet
    run_module('replication_source', dict(login(replica), channels=[channel('dev1', src1)]))
    wait_for(lambda: status(replica)['dev1']['Slave_IO_Running'] == 'Yes', what='dev1 io')
    sockets = {'multi-01': replica.socket, 'empty': src2.socket}
    info = run_module('replication_info', {
        'login_user': 'root', 'login_password': '', 'config_file': '/nonexistent/.my.cnf',
        'instances': [{'name': name, 'login_unix_socket': path} for name, path in sockets.items()]})
    assert info['changed'] is False and 'channels' not in info, info
    assert [entry['name'] for entry in info['instances']] == ['multi-01', 'empty']
    first, second = info['instances']
    assert [c['name'] for c in first['channels']] == ['dev1'] and first['server']['server_id'] == 303
    assert second['channels'] == [] and second['summary']['total'] == 0 and second['server']['server_id'] == 302

    broken = run_module('replication_info', {
        'login_user': 'root', 'login_password': '', 'config_file': '/nonexistent/.my.cnf',
        'instances': [{'name': 'multi-01', 'login_unix_socket': replica.socket},
                      {'name': 'gone', 'login_unix_socket': replica.socket + '.missing'}]})
    assert broken['failed'] is True and '.missing' in broken['msg'], broken

    both = run_module('replication_info', dict(login(replica), instances=[{'name': 'a', 'login_unix_socket': replica.socket}]))
    assert both['failed'] is True and 'mutually exclusive' in both['msg'], both


def test_replication_source_configures_several_instances_in_one_call(fleet):
    src1, src2, replica = fleet
    # Two servers of one host: the replica takes dev1, src2 (a server too) takes dev1's source as
    # its own channel, each through its own socket.
    login_only = {'login_user': 'root', 'login_password': '', 'config_file': '/nonexistent/.my.cnf'}
    instances = [{'name': 'multi-01', 'login_unix_socket': replica.socket, 'channels': [channel('dev1', src1)]},
                 {'name': 'other', 'login_unix_socket': src2.socket, 'channels': [channel('devx', src1)]}]
    planned = run_module('replication_source', dict(login_only, instances=instances), check_mode=True, diff=True)
    assert planned['changed'] is True and [i['name'] for i in planned['instances']] == ['multi-01', 'other'], planned
    assert status(replica) == {} and status(src2) == {}, 'check mode changed a server'
    assert [d['before_header'] for d in planned['diff']] == ['multi-01', 'other']

    made = run_module('replication_source', dict(login_only, instances=instances))
    assert made['changed'] is True and all(i['changed'] for i in made['instances']), made
    assert set(status(replica)) == {'dev1'} and set(status(src2)) == {'devx'}
    again = run_module('replication_source', dict(login_only, instances=instances))
    assert again['changed'] is False and [i['queries'] for i in again['instances']] == [[], []], again

    # Bad input anywhere: nothing is touched on any server.
    bad = [dict(instances[0], channels=[channel('dev2', src2)]),
           dict(instances[1], channels=[channel('devx', src1, source_port=70000)])]
    refused = run_module('replication_source', dict(login_only, instances=bad))
    assert refused['failed'] is True and 'instance other' in refused['msg'], refused
    assert set(status(replica)) == {'dev1'}

    # A server that cannot be reached: the ones before it are done and reported.
    gone = [dict(instances[0], channels=[channel('dev1', src1), channel('dev2', src2)]),
            {'name': 'gone', 'login_unix_socket': replica.socket + '.missing', 'channels': []}]
    failed, output = run_module_raw('replication_source', dict(login_only, instances=gone))
    assert failed['failed'] is True and failed['changed'] is True, failed
    assert [i['name'] for i in failed['instances']] == ['multi-01'] and set(status(replica)) == {'dev1', 'dev2'}
    assert PASSWORD not in output


def _health(replica, name, wanted):
    info = run_module('replication_info', dict(login(replica)))
    report = dict((c['name'], c) for c in info['channels'])[name]
    return report if report['health'] == wanted else None


def test_rewrite_db_qualified_ddl_is_diagnosed():
    """Channel mode: dev1's schema app is rewritten to dev1_app; qualified DDL breaks it."""
    with mariadb_server(server_id=311) as src, mariadb_server(
            server_id=312,
            extra_options=['--dev1.replicate-rewrite-db=app->dev1_app']) as replica:
        prepare_source(src, 'app')
        seed = src.execute('SELECT @@GLOBAL.gtid_binlog_pos')[0][0]
        replica.execute('CREATE DATABASE dev1_app',
                        'CREATE TABLE dev1_app.t (id INT PRIMARY KEY, note VARCHAR(20))')
        result = run_module('replication_source', dict(
            login(replica), channels=[channel('dev1', src, gtid_pos=seed)]))
        assert result['changed'] is True
        with contextlib.closing(src.connect(database='app')) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1, 'rewritten')")
        wait_for(lambda: rows(replica, 'dev1_app.t') == [1], what='rewritten row')

        info = run_module('replication_info', dict(login(replica)))
        assert info['channels'][0]['rewrite_db'] == [{'from': 'app', 'to': 'dev1_app'}]
        assert info['channels'][0]['health'] == 'ok'

        src.execute('ALTER TABLE app.t ADD COLUMN extra INT')  # no default database
        report = wait_for(lambda: _health(replica, 'dev1', 'error'), what='dev1 error')
        assert report['last_sql_errno'] == 1146
        assert report['diagnosis'].startswith(
            'qualified DDL not rewritten by replicate_rewrite_db')
        assert 'app->dev1_app' in report['diagnosis']
        assert 'Fix:' in report['diagnosis']


def test_concurrent_runs_are_serialised(fleet):
    """Two runs at once (AWX slices): the server lock makes one create, the other see it."""
    import threading
    src1, src2, replica = fleet
    args = dict(login(replica), channels=[channel('dev1', src1), channel('dev2', src2)])
    results = []

    def worker():
        results.append(run_module('replication_source', args))

    threads = [threading.Thread(target=worker) for _index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(r.get('failed') for r in results), results
    assert sorted(r['changed'] for r in results) == [False, True], [r['queries'] for r in results]
    assert sorted(status(replica)) == ['dev1', 'dev2']


def test_wrong_password_is_reported_at_start(fleet):
    src1 = fleet[0]
    replica = fleet[2]
    wrong = dict(channel('dev1', src1), source_password=PASSWORD + '-wrong')
    result = run_module('replication_source', dict(login(replica), channels=[wrong]))
    report = result['channels'][0]
    assert report['actions'] == ['created', 'started']
    assert report['health'] == 'error' and 'access denied' in report['diagnosis'].lower()
    assert any('dev1' in str(w) for w in result.get('warnings', []))


def test_replication_info_names_a_position_another_source_wrote(fleet):
    """The documented limit of shared instances (docs/security.md, "GTID domains"): dev2's device,
    as root on its own server, writes under dev1's GTID domain with a huge sequence number; the
    replica records that GTID as dev1's position and dev1's source refuses it at dev1's next
    connect. replication_info says what happened (a position written by another server), where a
    purged binlog would be the usual reading of error 1236."""
    src1, src2, replica = fleet
    run_module('replication_source', dict(login(replica), channels=[channel('dev1', src1), channel('dev2', src2)]))
    src1.execute("INSERT INTO app1.t VALUES (1, 'a')")
    wait_for(lambda: rows(replica, 'app1.t') == [1], what='dev1 applied')
    src2.execute("SET SESSION gtid_domain_id = 301", "SET SESSION gtid_seq_no = 4000000000",
                 "INSERT INTO app2.t VALUES (1, 'under dev1s domain')")
    wait_for(lambda: '301-302-4000000000' in gtid_slave_pos(replica), what="the forged GTID applied")
    replica.execute("STOP SLAVE 'dev1'", "START SLAVE 'dev1'")  # dev1's tunnel drops and comes back
    info = wait_for(lambda: _health(replica, 'dev1', 'error'), what='dev1 refused by its source')
    assert 'was written by server 302, not by this channel\'s source (server 301)' in info['diagnosis'], info
    assert 'resync.yml' in info['diagnosis'] and 'purged' not in info['diagnosis']
