# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet status logic: states, sorting, summary, table, metrics, HTML (no servers)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status as fs
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status_render as fr
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status_collect as fc
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_html import render_html

NOW = 1700000000


def device(dev_id, port, site='lab', **extra):
    record = {'id': dev_id, 'site': site, 'status': 'active', 'tunnel_mysql_port': port,
              'tunnel_ssh_port': port + 1, 'replica_instance': dev_id, 'replica_mode': 'instance',
              'channel_name': dev_id, 'schema_prefix': ''}
    record.update(extra)
    return record


def channel(name, health='ok', io='Yes', sql='Yes', behind=0, io_errno=0, sql_errno=0,
            io_error='', sql_error='', diagnosis=''):
    return {'name': name, 'health': health, 'io_running': io, 'sql_running': sql,
            'seconds_behind': behind, 'last_io_errno': io_errno, 'last_io_error': io_error,
            'last_sql_errno': sql_errno, 'last_sql_error': sql_error, 'diagnosis': diagnosis,
            'gtid_io_pos': '1-1-5', 'gtid_applied_pos': '1-1-5'}


def good_backup(age=3600, **extra):
    doc = {'device': 'x', 'last_success_ts': NOW - age, 'last_success_file': '/b/x.xb.zst',
           'last_size_bytes': 123456, 'last_duration_s': 4.2, 'last_attempt_ts': NOW - age,
           'last_attempt_ok': True, 'last_error': None, 'last_verify_ts': NOW - age + 60,
           'last_verify_ok': True, 'last_verify_detail': 'restored, 3 tables', 'backups_kept': 7}
    doc.update(extra)
    return doc


def record(dev, listening=None, chan='default', instance_error=None, backup='good',
           consistency=None, thresholds=None):
    if chan == 'default':
        chan = channel(dev['id'])
    if backup == 'good':
        backup = good_backup()
    if listening is None:
        listening = {dev['tunnel_mysql_port'], dev['tunnel_ssh_port']}
    return fs.build_record(dev, 'cloud01', listening, chan, instance_error, backup, consistency,
                           NOW, thresholds)


# --- backup view ---------------------------------------------------------------------

def test_missing_backup_file_means_never_backed_up():
    view = fs.backup_view(None, NOW, 3600)
    assert view['state'] == 'never' and view['age_s'] is None
    assert view['problem'] == 'never backed up'


def test_fresh_verified_backup_is_ok():
    view = fs.backup_view(good_backup(age=600), NOW, 3600)
    assert view['state'] == 'ok' and view['age_s'] == 600 and view['problem'] is None
    assert view['last_verify_ok'] is True and view['backups_kept'] == 7


def test_old_backup_is_stale():
    view = fs.backup_view(good_backup(age=30 * 3600), NOW, 26 * 3600)
    assert view['state'] == 'stale'
    assert '1d 6h ago' in view['problem'] and '1d 2h' in view['problem']


def test_failed_attempt_after_success_and_verify_failure():
    failed = fs.backup_view(good_backup(age=7200, last_attempt_ts=NOW - 60, last_attempt_ok=False,
                                        last_error='disk full'), NOW, 26 * 3600)
    assert failed['state'] == 'failed' and 'disk full' in failed['problem']
    verify = fs.backup_view(good_backup(last_verify_ok=False, last_verify_detail='checksum mismatch'),
                            NOW, 26 * 3600)
    assert verify['state'] == 'verify_failed' and 'checksum mismatch' in verify['problem']


def test_never_verified_is_not_a_problem_and_bad_file_is_reported():
    view = fs.backup_view(good_backup(last_verify_ok=None, last_verify_ts=None), NOW, 26 * 3600)
    assert view['state'] == 'ok'
    assert fs.backup_view({'_error': 'invalid JSON'}, NOW, 1)['state'] == 'invalid'


def test_never_succeeded_but_attempted():
    view = fs.backup_view({'last_success_ts': None, 'last_attempt_ts': NOW - 5,
                           'last_attempt_ok': False, 'last_error': 'tunnel down'}, NOW, 3600)
    assert view['state'] == 'failed' and 'never backed up' in view['problem']


# --- device states -------------------------------------------------------------------

def test_healthy_device_is_ok():
    rec = record(device('d1', 20000))
    assert rec['state'] == 'ok' and rec['problems'] == []
    assert rec['tunnel'] == {'mysql_port': 20000, 'ssh_port': 20001, 'up': True, 'ssh_up': True}
    assert rec['replication']['running'] is True


