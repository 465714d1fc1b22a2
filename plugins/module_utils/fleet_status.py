# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet status: one record per device from what a cloud host observes, and its renderings.

Pure logic (standard library only, no Ansible imports): the ``fleet_status`` module, the
``status_*`` filters and the ``edgefleet-monitor`` collector on the cloud hosts (which runs this
file outside Ansible) all use it, so the terminal table, the JSON, the HTML page and the
Prometheus metrics can never disagree.

Inputs per device: the allocation record (``edgefleet_cloud_devices`` item), whether its tunnel
ports listen on the cloud host, its channel report (``replication_info`` shape), its backup
status document (the backup role's contract) and its last consistency check result.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import time

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


def format_bytes(size):
    if size is None:
        return '-'
    size = float(size)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if size < 1024 or unit == 'TiB':
            return ('%d %s' % (size, unit)) if unit == 'B' else ('%.1f %s' % (size, unit))
        size /= 1024.0
    return '-'


def format_ts(timestamp):
    if not timestamp:
        return '-'
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(timestamp))


def _one_line(text, limit=None):
    text = ' '.join(str(text or '').split())
    if limit and len(text) > limit:
        return text[:max(limit - 1, 1)] + '\u2026'
    return text


def _last_error(view):
    """The backup's last error on one short line."""
    return _one_line(view['last_error'] or 'no detail', 160)


def device_records_error(devices):
    """Why these allocation records cannot be checked (a record without id or
    tunnel_mysql_port), or None when every record has both."""
    for index, device in enumerate(devices):
        missing = [key for key in ('id', 'tunnel_mysql_port') if device.get(key) in (None, '')]
        if missing:
            return ('devices[%d] has no %s (pass the allocation records, edgefleet_cloud_devices)'
                    % (index, ', '.join(missing)))
    return None


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
    record['state'] = state
    record['problems'] = problems
    return record


def build_record(device, cloud_host, listening, channel, instance_error, backup_doc,
                 consistency_doc, now, thresholds=None):
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


def summary_line(summary):
    """'fleet: 2 devices | 1 error, 1 offline, ... | tunnels up 1/2 | ...' (one line)."""
    total = summary['total']
    counts = ', '.join('%d %s' % (summary.get(state, 0), state) for state in STATES
                       if state != 'inactive' or summary.get(state))
    return ('fleet: %d device%s | %s | tunnels up %d/%d | replication running %d/%d | '
            'backups fresh %d/%d | verify failed %d | diverged %d | max lag %s'
            % (total, '' if total == 1 else 's', counts, summary['tunnels_up'], total,
               summary['replication_running'], total, summary['backups_ok'], total,
               summary['verify_failed'], summary['diverged'],
               format_duration(summary['max_lag_s'])))


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


# ---------------------------------------------------------------------------------------
# Terminal table
# ---------------------------------------------------------------------------------------

TABLE_COLUMNS = ('DEVICE', 'SITE', 'CLOUD', 'STATE', 'TUNNEL', 'IO', 'SQL', 'LAG',
                 'BACKUP AGE', 'VERIFY', 'LAST ERROR / PROBLEM')


def _verify_text(backup):
    if backup['last_verify_ok'] is True:
        return 'ok'
    if backup['last_verify_ok'] is False:
        return 'FAILED'
    return '-'


def table_rows(report):
    rows = []
    for record in report['devices']:
        repl, backup = record['replication'], record['backup']
        problem = record['problems'][0] if record['problems'] else ''
        if repl['last_errno'] and repl['health'] == 'error':
            problem = 'E%d %s' % (repl['last_errno'], repl['last_error'] or problem)
        rows.append((
            record['device'], record['site'] or '-', record['cloud_host'] or '-',
            record['state'].upper() if record['state'] not in ('ok', 'inactive')
            else record['state'],
            'up' if record['tunnel']['up'] else 'DOWN',
            repl['io_running'] or '-', repl['sql_running'] or '-',
            format_duration(repl['seconds_behind']) if repl['seconds_behind'] is not None
            else '-',
            format_duration(backup['age_s']) if backup['age_s'] is not None
            else ('never' if backup['state'] in ('never', 'failed') else '-'),
            _verify_text(backup),
            _one_line(problem, 70),
        ))
    return rows


