# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Automatic repair policy: who needs a repair, the rate limits, the records the status reads."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import auto_repair as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status

NOW = 1_800_000_000


def record(device, diverged=False, io_errno=0, up=True, status='active'):
    return {
        'device': device, 'status': status, 'tunnel': {'up': up},
        'consistency': {'state': 'diverged' if diverged else 'ok',
                        'problem': 'replica differs from the device in 1 table: app.t' if diverged else None},
        'replication': {'last_io_errno': io_errno, 'last_io_error': 'purged' if io_errno else ''},
    }


def test_reasons():
    assert A.repair_reason(record('d1')) is None
    assert A.repair_reason(record('d1', diverged=True)).startswith('consistency check: replica differs')
    assert A.repair_reason(record('d1', io_errno=1236)).startswith('binlogs purged')
    assert A.repair_reason(record('d1', io_errno=2003)) is None  # a lost connection heals by itself


def test_only_opted_in_active_devices_are_candidates():
    records = [record('d1', diverged=True), record('d2', diverged=True), record('d3'),
               record('d4', diverged=True, status='retired'), record('d5', io_errno=1236, up=False)]
    wanted = A.candidates(records, {'d1', 'd3', 'd4', 'd5'})
    assert [(d, blocked) for d, _reason, blocked in wanted] == [
        ('d1', None), ('d5', 'the device is offline (tunnel down)')]


def test_storm_is_rate_limited_per_run_and_per_hour():
    wanted = [('d%d' % i, 'diverged', None) for i in range(10)]
    chosen, deferred = A.plan(wanted, [], NOW, {'max_per_run': 2, 'max_per_hour': 4})
    assert [d for d, _r in chosen] == ['d0', 'd1']
    assert len(deferred) == 8 and all('rate limit' in why for _d, _r, why in deferred)
    # Three attempts in the last hour leave one of the four.
    attempts = [{'device': 'x%d' % i, 'started_ts': NOW - 600 * (i + 1)} for i in range(3)]
    chosen, deferred = A.plan(wanted, attempts, NOW, {'max_per_run': 2, 'max_per_hour': 4})
    assert [d for d, _r in chosen] == ['d0']
    # Older than an hour: not counted.
    old = [{'device': 'x%d' % i, 'started_ts': NOW - 3601 - i} for i in range(10)]
    chosen, _deferred = A.plan(wanted, old, NOW, {'max_per_run': 2, 'max_per_hour': 4})
    assert len(chosen) == 2


def test_a_device_is_not_retried_before_retry_after():
    attempts = [{'device': 'd1', 'started_ts': NOW - 100}]
    chosen, deferred = A.plan([('d1', 'diverged', None), ('d2', 'diverged', None)], attempts, NOW,
                              {'max_per_run': 5, 'max_per_hour': 10, 'retry_after': 3600})
    assert [d for d, _r in chosen] == ['d2']
    assert deferred[0][0] == 'd1' and 'tried 100 s ago' in deferred[0][2]
    chosen, _deferred = A.plan([('d1', 'diverged', None)], attempts, NOW + 3600, {'retry_after': 3600})
    assert [d for d, _r in chosen] == ['d1']


def test_offline_device_waits_without_using_the_budget():
    chosen, deferred = A.plan([('d1', 'r', 'the device is offline (tunnel down)'), ('d2', 'r', None)],
                              [], NOW, {'max_per_run': 1})
    assert [d for d, _r in chosen] == ['d2'] and deferred[0][0] == 'd1'


def _files(tmp_path):
    return dict((name, json.loads((tmp_path / name).read_text())) for name in os.listdir(tmp_path))


def test_run_records_every_outcome_and_respects_the_limits(tmp_path):
    records = [record('d1', diverged=True), record('d2', diverged=True), record('d3', io_errno=1236),
               record('d4', diverged=True)]
    devices = dict((d, {'id': d, 'auto_repair': d != 'd4'}) for d in ('d1', 'd2', 'd3', 'd4'))
    repaired = []

    def repair(device, _reason):
        repaired.append(device['id'])
        return device['id'] != 'd2', 'detail of %s' % device['id']

    def write(path, text):
        with open(path, 'w') as handle:
            handle.write(text)

    outcomes = A.run(records, devices, str(tmp_path), {'max_per_run': 2, 'max_per_hour': 10}, repair,
                     write, now=NOW)
    assert repaired == ['d1', 'd2']
    assert sorted(outcomes) == sorted([('d1', 'repaired', 'detail of d1'), ('d2', 'failed', 'detail of d2'),
                                       ('d3', 'deferred', outcomes[0][2])])
    files = _files(tmp_path)
    assert 'd4.json' not in files  # not opted in: untouched
    assert files['d1.json']['state'] == 'repaired' and files['d2.json']['last_result'] == 'failed'
    assert files['d3.json']['state'] == 'deferred'
    assert [a['result'] for a in files['attempts.json']] == ['repaired', 'failed']
    # The status shows them: a failure and a deferral are problems; metrics carry both flags.
    views = dict((d, A.repair_view(files.get('%s.json' % d))) for d in ('d1', 'd2', 'd3', 'd4'))
    assert views['d1']['problem'] is None and views['d4']['state'] == 'none'
    assert views['d2']['problem'].startswith('automatic repair failed: detail of d2')
    assert views['d3']['problem'].startswith('automatic repair deferred: rate limit')
    # Next run: d2 waits for retry_after, d3 gets its turn; d1 healthy now.
    records = [record('d1'), record('d2', diverged=True), record('d3', io_errno=1236)]
    repaired[:] = []
    A.run(records, devices, str(tmp_path), {'max_per_run': 2, 'max_per_hour': 10}, repair, write,
          now=NOW + 60)
    assert repaired == ['d3']
    files = _files(tmp_path)
    assert files['d2.json']['state'] == 'deferred' and files['d2.json']['last_result'] == 'failed'


def test_status_record_carries_the_repair():
    device = {'id': 'd1', 'tunnel_mysql_port': 20000, 'replica_instance': 'd1'}
    rec = fleet_status.build_record(device, 'c1', {20000}, None, None, None, None, NOW,
                                    repair_doc={'state': 'failed', 'detail': 'dump failed',
                                                'attempt_ts': NOW, 'last_result': 'failed'})
    assert rec['repair']['state'] == 'failed'
    assert 'automatic repair failed: dump failed' in rec['problems']
    rec = fleet_status.build_record(device, 'c1', {20000}, None, None, None, None, NOW)
    assert rec['repair']['state'] == 'none'