def test_tunnel_down_is_offline():
    rec = record(device('d1', 20000), listening=set(),
                 chan=channel('d1', health='connecting', io='Connecting', behind=None,
                              io_errno=2003, io_error="Can't connect"))
    assert rec['state'] == 'offline'
    assert rec['problems'][0].startswith('tunnel down: 127.0.0.1:20000')
    assert rec['replication']['running'] is True and rec['replication']['last_errno'] == 2003


def test_sql_error_wins_over_offline_and_names_the_error():
    rec = record(device('d2', 20002), listening=set(),
                 chan=channel('d2', health='error', sql='No', sql_errno=1062,
                              sql_error="Duplicate entry '1'", diagnosis='SQL thread error 1062'))
    assert rec['state'] == 'error'
    assert rec['replication']['last_errno'] == 1062
    assert rec['problems'][0].startswith('replication error 1062')
    assert any(p.startswith('tunnel down') for p in rec['problems'])


def test_missing_channel_and_unreachable_instance_are_errors():
    assert record(device('d1', 20000), chan=None)['state'] == 'error'
    rec = record(device('d1', 20000), chan=None, instance_error='no such socket')
    assert rec['state'] == 'error' and rec['replication']['health'] == 'unknown'
    assert 'no such socket' in rec['problems'][0]


def test_connecting_with_tunnel_up_is_offline():
    rec = record(device('d1', 20000),
                 chan=channel('d1', health='connecting', io='Connecting', behind=None, io_errno=2013))
    assert rec['state'] == 'offline'
    assert 'tunnel up but the device database does not answer' in rec['problems'][0]


def test_stopped_lagging_unbacked_inactive():
    stopped = record(device('a', 1), chan=channel('a', health='stopped', io='No', sql='No',
                                                  diagnosis='both replication threads are stopped'))
    assert stopped['state'] == 'stopped' and stopped['replication']['running'] is False
    lagging = record(device('b', 3), chan=channel('b', health='lagging', behind=900))
    assert lagging['state'] == 'lagging' and lagging['problems'] == ['replication 15m behind']
    unbacked = record(device('c', 5), backup=None)
    assert unbacked['state'] == 'unbacked' and unbacked['problems'] == ['never backed up']
    inactive = record(device('d', 7, status='disabled'), backup=None)
    assert inactive['state'] == 'inactive' and inactive['problems'] == []


def test_diverged_replica_is_an_error():
    rec = record(device('d1', 20000), consistency={
        'state': 'diverged', 'checked_ts': NOW - 10, 'tables_checked': 4,
        'differing_tables': ['app.t', 'app.u'], 'gtid_pos': '1-1-9'})
    assert rec['state'] == 'error'
    assert rec['consistency']['tables_differing'] == 2
    assert 'differs from the device in 2 tables: app.t, app.u' in rec['problems'][0]
    ok = record(device('d1', 20000), consistency={'state': 'ok', 'checked_ts': NOW,
                                                  'tables_checked': 4, 'differing_tables': []})
    assert ok['state'] == 'ok' and ok['consistency']['tables_differing'] == 0


# --- fleet report --------------------------------------------------------------------

def sample_records():
    return [
        record(device('d-ok', 10)),
        record(device('d-offline', 20), listening=set(),
               chan=channel('d-offline', health='connecting', io='Connecting', behind=None,
                            io_errno=2003)),
        record(device('d-error', 30, site='berlin'),
               chan=channel('d-error', health='error', sql='No', sql_errno=1146,
                            sql_error="Table 'app.t' doesn't exist")),
        record(device('d-lag-small', 40), chan=channel('d-lag-small', health='lagging', behind=400)),
        record(device('d-lag-big', 50), chan=channel('d-lag-big', health='lagging', behind=4000)),
        record(device('d-unbacked', 60), backup=None),
    ]


def test_sorted_worst_first_and_lag_within_a_state():
    report = fs.make_report(sample_records(), generated_at=NOW)
    order = [r['device'] for r in report['devices']]
    assert order == ['d-error', 'd-offline', 'd-lag-big', 'd-lag-small', 'd-unbacked', 'd-ok']


def test_summary_counts():
    summary = fs.make_report(sample_records(), generated_at=NOW)['summary']
    assert summary['total'] == 6
    assert (summary['error'], summary['offline'], summary['lagging'], summary['unbacked'],
            summary['ok'], summary['stopped']) == (1, 1, 2, 1, 1, 0)
    assert summary['tunnels_up'] == 5 and summary['replication_running'] == 5
    assert summary['backups_ok'] == 5 and summary['never_backed_up'] == 1
    assert summary['max_lag_s'] == 4000 and summary['sites'] == 2
    line = fr.summary_line(summary)
    assert line.startswith('fleet: 6 devices | 1 error, 1 offline, 0 stopped, 2 lagging, '
                           '1 unbacked, 1 ok | tunnels up 5/6')
    assert '\n' not in line


