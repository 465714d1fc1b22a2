# -*- coding: utf-8 -*-
"""Change-stream observability: lag, backlog, per-device stream state, metrics and the status
table's STREAM column (pure logic; the files it reads in tmp_path, no servers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status as fs
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status_render as fr
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import observe
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import GtidError

NOW = 1700000000.0
DEVICES = [{'id': 'dev1', 'gtid_domain_id': 11, 'server_id': 11, 'schema_prefix': 'dev1_'},
           {'id': 'dev2', 'gtid_domain_id': 12, 'server_id': 12, 'schema_prefix': 'dev2_'}]
CAPTURE = {'replica': {'unix_socket': '/run/mysqld/x.sock'}, 'checkpoint': '/var/lib/x/checkpoint',
           'devices': DEVICES, 'start_gtid_pos': ''}
FANIN = {'central': {'database': 'fanin'}, 'queue': 'edgefleet.fanin', 'broker': {}}


def queues(ready=0, consumers=1, dead=0, **others):
    found = {'fanin': {'messages': ready, 'consumers': consumers}, 'dead': {'messages': dead, 'consumers': 0}}
    found.update(('other:' + name.replace('_', '.'), {'messages': n, 'consumers': 0}) for name, n in others.items())
    return found


def capture(checkpoint_seqs, replica_seqs, age=5.0, name='changestream-r1'):
    checkpoint = None if checkpoint_seqs is None else {'seqs': checkpoint_seqs, 'mtime': NOW - age}
    return observe.capture_view(name, CAPTURE, checkpoint, {'seqs': replica_seqs}, NOW)


def report_with(stream):
    def record(dev_id, port):
        dev = {'id': dev_id, 'site': 'lab', 'status': 'active', 'tunnel_mysql_port': port, 'tunnel_ssh_port': port + 1,
               'replica_instance': dev_id, 'replica_mode': 'instance', 'channel_name': dev_id}
        chan = {'name': dev_id, 'health': 'ok', 'io_running': 'Yes', 'sql_running': 'Yes', 'seconds_behind': 0}
        backup = {'last_success_ts': NOW - 60, 'last_attempt_ts': NOW - 60, 'last_attempt_ok': True,
                  'last_verify_ok': True, 'backups_kept': 1}
        return fs.build_record(dev, 'cloud01', {port, port + 1}, chan, None, backup, None, NOW)
    report = fs.make_report([record('dev1', 40000), record('dev2', 40002), record('dev3', 40004)],
                            [{'cloud_host': 'cloud01', 'collected_at': NOW, 'duration_s': 0.1, 'devices': 3,
                              'instances': []}], int(NOW))
    return observe.attach(report, stream) if stream is not None else report


def test_config_kind_tells_capture_fanin_and_other_files_apart():
    assert observe.config_kind(CAPTURE) == 'capture'
    assert observe.config_kind(FANIN) == 'fanin'
    assert observe.config_kind({'broker': {}}) is None
    assert observe.config_kind([1]) is None


def test_queue_names_read_for_a_config():
    assert observe.queue_names(FANIN) == {'fanin': 'edgefleet.fanin', 'dead': 'edgefleet.dead'}
    declared = dict(FANIN, dead_letter_exchange='dl',
                    queues=[{'name': 'edgefleet.fanin'}, {'name': 'edgefleet.events'}, {'name': 'bi'}])
    assert observe.queue_names(declared) == {
        'fanin': 'edgefleet.fanin', 'dead': 'dl', 'other:edgefleet.events': 'edgefleet.events', 'other:bi': 'bi'}
    # A capture config (no fan-in queue): the dead letters and the queues it declares.
    assert observe.queue_names(dict(CAPTURE, queues=[{'name': 'edgefleet.fanin'}])) == {
        'dead': 'edgefleet.dead', 'other:edgefleet.fanin': 'edgefleet.fanin'}


def test_checkpoint_sequences():
    assert observe.checkpoint_sequences('{"gtid_pos": "11-11-40,12-12-7"}') == {11: 40, 12: 7}
    assert observe.checkpoint_sequences('{"gtid_pos": ""}') == {}
    with pytest.raises(ValueError):
        observe.checkpoint_sequences('[]')
    with pytest.raises(GtidError):
        observe.checkpoint_sequences('{"gtid_pos": "x-y"}')


def test_behind_is_the_seq_no_difference_per_domain_and_lag_the_checkpoint_age():
    view = capture({11: 40, 12: 7}, {11: 52, 12: 7}, age=30.0)
    by_device = dict((d['device'], d) for d in view['devices'])
    assert by_device['dev1']['behind'] == 12 and by_device['dev1']['lag_s'] == 30.0
    assert by_device['dev2']['behind'] == 0 and by_device['dev2']['lag_s'] == 0.0
    assert view['checkpoint_age_s'] == 30.0 and view['error'] is None


def test_a_device_whose_history_restarted_is_stalled_until_it_passes_the_checkpoint():
    view = capture({11: 40, 12: 7}, {11: 4, 12: 7})
    by_device = dict((d['device'], d) for d in view['devices'])
    assert by_device['dev1'].get('restarted') and not by_device['dev2'].get('restarted')
    state, problem = observe.device_state(by_device['dev1'], [], observe.DEFAULT_THRESHOLDS)
    assert state == 'stalled' and 'restarted' in problem and 'up to 40 are not streamed' in problem
    assert observe.device_state(by_device['dev2'], [], observe.DEFAULT_THRESHOLDS) == ('current', None)
    assert not capture({11: 40}, {11: 41})['devices'][0].get('restarted')


def test_no_checkpoint_yet_counts_from_the_start_position_and_has_no_lag_seconds():
    view = capture(None, {11: 3}, name='c')
    dev1 = view['devices'][0]
    assert dev1['behind'] == 3 and dev1['lag_s'] is None and view['checkpoint_age_s'] is None
    state, problem = observe.device_state(dev1, [], observe.DEFAULT_THRESHOLDS)
    assert state == 'stalled' and 'not moved for -' in problem
    # A device the replica holds nothing of yet is current.
    assert capture(None, {})['devices'][1]['behind'] == 0


def test_unreadable_replica_or_checkpoint_is_unknown_not_zero():
    view = observe.capture_view('c', CAPTURE, {'error': 'invalid checkpoint: x'}, {'error': 'Access denied'}, NOW)
    assert view['error'] == 'checkpoint: invalid checkpoint: x; replica: Access denied'
    entry = view['devices'][0]
    assert entry['behind'] is None and entry['lag_s'] is None
    assert observe.device_state(entry, [], observe.DEFAULT_THRESHOLDS) == (
        'unknown', 'change stream: checkpoint: invalid checkpoint: x; replica: Access denied')


def test_device_states():
    limits = dict(observe.DEFAULT_THRESHOLDS, stream_lag_threshold=60, stream_backlog_threshold=100)
    caught_up, moving, stuck = (capture({11: 5}, {11: seq}, age=age)['devices'][0]
                                for seq, age in ((5, 900), (9, 10), (9, 61)))
    fanin = observe.fanin_view('f', FANIN, {}, queues())
    assert observe.device_state(caught_up, [fanin], limits) == ('current', None)
    assert observe.device_state(moving, [fanin], limits) == ('behind', None)
    assert observe.device_state(stuck, [fanin], limits)[0] == 'stalled'
    # The fan-in queue: over the backlog threshold, no consumer with messages, unreadable.
    backlog = observe.fanin_view('f', FANIN, {}, queues(ready=101))
    assert observe.device_state(caught_up, [backlog], limits) == (
        'behind', 'change stream: 101 messages waiting in edgefleet.fanin')
    nobody = observe.fanin_view('f', FANIN, {}, queues(ready=3, consumers=0))
    assert observe.device_state(caught_up, [nobody], limits) == (
        'stalled', 'change stream: 3 messages in edgefleet.fanin and no fan-in consuming')
    # An empty queue without a consumer is not a problem (nothing waits).
    idle = observe.fanin_view('f', FANIN, {}, queues(ready=0, consumers=0))
    assert observe.device_state(caught_up, [idle], limits)[0] == 'current'
    lost = observe.fanin_view('f', FANIN, {}, {'fanin': {'error': 'broker: refused'}, 'dead': {'error': 'x'}})
    assert observe.device_state(caught_up, [lost], limits)[0] == 'unknown'


def test_attach_adds_stream_views_problems_and_summary_only_to_carried_devices():
    applied = {'dev1': {'seq_no': 5, 'row': 0, 'event_id': '11-11-5:0', 'applied_ts': NOW - 3}}
    stream = observe.stream_report([capture({11: 5, 12: 1}, {11: 5, 12: 40}, age=400)],
                                   [observe.fanin_view('changestream-fanin', FANIN, applied, queues(dead=2))], NOW)
    report = report_with(stream)
    records = dict((r['device'], r) for r in report['devices'])
    assert records['dev1']['stream']['state'] == 'current' and records['dev1']['stream']['applied_ts'] == NOW - 3
    assert records['dev2']['stream']['state'] == 'stalled'
    assert records['dev2']['problems'][-1].startswith('change stream: capture 39 transactions behind')
    assert 'stream' not in records['dev3']
    # The stream is not the backup path: device states stay what replication and backups say.
    assert [r['state'] for r in report['devices']] == ['ok', 'ok', 'ok']
    assert report['summary']['stream_current'] == 1 and report['summary']['stream_devices'] == 2
    json.dumps(report)


def test_table_has_a_stream_column_only_where_the_stream_is_configured():
    plain = fr.render_table(report_with(None))
    assert 'STREAM' not in plain.splitlines()[0] and 'streams current' not in plain
    stream = observe.stream_report([capture({11: 5, 12: 1}, {11: 5, 12: 40}, age=400)],
                                   [observe.fanin_view('f', FANIN, {}, queues())], NOW)
    table = fr.render_table(report_with(stream)).splitlines()
    header = table[0].split()
    assert header[-6:] == ['VERIFY', 'STREAM', 'LAST', 'ERROR', '/', 'PROBLEM']
    rows = dict((line.split()[0], line) for line in table[1:4])
    assert rows['dev1'].split()[10:] == ['current']
    assert rows['dev2'].split()[10:13] == ['STALLED', '39', 'change']
    assert rows['dev3'].split()[10:] == ['-']
    assert table[-1].endswith('| streams current 1/2')


def test_metrics_of_the_stream_and_none_without_it():
    assert 'edgefleet_changestream' not in fr.render_metrics(report_with(None))
    stream = observe.stream_report([capture({11: 5, 12: 1}, {11: 5, 12: 40}, age=400)],
                                   [observe.fanin_view('changestream-fanin', FANIN, {},
                                                       queues(ready=7, dead=2, edgefleet_events=100000))], NOW)
    text = fr.render_metrics(report_with(stream))
    assert 'edgefleet_changestream_queue_messages{cloud_host="cloud01",queue="edgefleet.events",role="other"} 100000' \
        in text
    labels = 'device="dev2",cloud_host="cloud01",capture="changestream-r1"'
    assert 'edgefleet_changestream_capture_behind_transactions{%s} 39' % labels in text
    assert 'edgefleet_changestream_capture_lag_seconds{%s} 400.0' % labels in text
    assert 'edgefleet_changestream_device_current{%s} 0' % labels in text
    assert 'edgefleet_changestream_fanin_last_applied_timestamp_seconds{%s} 0' % labels in text
    assert 'edgefleet_changestream_queue_messages{cloud_host="cloud01",queue="edgefleet.fanin",role="fanin"} 7' in text
    assert 'edgefleet_changestream_dead_letter_messages{cloud_host="cloud01",queue="edgefleet.dead"} 2' in text
    assert 'edgefleet_changestream_broker_up{cloud_host="cloud01",fanin="changestream-fanin"} 1' in text
    assert 'edgefleet_changestream_capture_checkpoint_age_seconds{cloud_host="cloud01",capture="changestream-r1"} 400.0' \
        in text
    # An unreadable broker: broker_up 0 and no queue samples (absent, not a false 0).
    lost = observe.stream_report([], [observe.fanin_view('f', FANIN, {'error': 'x'}, {
        'fanin': {'error': 'broker: refused'}, 'dead': {'error': 'broker: refused'}})], NOW)
    text = fr.render_metrics(report_with(lost))
    assert 'edgefleet_changestream_broker_up{cloud_host="cloud01",fanin="f"} 0' in text
    assert 'edgefleet_changestream_central_up{cloud_host="cloud01",fanin="f"} 0' in text
    assert 'edgefleet_changestream_queue_messages' not in text


@pytest.mark.skipif(not shutil.which('promtool'), reason='promtool not installed')
def test_stream_metrics_pass_promtool_check():
    stream = observe.stream_report([capture({11: 5}, {11: 9}, age=4)],
                                   [observe.fanin_view('f', FANIN, {}, queues(ready=7, dead=2))], NOW)
    result = subprocess.run(['promtool', 'check', 'metrics'], input=fr.render_metrics(report_with(stream)),
                            text=True, capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_collect_is_none_without_config_files(tmp_path):
    assert observe.collect(str(tmp_path / '*.json')) is None
    # Other JSON files matching the glob that are no stream config are ignored too.
    (tmp_path / 'notes.json').write_text('{"hello": 1}')
    assert observe.collect(str(tmp_path / '*.json')) is None


def test_load_configs_and_read_checkpoint(tmp_path):
    (tmp_path / 'capture-r1.json').write_text(json.dumps(CAPTURE))
    (tmp_path / 'fanin.json').write_text(json.dumps(FANIN))
    (tmp_path / 'broken.json').write_text('{')
    found = observe.load_configs(str(tmp_path / '*.json'))
    assert [(name, kind) for name, kind, unused in found] == [
        ('broken', 'invalid'), ('capture-r1', 'capture'), ('fanin', 'fanin')]
    path = tmp_path / 'checkpoint'
    assert observe.read_checkpoint(str(path)) is None
    path.write_text('{"gtid_pos": "11-11-9"}')
    os.utime(str(path), (NOW - 8, NOW - 8))
    assert observe.read_checkpoint(str(path)) == {'seqs': {11: 9}, 'mtime': NOW - 8}
    path.write_text('nonsense')
    assert observe.read_checkpoint(str(path))['error'].startswith('invalid checkpoint')


def test_collect_reports_unreachable_parts_as_errors(tmp_path):
    """Real readers against nothing: a replica socket and a broker port nobody listens on."""
    conf = dict(CAPTURE, replica={'unix_socket': str(tmp_path / 'none.sock'), 'user': 'root'},
                checkpoint=str(tmp_path / 'cp'), broker={'host': '127.0.0.1', 'port': 1, 'user': 'c', 'password': 'x'})
    (tmp_path / 'capture-r1.json').write_text(json.dumps(conf))
    (tmp_path / 'broken.json').write_text('{')
    stream = observe.collect(str(tmp_path / '*.json'), now=NOW, connect_timeout=1)
    assert set(stream['devices']) == {'dev1', 'dev2'}
    assert all(v['state'] == 'unknown' for v in stream['devices'].values())
    errors = dict((c['name'], c['error']) for c in stream['captures'])
    assert errors['capture-r1'].startswith('replica: ')
    assert errors['broken'].startswith('config unreadable: ')
    # No fan-in on this host: the dead-letter queue is read with the capture's login (here: nothing
    # listens; under ansible-test units, without pika, the missing library is the reason).
    broker = stream['fanins'][0]
    assert broker['name'] == 'capture-r1' and broker['central'] is False and broker['queue'] is None
    assert broker['queues']['dead']['error'].startswith(('broker: ', 'pika (python3-pika) is not installed'))
    text = fr.render_metrics(report_with(stream))
    assert 'edgefleet_changestream_broker_up{cloud_host="cloud01",fanin="capture-r1"} 0' in text
    assert 'edgefleet_changestream_central_up' not in text
