"""backup on the lab: timer-driven backups of every device from its replica, restores that match
the replica at the recorded position, verify status, retention over a simulated month, offsite
copy to a chrooted SFTP target, and restore.yml / backup_now.yml end to end (including a restore
onto a fresh database server on a device)."""
import base64
import json
import os
import re
import subprocess
import time

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup_policy import DumpDigest
from tests.support.lab import ENV, ROOT, clouds, devices, hostvars, lab_host, replica_schema, replica_socket, sql

DEVICES = devices()
DAY = 86400
BACKUP_DIR = '/var/lib/edgefleet/backup'
CONTRACT = {'device': str, 'last_success_ts': int, 'last_success_file': str, 'last_size_bytes': int,
            'last_duration_s': (int, float), 'last_attempt_ts': int, 'last_attempt_ok': bool,
            'last_error': (str, type(None)), 'last_verify_ts': (int, type(None)),
            'last_verify_ok': (bool, type(None)), 'last_verify_detail': (str, type(None)), 'backups_kept': int}


def cloud_of(device):
    return lab_host(hostvars(device)['edgefleet_cloud_host'])


def cli(host, *args, check=True):
    result = host.run('edgefleet-backup --json --quiet ' + ' '.join("'%s'" % a for a in args))
    if check:
        assert result.rc == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_json(host, path):
    return json.loads(host.file(path).content_string)


def status(device):
    return read_json(cloud_of(device), '%s/status/%s.json' % (BACKUP_DIR, device))


def wait_for(predicate, timeout=180, what='condition', every=3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, ValueError, KeyError):  # file not there yet
            last = None
        if last:
            return last
        time.sleep(every)
    raise AssertionError('timed out after %ss waiting for %s (last: %r)' % (timeout, what, last))


