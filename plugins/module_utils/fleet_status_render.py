# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet status renderings: the terminal table, the summary line, Prometheus metrics, JSON.

What a report *says* is decided by fleet_status.py (classification); this module only shows it
(the HTML page is fleet_status_html.py). Standard library only, no Ansible imports: the
``status_*`` filters and the ``edgefleet-monitor`` collector on the cloud hosts use it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import (
    STATES, format_duration, _one_line,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import observe


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


def summary_line(summary):
    """'fleet: 2 devices | 1 error, 1 offline, ... | tunnels up 1/2 | ...' (one line)."""
    total = summary['total']
    counts = ', '.join('%d %s' % (summary.get(state, 0), state) for state in STATES
                       if state != 'inactive' or summary.get(state))
    line = ('fleet: %d device%s | %s | tunnels up %d/%d | replication running %d/%d | '
            'backups fresh %d/%d | verify failed %d | diverged %d | max lag %s'
            % (total, '' if total == 1 else 's', counts, summary['tunnels_up'], total,
               summary['replication_running'], total, summary['backups_ok'], total,
               summary['verify_failed'], summary['diverged'],
               format_duration(summary['max_lag_s'])))
    if summary.get('stream_devices'):  # only where the change stream is configured
        line += ' | streams current %d/%d' % (summary['stream_current'], summary['stream_devices'])
    return line


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


def table_rows(report, stream=False):
    """One tuple per device; with ``stream`` a STREAM cell before the last column."""
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
        ) + ((observe.stream_cell(record),) if stream else ()) + (_one_line(problem, 70),))
    return rows


def render_table(report):
    """Aligned plain-text table (worst first) followed by the one-line fleet summary."""
    # The STREAM column only on hosts where the change stream is configured.
    stream = bool(report.get('changestream'))
    columns = TABLE_COLUMNS[:-1] + ('STREAM',) + TABLE_COLUMNS[-1:] if stream else TABLE_COLUMNS
    rows = table_rows(report, stream)
    widths = [len(title) for title in columns]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    widths[-1] = 0  # last column is not padded

    def line(cells):
        return '  '.join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    lines = [line(columns)]
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
    ('edgefleet_auto_repair_last_attempt_timestamp_seconds',
     'Unix time of the last automatic repair attempt; 0 never (opt-in, edgefleet-monitor repair).'),
    ('edgefleet_auto_repair_failed', '1 when the last automatic repair attempt failed.'),
    ('edgefleet_auto_repair_deferred',
     '1 when a repair is needed but waits (rate limit, retry delay or device offline).'),
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
        repair = record.get('repair') or {}
        if repair.get('state', 'none') != 'none':
            series['edgefleet_auto_repair_last_attempt_timestamp_seconds'].append(
                (base, repair.get('attempt_ts') or 0))
            series['edgefleet_auto_repair_failed'].append(
                (base, repair.get('last_result') == 'failed'))
            series['edgefleet_auto_repair_deferred'].append((base, repair.get('state') == 'deferred'))
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
        lines.extend(_family(name, help_text, series[name]))
    if report.get('changestream'):
        hosts = report.get('hosts') or [{}]
        lines.extend(observe.render_metrics(report['changestream'], hosts[0].get('cloud_host', ''), _family))
    return '\n'.join(lines) + '\n'


def _family(name, help_text, samples):
    """The lines of one gauge family (none when it has no samples)."""
    if not samples:
        return []
    return (['# HELP %s %s' % (name, help_text), '# TYPE %s gauge' % name]
            + ['%s%s %s' % (name, _labels(labels), _sample(value)) for labels, value in samples])


def render_json(report):
    return json.dumps(report, indent=2, sort_keys=True, default=str) + '\n'
