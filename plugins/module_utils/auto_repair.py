# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Automatic repair of diverged replicas, opt-in, on each cloud host (``edgefleet-monitor repair``).

A device opted in (``auto_repair`` in its monitoring config entry: the monitoring role's
``monitoring_auto_repair``, overridden per device by the host variable ``edgefleet_auto_repair``)
whose replica the last consistency check found diverged, or whose channel stopped because the
device no longer has the binlogs it needs (IO error 1236), is re-seeded from the device through
its tunnel (module_utils/reseed.py: the steps of playbooks/resync.yml), then checked again.

Rate limits, so that a fault that hits many devices at once (a repair storm) cannot turn into
hundreds of dumps through the tunnels and the replicas' disks:

- at most ``max_per_run`` repairs per run and ``max_per_hour`` per cloud host in any hour;
- a device is not tried again within ``retry_after`` seconds of its last attempt (a replica that
  diverges again right away needs a person, not a loop);
- one repair at a time per cloud host (the caller holds a lock; replication_apply's replica
  lock also keeps it apart from a concurrent resync.yml or site.yml run).

A device that waits is recorded as ``deferred`` with the reason; every attempt's outcome goes to
``<repair_dir>/<device>.json`` (read by the status collector: status, metrics, alerts) and to the
host's attempt log ``<repair_dir>/attempts.json`` (the hourly limit). The policy is pure and
unit-tested; :func:`run` does the work.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

PURGED_BINLOG_ERRNO = 1236
DEFAULT_POLICY = {'max_per_run': 1, 'max_per_hour': 4, 'retry_after': 6 * 3600}
ATTEMPTS_FILE = 'attempts.json'
# Attempts older than this are dropped from the log (the hourly limit only needs the last hour).
ATTEMPTS_KEPT_S = 7 * 24 * 3600


def repair_reason(record):
    """Why a status record (fleet_status.build_record) needs a re-seed, or None."""
    consistency, repl = record['consistency'], record['replication']
    if consistency['state'] == 'diverged':
        return 'consistency check: %s' % (consistency['problem'] or 'replica differs')
    if int(repl.get('last_io_errno') or 0) == PURGED_BINLOG_ERRNO:
        return 'binlogs purged on the device: %s' % (repl.get('last_io_error') or 'IO error 1236')
    return None


def candidates(records, opted_in):
    """[(device id, reason, blocked)] of the records that need a repair and are opted in, worst
    first as the records come; ``blocked`` says why one cannot be repaired now (None if it can)."""
    wanted = []
    for record in records:
        if record['device'] not in opted_in or record.get('status', 'active') != 'active':
            continue
        reason = repair_reason(record)
        if reason is None:
            continue
        blocked = None if record['tunnel']['up'] else 'the device is offline (tunnel down)'
        wanted.append((record['device'], reason, blocked))
    return wanted


def plan(wanted, attempts, now, policy=None):
    """Which of ``wanted`` to repair now: returns (chosen [(id, reason)], deferred [(id, reason,
    why)]). ``attempts``: the host's attempt log (dicts with device and started_ts)."""
    limits = dict(DEFAULT_POLICY)
    limits.update(dict((k, v) for k, v in (policy or {}).items() if v is not None))
    last_hour = [a for a in attempts if now - a['started_ts'] < 3600]
    budget = min(int(limits['max_per_run']), max(0, int(limits['max_per_hour']) - len(last_hour)))
    last_try = {}
    for attempt in attempts:
        last_try[attempt['device']] = max(attempt['started_ts'], last_try.get(attempt['device'], 0))
    chosen, deferred = [], []
    for device, reason, blocked in wanted:
        since = now - last_try[device] if device in last_try else None
        if blocked:
            deferred.append((device, reason, blocked))
        elif since is not None and since < int(limits['retry_after']):
            deferred.append((device, reason, 'tried %d s ago; retried after %d s (retry_after)'
                             % (since, int(limits['retry_after']))))
        elif len(chosen) >= budget:
            deferred.append((device, reason, 'rate limit: %d repair(s) in the last hour (max_per_hour '
                             '%d), at most %d per run' % (len(last_hour), int(limits['max_per_hour']),
                                                          int(limits['max_per_run']))))
        else:
            chosen.append((device, reason))
    return chosen, deferred