def playbook(*args):
    return subprocess.run(['ansible-playbook', *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def checksums(host, socket, schema):
    tables = [r[0] for r in sql(host, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='%s' "
                                      "AND TABLE_TYPE='BASE TABLE' ORDER BY 1" % schema, socket=socket)]
    return dict((t, sql(host, 'CHECKSUM TABLE `%s`.`%s` EXTENDED' % (schema, t), socket=socket)[0][1]) for t in tables)


def dump_digests(host, socket, schema, meta):
    """Per-table digests of a schema dumped on ``host`` with the backup's options, computed here
    by the collection's own DumpDigest (what verify computes on the cloud host)."""
    options = meta['dump_options']
    dump = host.run('mariadb-dump --no-defaults --socket=%s ' + '%s ' * len(options) + '%s | base64 -w0',
                    socket, *options, schema)
    assert dump.rc == 0, dump.stderr
    digest = DumpDigest()
    digest.feed(base64.b64decode(dump.stdout))
    return digest.digests(tables=[k.split('.', 1)[1] for k in meta['tables']])


def domain_pos(position, domain):
    return ','.join(p for p in position.split(',') if p.split('-')[0] == str(domain))


def channel_sql_running(device):
    hv = hostvars(device)
    out = cloud_of(device).check_output('mariadb --socket=%s -e %s', replica_socket(device),
                                        "SHOW SLAVE '%s' STATUS\\G" % hv['edgefleet_channel_name'])
    return 'Slave_SQL_Running: Yes' in out


# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('cloud', clouds())
def test_units_timers_and_permissions(cloud):
    host = lab_host(cloud)
    for timer in ('edgefleet-backup.timer', 'edgefleet-backup-verify.timer'):
        assert host.service(timer).is_enabled and host.service(timer).is_running
    # backup_first_enabled: false in this scenario: the unit is installed, its timer off.
    assert 'edgefleet-backup first' in host.file('/etc/systemd/system/edgefleet-backup-first.service').content_string
    first_timer = host.service('edgefleet-backup-first.timer')
    assert not first_timer.is_enabled and not first_timer.is_running
    unit = host.file('/etc/systemd/system/edgefleet-backup.service').content_string
    assert 'Type=oneshot' in unit and 'edgefleet-backup run' in unit
    assert 'RandomizedDelaySec=' in host.file('/etc/systemd/system/edgefleet-backup.timer').content_string
    assert host.file(BACKUP_DIR).mode == 0o750 and host.file(BACKUP_DIR + '/status').mode == 0o750
    assert host.file('/etc/edgefleet/backup.json').mode == 0o640
    assert host.file('/etc/edgefleet/backup-offsite_ed25519').mode == 0o600
    assert host.file('/etc/edgefleet/backup-offsite_ed25519.restic-password').mode == 0o600
    # Nothing under the backup directory is readable by other users; no secret in the config.
    assert host.check_output('find %s -perm -o=r' % BACKUP_DIR) == ''
    password = host.file('/etc/edgefleet/backup-offsite_ed25519.restic-password').content_string.strip()
    assert password and password not in host.file('/etc/edgefleet/backup.json').content_string
    # The command is the collection's module_utils, byte for byte, at the collection's import
    # path below the lib dir (its pure logic and the whole backup package among them); the
    # single-script layout before the package is gone.
    shipped = '/usr/local/lib/edgefleet-backup/ansible_collections/edgefleet/mysql_backup/plugins/module_utils'
    package = sorted(name for name in os.listdir('%s/plugins/module_utils/backup' % ROOT) if name.endswith('.py'))
    assert 'cli.py' in package
    for rel in ['backup_policy.py'] + ['backup/' + name for name in package]:
        with open('%s/plugins/module_utils/%s' % (ROOT, rel), encoding='utf-8') as handle:
            assert host.file('%s/%s' % (shipped, rel)).content_string == handle.read(), rel
    for old in ('edgefleet_backup.py', 'backup_policy.py'):
        assert not host.file('/usr/local/lib/edgefleet-backup/' + old).exists


@pytest.mark.parametrize('device', DEVICES)
def test_a_timer_run_backed_up_every_device(device):
    host = cloud_of(device)
    got = wait_for(lambda: status(device).get('last_success_ts') and status(device), what='%s backed up' % device)
    for key, types in CONTRACT.items():
        assert isinstance(got[key], types), (key, got[key])
    assert got['backups_kept'] >= 1
    # The first backup was made by the service the timer starts, not by hand.
    first = cli(host, 'list', '--device', device)['devices'][0]['backups'][0]
    meta = read_json(host, first['path'] + '.json')
    assert meta['invoked_by'] == 'systemd:edgefleet-backup.service', meta['invoked_by']
    assert host.service('edgefleet-backup.timer').is_running
    assert meta['device'] == device and meta['ok'] and meta['sha256'] and meta['size_bytes'] == got['last_size_bytes']
    assert meta['position']['gtid_domain_id'] == hostvars(device)['edgefleet_gtid_domain_id']
    assert set(meta['tools']) >= {'mariadb-dump', 'zstd', 'server', 'edgefleet-backup', 'python'}
    assert 'app.backup_demo' in meta['tables']
    print('%s: %s, %d bytes (%d raw), %.2fs, SQL thread paused %.2fs' % (
        device, meta['file'], meta['size_bytes'], meta['raw_bytes'], meta['duration_s'], meta['sql_thread_paused_s']))


@pytest.mark.parametrize('device', DEVICES)
def test_every_backup_decompresses_and_restores_to_the_recorded_checksums(device):
    host = cloud_of(device)
    listing = cli(host, 'list', '--device', device)['devices'][0]['backups']
    assert listing
    try:
        for backup in listing:
            assert host.run('zstd -q -t %s', backup['path']).rc == 0
            result = cli(host, 'restore', '--file', backup['path'], '--socket', replica_socket(device),
                         '--prefix', 'edgefleet_restore_t_', '--overwrite')
            assert result['ok'], result
            assert result['tables'] == backup['tables'] and 'match' in result['detail']
    finally:
        host.run('mariadb --socket=%s -e %s', replica_socket(device),
                 'SET sql_log_bin=0; DROP DATABASE IF EXISTS edgefleet_restore_t_app')


@pytest.mark.parametrize('device', DEVICES)
def test_restored_tables_equal_the_replica_at_the_recorded_position(device):
    """Freeze the device's channel, write on the device (the replica falls behind), back up, and
    compare the restored copy with the frozen replica, table by table."""
    hv = hostvars(device)
    cloud, socket, channel = cloud_of(device), replica_socket(device), hv['edgefleet_channel_name']
    schema = replica_schema(device)
    cloud.check_output('mariadb --socket=%s -e %s', socket, "STOP SLAVE '%s' SQL_THREAD" % channel)
    try:
        lab_host(device).check_output('mariadb -e %s', "INSERT INTO app.backup_demo (device, payload, amount) "
                                                       "VALUES ('%s', 'written while frozen', 1)" % device)
        frozen = domain_pos(sql(cloud, 'SELECT @@GLOBAL.gtid_slave_pos', socket=socket)[0][0], hv['edgefleet_gtid_domain_id'])
        result = cli(cloud, 'run', '--force', '--no-physical', '--no-offsite', '--device', device)
        backup = result['devices'][0]
        assert backup['ok'] and backup['position'] == frozen
        assert not channel_sql_running(device), 'a channel stopped before the backup stays stopped'
        path = '%s/logical/%s/%s' % (BACKUP_DIR, device, backup['file'])
        restored = cli(cloud, 'restore', '--file', path, '--socket', socket, '--prefix', 'edgefleet_restore_f_',
                       '--overwrite')
        assert restored['ok'], restored
        live = checksums(cloud, socket, schema)
        assert live and checksums(cloud, socket, 'edgefleet_restore_f_app') == live
    finally:
        cloud.run('mariadb --socket=%s -e %s', socket, 'SET sql_log_bin=0; DROP DATABASE IF EXISTS edgefleet_restore_f_app')
        cloud.check_output('mariadb --socket=%s -e %s', socket, "START SLAVE '%s' SQL_THREAD" % channel)
    assert wait_for(lambda: channel_sql_running(device), timeout=30, what='channel running again')


@pytest.mark.parametrize('cloud', clouds())
def test_verify_runs_and_is_recorded_in_the_status(cloud):
    host = lab_host(cloud)
    host.check_output('systemctl start edgefleet-backup-verify.service')
    here = [d for d in DEVICES if hostvars(d)['edgefleet_cloud_host'] == cloud]
    for device in here:
        got = status(device)
        assert got['last_verify_ok'] is True, got
        assert got['last_verify_file'] == got['last_success_file']
        assert 'match at %s' % got['last_success_gtid'] in got['last_verify_detail']
        assert not sql(host, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'edgefleet\\_verify\\_%'",
                       socket=replica_socket(device))


SIMULATION = r'''
import json, subprocess, sys
base = json.load(open('/etc/edgefleet/backup.json'))
device = [d for d in base['devices'] if d['id'] == %(device)r][0]
work = '/var/tmp/edgefleet-backup-sim'
subprocess.run(['rm', '-rf', work], check=True)
good = dict(base, backup_dir=work + '/backup', log_file=work + '/backup.log', lock_file=work + '/lock',
            keep_last=%(keep_last)d, keep_days=%(keep_days)d, min_age='1h', devices=[device],
            physical={'enabled': False}, offsite={'enabled': False})
bad = dict(good, devices=[dict(device, socket='/nonexistent/edgefleet.sock')])
subprocess.run(['mkdir', '-p', work], check=True)
json.dump(good, open(work + '/good.json', 'w'))
json.dump(bad, open(work + '/bad.json', 'w'))
days = []
for day, now in enumerate(%(times)r):
    config = work + ('/bad.json' if day in %(failing)r else '/good.json')
    run = subprocess.run(['edgefleet-backup', '--config', config, '--json', '--quiet', '--now', str(now), 'run'],
                         capture_output=True, text=True)
    listing = json.loads(subprocess.run(['edgefleet-backup', '--config', work + '/good.json', '--json', 'list'],
                                        capture_output=True, text=True, check=True).stdout)
    status = json.load(open(work + '/backup/status/%(device)s.json'))
    days.append({'rc': run.returncode, 'kept': [b['ts'] for b in listing['devices'][0]['backups']],
                 'backups_kept': status['backups_kept'], 'last_attempt_ok': status['last_attempt_ok']})
print(json.dumps({'days': days, 'log': open(work + '/backup.log').read()}))
subprocess.run(['rm', '-rf', work], check=True)
'''


def reference_policy(taken_newest_first, now, keep_last, keep_days):
    """The policy as the issue states it, independent of the code under test."""
    return [t for i, t in enumerate(taken_newest_first) if i == 0 or i < keep_last or now - t < keep_days * DAY]


@pytest.mark.parametrize('keep_last,keep_days,failing', [
    (3, 7, {4, 5, 11, 18, 19, 20}),
    (0, 3, set(range(21, 31))),     # every run after day 20 fails: the last good backup stays
])
def test_retention_over_a_simulated_month(keep_last, keep_days, failing):
    device = DEVICES[0]
    host = cloud_of(device)
    start = int(time.time()) // DAY * DAY - 40 * DAY + 3600
    times = [start + day * DAY + (day * 211) % 1800 for day in range(31)]  # randomized timer delay
    script = SIMULATION % dict(device=device, keep_last=keep_last, keep_days=keep_days, times=times, failing=failing)
    out = host.check_output("python3 - <<'EOF'\n%s\nEOF" % script)
    result = json.loads(out.strip().splitlines()[-1])
    taken = []
    for day, (now, got) in enumerate(zip(times, result['days'])):
        if day in failing:
            assert got['rc'] == 1 and got['last_attempt_ok'] is False
        else:
            assert got['rc'] == 0 and got['last_attempt_ok'] is True
            taken = sorted(reference_policy(sorted(taken + [now], reverse=True), now, keep_last, keep_days))
        assert got['kept'] == taken, (day, got['kept'], taken)
        assert got['backups_kept'] == len(taken)
    assert taken[-1] == times[max(set(range(31)) - failing)], 'the newest good backup is kept'
    assert 'retention: removed %s/' % device in result['log']


@pytest.mark.parametrize('cloud', clouds())
def test_offsite_copy_on_the_sftp_target(cloud):
    host = lab_host(cloud)
    # Earlier tests made backups with --no-offsite after the timer's push: a plain run (nothing is
    # due again) pushes whatever is newer than the last push, so the latest snapshot holds them.
    pushed = cli(host, 'run')['offsite']
    assert pushed is None or pushed['ok'], pushed
    offsite = wait_for(lambda: read_json(host, BACKUP_DIR + '/offsite.json').get('last_attempt_ok')
                       and read_json(host, BACKUP_DIR + '/offsite.json'), what='offsite push')
    assert offsite['snapshot_id']
    config = read_json(host, '/etc/edgefleet/backup.json')['offsite']
    listing = host.check_output(
        'RESTIC_PASSWORD_FILE=%s RESTIC_REPOSITORY=%s restic --no-cache -o sftp.command=%s ls latest',
        config['password_file'], config['repository'], config['sftp_command'])
    for device in [d for d in DEVICES if hostvars(d)['edgefleet_cloud_host'] == cloud]:
        assert status(device)['last_success_file'] in listing
    # The repository lives in the chroot, owned by the SFTP account, encrypted (no file names).
    assert host.file('/srv/sftp-chroot%s/config' % config['repository'].split(':', 2)[2]).user == 'sftp-backup'
    assert host.run('grep -rl %s /srv/sftp-chroot', DEVICES[0]).rc == 1
    # The account is SFTP only.
    shell = host.run('ssh -i /etc/edgefleet/backup-offsite_ed25519 -p 2222 -o BatchMode=yes '
                     '-o UserKnownHostsFile=/etc/edgefleet/backup-offsite_ed25519.known_hosts sftp-backup@127.0.0.1 id')
    assert shell.rc != 0 or 'uid=' not in shell.stdout


def test_backup_now_playbook():
    device = DEVICES[0]
    before = status(device)['last_success_ts']
    time.sleep(1)
    run = playbook('playbooks/backup_now.yml', '-e', json.dumps({'backup_now_devices': [device], 'backup_now_verify': True}))
    assert run.returncode == 0, run.stdout[-3000:]
    assert 'changed=1' in run.stdout
    after = status(device)
    assert after['last_success_ts'] > before and after['last_verify_file'] == after['last_success_file']
    # The verify outcome is printed, naming the file it restored.
    assert 'Show the verify outcome' in run.stdout and after['last_verify_file'] in run.stdout.split('Show the verify outcome')[1]


def test_restore_playbook_into_scratch_schemas_refuses_silent_overwrite():
    device = DEVICES[0]
    cloud, socket = cloud_of(device), replica_socket(device)
    target = 'edgefleet_restore_%s_app' % device
    try:
        first = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % device)
        assert first.returncode == 0, first.stdout[-3000:]
        assert 'match' in first.stdout and sql(cloud, 'SELECT COUNT(*) FROM `%s`.backup_demo' % target, socket=socket)[0][0] != '0'
        again = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % device)
        assert again.returncode != 0 and 'not empty' in again.stdout
        unconfirmed = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % device, '-e', 'restore_overwrite=true')
        assert unconfirmed.returncode != 0 and 'Nothing was changed' in unconfirmed.stdout
        confirmed = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % device, '-e', 'restore_overwrite=true',
                             '-e', 'restore_confirm=%s' % device)
        assert confirmed.returncode == 0, confirmed.stdout[-3000:]
        too_early = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % device, '-e', 'restore_as_of=2001-01-01')
        assert too_early.returncode != 0 and 'at or before' in too_early.stdout
        # --check inspects the target: the device's app holds backup_demo, so the run would be
        # refused, and --check says so, naming the schema, and that a fresh backup comes first.
        listed = cli(cloud, 'scratch', 'list', '--device', device)['schemas']
        assert [s['schema'] for s in listed if s['kind'] == 'restore'] == [target]
        backups_before = len(cli(cloud, 'list', '--device', device)['devices'][0]['backups'])
        checked = playbook('playbooks/restore.yml', '--check', '-e', 'restore_device=%s' % device, '-e',
                           'restore_target=device', '-e', 'restore_confirm=%s' % device, '-e', 'restore_fresh=true')
        said = ' '.join(re.sub(r'\x1b\[[0-9;]*m', '', checked.stdout).split())
        assert checked.returncode != 0, checked.stdout[-3000:]
        assert 'A FRESH BACKUP of the replica would be taken first' in said, checked.stdout[-3000:]
        assert 'WOULD BE REFUSED, nothing would change: target schema(s) app already exist and are not empty' in said
        assert 'check mode: the real run would be refused the same way' in said
        assert len(cli(cloud, 'list', '--device', device)['devices'][0]['backups']) == backups_before
        dropped = cli(cloud, 'scratch', 'drop', '--device', device)['dropped']
        assert [d['schema'] for d in dropped] == [target]
        assert target not in [row[0] for row in sql(cloud, 'SHOW DATABASES', socket=socket)]
    finally:
        cloud.run('mariadb --socket=%s -e %s', socket, 'SET sql_log_bin=0; DROP DATABASE IF EXISTS `%s`' % target)