def render_table(report):
    """Aligned plain-text table (worst first) followed by the one-line fleet summary."""
    rows = table_rows(report)
    widths = [len(title) for title in TABLE_COLUMNS]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    widths[-1] = 0  # last column is not padded

    def line(cells):
        return '  '.join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    lines = [line(TABLE_COLUMNS)]
    lines.extend(line(row) for row in rows)
    if not rows:
        lines.append('(no devices)')
    lines.append('')
    lines.append(summary_line(report['summary']))
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------
# Prometheus textfile metrics (node_exporter textfile collector format)
# ---------------------------------------------------------------------------------------

METRICS = (
    ('edgefleet_device_info', 'Device identity and placement (always 1).'),
    ('edgefleet_device_state', 'Current device state in the state label (always 1).'),
    ('edgefleet_tunnel_up', '1 when the device tunnel MySQL port listens on the cloud host.'),
    ('edgefleet_tunnel_ssh_up', '1 when the device tunnel SSH back-channel port listens.'),
    ('edgefleet_replication_running',
     '1 when replication runs or only retries a lost connection (health ok/lagging/connecting).'),
    ('edgefleet_replication_io_running', '1 when the IO thread is running (Yes).'),
    ('edgefleet_replication_sql_running', '1 when the SQL thread is running (Yes).'),
    ('edgefleet_replication_error', '1 when the channel stopped on an error or is missing.'),
    ('edgefleet_replication_lag_seconds', 'Seconds behind the device; NaN when unknown.'),
    ('edgefleet_replication_last_error_code',
     'Error number explaining the channel state (SQL error if it stopped on one, else IO).'),
    ('edgefleet_replication_last_io_errno', 'Last IO thread error number.'),
    ('edgefleet_replication_last_sql_errno', 'Last SQL thread error number.'),
    ('edgefleet_backup_last_success_timestamp_seconds',
     'Unix time of the last good backup; 0 when never backed up.'),
    ('edgefleet_backup_last_size_bytes', 'Size of the last good backup.'),
    ('edgefleet_backup_last_duration_seconds', 'Duration of the last good backup.'),
    ('edgefleet_backup_last_attempt_ok', '1 when the last backup attempt succeeded, 0 if not.'),
    ('edgefleet_backup_last_verify_ok',
     '1 when the last restore verify passed, 0 when it failed, -1 when never verified.'),
    ('edgefleet_backup_last_verify_timestamp_seconds', 'Unix time of the last verify; 0 never.'),
    ('edgefleet_backup_kept', 'Number of backups kept.'),
    ('edgefleet_consistency_last_check_timestamp_seconds',
     'Unix time of the last consistency check; 0 never.'),
    ('edgefleet_consistency_tables_differing',
     'Tables that differed between device and replica in the last check; -1 when unknown.'),
    ('edgefleet_replica_instance_up', '1 when the replica instance answers on its socket.'),
    ('edgefleet_status_collect_timestamp_seconds', 'Unix time the status was collected.'),
    ('edgefleet_status_collect_duration_seconds', 'Seconds the collection took.'),
    ('edgefleet_status_devices', 'Devices carried by this cloud host.'),
)


def _label_value(value):
    return str(value if value is not None else '').replace('\\', '\\\\').replace(
        '\n', '\\n').replace('"', '\\"')


def _labels(pairs):
    return '{%s}' % ','.join('%s="%s"' % (key, _label_value(value)) for key, value in pairs)


def _sample(value):
    if value is None:
        return 'NaN'
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, float):
        if math.isnan(value):
            return 'NaN'
        return repr(value)
    return str(int(value))


