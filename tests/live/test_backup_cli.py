"""edgefleet-backup (plugins/module_utils/backup, main() in backup/cli.py) against real MariaDB
servers on loopback.

Devices are throwaway mariadbd "sources"; replica instances replicate them over GTID exactly as
on a cloud host (instance mode: one device per server; channel mode: named connections with
per-device replicate_rewrite_db). The script runs as it runs on the host: /usr/bin/python3, the
stdlib only, real mariadb-dump, zstd, mariabackup and restic.
"""
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from tests.live.support import wait_for
from tests.support.seaweedfs import seaweedfs
from tests.support.mariadb import mariadb_server

pytestmark = pytest.mark.mariadb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The program as the host's launcher starts it: the system Python in isolated mode importing
# backup.cli from a tree at the collection's import path (here the repository's collections/).
PROGRAM = ['/usr/bin/python3', '-I', '-c',
           'import sys; sys.path.insert(0, %r); '
           'from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.cli import main; '
           'sys.exit(main())' % os.path.join(ROOT, 'collections')]
PASSWORD = 'Pw-backup-test'
DAY = 86400
# Data that would trip a naive line-based schema rewriter or a lossy dump.
TRICKY = "line1\\n-- edgefleet-schema 0000: app\\nUSE `app`;"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def cli(config, *args, now=None, check=True, env=None):
    cmd = PROGRAM + ['--config', config, '--json', '--quiet']
    if now is not None:
        cmd += ['--now', str(int(now))]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=600, check=False)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    except ValueError:
        result = {'raw': proc.stdout}
    if check and proc.returncode != 0:
        raise AssertionError('edgefleet-backup %s failed (%d): %s %s' % (args, proc.returncode, proc.stdout, proc.stderr))
    result['_rc'] = proc.returncode
    return result


def q(server, sql):
    return server.execute(sql)


def gtid_slave_pos(replica):
    return q(replica, 'SELECT @@GLOBAL.gtid_slave_pos')[0][0]


def domain_pos(position, domain):
    return ','.join(p for p in position.split(',') if p and p.split('-')[0] == str(domain))


def sql_running(replica, channel):
    rows = replica.connect().cursor()
    rows.execute('SHOW ALL SLAVES STATUS')
    cols = [c[0] for c in rows.description]
    for row in rows.fetchall():
        item = dict(zip(cols, row))
        if item['Connection_name'] == channel:
            return item['Slave_SQL_Running'] == 'Yes'
    return None


def caught_up(source, replica, domain):
    want = domain_pos(q(source, 'SELECT @@GLOBAL.gtid_binlog_pos')[0][0], domain)
    return lambda: domain_pos(gtid_slave_pos(replica), domain) == want


def checksums(server, schema):
    tables = [r[0] for r in q(server, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='%s' "
                                      "AND TABLE_TYPE='BASE TABLE' ORDER BY 1" % schema)]
    out = {}
    for table in tables:
        out[table] = (q(server, 'CHECKSUM TABLE `%s`.`%s` EXTENDED' % (schema, table))[0][1],
                      q(server, 'SELECT COUNT(*) FROM `%s`.`%s`' % (schema, table))[0][0])
    return out


SCHEMA_DDL = [
    'CREATE TABLE t (id INT PRIMARY KEY, note TEXT, blob_ VARBINARY(64))',
    'CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), n DOUBLE)',
]
OBJECTS_DDL = [
    'CREATE VIEW v_t AS SELECT id, note FROM t',
    'CREATE PROCEDURE bump() UPDATE big SET n = n + 1 WHERE id = 1',
    "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.note = IFNULL(NEW.note, 'default')",
    'CREATE EVENT ev_cleanup ON SCHEDULE EVERY 1 DAY DO DELETE FROM big WHERE id < 0',
]


def bootstrap_source(source):
    """Replication account and the app schema; the schema itself is created with
    sql_log_bin=0 on sources and replicas alike (channel mode needs it under renamed names)."""
    source.execute('SET sql_log_bin=0',
                   "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
                   "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
                   'CREATE DATABASE app', 'USE app', *SCHEMA_DDL)


def bootstrap_replica_schema(replica, name):
    replica.execute('SET sql_log_bin=0', 'CREATE DATABASE %s' % name, 'USE %s' % name, *SCHEMA_DDL)


def start_channel(replica, name, source):
    replica.execute(
        "CHANGE MASTER '%s' TO master_host='127.0.0.1', master_port=%d, master_user='repl', "
        "master_password='%s', master_use_gtid=slave_pos" % (name, source.port, PASSWORD),
        "START SLAVE '%s'" % name)


def write_rows(source, start, count, tag):
    with contextlib.closing(source.connect(database='app')) as conn, conn.cursor() as cur:
        cur.executemany('INSERT INTO big (v, n) VALUES (%s, %s)', [('%s-%d' % (tag, i), i / 7.0) for i in range(count)])
        cur.execute('INSERT INTO t VALUES (%s, %s, %s)', (start, TRICKY + tag, bytes(range(start % 200, start % 200 + 40))))


@contextlib.contextmanager
def fleet_servers():
    """dev1 -> rA (instance mode); dev2 and dev1-as-dev3 -> rB (channel mode)."""
    with contextlib.ExitStack() as stack:
        s1 = stack.enter_context(mariadb_server(server_id=1000, extra_options=['--event-scheduler=ON']))
        s2 = stack.enter_context(mariadb_server(server_id=1001))
        ra = stack.enter_context(mariadb_server(server_id=2000, extra_options=['--log-slave-updates', '--read-only']))
        rb = stack.enter_context(mariadb_server(
            server_id=2001, extra_options=['--log-slave-updates', '--read-only',
                                           '--dev2.replicate-rewrite-db=app->dev2_app',
                                           '--dev3.replicate-rewrite-db=app->dev3_app']))
        for source in (s1, s2):
            bootstrap_source(source)
        bootstrap_replica_schema(ra, 'app')
        bootstrap_replica_schema(rb, 'dev2_app')
        bootstrap_replica_schema(rb, 'dev3_app')
        start_channel(ra, 'dev1', s1)
        start_channel(rb, 'dev2', s2)
        start_channel(rb, 'dev3', s1)
        for source in (s1, s2):
            with contextlib.closing(source.connect(database='app')) as conn, conn.cursor() as cur:
                for statement in OBJECTS_DDL:
                    cur.execute(statement)
        write_rows(s1, 1, 500, 's1')
        write_rows(s2, 1, 300, 's2')
        wait_for(caught_up(s1, ra, 1000), what='rA caught up')
        wait_for(caught_up(s2, rb, 1001), what='rB dev2 caught up')
        wait_for(caught_up(s1, rb, 1000), what='rB dev3 caught up')
        yield {'s1': s1, 's2': s2, 'ra': ra, 'rb': rb}