def test_table_is_aligned_worst_first_and_ends_with_the_summary():
    text = fr.render_table(fs.make_report(sample_records(), generated_at=NOW))
    lines = text.rstrip('\n').split('\n')
    assert lines[0].split()[:4] == ['DEVICE', 'SITE', 'CLOUD', 'STATE']
    assert lines[1].split()[:4] == ['d-error', 'berlin', 'cloud01', 'ERROR']
    assert 'E1146' in lines[1]
    assert lines[2].split()[3:5] == ['OFFLINE', 'DOWN']
    assert lines[-2] == '' and lines[-1].startswith('fleet: 6 devices')
    state_col = lines[0].index('STATE')
    assert all(line[state_col - 2:state_col] == '  ' for line in lines[1:7])


def test_merge_and_unreachable_cloud_host():
    one = fs.make_report(sample_records()[:2], [{'cloud_host': 'cloud01', 'collected_at': NOW,
                                                 'devices': 2, 'instances': []}], NOW)
    lost = fs.unreachable_report([device('far1', 70), device('far2', 72)], 'cloud02', 'timeout',
                                 now=NOW)
    merged = fs.merge_reports([one, lost])
    assert merged['summary']['total'] == 4 and merged['summary']['error'] == 2
    far = [r for r in merged['devices'] if r['cloud_host'] == 'cloud02']
    assert far and all(r['problems'] == ['cloud host cloud02 not reachable: timeout'] for r in far)
    assert [h['cloud_host'] for h in merged['hosts']] == ['cloud01', 'cloud02']


# --- metrics -------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^([a-z_]+)\{(.*)\} (\S+)$')


def parse_metrics(text):
    samples = {}
    for line in text.splitlines():
        if line.startswith('#'):
            continue
        name, labels, value = _SAMPLE_RE.match(line).groups()
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