def prune_attempts(attempts, now):
    return [a for a in attempts if now - a['started_ts'] < ATTEMPTS_KEPT_S]


def read_json(path, default):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def device_doc(state, reason, now, detail='', previous=None):
    """The per-device repair record the status collector reads."""
    doc = {'state': state, 'reason': reason, 'detail': detail, 'updated_ts': int(now)}
    if state in ('repaired', 'failed'):
        doc['attempt_ts'] = int(now)
    elif previous and previous.get('attempt_ts'):
        doc['attempt_ts'] = previous['attempt_ts']
        doc['last_result'] = previous.get('last_result') or previous.get('state')
    if state in ('repaired', 'failed'):
        doc['last_result'] = state
    return doc


def run(records, devices, repair_dir, policy, repair, write, now=None, log=None):
    """One repair run over a host's status ``records``.

    ``devices``: the config's device entries (id -> entry with auto_repair); ``repair(device,
    reason)`` re-seeds and checks one device and returns (ok, detail); ``write(path, text)``
    writes a file atomically. Returns a list of (device, outcome, detail)."""
    log = log or (lambda line: None)
    now = time.time() if now is None else now
    origin = time.time()

    def clock():
        return now + time.time() - origin
    opted_in = set(d['id'] for d in devices.values() if d.get('auto_repair'))
    attempts_path = os.path.join(repair_dir, ATTEMPTS_FILE)
    attempts = prune_attempts(read_json(attempts_path, []), now)
    wanted = candidates(records, opted_in)
    chosen, deferred = plan(wanted, attempts, now, policy)
    outcomes = []
    for device, reason, why in deferred:
        path = os.path.join(repair_dir, '%s.json' % device)
        write(path, json.dumps(device_doc('deferred', reason, now, why, read_json(path, None)),
                               indent=2, sort_keys=True) + '\n')
        log('%s: deferred (%s): %s' % (device, reason, why))
        outcomes.append((device, 'deferred', why))
    for device, reason in chosen:
        started = clock()
        attempts.append({'device': device, 'started_ts': int(started), 'reason': reason})
        write(attempts_path, json.dumps(attempts, indent=2, sort_keys=True) + '\n')
        log('%s: repairing (%s)' % (device, reason))
        ok, detail = repair(devices[device], reason)
        attempts[-1].update(result='repaired' if ok else 'failed', seconds=round(clock() - started, 1))
        write(attempts_path, json.dumps(attempts, indent=2, sort_keys=True) + '\n')
        state = 'repaired' if ok else 'failed'
        write(os.path.join(repair_dir, '%s.json' % device),
              json.dumps(device_doc(state, reason, clock(), detail), indent=2, sort_keys=True) + '\n')
        log('%s: %s in %.1f s: %s' % (device, state, clock() - started, detail))
        outcomes.append((device, state, detail))
    # A device repaired earlier (or by hand) that needs nothing now: its record says so.
    needing = set(device for device, _reason, _blocked in wanted)
    for record in records:
        path = os.path.join(repair_dir, '%s.json' % record['device'])
        previous = read_json(path, None)
        if previous and previous.get('state') == 'deferred' and record['device'] not in needing:
            write(path, json.dumps(device_doc('idle', previous.get('reason') or '', now,
                                              'no longer needed', previous),
                                   indent=2, sort_keys=True) + '\n')
    return outcomes


def repair_view(doc):
    """The per-device repair record (or None) -> the status record's ``repair`` part."""
    view = {'state': 'none', 'attempt_ts': None, 'last_result': None, 'reason': '', 'detail': '',
            'problem': None}
    if not isinstance(doc, dict) or doc.get('_error'):
        return view
    view.update((key, doc.get(key)) for key in ('attempt_ts', 'last_result'))
    view['state'] = doc.get('state') or 'none'
    view['reason'] = doc.get('reason') or ''
    view['detail'] = doc.get('detail') or ''
    if view['state'] == 'failed':
        view['problem'] = 'automatic repair failed: %s' % (view['detail'] or 'see edgefleet-repair.service')
    elif view['state'] == 'deferred':
        view['problem'] = 'automatic repair deferred: %s' % view['detail']
    return view