@pytest.fixture(scope='module')
def fleet():
    with fleet_servers() as servers:
        yield servers


def make_config(tmp_path, fleet, only_dev1=False, **overrides):
    """Write the backup config of dev1 (instance ra), dev2 and dev3 (channels on rb), or of
    dev1 alone; return its path."""
    config = {
        'backup_dir': str(tmp_path / 'backup'),
        'log_file': str(tmp_path / 'backup.log'),
        'lock_file': str(tmp_path / 'backup.lock'),
        'concurrency': 2,
        'min_age': '20h',
        'keep_last': 3,
        'keep_days': 7,
        'databases': ['app'],
        'zstd_level': 3,
        'devices': [
            {'id': 'dev1', 'socket': fleet['ra'].socket, 'mode': 'instance', 'channel': 'dev1',
             'instance': 'dev1', 'gtid_domain_id': 1000},
            {'id': 'dev2', 'socket': fleet['rb'].socket, 'mode': 'channel', 'channel': 'dev2',
             'instance': 'shared', 'schema_prefix': 'dev2_', 'gtid_domain_id': 1001},
            {'id': 'dev3', 'socket': fleet['rb'].socket, 'mode': 'channel', 'channel': 'dev3',
             'instance': 'shared', 'schema_prefix': 'dev3_', 'gtid_domain_id': 1000},
        ],
    }
    if only_dev1:
        config['devices'] = config['devices'][:1]
    config.update(overrides)
    path = tmp_path / 'backup.json'
    path.write_text(json.dumps(config))
    return str(path)


def backups_of(tmp_path, device):
    directory = tmp_path / 'backup' / 'logical' / device
    return sorted(n for n in os.listdir(directory) if n.endswith('.sql.zst')) if directory.exists() else []


def meta_of(tmp_path, device, name):
    return json.loads((tmp_path / 'backup' / 'logical' / device / (name + '.json')).read_text())


def status_of(tmp_path, device):
    return json.loads((tmp_path / 'backup' / 'status' / ('%s.json' % device)).read_text())


CONTRACT = {'device': str, 'last_success_ts': int, 'last_success_file': str, 'last_size_bytes': int,
            'last_duration_s': (int, float), 'last_attempt_ts': int, 'last_attempt_ok': bool,
            'last_error': (str, type(None)), 'last_verify_ts': (int, type(None)),
            'last_verify_ok': (bool, type(None)), 'last_verify_detail': (str, type(None)), 'backups_kept': int}


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------