FRESH = '/var/tmp/edgefleet-fresh'


def test_restore_playbook_onto_a_fresh_device_brings_its_data_back():
    """A replacement device: an empty MariaDB server with the device's identity (server_id,
    gtid_domain_id) on the device host; restore.yml loads the backup taken from the replica."""
    device = DEVICES[-1]
    hv = hostvars(device)
    host, cloud = lab_host(device), cloud_of(device)
    sock = FRESH + '/mysqld.sock'
    host.run('systemctl stop edgefleet-fresh-db; systemctl reset-failed edgefleet-fresh-db; rm -rf %s' % FRESH)
    host.check_output('install -d -o mysql -g mysql %s && mariadb-install-db --user=mysql --datadir=%s/data '
                      '--skip-test-db >/dev/null 2>&1' % (FRESH, FRESH))
    host.check_output(
        'systemd-run --unit edgefleet-fresh-db --uid=mysql --gid=mysql /usr/sbin/mariadbd --no-defaults '
        '--datadir=%s/data --socket=%s --skip-networking --server-id=%d --gtid-domain-id=%d --log-bin=fresh-bin '
        '--binlog-format=ROW --innodb-buffer-pool-size=16M --performance-schema=OFF' % (
            FRESH, sock, hv['edgefleet_server_id'], hv['edgefleet_gtid_domain_id']))
    try:
        wait_for(lambda: host.run('mariadb --socket=%s -e "SELECT 1"', sock).rc == 0, timeout=60, what='fresh server')
        base = ['playbooks/restore.yml', '-e', 'restore_device=%s' % device, '-e', 'restore_target=device',
                '-e', 'restore_device_socket=%s' % sock, '-e', 'restore_fresh=true']
        refused = playbook(*base)
        assert refused.returncode != 0 and 'Nothing was changed' in refused.stdout
        assert 'app' not in host.check_output('mariadb --socket=%s -N -e "SHOW DATABASES"', sock).split()
        done = playbook(*base, '-e', 'restore_confirm=%s' % device)
        assert done.returncode == 0, done.stdout[-4000:]
        assert 'action: set' in done.stdout or "'action': 'set'" in done.stdout, done.stdout[-3000:]
        newest = status(device)
        position = newest['last_success_gtid']
        assert host.check_output('mariadb --socket=%s -N -e "SELECT @@GLOBAL.gtid_binlog_state"', sock) == position
        restored = checksums(host, sock, 'app')
        meta = read_json(cloud, '%s/logical/%s/%s.json' % (BACKUP_DIR, device, newest['last_success_file']))
        rows = int(host.check_output('mariadb --socket=%s -N -e "SELECT COUNT(*) FROM app.backup_demo"', sock))
        assert rows >= 100000
        if meta['checksum_method'] == 'server':
            assert restored == dict((k.split('.', 1)[1], str(v['checksum'])) for k, v in meta['tables'].items())
            assert rows == meta['tables']['app.backup_demo']['rows']
        else:  # the default: the restored tables dump to the digests recorded from the replica
            assert meta['checksum_method'] == 'dump'
            assert dump_digests(host, sock, 'app', meta) == dict(
                (k.split('.', 1)[1], v['digest']) for k, v in meta['tables'].items())
        replica_now = domain_pos(sql(cloud, 'SELECT @@GLOBAL.gtid_slave_pos', socket=replica_socket(device))[0][0],
                                 hv['edgefleet_gtid_domain_id'])
        if replica_now == position:  # nobody wrote on the device meanwhile: equal to the live replica too
            assert restored == checksums(cloud, replica_socket(device), replica_schema(device))
        # Nothing of the restore went to the binlog: only the GTID state was set.
        assert host.check_output('mariadb --socket=%s -N -e "SELECT @@GLOBAL.gtid_binlog_pos"', sock) == position
    finally:
        host.run('systemctl stop edgefleet-fresh-db; systemctl reset-failed edgefleet-fresh-db; rm -rf %s' % FRESH)
