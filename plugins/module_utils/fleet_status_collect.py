# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gather the status of every device a cloud host carries, in one pass.

Reads, for the whole host at once: the listening TCP sockets (``/proc/net/tcp*``: a device's
tunnel is up when its port listens), every replica instance's channels (one connection and one
``SHOW ALL REPLICAS STATUS`` per instance), the backup status files and the last consistency
results. Standard library plus PyMySQL, no Ansible imports: used by the ``fleet_status`` module
and by the ``edgefleet-monitor`` collector that the monitoring role installs on cloud hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import write_if_changed
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.consistency import (
    HAS_PYMYSQL, connect,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    Dialect, channel_key,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import (
    DEFAULT_THRESHOLDS, build_record, make_report,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_state import (
    applied_pos, diagnose, parse_status_row,
)

TCP_LISTEN = '0A'
PROC_NET = ('/proc/net/tcp', '/proc/net/tcp6')
# Addresses a reverse tunnel may listen on: loopback (what permitlisten allows) or any.
_LOOPBACK_OR_ANY = ('0100007F', '00000000', '00000000000000000000000001000000',
                    '00000000000000000000000000000000')

DEFAULTS = {
    'socket_dir': '/run/mysqld',
    'login_user': 'root',
    'login_password': None,
    'connect_timeout': 5,
    'backup_status_dir': '/var/lib/edgefleet/backup/status',
    'consistency_dir': '/var/lib/edgefleet/consistency',
    'repair_dir': '/var/lib/edgefleet/repair',
    # Replica instances read in parallel (instance mode: one small server per device).
    'workers': 8,
}


def listening_ports(paths=PROC_NET):
    """TCP ports in LISTEN state on loopback or on every address, from /proc/net/tcp{,6}."""
    ports = set()
    for path in paths:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != TCP_LISTEN:
                continue
            address, port = fields[1].split(':', 1)
            if address.upper() in _LOOPBACK_OR_ANY:
                ports.add(int(port, 16))
    return ports


def _text(value):
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def connect_socket(socket_path, user='root', password=None, connect_timeout=5):
    return connect(unix_socket=socket_path, user=user, password=password,
                   connect_timeout=connect_timeout, read_timeout=max(connect_timeout * 6, 30))


def read_instance(socket_path, lag_threshold, user='root', password=None, connect_timeout=5):
    """Channels of one replica instance: {'reachable', 'error', 'server', 'channels'}."""
    result = {'socket': socket_path, 'reachable': False, 'error': None, 'channels': {},
              'server': {}}
    if not HAS_PYMYSQL:
        result['error'] = 'PyMySQL is not installed'
        return result
    try:
        connection = connect_socket(socket_path, user, password, connect_timeout)
    except Exception as exc:  # pylint: disable=broad-except
        result['error'] = str(exc)
        return result
    try:
        with connection.cursor() as cur:
            cur.execute('SELECT VERSION() AS v, @@version_comment AS c')
            row = cur.fetchone()
            dialect = Dialect.from_version_string(_text(row['v']), _text(row['c']) or '')
            cur.execute(dialect.server_facts_query()[0])
            facts = dict((k, _text(v)) for k, v in (cur.fetchone() or {}).items())
            cur.execute(dialect.status_all()[0])
            rows = cur.fetchall()
    except Exception as exc:  # pylint: disable=broad-except
        result['error'] = str(exc)
        return result
    finally:
        try:
            connection.close()
        except Exception:  # pylint: disable=broad-except
            pass
    gtid_slave_pos = (facts.get('gtid_slave_pos') or '').replace('\n', '')
    result['reachable'] = True
    result['server'] = {'version': _text(row['v']), 'read_only': str(facts.get('read_only')) in
                        ('1', 'ON'), 'gtid_slave_pos': gtid_slave_pos}
    for raw in rows:
        status = parse_status_row(raw, dialect.is_mariadb)
        health, diagnosis = diagnose(status, lag_threshold)
        report = dict((key, status.get(key)) for key in (
            'name', 'io_running', 'sql_running', 'seconds_behind', 'last_io_errno',
            'last_io_error', 'last_sql_errno', 'last_sql_error'))
        report.update(health=health, diagnosis=diagnosis,
                      gtid_io_pos=status.get('gtid_io_pos') or '',
                      gtid_applied_pos=applied_pos(status.get('gtid_io_pos'), gtid_slave_pos))
        result['channels'][channel_key(status['name'])] = report
    return result


def read_json_file(path):
    """Parsed JSON document, None when the file does not exist, {'_error': ...} if unreadable."""
    try:
        with open(path) as handle:
            doc = json.load(handle)
    except (IOError, OSError) as exc:
        if getattr(exc, 'errno', None) == 2:
            return None
        return {'_error': str(exc)}
    except ValueError as exc:
        return {'_error': 'invalid JSON: %s' % exc}
    if not isinstance(doc, dict):
        return {'_error': 'not a JSON object'}
    return doc


def collect(devices, instances, cloud_host, options=None, now=None, listening=None):
    """Status report of one cloud host: every device of ``devices`` (allocation records).

    One connection per replica instance, one read of the listening sockets, one file read
    per device for the backup status and the consistency result.
    """
    opts = dict(DEFAULTS)
    opts.update(dict(DEFAULT_THRESHOLDS))
    opts.update(dict((k, v) for k, v in (options or {}).items() if v is not None))
    started = time.time()
    now = started if now is None else now
    if listening is None:
        listening = listening_ports()
    names = set(i['name'] for i in instances or [])
    names.update(d.get('replica_instance') for d in devices or [] if d.get('replica_instance'))

    def read(name):
        socket_path = os.path.join(opts['socket_dir'], 'edgefleet-%s.sock' % name)
        return name, read_instance(socket_path, opts['lag_threshold'], opts['login_user'],
                                   opts['login_password'], opts['connect_timeout'])

    with ThreadPoolExecutor(max_workers=max(1, int(opts['workers']))) as pool:
        instance_info = dict(pool.map(read, sorted(names)))
    records = []
    for device in devices or []:
        info = instance_info.get(device.get('replica_instance'))
        channel_name = device.get('channel_name')
        if channel_name is None:
            channel_name = device['id']
        if info is None:
            channel, error = None, 'device has no replica instance'
        elif not info['reachable']:
            channel, error = None, '%s: %s' % (device.get('replica_instance'), info['error'])
        else:
            channel, error = info['channels'].get(channel_key(channel_name)), None
        backup = read_json_file(os.path.join(opts['backup_status_dir'], '%s.json' % device['id']))
        checked = read_json_file(os.path.join(opts['consistency_dir'], '%s.json' % device['id']))
        repaired = read_json_file(os.path.join(opts['repair_dir'], '%s.json' % device['id']))
        records.append(build_record(device, cloud_host, listening, channel, error, backup,
                                    checked, now, opts, repair_doc=repaired))
    host = {
        'cloud_host': cloud_host,
        'collected_at': int(now),
        'duration_s': round(time.time() - started, 3),
        'devices': len(records),
        'instances': [{'name': name, 'reachable': info['reachable'], 'error': info['error'],
                       'channels': len(info['channels']),
                       'version': info['server'].get('version')}
                      for name, info in sorted(instance_info.items())],
    }
    return make_report(records, [host], int(now), dict(
        (key, opts[key]) for key in DEFAULT_THRESHOLDS))


def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path`` atomically unless it already holds it (node_exporter reads
    textfiles at any time, so it must never see half a file). Returns True if changed."""
    return write_if_changed(path, text, mode)