def test_run_backs_up_every_device_with_metadata_and_status(tmp_path, fleet):
    config = make_config(tmp_path, fleet, checksums='server')
    result = cli(config, 'run')
    assert result['ok'] and sorted(r['device'] for r in result['devices']) == ['dev1', 'dev2', 'dev3']
    base = tmp_path / 'backup'
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o750
    for device in ('dev1', 'dev2', 'dev3'):
        [name] = backups_of(tmp_path, device)
        path = base / 'logical' / device / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
        meta = meta_of(tmp_path, device, name)
        assert meta['ok'] and meta['device'] == device and meta['size_bytes'] == os.path.getsize(path)
        assert meta['sha256'] == subprocess.run(['sha256sum', str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
        assert meta['raw_bytes'] > meta['size_bytes'] > 0
        assert set(meta['tools']) >= {'mariadb-dump', 'zstd', 'server', 'edgefleet-backup'}
        assert meta['position']['device_gtid_pos'].startswith('%d-' % meta['position']['gtid_domain_id'])
        # Only the device's own schemas, under the device's names.
        assert [s['name'] for s in meta['schemas']] == ['app']
        assert set(meta['tables']) == {'app.t', 'app.big'}
        assert meta['objects']['app'] == {'tables': 2, 'views': 1, 'routines': 1, 'triggers': 1, 'events': 1}
        text = subprocess.run(['zstd', '-dc', str(path)], capture_output=True, check=True).stdout.decode()
        assert 'USE `app`;' in text and 'dev2_app' not in text.split('-- MariaDB dump', 1)[0]
        status = status_of(tmp_path, device)
        for key, types in CONTRACT.items():
            assert isinstance(status[key], types), (key, status[key])
        assert status['last_attempt_ok'] is True and status['last_success_file'] == name
        assert status['backups_kept'] == 1 and status['last_verify_ok'] is None
        assert stat.S_IMODE(os.stat(base / 'status' / ('%s.json' % device)).st_mode) == 0o640
    # channel mode: dev2's file holds dev2's rows (s2), dev3's holds s1's
    assert meta_of(tmp_path, 'dev2', backups_of(tmp_path, 'dev2')[0])['tables']['app.big']['rows'] == 300
    assert meta_of(tmp_path, 'dev3', backups_of(tmp_path, 'dev3')[0])['tables']['app.big']['rows'] >= 500
    # SQL threads resumed
    assert sql_running(fleet['ra'], 'dev1') and sql_running(fleet['rb'], 'dev2') and sql_running(fleet['rb'], 'dev3')
    # Not due again within min_age; due again after it
    again = cli(config, 'run')
    assert again['devices'] == []
    later = cli(config, 'run', now=time.time() + DAY)
    assert len(later['devices']) == 3 and all(r['ok'] for r in later['devices'])
    log = (tmp_path / 'backup.log').read_text()
    assert 'dev1: backup ok' in log


def test_restored_tables_equal_the_replica_at_the_recorded_position(tmp_path, fleet):
    """Freeze the replica's SQL thread, write more on the device (the replica falls behind),
    back up, restore into scratch schemas and compare with the frozen replica."""
    rb, s2 = fleet['rb'], fleet['s2']
    rb.execute("STOP SLAVE 'dev2' SQL_THREAD")
    try:
        write_rows(s2, 5000, 200, 'later')
        frozen = domain_pos(gtid_slave_pos(rb), 1001)
        config = make_config(tmp_path, fleet, checksums='server')
        result = cli(config, 'run', '--device', 'dev2')
        assert result['ok']
        name = result['devices'][0]['file']
        meta = meta_of(tmp_path, 'dev2', name)
        assert meta['position']['device_gtid_pos'] == frozen
        assert meta['position']['sql_running_before'] == 'No'
        assert sql_running(rb, 'dev2') is False, 'a channel stopped by someone else must stay stopped'
        path = str(tmp_path / 'backup' / 'logical' / 'dev2' / name)
        restored = cli(config, 'restore', '--file', path, '--socket', rb.socket, '--prefix', 'edgefleet_restore_x_')
        assert restored['ok'], restored
        assert restored['targets'] == {'app': 'edgefleet_restore_x_app'}
        live = checksums(rb, 'dev2_app')
        assert checksums(rb, 'edgefleet_restore_x_app') == live
        assert live['big'][1] == 300  # the 200 later rows are not on the frozen replica
        assert dict((t, (v['checksum'], v['rows'])) for t, v in
                    ((k.split('.', 1)[1], v) for k, v in meta['tables'].items())) == live
        tricky = q(rb, 'SELECT note, HEX(blob_) FROM edgefleet_restore_x_app.t ORDER BY id')
        assert tricky == q(rb, 'SELECT note, HEX(blob_) FROM dev2_app.t ORDER BY id')
        assert any('-- edgefleet-schema 0000' in row[0] for row in tricky)
        assert q(rb, "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='edgefleet_restore_x_app'")[0][0] == 1
    finally:
        rb.execute('SET sql_log_bin=0', 'DROP DATABASE IF EXISTS edgefleet_restore_x_app')
        rb.execute("START SLAVE 'dev2' SQL_THREAD")
    wait_for(caught_up(s2, rb, 1001), what='dev2 caught up again')


def test_verify_passes_then_detects_a_damaged_file(tmp_path, fleet):
    config = make_config(tmp_path, fleet)
    cli(config, 'run')
    result = cli(config, 'verify')
    assert result['ok'] and len(result['devices']) == 3, result
    for device in ('dev1', 'dev2', 'dev3'):
        status = status_of(tmp_path, device)
        assert status['last_verify_ok'] is True and 'match' in status['last_verify_detail']
        assert status['last_verify_file'] == status['last_success_file']
    # Nothing to verify twice
    assert cli(config, 'verify')['devices'] == []
    # No scratch schema left behind
    assert not q(fleet['rb'], "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'edgefleet_verify_%'")
    # Flip one byte in the middle of dev1's newest file
    [name] = backups_of(tmp_path, 'dev1')
    path = tmp_path / 'backup' / 'logical' / 'dev1' / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = cli(config, 'verify', '--all', '--device', 'dev1', check=False)
    assert bad['_rc'] == 1 and not bad['ok']
    status = status_of(tmp_path, 'dev1')
    assert status['last_verify_ok'] is False and 'sha256' in status['last_verify_detail']


def test_dump_digests_verify_and_catch_one_changed_row(tmp_path, fleet):
    """The default method records per-table digests of the dump stream (no row counts, no extra
    scan); verify re-dumps the restored copy. A file whose sha256 is fine but whose data differs
    by one value (re-compressed, metadata sha256 and size updated) fails verify on that table."""
    config = make_config(tmp_path, fleet)
    assert cli(config, 'run', '--device', 'dev2')['ok']
    [name] = backups_of(tmp_path, 'dev2')
    meta = meta_of(tmp_path, 'dev2', name)
    assert meta['checksum_method'] == 'dump' and set(meta['tables']) == {'app.t', 'app.big'}
    for value in meta['tables'].values():
        assert value['rows'] is None and value['checksum'] is None and re.fullmatch('[0-9a-f]{64}', value['digest'])
    assert meta['tables']['app.t']['digest'] != meta['tables']['app.big']['digest']
    result = cli(config, 'verify', '--device', 'dev2')
    assert result['ok'] and status_of(tmp_path, 'dev2')['last_verify_detail'].count('2 tables match') == 1, result
    path = tmp_path / 'backup' / 'logical' / 'dev2' / name
    text = subprocess.run(['zstd', '-dc', str(path)], capture_output=True, check=True).stdout
    big_insert = text.index(b'INSERT INTO `big` VALUES')
    letter = text.index(b"'", text.index(b'(', big_insert)) + 1  # first letter of the first row's v
    changed = text[:letter] + (b'Z' if text[letter:letter + 1] != b'Z' else b'Y') + text[letter + 1:]
    path.write_bytes(subprocess.run(['zstd', '-q', '-3', '-c'], input=changed, capture_output=True, check=True).stdout)
    meta['sha256'] = subprocess.run(['sha256sum', str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    meta['size_bytes'] = os.path.getsize(path)
    (path.parent / (name + '.json')).write_text(json.dumps(meta))
    bad = cli(config, 'verify', '--all', '--device', 'dev2', check=False)
    assert bad['_rc'] == 1 and not bad['ok'], (bad, changed[letter - 20:letter + 20])
    detail = status_of(tmp_path, 'dev2')['last_verify_detail']
    assert 'app.big digest' in detail and 'app.t ' not in detail, detail


def test_failed_run_keeps_every_backup_and_leaves_no_partial(tmp_path, fleet):
    config = make_config(tmp_path, fleet, keep_last=0, keep_days=0)
    cli(config, 'run', '--device', 'dev1')
    [good] = backups_of(tmp_path, 'dev1')
    broken = make_config(tmp_path, fleet, keep_last=0, keep_days=0)
    data = json.loads(open(broken).read())
    data['devices'][0]['socket'] = str(tmp_path / 'no-such.sock')
    with open(broken, 'w') as handle:
        json.dump(data, handle)
    for day in (2, 3, 4):
        failed = cli(broken, 'run', '--device', 'dev1', now=time.time() + day * DAY, check=False)
        assert failed['_rc'] == 1 and failed['devices'][0]['ok'] is False
    assert backups_of(tmp_path, 'dev1') == [good]
    assert not [n for n in os.listdir(tmp_path / 'backup' / 'logical' / 'dev1') if 'partial' in n]
    status = status_of(tmp_path, 'dev1')
    assert status['last_attempt_ok'] is False and status['last_success_file'] == good and status['backups_kept'] == 1
    assert "Can't connect" in status['last_error']
    pruned = cli(broken, 'prune', '--device', 'dev1', now=time.time() + 30 * DAY)
    assert pruned['devices'][0].get('skipped') and backups_of(tmp_path, 'dev1') == [good]


def reference_policy(ages_days_newest_first, keep_last, keep_days):
    """The retention policy as the issue states it, written independently of the code."""
    kept = []
    for index, age in enumerate(ages_days_newest_first):
        if index == 0 or index < keep_last or age < keep_days:
            kept.append(index)
    return kept


@pytest.mark.parametrize('keep_last,keep_days,failing_days', [
    (3, 7, {5, 6, 12, 20, 21, 22}),
    (0, 3, set(range(20, 31))),         # every run after day 19 fails: the last good one stays
])
def test_a_simulated_month_keeps_exactly_the_policy(tmp_path, fleet, keep_last, keep_days, failing_days):
    config = make_config(tmp_path, fleet, keep_last=keep_last, keep_days=keep_days, min_age='1h')
    data = json.loads(open(config).read())
    data['devices'] = data['devices'][:1]
    good_config = tmp_path / 'good.json'
    good_config.write_text(json.dumps(data))
    data['devices'][0]['socket'] = '/nonexistent/socket'
    bad_config = tmp_path / 'bad.json'
    bad_config.write_text(json.dumps(data))
    start = int(time.time()) // DAY * DAY + 3600
    taken = []  # epochs of good backups, as the policy sees them
    for day in range(0, 31):
        now = start + day * DAY + (day * 37 % 600)  # jitter: timers have randomized delays
        failing = day in failing_days
        result = cli(str(bad_config if failing else good_config), 'run', now=now, check=False)
        assert result['ok'] is (not failing)
        if not failing:
            taken.append(now)
        newest_first = sorted(taken, reverse=True)
        kept_idx = reference_policy([(now - t) / DAY for t in newest_first], keep_last, keep_days) \
            if not failing else None
        if kept_idx is not None:
            taken = sorted(newest_first[i] for i in kept_idx)
        names = backups_of(tmp_path, 'dev1')
        assert len(names) == len(taken), (day, names, taken)
        assert [meta_of(tmp_path, 'dev1', n)['started_ts'] for n in names] == taken, day
        assert status_of(tmp_path, 'dev1')['backups_kept'] == len(taken)
    assert taken, 'the newest good backup is never deleted'
    if failing_days == set(range(20, 31)):
        # Nothing is deleted on failed runs: what day 19's policy kept is still there, and the
        # newest good backup (day 19) survives eleven days of failures although keep_last=0.
        # (day 16 ran 489 s later in its day than day 19, so it was still younger than 3 days).
        assert taken == [start + d * DAY + (d * 37 % 600) for d in (16, 17, 18, 19)]
    assert 'retention: removed dev1/' in (tmp_path / 'backup.log').read_text()


def test_restore_refuses_to_overwrite_without_being_told(tmp_path, fleet):
    config = make_config(tmp_path, fleet)
    result = cli(config, 'run', '--device', 'dev2')
    path = str(tmp_path / 'backup' / 'logical' / 'dev2' / result['devices'][0]['file'])
    rb = fleet['rb']
    try:
        refused = cli(config, 'restore', '--file', path, '--socket', rb.socket, '--map', 'app=dev3_app', check=False)
        assert refused['_rc'] == 1 and 'not empty' in refused['error'] and 'nothing was changed' in refused['error']
        rb.execute('SET sql_log_bin=0', 'CREATE DATABASE edgefleet_restore_keep', 'CREATE TABLE edgefleet_restore_keep.x (i INT)')
        refused = cli(config, 'restore', '--file', path, '--socket', rb.socket, '--map', 'app=edgefleet_restore_keep',
                      check=False)
        assert refused['_rc'] == 1
        assert q(rb, 'SHOW TABLES FROM edgefleet_restore_keep') == (('x',),)
        done = cli(config, 'restore', '--file', path, '--socket', rb.socket, '--map', 'app=edgefleet_restore_keep',
                   '--overwrite')
        assert done['ok'] and sorted(r[0] for r in q(rb, 'SHOW FULL TABLES FROM edgefleet_restore_keep')) == ['big', 't', 'v_t']
    finally:
        rb.execute('SET sql_log_bin=0', 'DROP DATABASE IF EXISTS edgefleet_restore_keep')


def test_restore_onto_a_fresh_device_resumes_replication(tmp_path):
    """A dead device is replaced: its backup goes onto a fresh server with the same identity,
    which then continues the device's GTID sequence, and the existing replica channel resumes."""
    with mariadb_server(server_id=1000, extra_options=['--event-scheduler=ON']) as old, \
            mariadb_server(server_id=2000, extra_options=['--log-slave-updates', '--read-only']) as replica:
        bootstrap_source(old)
        bootstrap_replica_schema(replica, 'app')
        start_channel(replica, 'dev1', old)
        with contextlib.closing(old.connect(database='app')) as conn, conn.cursor() as cur:
            for statement in OBJECTS_DDL:
                cur.execute(statement)
        write_rows(old, 1, 1000, 'old')
        wait_for(caught_up(old, replica, 1000), what='replica caught up')
        assert q(replica, "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME='ev_cleanup'")[0][0] == 'SLAVESIDE_DISABLED'
        config = make_config(tmp_path, {'ra': replica, 'rb': replica}, only_dev1=True)
        result = cli(config, 'run')
        path = str(tmp_path / 'backup' / 'logical' / 'dev1' / result['devices'][0]['file'])
        position = result['devices'][0]['position']
        old.stop()  # the device dies
        with mariadb_server(server_id=1000, extra_options=['--event-scheduler=ON']) as fresh:
            fresh.execute('SET sql_log_bin=0', "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
                          "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
            restored = cli(config, 'restore', '--file', path, '--socket', fresh.socket, '--device-target',
                           '--gtid-state', 'auto')
            assert restored['ok'], restored
            assert restored['gtid'] == {'action': 'set', 'gtid_binlog_state': position}
            assert restored['events_enabled'] == ['app.ev_cleanup']
            assert checksums(fresh, 'app') == checksums(replica, 'app')
            assert q(fresh, "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME='ev_cleanup'")[0][0] == 'ENABLED'
            # Restoring again is refused (would overwrite), and the GTID state is left alone.
            again = cli(config, 'restore', '--file', path, '--socket', fresh.socket, '--device-target',
                        '--gtid-state', 'auto', check=False)
            assert again['_rc'] == 1
            # The replica's channel now points at the replacement and resumes without a gap.
            replica.execute("STOP SLAVE 'dev1'", "CHANGE MASTER 'dev1' TO master_port=%d" % fresh.port, "START SLAVE 'dev1'")
            with contextlib.closing(fresh.connect(database='app')) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO t (id, note) VALUES (999999, 'after replacement')")
            assert q(fresh, 'SELECT @@GLOBAL.gtid_binlog_pos')[0][0] == '1000-1000-%d' % (int(position.split('-')[2]) + 1)
            wait_for(lambda: q(replica, 'SELECT COUNT(*) FROM app.t WHERE id = 999999')[0][0] == 1,
                     what='row written on the replacement device reaches the replica')
            assert checksums(fresh, 'app') == checksums(replica, 'app')


def test_physical_backup_prepares_and_matches_the_replica(tmp_path, fleet):
    ra = fleet['ra']
    config = make_config(tmp_path, fleet, physical={
        'enabled': True, 'min_age': '7d', 'keep_last': 2, 'keep_days': 14,
        'instances': [{'name': 'dev1', 'socket': ra.socket, 'datadir': ra.datadir, 'devices': ['dev1']}]})
    ra.execute("STOP SLAVE 'dev1' SQL_THREAD")
    try:
        result = cli(config, 'run', '--physical-only')
        assert result['ok'] and result['instances'][0]['ok'], result
        name = result['instances'][0]['file']
        path = tmp_path / 'backup' / 'physical' / 'dev1' / name
        meta = json.loads((tmp_path / 'backup' / 'physical' / 'dev1' / (name + '.json')).read_text())
        assert meta['size_bytes'] == os.path.getsize(path) and meta['position']['channels'] == ['dev1']
        status = json.loads((tmp_path / 'backup' / 'physical' / 'dev1.status.json').read_text())
        assert status['last_attempt_ok'] is True
        target = tmp_path / 'prepared'
        target.mkdir()
        subprocess.run('zstd -dc %s | mbstream -x -C %s' % (path, target), shell=True, check=True)
        subprocess.run(['mariabackup', '--prepare', '--target-dir=%s' % target], check=True, capture_output=True)
        assert 'gtid_slave_pos' in (target / 'xtrabackup_slave_info').read_text() or \
            (target / 'xtrabackup_slave_info').read_text().strip()
        expected = checksums(ra, 'app')
    finally:
        ra.execute("START SLAVE 'dev1' SQL_THREAD")
    sock = str(tmp_path / 'prepared.sock')
    proc = subprocess.Popen(['/usr/sbin/mariadbd', '--no-defaults', '--user=root', '--datadir=%s' % target,
                             '--socket=%s' % sock, '--skip-networking', '--skip-slave-start',
                             '--innodb-buffer-pool-size=16M', '--log-error=%s' % (tmp_path / 'prepared.err')])
    try:
        wait_for(lambda: os.path.exists(sock) and subprocess.run(
            ['mariadb', '--no-defaults', '--socket=%s' % sock, '-e', 'SELECT 1'], capture_output=True, check=False).returncode == 0,
            what='prepared copy starts')
        got = {}
        for table in expected:
            out = subprocess.run(['mariadb', '--no-defaults', '--socket=%s' % sock, '-N', '-B', '-e',
                                  'CHECKSUM TABLE app.`%s` EXTENDED; SELECT COUNT(*) FROM app.`%s`' % (table, table)],
                                 capture_output=True, text=True, check=True).stdout.split()
            got[table] = (int(out[1]), int(out[2]))
        assert got == expected
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_interrupted_run_leaves_nothing_half_done(tmp_path, fleet):
    """SIGTERM (systemctl stop, timeout) while the dump runs: no partial file, the SQL thread
    resumes, the failure is recorded. A slow dump is a real mariadb-dump behind a sleep."""
    slow = tmp_path / 'slow-dump'
    slow.write_text('#!/bin/sh\nsleep 20\nexec mariadb-dump "$@"\n')
    slow.chmod(0o755)
    config = make_config(tmp_path, fleet, tools={'mariadb-dump': str(slow)}, only_dev1=True)
    proc = subprocess.Popen(PROGRAM + ['--config', config, '--quiet', 'run'])
    directory = tmp_path / 'backup' / 'logical' / 'dev1'
    wait_for(lambda: directory.exists() and any(n.endswith('.partial') for n in os.listdir(directory)),
             what='dump in progress')
    assert sql_running(fleet['ra'], 'dev1') is False
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    assert os.listdir(directory) == []
    assert sql_running(fleet['ra'], 'dev1') is True
    assert status_of(tmp_path, 'dev1')['last_attempt_ok'] is False


def test_killed_run_is_repaired_by_the_next_run(tmp_path, fleet):
    """SIGKILL cannot be caught: the next run resumes the SQL thread a marker says it stopped."""
    ra = fleet['ra']
    config = make_config(tmp_path, fleet)
    held = tmp_path / 'backup' / '.held'
    held.mkdir(parents=True)
    ra.execute("STOP SLAVE 'dev1' SQL_THREAD")
    (held / 'dev1.json').write_text(json.dumps({'socket': ra.socket, 'channel': 'dev1', 'pid': 1}))
    (tmp_path / 'backup' / 'logical' / 'dev1').mkdir(parents=True)
    leftover = tmp_path / 'backup' / 'logical' / 'dev1' / 'dev1-20250101T000000Z.sql.zst.partial'
    leftover.write_bytes(b'half')
    cli(config, 'run', '--device', 'dev1')
    assert sql_running(ra, 'dev1') is True and not os.listdir(held)
    assert not leftover.exists()


def test_second_run_waits_for_the_host_lock(tmp_path, fleet):
    slow = tmp_path / 'slow-dump'
    slow.write_text('#!/bin/sh\nsleep 6\nexec mariadb-dump "$@"\n')
    slow.chmod(0o755)
    config = make_config(tmp_path, fleet, tools={'mariadb-dump': str(slow)}, lock_wait=1)
    proc = subprocess.Popen(PROGRAM + ['--config', config, '--quiet', 'run', '--device', 'dev2'])
    try:
        wait_for((tmp_path / 'backup' / 'logical' / 'dev2').exists, what='first run started')
        second = cli(config, 'run', '--device', 'dev3', check=False)
        assert second['_rc'] == 1 and 'holds' in second['error']
    finally:
        assert proc.wait(timeout=120) == 0


def test_first_backs_up_and_verifies_only_devices_never_backed_up_a_few_per_run(tmp_path, fleet):
    config = make_config(tmp_path, fleet, first_max_per_run=2)
    cli(config, 'run', '--device', 'dev3')  # dev3 has a backup already: first leaves it alone
    before = backups_of(tmp_path, 'dev3')
    result = cli(config, 'first')
    assert result['ok'] and len(result['devices']) == 2, result
    done = sorted(r['device'] for r in result['devices'])
    assert done == ['dev1', 'dev2'] and result['waiting'] == []
    for device in done:
        status = status_of(tmp_path, device)
        assert status['last_success_ts'] and status['last_verify_ok'] is True, status
        assert len(backups_of(tmp_path, device)) == 1
    assert backups_of(tmp_path, 'dev3') == before
    # Nothing left to do: a second run takes no backup.
    again = cli(config, 'first')
    assert again['ok'] and again['devices'] == [] and again['verify'] == []
    assert [len(backups_of(tmp_path, d)) for d in ('dev1', 'dev2')] == [1, 1]


def test_first_waits_for_a_replica_without_the_devices_schema_or_not_applying(tmp_path, fleet):
    """No attempt, no failure recorded, the reason listed: a device enrolled before its program
    created its database, and a channel whose SQL thread is stopped; both are backed up by the
    first run after they are ready."""
    config_path = make_config(tmp_path, fleet)
    config = json.loads(open(config_path, encoding='utf-8').read())
    config['devices'].append({'id': 'dev4', 'socket': fleet['rb'].socket, 'mode': 'channel', 'channel': 'dev4',
                              'instance': 'shared', 'schema_prefix': 'dev4_', 'gtid_domain_id': 1004})
    with open(config_path, 'w', encoding='utf-8') as handle:
        json.dump(config, handle)
    rb = fleet['rb']
    rb.execute("STOP SLAVE 'dev2' SQL_THREAD")
    try:
        result = cli(config_path, 'first', '--device', 'dev2', '--device', 'dev4')
        assert result['ok'] and result['devices'] == [], result
        assert 'SQL thread No' in result['not_ready']['dev2'], result
        assert 'no schema of the device' in result['not_ready']['dev4'], result
        assert backups_of(tmp_path, 'dev2') == backups_of(tmp_path, 'dev4') == []
        assert not (tmp_path / 'backup' / 'status' / 'dev2.json').exists()
    finally:
        rb.execute("START SLAVE 'dev2' SQL_THREAD")
    wait_for(lambda: sql_running(rb, 'dev2'), what='dev2 applying again')
    later = cli(config_path, 'first', '--device', 'dev2', '--device', 'dev4')
    assert [r['device'] for r in later['devices']] == ['dev2'] and list(later['not_ready']) == ['dev4'], later
    assert status_of(tmp_path, 'dev2')['last_verify_ok'] is True


def test_first_rate_limit_and_busy_host(tmp_path, fleet):
    config = make_config(tmp_path, fleet, first_max_per_run=1, lock_wait=1)
    result = cli(config, 'first')
    assert len(result['devices']) == 1 and len(result['waiting']) == 2, result
    assert cli(config, 'first', '--limit', '0', check=False)['_rc'] == 1
    # While another command holds the host lock, first skips (exit 0) instead of queueing.
    slow = tmp_path / 'slow-dump'
    slow.write_text('#!/bin/sh\nsleep 6\nexec mariadb-dump "$@"\n')
    slow.chmod(0o755)
    slow_config = make_config(tmp_path, fleet, tools={'mariadb-dump': str(slow)}, lock_wait=1, first_max_per_run=1)
    proc = subprocess.Popen(PROGRAM + ['--config', slow_config, '--quiet', 'run', '--device', 'dev3'])
    try:
        wait_for((tmp_path / 'backup' / 'logical' / 'dev3').exists, what='the run started')
        busy = cli(config, 'first')
        assert busy['ok'] and 'holds' in busy['skipped'] and busy['devices'] == []
    finally:
        assert proc.wait(timeout=120) == 0


def test_offsite_copy_to_a_restic_repository(tmp_path, fleet):
    if subprocess.run(['sh', '-c', 'command -v restic'], capture_output=True, check=False).returncode:
        pytest.fail('restic is not installed: run `make venv` (apt-get install restic)')
    password = tmp_path / 'restic.pass'
    password.write_text('not-a-real-secret\n')
    password.chmod(0o600)
    repo = tmp_path / 'offsite'
    config = make_config(tmp_path, fleet, offsite={
        'enabled': True, 'repository': str(repo), 'password_file': str(password),
        'cache_dir': str(tmp_path / 'cache'), 'keep_last': 5})
    result = cli(config, 'run')
    assert result['ok'] and result['offsite']['ok'] and result['offsite']['snapshot_id']
    env = dict(os.environ, RESTIC_PASSWORD_FILE=str(password), RESTIC_REPOSITORY=str(repo))
    listing = subprocess.run(['restic', 'ls', 'latest', '--no-cache'], env=env, capture_output=True, text=True, check=True).stdout
    for device in ('dev1', 'dev2', 'dev3'):
        [name] = backups_of(tmp_path, device)
        assert name in listing and name + '.json' in listing
    restore_dir = tmp_path / 'from-offsite'
    subprocess.run(['restic', 'restore', 'latest', '--target', str(restore_dir), '--no-cache'], env=env,
                   check=True, capture_output=True)
    [name] = backups_of(tmp_path, 'dev1')
    copy = restore_dir / str(tmp_path / 'backup' / 'logical' / 'dev1' / name).lstrip('/')
    assert copy.read_bytes() == (tmp_path / 'backup' / 'logical' / 'dev1' / name).read_bytes()
    offsite = json.loads((tmp_path / 'backup' / 'offsite.json').read_text())
    assert offsite['last_attempt_ok'] is True


@pytest.fixture(scope='module')
def s3():
    """A real S3-compatible store (SeaweedFS) on loopback with TLS from a throwaway CA."""
    with seaweedfs('127.0.0.1') as store:
        yield store


def s3_offsite(tmp_path, s3, secret=None, cacert=True, bucket='edgefleet-live'):
    password = tmp_path / 'restic.pass'
    password.write_text('not-a-real-secret\n')
    password.chmod(0o600)
    creds = tmp_path / 's3.json'
    creds.write_text(json.dumps({'access_key_id': s3['access_key_id'],
                                 'secret_access_key': secret or s3['secret_access_key']}))
    creds.chmod(0o600)
    base = 's3:%s/%s/%s/' % (s3['endpoint'], bucket, tmp_path.name)
    return {'enabled': True, 'backend': 's3', 'repository': base + os.uname().nodename, 'repository_pattern': base + '{host}',
            'credentials_file': str(creds), 'cacert': s3['ca_file'] if cacert else '', 'password_file': str(password),
            'cache_dir': str(tmp_path / 'cache'), 'keep_last': 5}


def test_offsite_s3_push_then_fetch_on_a_fresh_host_and_restore(tmp_path, fleet, s3):
    """Push to the object store over TLS; a second host (empty backup dir) lists the first
    host's snapshots, fetches dev1's backups from them and restores one into scratch schemas
    with every checksum equal; a second fetch brings nothing."""
    old, new = tmp_path / 'old', tmp_path / 'new'
    old.mkdir()
    new.mkdir()
    offsite = s3_offsite(tmp_path, s3)
    config = make_config(old, fleet, offsite=offsite)
    result = cli(config, 'run')
    assert result['ok'] and result['offsite']['ok'] and result['offsite']['snapshot_id'], result
    assert json.loads((old / 'backup' / 'offsite.json').read_text())['backend'] == 's3'
    [name] = backups_of(old, 'dev1')
    fresh = make_config(new, fleet, offsite=offsite, devices=[])
    host = os.uname().nodename
    snaps = cli(fresh, 'offsite', 'snapshots', '--from-host', host)
    assert [s['host'] for s in snaps['snapshots']] == [host] and snaps['repository'] == offsite['repository']
    dry = cli(fresh, 'offsite', 'fetch', '--device', 'dev1', '--from-host', host, '--dry-run')
    assert dry['would_fetch'] == [name] and not (new / 'backup' / 'logical' / 'dev1').exists()
    fetched = cli(fresh, 'offsite', 'fetch', '--device', 'dev1', '--from-host', host)
    assert fetched['fetched'] == [name]
    assert (new / 'backup' / 'logical' / 'dev1' / name).read_bytes() == (old / 'backup' / 'logical' / 'dev1' / name).read_bytes()
    assert stat.S_IMODE(os.stat(new / 'backup' / 'logical' / 'dev1' / name).st_mode) == 0o640
    assert cli(fresh, 'offsite', 'fetch', '--device', 'dev1', '--from-host', host)['fetched'] == []
    shown = cli(fresh, 'show', '--device', 'dev1')
    assert shown['file'] == name
    restored = subprocess.run(PROGRAM + ['--json', '--quiet', 'restore', '--file', shown['path'], '--socket', fleet['ra'].socket,
                                         '--prefix', 'edgefleet_restore_dev1_'], capture_output=True, text=True, check=False)
    try:
        out = json.loads(restored.stdout.strip().splitlines()[-1])
        assert restored.returncode == 0 and out['ok'], restored.stdout + restored.stderr
    finally:
        fleet['ra'].execute('SET sql_log_bin=0', 'DROP DATABASE IF EXISTS edgefleet_restore_dev1_app')


def test_offsite_s3_refused_credentials_untrusted_ca_and_unknown_backend_change_nothing(tmp_path, fleet, s3):
    """A refused key or an untrusted certificate: the run keeps its local backups, the push
    fails with the cause named, and no repository (no bucket) is created."""
    bad = s3_offsite(tmp_path, s3, secret='wrong-secret', bucket='edgefleet-refused')
    config = make_config(tmp_path, fleet, only_dev1=True, offsite=bad)
    result = cli(config, 'run', check=False)
    assert result['_rc'] == 1 and result['devices'][0]['ok'], result
    assert 'refused the credentials' in result['offsite']['error'] and 'nothing was written' in result['offsite']['error']
    untrusted = dict(s3_offsite(tmp_path, s3, bucket='edgefleet-refused'), cacert='')
    config = make_config(tmp_path, fleet, only_dev1=True, offsite=untrusted)
    result = cli(config, 'run', '--force', check=False)
    assert result['_rc'] == 1 and 'TLS certificate' in result['offsite']['error'], result
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3['access_key_id'], AWS_SECRET_ACCESS_KEY=s3['secret_access_key'],
               RESTIC_PASSWORD_FILE=bad['password_file'])
    probe = subprocess.run(['restic', '--no-cache', '--cacert', s3['ca_file'], '-r', bad['repository'], 'cat', 'config'],
                           env=env, capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and 'bucket does not exist' in probe.stderr, probe.stderr
    assert len(backups_of(tmp_path, 'dev1')) == 2
    unknown = make_config(tmp_path, fleet, only_dev1=True, offsite=dict(bad, backend='ftp'))
    result = cli(unknown, 'run', check=False)
    assert result['_rc'] == 1 and "unknown offsite backend 'ftp'" in result['error']
    assert len(backups_of(tmp_path, 'dev1')) == 2


def test_list_has_a_header_and_scratch_restores_are_listed_and_dropped(tmp_path, fleet):
    config = make_config(tmp_path, fleet, only_dev1=True)
    cli(config, 'run')
    human = subprocess.run(PROGRAM + ['--config', config, 'list'], capture_output=True, text=True, check=True).stdout
    assert human.splitlines()[0].split() == ['DEVICE', 'FILE', 'TAKEN', '(UTC)', 'BYTES', 'GTID', 'POSITION']
    assert len(human.splitlines()) == 2
    [name] = backups_of(tmp_path, 'dev1')
    path = str(tmp_path / 'backup' / 'logical' / 'dev1' / name)
    subprocess.run(PROGRAM + ['--quiet', 'restore', '--file', path, '--socket', fleet['ra'].socket,
                              '--prefix', 'edgefleet_restore_dev1_'], check=True, capture_output=True)
    try:
        listed = cli(config, 'scratch', 'list', '--device', 'dev1')['schemas']
        assert [(s['schema'], s['device'], s['kind']) for s in listed] == [('edgefleet_restore_dev1_app', 'dev1', 'restore')]
        assert listed[0]['tables'] == 2
        table = subprocess.run(PROGRAM + ['--config', config, 'scratch', 'list'], capture_output=True, text=True,
                               check=True).stdout.splitlines()
        assert table[0].split()[:3] == ['SCHEMA', 'KIND', 'DEVICE'] and 'edgefleet_restore_dev1_app' in table[1]
        refused = cli(config, 'scratch', 'drop', '--device', 'dev1', '--schema', 'app', check=False)
        assert refused['_rc'] == 1 and 'nothing was dropped' in refused['error']
        assert 'app' in [r[0] for r in q(fleet['ra'], 'SHOW DATABASES')]
        dropped = cli(config, 'scratch', 'drop', '--device', 'dev1')['dropped']
        assert [d['schema'] for d in dropped] == ['edgefleet_restore_dev1_app']
        assert cli(config, 'scratch', 'list')['schemas'] == []
    finally:
        fleet['ra'].execute('SET sql_log_bin=0', 'DROP DATABASE IF EXISTS edgefleet_restore_dev1_app')


def test_position_and_data_agree_while_the_device_keeps_writing(tmp_path):
    """One transaction per row on the device while the backup runs: the restored rows are
    exactly the transactions up to the recorded GTID position, no more, no less."""
    import threading  # pylint: disable=import-outside-toplevel
    with mariadb_server(server_id=1000) as source, \
            mariadb_server(server_id=2000, extra_options=['--log-slave-updates', '--read-only']) as replica:
        bootstrap_source(source)
        bootstrap_replica_schema(replica, 'app')
        start_channel(replica, 'dev1', source)
        write_rows(source, 1, 20000, 'bulk')
        wait_for(caught_up(source, replica, 1000), what='replica caught up')
        stop = threading.Event()
        written = []

        def writer():
            with contextlib.closing(source.connect(database='app')) as conn, conn.cursor() as cur:
                row = 100000
                while not stop.is_set():
                    cur.execute("INSERT INTO t (id, note) VALUES (%s, 'live')", (row,))
                    cur.execute('SELECT @@gtid_binlog_pos')
                    written.append((row, int(cur.fetchone()[0].split('-')[2])))
                    row += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(1)
            config = make_config(tmp_path, {'ra': replica, 'rb': replica}, only_dev1=True)
            result = cli(config, 'run')
            time.sleep(1)
        finally:
            stop.set()
            thread.join()
        assert result['ok'] and len(written) > 50
        seq = int(result['devices'][0]['position'].split('-')[2])
        expected = sorted(row for row, gtid in written if gtid <= seq)
        assert expected and len(expected) < len(written), 'the backup must fall in the middle of the writes'
        path = str(tmp_path / 'backup' / 'logical' / 'dev1' / result['devices'][0]['file'])
        restored = cli(config, 'restore', '--file', path, '--socket', replica.socket, '--prefix', 'edgefleet_restore_')
        assert restored['ok'], restored
        got = [r[0] for r in q(replica, "SELECT id FROM edgefleet_restore_app.t WHERE note = 'live' ORDER BY id")]
        assert got == expected
