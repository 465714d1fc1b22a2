# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Change-stream observability: backlog, lag and dead letters from what a cloud host holds.

Read by ``edgefleet-monitor`` (collect, status) only when the stream is configured on the host:
its config files (``/etc/edgefleet/changestream/*.json``, docs/changestream.md "Files on the
host") exist. Nothing else is asked for; without them the monitor writes what it always wrote.

What is read, once per collection:

- each capture config (``replica`` + ``checkpoint``): the checkpoint file (one GTID per domain,
  and its mtime) and the replica's ``@@gtid_binlog_pos`` (what the capture has to read), with the
  capture's own client settings;
- each fan-in config (``central`` + ``queue``): ``_edgefleet_applied`` of the central schema
  (last applied event per device and when it was applied), and, with the fan-in's broker login,
  the fan-in queue and the dead-letter queue by an AMQP passive ``queue.declare`` (ready messages
  and consumers; no permission on the queue needed, no new listener);
- on a host with captures and no fan-in: the dead-letter queue, with the capture's broker login.

The first part of this file is pure (unit-tested); the readers at the end do the I/O, with
PyMySQL and pika imported where used, so the pure part imports without them.
"""

from __future__ import annotations

import glob
import json
import os
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.fanin import (
    APPLIED_SELECT, APPLIED_TABLE, applied_positions,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import GtidError, parse_gtid_pos

# The changestream role's configs (docs/changestream.md "Files on the host"): capture-<instance>.json, fanin.json.
CONFIG_GLOB = '/etc/edgefleet/changestream/*.json'

DEFAULT_THRESHOLDS = {
    # A device's stream is current when the capture has confirmed everything the replica holds of
    # it, or when it has been behind for less than this many seconds (the checkpoint moves).
    'stream_lag_threshold': 120,
    # ... and the fan-in queue holds fewer ready messages than this, with a consumer on it.
    'stream_backlog_threshold': 10000,
}

STREAM_STATES = ('unknown', 'stalled', 'behind', 'current')
STREAM_HELP = {
    'current': 'the capture has confirmed what the replica holds of the device and the fan-in consumes',
    'behind': 'the capture is behind but moving, or the fan-in queue is over its backlog threshold',
    'stalled': 'the capture has not moved past this device for longer than the lag threshold, '
               'or no fan-in consumes the queue',
    'unknown': 'the checkpoint, the replica or the broker could not be read',
}


def config_kind(doc):
    """'capture', 'fanin' or None for a parsed change-stream config."""
    if not isinstance(doc, dict):
        return None
    if 'replica' in doc and 'checkpoint' in doc:
        return 'capture'
    if 'central' in doc and 'queue' in doc:
        return 'fanin'
    return None


def sequences(gtid_text):
    """'11-11-40,12-12-7' -> {11: 40, 12: 7}; GtidError on bad text."""
    return dict((domain, gtid.seq_no) for domain, gtid in parse_gtid_pos(gtid_text or '').items())


def checkpoint_sequences(text):
    """The checkpoint file's text ({"gtid_pos": "..."}) -> {domain: seq_no}; ValueError if not one."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get('gtid_pos', ''), str):
        raise ValueError('not a change-stream checkpoint (no gtid_pos)')
    return sequences(doc.get('gtid_pos', ''))


def capture_view(name, config, checkpoint, replica, now):
    """One capture's devices: how far its confirmed checkpoint is behind the replica's binlog.

    checkpoint: {'seqs': {domain: seq}, 'mtime': float} or {'error': text}; None when no file yet
    replica:    {'seqs': {domain: seq}} or {'error': text}

    Per device: ``behind`` = replica seq_no - checkpoint seq_no of its GTID domain (transactions
    the broker has not confirmed yet), ``lag_s`` = 0 when caught up, else the seconds since the
    checkpoint last moved (the capture reads one binlog in order, so a capture that moves at all
    moves past every domain in turn).
    """
    errors = []
    if checkpoint is not None and checkpoint.get('error'):
        errors.append('checkpoint: %s' % checkpoint['error'])
    if replica.get('error'):
        errors.append('replica: %s' % replica['error'])
    age = None
    if checkpoint is not None and checkpoint.get('mtime') is not None:
        age = max(now - checkpoint['mtime'], 0.0)
    confirmed = (checkpoint or {}).get('seqs') or {}
    if checkpoint is None:  # no file yet: the capture starts from start_gtid_pos
        try:
            confirmed = sequences(config.get('start_gtid_pos') or '')
        except GtidError:
            confirmed = {}
    held = replica.get('seqs') or {}
    devices = []
    for device in config.get('devices') or []:
        domain = int(device['gtid_domain_id'])
        entry = {'device': device['id'], 'domain': domain, 'capture': name,
                 'replica_seq': held.get(domain), 'captured_seq': confirmed.get(domain),
                 'behind': None, 'lag_s': None, 'error': '; '.join(errors) or None}
        if not errors and held.get(domain) is not None and (confirmed.get(domain) or 0) > held[domain]:
            # the device's GTID history restarted (re-imaged, replica re-seeded): capture.py skips
            # its transactions up to the checkpoint's number, so the stream misses them
            entry['restarted'] = True
        if not errors:
            entry['behind'] = max((held.get(domain) or 0) - (confirmed.get(domain) or 0), 0)
            if entry['behind'] == 0:
                entry['lag_s'] = 0.0
            elif age is not None:
                entry['lag_s'] = round(age, 1)
        devices.append(entry)
    return {'name': name, 'checkpoint_age_s': None if age is None else round(age, 1),
            'checkpoint_exists': checkpoint is not None and not checkpoint.get('error'),
            'error': '; '.join(errors) or None, 'devices': devices}


def fanin_view(name, config, applied, queues):
    """One fan-in: its last applied event per device and its queues' depths.

    applied: {device: {'seq_no', 'row', 'event_id', 'applied_ts'}} or {'error': text}; None for a
             host without a fan-in (only the dead-letter queue is read, with the capture's login)
    queues:  {'fanin': {'messages', 'consumers'} | {'error'}, 'dead': ..., 'other:<name>': ...}
             (other: the config's other queues, e.g. the stream queue other systems consume)
    """
    error = applied.get('error') if isinstance((applied or {}).get('error'), str) else None
    return {'name': name, 'queue': config.get('queue'),
            'dead_letter_queue': dead_letter_queue(config), 'central': applied is not None,
            'central_error': error, 'applied': {} if error or applied is None else applied,
            'queues': queues}


def queue_names(config):
    """{key: queue name} the monitor reads for a fan-in (or capture) config: 'fanin' (its queue, when
    it has one), 'dead', and 'other:<name>' for every other queue the config declares."""
    names = {'dead': dead_letter_queue(config)}
    if config.get('queue'):
        names['fanin'] = config['queue']
    for queue in config.get('queues') or []:
        if isinstance(queue, dict) and queue.get('name') and queue['name'] not in names.values():
            names['other:' + queue['name']] = queue['name']
    return names


def dead_letter_queue(config):
    return config.get('dead_letter_queue') or config.get('dead_letter_exchange') or 'edgefleet.dead'


def device_state(entry, fanins, thresholds):
    """(state, problem or None) of one device's stream (STREAM_STATES)."""
    if entry['error'] or entry['behind'] is None:
        return 'unknown', 'change stream: %s' % (entry['error'] or 'replica position unknown')
    if entry.get('restarted'):
        return 'stalled', ('change stream: the replica binlog restarted this device\'s GTID history (at %d, the stream '
                           'at %d): its transactions up to %d are not streamed' % (
                               entry['replica_seq'], entry['captured_seq'], entry['captured_seq']))
    state, problem = 'current', None
    lag_limit = thresholds['stream_lag_threshold']
    if entry['behind'] > 0:
        if entry['lag_s'] is None or entry['lag_s'] > lag_limit:
            state = 'stalled'
            problem = 'change stream: capture %d transaction%s behind, checkpoint not moved for %s' % (
                entry['behind'], '' if entry['behind'] == 1 else 's',
                '-' if entry['lag_s'] is None else '%ds' % entry['lag_s'])
        else:
            state = 'behind'
    for fanin in fanins:
        queue = (fanin['queues'] or {}).get('fanin') or {}
        if queue.get('error'):
            return 'unknown', 'change stream: queue %s: %s' % (fanin['queue'], queue['error'])
        if queue.get('consumers') == 0 and queue.get('messages'):
            return 'stalled', 'change stream: %d messages in %s and no fan-in consuming' % (
                queue['messages'], fanin['queue'])
        if state == 'current' and (queue.get('messages') or 0) > thresholds['stream_backlog_threshold']:
            state, problem = 'behind', 'change stream: %d messages waiting in %s' % (queue['messages'], fanin['queue'])
    return state, problem


def stream_report(captures, fanins, now, thresholds=None):
    """The host's change-stream part of the status report: per device, the captures, the fan-ins."""
    limits = dict(DEFAULT_THRESHOLDS)
    limits.update(dict((k, v) for k, v in (thresholds or {}).items() if v is not None))
    devices = {}
    for capture in captures:
        for entry in capture['devices']:
            state, problem = device_state(entry, fanins, limits)
            view = dict(entry, state=state, problem=problem, applied_seq=None, applied_ts=None)
            for fanin in fanins:
                applied = fanin['applied'].get(entry['device'])
                if applied:
                    view['applied_seq'] = applied.get('seq_no')
                    view['applied_ts'] = applied.get('applied_ts')
            devices[entry['device']] = view
    return {'collected_at': int(now), 'thresholds': limits, 'devices': devices,
            'captures': [dict((k, v) for k, v in c.items() if k != 'devices') for c in captures],
            'fanins': fanins}


def attach(report, stream):
    """Put each device's stream view on its status record (``record['stream']``), a problem line
    when it is not current, and the host part under ``report['changestream']``. Devices the stream
    does not carry get no ``stream`` key; the device states are not changed (the stream is not the
    backup path)."""
    for record in report['devices']:
        view = stream['devices'].get(record['device'])
        if view is None:
            continue
        record['stream'] = view
        if view['problem'] and record.get('status', 'active') == 'active':
            record['problems'] = list(record['problems']) + [view['problem']]
    report['changestream'] = stream
    report['summary']['stream_current'] = sum(1 for v in stream['devices'].values() if v['state'] == 'current')
    report['summary']['stream_devices'] = len(stream['devices'])
    return report


def stream_cell(record):
    """The STREAM column of the status table: 'current', 'behind 12', 'STALLED 40', 'unknown'."""
    view = record.get('stream')
    if view is None:
        return '-'
    if view['state'] == 'current':
        return 'current'
    if view['state'] == 'unknown':
        return 'UNKNOWN'
    label = 'behind' if view['state'] == 'behind' else 'STALLED'
    return '%s %s' % (label, view['behind']) if view.get('behind') else label


METRICS = (
    ('edgefleet_changestream_device_current',
     '1 when the device\'s change stream is current (capture caught up or moving, fan-in consuming).'),
    ('edgefleet_changestream_capture_behind_transactions',
     'Transactions of the device on its replica the capture has not had confirmed by the broker '
     '(GTID seq_no difference in the device\'s domain).'),
    ('edgefleet_changestream_capture_lag_seconds',
     '0 when the capture has caught up with the device, else seconds since its checkpoint last moved.'),
    ('edgefleet_changestream_fanin_last_applied_timestamp_seconds',
     'Unix time the fan-in last applied an event of the device (0 never).'),
    ('edgefleet_changestream_capture_checkpoint_age_seconds',
     'Seconds since the capture\'s checkpoint file was last written; NaN when it has none yet.'),
    ('edgefleet_changestream_capture_read_ok',
     '1 when the checkpoint and the replica\'s binlog position were read.'),
    ('edgefleet_changestream_queue_messages',
     'Ready messages in a change-stream queue, role fanin, dead or other (passive queue.declare; '
     'messages delivered to a consumer but not acked yet, at most its prefetch, are not counted).'),
    ('edgefleet_changestream_queue_consumers', 'Consumers on a change-stream queue.'),
    ('edgefleet_changestream_dead_letter_messages', 'Messages in the dead-letter queue.'),
    ('edgefleet_changestream_broker_up', '1 when the fan-in\'s queues were read from the broker.'),
    ('edgefleet_changestream_central_up', '1 when the fan-in\'s central schema was read.'),
)


def render_metrics(stream, cloud_host, lines_of):
    """Prometheus exposition lines of the stream part; ``lines_of(name, help, samples)`` formats a
    metric family the way the status metrics are formatted (fleet_status_render)."""
    series = dict((name, []) for name, unused in METRICS)
    host = [('cloud_host', cloud_host)]
    for device in sorted(stream['devices']):
        view = stream['devices'][device]
        labels = [('device', device), ('cloud_host', cloud_host), ('capture', view['capture'])]
        series['edgefleet_changestream_device_current'].append((labels, view['state'] == 'current'))
        series['edgefleet_changestream_capture_behind_transactions'].append((labels, view['behind']))
        series['edgefleet_changestream_capture_lag_seconds'].append((labels, view['lag_s']))
        if stream['fanins']:
            series['edgefleet_changestream_fanin_last_applied_timestamp_seconds'].append(
                (labels, view['applied_ts'] or 0))
    for capture in stream['captures']:
        labels = host + [('capture', capture['name'])]
        series['edgefleet_changestream_capture_checkpoint_age_seconds'].append((labels, capture['checkpoint_age_s']))
        series['edgefleet_changestream_capture_read_ok'].append((labels, capture['error'] is None))
    for fanin in stream['fanins']:
        queues = fanin['queues'] or {}
        broker_ok = all(not (q or {}).get('error') for q in queues.values()) and bool(queues)
        series['edgefleet_changestream_broker_up'].append((host + [('fanin', fanin['name'])], broker_ok))
        if fanin['central']:
            series['edgefleet_changestream_central_up'].append(
                (host + [('fanin', fanin['name'])], fanin['central_error'] is None))
        others = [('other', key[len('other:'):], key) for key in sorted(queues) if key.startswith('other:')]
        for role, name, key in [('fanin', fanin['queue'], 'fanin'), ('dead', fanin['dead_letter_queue'], 'dead')] + others:
            queue = queues.get(key) or {}
            if name is None or queue.get('error') or queue.get('messages') is None:
                continue
            labels = host + [('queue', name), ('role', role)]
            series['edgefleet_changestream_queue_messages'].append((labels, queue['messages']))
            series['edgefleet_changestream_queue_consumers'].append((labels, queue['consumers']))
            if role == 'dead':
                series['edgefleet_changestream_dead_letter_messages'].append(
                    (host + [('queue', name)], queue['messages']))
    lines = []
    for name, help_text in METRICS:
        lines.extend(lines_of(name, help_text, series[name]))
    return lines


# ---------------------------------------------------------------------------------------
# Readers (I/O)
# ---------------------------------------------------------------------------------------

def load_configs(pattern=CONFIG_GLOB):
    """[(name, kind, config)] of the stream's config files; [] when the stream is not configured.
    A file that is not valid JSON is returned as kind 'invalid' with the error as config."""
    found = []
    for path in sorted(glob.glob(pattern)):
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, encoding='utf-8') as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            found.append((name, 'invalid', {'error': str(exc)}))
            continue
        kind = config_kind(doc)
        if kind:
            found.append((name, kind, doc))
    return found


def read_checkpoint(path):
    """{'seqs', 'mtime'}, None when there is no file yet, {'error'} when unreadable."""
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {'error': str(exc)}
    try:
        return {'seqs': checkpoint_sequences(text), 'mtime': mtime}
    except (ValueError, GtidError) as exc:
        return {'error': 'invalid checkpoint: %s' % exc}


def read_replica(replica_options, connect_timeout=5):
    """{'seqs'} from the replica's @@gtid_binlog_pos, or {'error'}."""
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import connect_pymysql
    try:
        conn = connect_pymysql(**dict(replica_options, connect_timeout=connect_timeout, read_timeout=30))
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT @@gtid_binlog_pos')
                text = cur.fetchone()[0]
        finally:
            conn.close()
        return {'seqs': sequences(text.decode() if isinstance(text, bytes) else text)}
    except Exception as exc:  # pylint: disable=broad-except
        return {'error': str(exc)}


def read_applied(central_options, connect_timeout=5):
    """{device: {'seq_no', 'row', 'event_id', 'applied_ts'}} from the central schema, or {'error'}."""
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import connect_pymysql
    try:
        conn = connect_pymysql(**dict(central_options, connect_timeout=connect_timeout, read_timeout=30))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                            "AND table_name = %s", (APPLIED_TABLE,))
                if not cur.fetchone()[0]:
                    return {}  # the fan-in has not started yet: nothing applied
                cur.execute(APPLIED_SELECT)
                rows = cur.fetchall()
        finally:
            conn.close()
    except Exception as exc:  # pylint: disable=broad-except
        return {'error': str(exc)}
    return applied_positions(rows)


def read_queues(broker, names):
    """{role: {'messages', 'consumers'} | {'error'}} by passive queue.declare, one connection."""
    try:
        import pika
        import pika.exceptions
    except ImportError:
        return dict((role, {'error': 'pika (python3-pika) is not installed'}) for role in names)
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import broker as broker_mod
    result = {}
    try:
        connection = broker_mod.connect(dict(broker, heartbeat=0))
    except Exception as exc:  # pylint: disable=broad-except
        return dict((role, {'error': 'broker: %s' % (str(exc) or exc.__class__.__name__)}) for role in names)
    try:
        for role, name in sorted(names.items()):
            channel = connection.channel()
            try:
                frame = channel.queue_declare(name, passive=True)
                result[role] = {'messages': frame.method.message_count, 'consumers': frame.method.consumer_count}
                channel.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                result[role] = {'error': 'queue %s: %s' % (name, exc.reply_text)}
    except Exception as exc:  # pylint: disable=broad-except
        for role in names:
            result.setdefault(role, {'error': 'broker: %s' % (str(exc) or exc.__class__.__name__)})
    finally:
        broker_mod.close_quietly(connection)
    return result


def collect(pattern=CONFIG_GLOB, thresholds=None, now=None, connect_timeout=5):
    """The stream part of the host's status, or None when the stream is not configured here."""
    configs = load_configs(pattern)
    if not configs:
        return None
    now = time.time() if now is None else now
    captures, fanins = [], []
    for name, kind, config in configs:
        if kind == 'capture':
            captures.append(capture_view(name, config, read_checkpoint(config['checkpoint']),
                                         read_replica(config['replica'], connect_timeout), now))
        elif kind == 'fanin':
            queues = read_queues(config['broker'], queue_names(config))
            fanins.append(fanin_view(name, config, read_applied(config['central'], connect_timeout), queues))
        else:
            captures.append({'name': name, 'checkpoint_age_s': None, 'checkpoint_exists': False,
                             'error': 'config unreadable: %s' % config['error'], 'devices': []})
    capture_configs = [(name, config) for name, kind, config in configs if kind == 'capture']
    if not fanins and capture_configs:
        # No fan-in here: the dead letters (the capture's own refusals too) with the capture's login.
        name, config = capture_configs[0]
        config = dict(config, queue=None)
        fanins.append(fanin_view(name, config, None, read_queues(config['broker'], queue_names(config))))
    return stream_report(captures, fanins, now, thresholds)