def render_metrics(report):
    """Prometheus text exposition (version 0.0.4) of a report.

    Device series carry device, site, cloud_host and replica (the replica instance; not
    ``instance``, which Prometheus sets to the scraped target).
    """
    series = dict((metric[0], []) for metric in METRICS)
    for record in report['devices']:
        base = [('device', record['device']), ('site', record['site']),
                ('cloud_host', record['cloud_host']), ('replica', record['instance'])]
        repl, backup, tunnel = record['replication'], record['backup'], record['tunnel']
        consistency = record['consistency']
        series['edgefleet_device_info'].append((base + [
            ('mode', record['mode']), ('channel', record['channel']),
            ('status', record['status'])], 1))
        # One series per device, labelled with its current state (count by (state) for totals).
        series['edgefleet_device_state'].append((base + [('state', record['state'])], 1))
        series['edgefleet_tunnel_up'].append((base, tunnel['up']))
        if tunnel['ssh_up'] is not None:
            series['edgefleet_tunnel_ssh_up'].append((base, tunnel['ssh_up']))
        series['edgefleet_replication_running'].append((base, repl['running']))
        series['edgefleet_replication_io_running'].append(
            (base, str(repl['io_running']).lower() == 'yes'))
        series['edgefleet_replication_sql_running'].append(
            (base, str(repl['sql_running']).lower() == 'yes'))
        series['edgefleet_replication_error'].append(
            (base, repl['health'] in ('error', 'missing', 'unknown')))
        series['edgefleet_replication_lag_seconds'].append((base, repl['seconds_behind']))
        series['edgefleet_replication_last_error_code'].append((base, repl['last_errno'] or 0))
        series['edgefleet_replication_last_io_errno'].append((base, repl['last_io_errno'] or 0))
        series['edgefleet_replication_last_sql_errno'].append((base, repl['last_sql_errno'] or 0))
        series['edgefleet_backup_last_success_timestamp_seconds'].append(
            (base, backup['last_success_ts'] or 0))
        series['edgefleet_backup_last_size_bytes'].append((base, backup['last_size_bytes']))
        series['edgefleet_backup_last_duration_seconds'].append(
            (base, backup['last_duration_s']))
        if backup['last_attempt_ok'] is not None:
            series['edgefleet_backup_last_attempt_ok'].append((base, backup['last_attempt_ok']))
        verify = backup['last_verify_ok']
        series['edgefleet_backup_last_verify_ok'].append((base, -1 if verify is None else verify))
        series['edgefleet_backup_last_verify_timestamp_seconds'].append(
            (base, backup['last_verify_ts'] or 0))
        series['edgefleet_backup_kept'].append((base, backup['backups_kept'] or 0))
        series['edgefleet_consistency_last_check_timestamp_seconds'].append(
            (base, consistency['checked_ts'] or 0))
        differing = consistency['tables_differing']
        series['edgefleet_consistency_tables_differing'].append(
            (base, -1 if differing is None else differing))
    for host in report.get('hosts') or []:
        host_labels = [('cloud_host', host.get('cloud_host', ''))]
        for instance in host.get('instances') or []:
            series['edgefleet_replica_instance_up'].append(
                (host_labels + [('replica', instance.get('name', ''))],
                 bool(instance.get('reachable'))))
        series['edgefleet_status_collect_timestamp_seconds'].append(
            (host_labels, host.get('collected_at') or 0))
        series['edgefleet_status_collect_duration_seconds'].append(
            (host_labels, float(host.get('duration_s') or 0.0)))
        series['edgefleet_status_devices'].append((host_labels, host.get('devices') or 0))
    lines = []
    for name, help_text in METRICS:
        if not series[name]:
            continue
        lines.append('# HELP %s %s' % (name, help_text))
        lines.append('# TYPE %s gauge' % name)
        for labels, value in series[name]:
            lines.append('%s%s %s' % (name, _labels(labels), _sample(value)))
    return '\n'.join(lines) + '\n'


def render_json(report):
    return json.dumps(report, indent=2, sort_keys=True, default=str) + '\n'
