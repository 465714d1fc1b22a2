# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet status: one record per device from what a cloud host observes, classified.

Pure logic (standard library only, no Ansible imports): the ``fleet_status`` module, the
``status_*`` filters and the ``edgefleet-monitor`` collector on the cloud hosts (which runs this
file outside Ansible) all use it. This module decides each device's state and problems and
builds the report; fleet_status_render.py (table, metrics, JSON) and fleet_status_html.py (the
page) only show a report, so they can never disagree.

Inputs per device: the allocation record (``edgefleet_cloud_devices`` item), whether its tunnel
ports listen on the cloud host, its channel report (``replication_info`` shape), its backup
status document (the backup role's contract) and its last consistency check result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import time

# Re-exported: the fleet_status and table_checksum modules check their devices input with it.
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import (  # noqa: F401 pylint: disable=unused-import
    device_records_error,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.auto_repair import repair_view

# Device states, worst first. The table, the JSON, the page and the metrics sort by this.
STATES = ('error', 'offline', 'stopped', 'lagging', 'unbacked', 'ok', 'inactive')
SEVERITY = dict((state, index) for index, state in enumerate(STATES))
STATE_HELP = {
    'error': 'replication stopped on an error, channel or replica missing, or replica diverged',
    'offline': 'tunnel down or device database unreachable (replication waits and retries)',
    'stopped': 'replication stopped without an error',
    'lagging': 'replication behind by more than the lag threshold',
    'unbacked': 'no recent good backup, last backup failed, or last verify failed',
    'ok': 'tunnel up, replication running, backup fresh and verified',
    'inactive': 'device not active in the registry',
}

BACKUP_STATES = ('ok', 'never', 'stale', 'failed', 'verify_failed', 'invalid')
CONSISTENCY_STATES = ('ok', 'diverged', 'error', 'never')
RUNNING_HEALTH = ('ok', 'lagging', 'connecting')

DEFAULT_THRESHOLDS = {
    'lag_threshold': 300,
    'backup_max_age': 26 * 3600,
}

BACKUP_KEYS = ('last_success_ts', 'last_success_file', 'last_size_bytes', 'last_duration_s',
               'last_attempt_ts', 'last_attempt_ok', 'last_error', 'last_verify_ts',
               'last_verify_ok', 'last_verify_detail', 'backups_kept')


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------

def _num(value):
    """int/float from JSON-ish input, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return int(number) if number == int(number) else number


def _bool_or_none(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'ok'):
        return True
    if text in ('0', 'false', 'no', 'failed'):
        return False
    return None


def format_duration(seconds):
    """Human duration: 42s, 7m, 3h 5m, 2d 4h; '-' for None."""
    if seconds is None:
        return '-'
    seconds = int(seconds)
    if seconds < 0:
        return '0s'
    if seconds < 60:
        return '%ds' % seconds
    if seconds < 3600:
        return '%dm' % (seconds // 60)
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return '%dh %dm' % (hours, rest // 60) if rest >= 60 else '%dh' % hours
    days, rest = divmod(seconds, 86400)
    return '%dd %dh' % (days, rest // 3600) if rest >= 3600 else '%dd' % days


def _one_line(text, limit=None):
    text = ' '.join(str(text or '').split())
    if limit and len(text) > limit:
        return text[:max(limit - 1, 1)] + '\u2026'
    return text


def _last_error(view):
    """The backup's last error on one short line."""
    return _one_line(view['last_error'] or 'no detail', 160)


# ---------------------------------------------------------------------------------------
# Views of the three inputs
# ---------------------------------------------------------------------------------------

def backup_view(doc, now, max_age):
    """The backup role's status document -> backup state, age and a problem text (or None).

    ``doc`` is None when no status file exists ("never backed up"), or a dict with the
    contract keys; ``{'_error': text}`` when the file exists but cannot be read.
    """
    view = dict((key, None) for key in BACKUP_KEYS)
    view.update(state='never', age_s=None, problem='never backed up')
    if doc is None:
        return view
    if not isinstance(doc, dict) or doc.get('_error'):
        view.update(state='invalid', problem='backup status unreadable: %s'
                    % _one_line(doc.get('_error') if isinstance(doc, dict) else doc, 120))
        return view
    for key in BACKUP_KEYS:
        view[key] = doc.get(key)
    for key in ('last_success_ts', 'last_size_bytes', 'last_duration_s', 'last_attempt_ts',
                'last_verify_ts', 'backups_kept'):
        view[key] = _num(view[key])
    view['last_attempt_ok'] = _bool_or_none(view['last_attempt_ok'])
    view['last_verify_ok'] = _bool_or_none(view['last_verify_ok'])
    success = view['last_success_ts']
    if success:
        view['age_s'] = max(int(now - success), 0)
    attempt = view['last_attempt_ts']
    attempt_failed = (view['last_attempt_ok'] is False and attempt is not None
                      and (not success or attempt >= success))
    if view['last_verify_ok'] is False:
        view['state'] = 'verify_failed'
        view['problem'] = 'last restore verify failed%s' % (
            ': ' + _one_line(view['last_verify_detail'], 160) if view['last_verify_detail'] else '')
    elif not success:
        if attempt_failed:
            view['state'] = 'failed'
            view['problem'] = 'never backed up; last attempt failed: %s' % _last_error(view)
        else:
            view['state'] = 'never'
            view['problem'] = 'never backed up'
    elif max_age is not None and view['age_s'] > max_age:
        view['state'] = 'stale'
        view['problem'] = 'last good backup %s ago (limit %s)' % (
            format_duration(view['age_s']), format_duration(max_age))
        if attempt_failed:
            view['problem'] += '; last attempt failed: %s' % _last_error(view)
    elif attempt_failed:
        view['state'] = 'failed'
        view['problem'] = 'last backup attempt failed: %s' % _last_error(view)
    else:
        view['state'] = 'ok'
        view['problem'] = None
    return view


def consistency_view(doc):
    """Last consistency check result (``table_checksum`` per-device result) -> summary."""
    view = {'state': 'never', 'checked_ts': None, 'gtid_pos': None, 'tables_checked': None,
            'tables_differing': None, 'differing': [], 'detail': '', 'problem': None}
    if doc is None:
        return view
    if not isinstance(doc, dict) or doc.get('_error'):
        view.update(state='error', detail='result unreadable: %s' % _one_line(
            doc.get('_error') if isinstance(doc, dict) else doc, 120))
        return view
    view['checked_ts'] = _num(doc.get('checked_ts'))
    view['gtid_pos'] = doc.get('gtid_pos')
    view['tables_checked'] = _num(doc.get('tables_checked'))
    differing = [str(name) for name in (doc.get('differing_tables') or [])]
    view['differing'] = differing
    view['tables_differing'] = len(differing)
    state = doc.get('state')
    if state == 'diverged' or differing:
        view['state'] = 'diverged'
        view['problem'] = 'replica differs from the device in %d table%s: %s' % (
            len(differing), '' if len(differing) == 1 else 's', ', '.join(differing[:5])
            + (', ...' if len(differing) > 5 else ''))
    elif state == 'ok':
        view['state'] = 'ok'
    else:
        view['state'] = 'error'
        view['tables_differing'] = None
    view['detail'] = _one_line(doc.get('error') or doc.get('detail') or '', 200)
    return view


def channel_view(channel, instance_error=None):
    """A replication_info channel report (or None) -> the replication part of a record."""
    view = {'health': 'missing', 'io_running': None, 'sql_running': None,
            'seconds_behind': None, 'last_io_errno': 0, 'last_io_error': '',
            'last_sql_errno': 0, 'last_sql_error': '', 'last_errno': 0, 'last_error': '',
            'diagnosis': '', 'gtid_io_pos': '', 'gtid_applied_pos': '', 'running': False,
            'instance_reachable': instance_error is None}
    if instance_error is not None:
        view['health'] = 'unknown'
        view['diagnosis'] = 'replica instance not reachable: %s' % _one_line(instance_error, 200)
        view['last_error'] = view['diagnosis']
        return view
    if channel is None:
        view['diagnosis'] = 'no replication channel for this device on its replica instance'
        view['last_error'] = view['diagnosis']
        return view
    for key in ('health', 'io_running', 'sql_running', 'seconds_behind', 'last_io_errno',
                'last_io_error', 'last_sql_errno', 'last_sql_error', 'diagnosis',
                'gtid_io_pos', 'gtid_applied_pos'):
        if key in channel and channel[key] is not None:
            view[key] = channel[key]
    view['last_io_errno'] = int(view['last_io_errno'] or 0)
    view['last_sql_errno'] = int(view['last_sql_errno'] or 0)
    view['seconds_behind'] = _num(view['seconds_behind'])
    # The error that explains the current state: the SQL thread's if it stopped on one.
    if view['last_sql_errno'] and str(view['sql_running']).lower() != 'yes':
        view['last_errno'], view['last_error'] = view['last_sql_errno'], view['last_sql_error']
    elif view['last_io_errno']:
        view['last_errno'], view['last_error'] = view['last_io_errno'], view['last_io_error']
    elif view['last_sql_errno']:
        view['last_errno'], view['last_error'] = view['last_sql_errno'], view['last_sql_error']
    view['running'] = view['health'] in RUNNING_HEALTH
    return view


# ---------------------------------------------------------------------------------------
# One record per device
# ---------------------------------------------------------------------------------------

def classify(record):
    """Set record['state'] and record['problems'] from its tunnel/replication/backup parts."""
    problems = []
    tunnel, repl = record['tunnel'], record['replication']
    backup, consistency = record['backup'], record['consistency']
    if record.get('status', 'active') != 'active':
        record['state'], record['problems'] = 'inactive', []
        return record
    state = 'ok'

    def worse(candidate):
        return candidate if SEVERITY[candidate] < SEVERITY[state] else state

    health = repl['health']
    if health in ('error', 'missing', 'unknown'):
        state = worse('error')
        text = repl['diagnosis'] or 'replication error'
        if repl['last_errno'] and health == 'error':
            text = 'replication error %d: %s' % (repl['last_errno'], text)
        problems.append(_one_line(text, 300))
    if consistency['state'] == 'diverged':
        state = worse('error')
        problems.append(consistency['problem'])
    if not tunnel['up']:
        state = worse('offline')
        problems.append('tunnel down: 127.0.0.1:%s does not listen on %s'
                        % (tunnel['mysql_port'], record.get('cloud_host') or 'the cloud host'))
    elif health == 'connecting':
        state = worse('offline')
        problems.append(_one_line('tunnel up but the device database does not answer: %s'
                                  % (repl['diagnosis'] or 'IO thread connecting'), 300))
    if health == 'stopped':
        state = worse('stopped')
        problems.append(repl['diagnosis'] or 'replication stopped')
    if health == 'lagging':
        state = worse('lagging')
        problems.append('replication %s behind' % format_duration(repl['seconds_behind']))
    if backup['state'] != 'ok':
        state = worse('unbacked')
        problems.append(backup['problem'])
    repair = record.get('repair') or {}
    if repair.get('problem'):
        problems.append(repair['problem'])
    record['state'] = state
    record['problems'] = problems
    return record


def build_record(device, cloud_host, listening, channel, instance_error, backup_doc,
                 consistency_doc, now, thresholds=None, repair_doc=None):
    """One device record from an allocation record and what the cloud host observed.

    ``listening`` is a set of TCP ports listening on the cloud host's loopback.
    """
    limits = dict(DEFAULT_THRESHOLDS)
    limits.update(dict((k, v) for k, v in (thresholds or {}).items() if v is not None))
    mysql_port = _num(device.get('tunnel_mysql_port'))
    ssh_port = _num(device.get('tunnel_ssh_port'))
    record = {
        'device': device['id'],
        'site': device.get('site') or '',
        'status': device.get('status') or 'active',
        'cloud_host': cloud_host or '',
        'instance': device.get('replica_instance') or '',
        'mode': device.get('replica_mode') or '',
        'channel': device.get('channel_name') if device.get('channel_name') is not None
        else device['id'],
        'tunnel': {
            'mysql_port': mysql_port,
            'ssh_port': ssh_port,
            'up': mysql_port in listening,
            'ssh_up': ssh_port in listening if ssh_port is not None else None,
        },
        'replication': channel_view(channel, instance_error),
        'backup': backup_view(backup_doc, now, limits['backup_max_age']),
        'consistency': consistency_view(consistency_doc),
        'repair': repair_view(repair_doc),
    }
    return classify(record)


def sort_key(record):
    """Worst first; within a state the most-behind / oldest-backup first, then by name."""
    lag = record['replication'].get('seconds_behind') or 0
    age = record['backup'].get('age_s')
    age = float('inf') if age is None else age
    return (SEVERITY.get(record['state'], len(STATES)), -lag, -age, record['device'])


def sort_records(records):
    return sorted(records, key=sort_key)


def summarize(records):
    """Counters for the one-line summary, the page and the JSON."""
    summary = dict((state, 0) for state in STATES)
    summary['total'] = len(records)
    summary.update(tunnels_up=0, replication_running=0, backups_ok=0, verify_failed=0,
                   diverged=0, never_backed_up=0, max_lag_s=None, oldest_backup_age_s=None)
    sites = set()
    for record in records:
        summary[record['state']] = summary.get(record['state'], 0) + 1
        sites.add(record['site'])
        if record['tunnel']['up']:
            summary['tunnels_up'] += 1
        if record['replication']['running']:
            summary['replication_running'] += 1
        backup = record['backup']
        if backup['state'] == 'ok':
            summary['backups_ok'] += 1
        if backup['state'] == 'verify_failed':
            summary['verify_failed'] += 1
        if backup['state'] == 'never':
            summary['never_backed_up'] += 1
        if record['consistency']['state'] == 'diverged':
            summary['diverged'] += 1
        lag = record['replication']['seconds_behind']
        if lag is not None and (summary['max_lag_s'] is None or lag > summary['max_lag_s']):
            summary['max_lag_s'] = lag
        age = backup['age_s']
        if age is not None and (summary['oldest_backup_age_s'] is None
                                or age > summary['oldest_backup_age_s']):
            summary['oldest_backup_age_s'] = age
    summary['sites'] = len(sites)
    return summary


def make_report(records, hosts=None, generated_at=None, thresholds=None):
    """The fleet report: sorted records, summary and per-cloud-host collection facts."""
    records = sort_records(records)
    limits = dict(DEFAULT_THRESHOLDS)
    limits.update(dict((k, v) for k, v in (thresholds or {}).items() if v is not None))
    return {
        'generated_at': generated_at if generated_at is not None else int(time.time()),
        'thresholds': limits,
        'summary': summarize(records),
        'devices': records,
        'hosts': hosts or [],
    }


def unreachable_report(devices, cloud_host, error='cloud host unreachable', now=None):
    """A report for a cloud host that could not be asked: its devices stay visible as errors."""
    now = int(time.time()) if now is None else now
    reason = 'cloud host %s not reachable: %s' % (cloud_host, _one_line(error, 160))
    records = [build_record(device, cloud_host, set(), None, reason, {'_error': reason}, None,
                            now) for device in devices or []]
    for record in records:
        record['tunnel']['up'] = False
        record['problems'] = [reason]
    host = {'cloud_host': cloud_host, 'collected_at': None, 'duration_s': 0,
            'devices': len(records), 'instances': [], 'error': reason}
    return make_report(records, [host], now)


def merge_reports(reports, generated_at=None):
    """Combine the reports of several cloud hosts (one fleet_status result each)."""
    records, hosts, thresholds = [], [], None
    for report in reports or []:
        if not isinstance(report, dict):
            continue
        records.extend(report.get('devices') or [])
        hosts.extend(report.get('hosts') or [])
        thresholds = thresholds or report.get('thresholds')
    if generated_at is None:
        stamps = [h.get('collected_at') for h in hosts if h.get('collected_at')]
        generated_at = max(stamps) if stamps else int(time.time())
    return make_report(records, hosts, generated_at, thresholds)