def value(samples, name, dev, **labels):
    hits = [v for lab, v in samples[name] if lab.get('device') == dev
            and all(lab.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, (name, dev, hits)
    return hits[0]


def test_metrics_per_device():
    report = fs.make_report(sample_records(), [{'cloud_host': 'cloud01', 'collected_at': NOW,
                                                'duration_s': 0.25, 'devices': 6, 'instances': [
                                                    {'name': 'd-ok', 'reachable': True},
                                                    {'name': 'gone', 'reachable': False}]}], NOW)
    text = fr.render_metrics(report)
    samples = parse_metrics(text)
    assert value(samples, 'edgefleet_tunnel_up', 'd-offline') == 0
    assert value(samples, 'edgefleet_tunnel_up', 'd-ok') == 1
    assert value(samples, 'edgefleet_replication_running', 'd-error') == 0
    assert value(samples, 'edgefleet_replication_running', 'd-offline') == 1
    assert value(samples, 'edgefleet_replication_last_error_code', 'd-error') == 1146
    assert value(samples, 'edgefleet_replication_lag_seconds', 'd-lag-big') == 4000
    assert math.isnan(value(samples, 'edgefleet_replication_lag_seconds', 'd-offline'))
    assert value(samples, 'edgefleet_backup_last_success_timestamp_seconds', 'd-unbacked') == 0
    assert value(samples, 'edgefleet_backup_last_success_timestamp_seconds', 'd-ok') == NOW - 3600
    assert value(samples, 'edgefleet_backup_last_size_bytes', 'd-ok') == 123456
    assert value(samples, 'edgefleet_backup_last_verify_ok', 'd-ok') == 1
    assert value(samples, 'edgefleet_backup_last_verify_ok', 'd-unbacked') == -1
    assert value(samples, 'edgefleet_consistency_tables_differing', 'd-ok') == -1
    assert value(samples, 'edgefleet_device_state', 'd-error', state='error') == 1
    states = [sample[0]['state'] for sample in samples['edgefleet_device_state']]
    assert sorted(states) == ['error', 'lagging', 'lagging', 'offline', 'ok', 'unbacked']
    labels = [sample[0] for sample in samples['edgefleet_tunnel_up']]
    assert all(set(lab) == {'device', 'site', 'cloud_host', 'replica'} for lab in labels)
    up = dict((lab['replica'], v) for lab, v in samples['edgefleet_replica_instance_up'])
    assert up == {'d-ok': 1, 'gone': 0}
    assert samples['edgefleet_status_collect_duration_seconds'][0][1] == 0.25
    assert text.count('# TYPE edgefleet_tunnel_up gauge') == 1


def test_metric_labels_are_escaped():
    rec = record(device('d"1', 10, site='a\\b\nc'))
    text = fr.render_metrics(fs.make_report([rec], generated_at=NOW))
    assert 'device="d\\"1",site="a\\\\b\\nc"' in text


@pytest.mark.skipif(not shutil.which('promtool'), reason='promtool not installed')
def test_metrics_pass_promtool_check(tmp_path):
    text = fr.render_metrics(fs.make_report(sample_records(), generated_at=NOW))
    result = subprocess.run(['promtool', 'check', 'metrics'], input=text, text=True,
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- HTML ----------------------------------------------------------------------------

def test_html_has_one_row_per_device_counts_and_no_external_assets():
    report = fs.make_report(sample_records(), generated_at=NOW)
    page = render_html(report)
    assert page.count('<tr data-device=') == 6
    assert 'id="count-error">1<' in page and 'id="count-lagging">2<' in page
    assert 'id="count-total">6<' in page
    assert not re.search(r'(src|href)=["\']?(https?:)?//', page)
    assert '<link' not in page and '@import' not in page
    assert 'data-state="error" data-site="berlin"' in page


def test_html_escapes_everything_from_the_servers():
    rec = record(device('d1', 10), chan=channel(
        'd1', health='error', sql='No', sql_errno=1064,
        sql_error='<script>alert(1)</script> & "quoted"'))
    page = render_html(fs.make_report([rec], generated_at=NOW))
    assert '<script>alert(1)' not in page
    assert '&lt;script&gt;alert(1)&lt;/script&gt; &amp;' in page


def test_report_is_json_serialisable():
    report = fs.make_report(sample_records(), generated_at=NOW)
    assert json.loads(fr.render_json(report))['summary']['total'] == 6


# --- collection (no servers) ---------------------------------------------------------

PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 1 1
   1: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 2 1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0B00E70A:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0100007F:4E22 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1001        0 5 1
"""


def test_listening_ports_loopback_and_any_only(tmp_path):
    path = tmp_path / 'tcp'
    path.write_text(PROC_TCP)
    ports = fc.listening_ports([str(path), str(tmp_path / 'missing')])
    # 20000 and 20001 on loopback, 22 on any; 3306 on another address and 20002 (ESTABLISHED) not
    assert ports == {20000, 20001, 22}


def test_read_json_file(tmp_path):
    assert fc.read_json_file(str(tmp_path / 'nope.json')) is None
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    assert 'invalid JSON' in fc.read_json_file(str(bad))['_error']
    good = tmp_path / 'good.json'
    good.write_text('{"last_success_ts": 5}')
    assert fc.read_json_file(str(good)) == {'last_success_ts': 5}


def test_write_atomic_reports_change(tmp_path):
    path = str(tmp_path / 'x.prom')
    assert fc.write_atomic(path, 'a 1\n') is True
    assert fc.write_atomic(path, 'a 1\n') is False
    assert fc.write_atomic(path, 'a 2\n') is True
    assert open(path).read() == 'a 2\n'
    assert os.listdir(str(tmp_path)) == ['x.prom']


def test_collect_with_unreachable_instances_reads_files(tmp_path):
    backups = tmp_path / 'backup'
    backups.mkdir()
    (backups / 'd1.json').write_text(json.dumps(good_backup()))
    report = fc.collect([device('d1', 20000), device('d2', 20002)], [{'name': 'd1'}], 'cloud01',
                        {'socket_dir': str(tmp_path), 'backup_status_dir': str(backups),
                         'consistency_dir': str(tmp_path / 'none'), 'connect_timeout': 1},
                        now=NOW, listening={20000})
    by_id = dict((r['device'], r) for r in report['devices'])
    assert by_id['d1']['state'] == 'error' and by_id['d1']['tunnel']['up'] is True
    assert by_id['d1']['backup']['state'] == 'ok'
    assert by_id['d2']['tunnel']['up'] is False and by_id['d2']['backup']['state'] == 'never'
    host = report['hosts'][0]
    assert host['cloud_host'] == 'cloud01' and host['devices'] == 2
    assert [i['name'] for i in host['instances']] == ['d1', 'd2']
    assert not any(i['reachable'] for i in host['instances'])
