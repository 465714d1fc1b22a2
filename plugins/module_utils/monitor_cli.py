# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-monitor: status collector and consistency checker of one cloud host.

Shipped by the edgefleet.mysql_backup monitoring role with the modules it imports (filter
host_code_files) and run by the launcher /usr/local/sbin/edgefleet-monitor (/usr/bin/python3 -I),
from systemd timers or by hand.

  edgefleet-monitor collect        write the Prometheus textfile, status JSON and HTML page
  edgefleet-monitor status [--json] print the status table (or JSON) of this host now
  edgefleet-monitor consistency [--device ID ...]
                                   compare devices with their replicas, write the results,
                                   then collect (exit 1 when a device differs or fails)
  edgefleet-monitor repair         re-seed the opted-in devices that diverged or lost their
                                   binlogs, within the rate limits (module_utils/auto_repair.py)

Configuration: /etc/edgefleet/monitoring.json (--config), written by the role. Where the change
stream is configured (its config files ``/etc/edgefleet/changestream/*.json``, or the glob in
``changestream_configs``), collect and status add its backlog, lag and dead letters
(module_utils/changestream/observe.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import fcntl
import json
import os
import sys

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import (
    auto_repair, consistency, fleet_status_collect, fleet_status_html, fleet_status_render, reseed,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import observe
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    Dialect,
)


def load_config(path):
    with open(path) as handle:
        return json.load(handle)


def collect_report(config):
    options = dict((key, config.get(key)) for key in (
        'socket_dir', 'backup_status_dir', 'consistency_dir', 'repair_dir', 'lag_threshold',
        'backup_max_age', 'connect_timeout'))
    report = fleet_status_collect.collect(config.get('devices') or [], config.get('instances') or [],
                                          config.get('cloud_host') or os.uname()[1], options)
    # The change stream's backlog, lag and dead letters, only where its config files exist
    # (``changestream_configs``, a glob; docs/changestream.md "Files on the host").
    stream = observe.collect(config.get('changestream_configs') or observe.CONFIG_GLOB, dict(
        (key, config.get(key)) for key in observe.DEFAULT_THRESHOLDS), connect_timeout=config.get('connect_timeout') or 5)
    if stream is not None:
        observe.attach(report, stream)
    return report


def cmd_collect(config, _args):
    report = collect_report(config)
    outputs = config.get('outputs') or {}
    if outputs.get('metrics'):
        fleet_status_collect.write_atomic(outputs['metrics'], fleet_status_render.render_metrics(report))
    if outputs.get('json'):
        fleet_status_collect.write_atomic(outputs['json'], fleet_status_render.render_json(report))
    if outputs.get('html'):
        fleet_status_collect.write_atomic(outputs['html'], fleet_status_html.render_html(
            report, title=config.get('html_title') or 'edgefleet status',
            refresh=config.get('html_refresh', 60)))
    sys.stdout.write(fleet_status_render.summary_line(report['summary']) + '\n')
    return 0


def cmd_status(config, args):
    report = collect_report(config)
    if args.json:
        sys.stdout.write(fleet_status_render.render_json(report))
    else:
        sys.stdout.write(fleet_status_render.render_table(report))
    return 0


def read_secret(path):
    with open(path) as handle:
        return handle.read().strip()


def instance_socket(config, device):
    return os.path.join(config.get('socket_dir') or '/run/mysqld',
                        'edgefleet-%s.sock' % (device.get('replica_instance') or device['id']))


def check_device(config, device, password):
    """Compare one device with its replica; write and return the result."""
    check = config.get('check') or {}
    options = dict((key, check.get(key)) for key in (
        'until_timeout', 'lock_timeout', 'locate_max_rows', 'locate_limit'))
    instance = device.get('replica_instance') or device['id']
    channel = device.get('channel_name') or device['id']

    def device_connect(port=device['tunnel_mysql_port']):
        return consistency.connect(host=check.get('source_host') or '127.0.0.1',
                                   port=int(port), user=check.get('user') or 'edgefleet_check',
                                   password=password,
                                   connect_timeout=check.get('connect_timeout') or 10)

    base = {'device': device['id'], 'channel': channel, 'instance': instance}
    try:
        replica = consistency.connect(unix_socket=instance_socket(config, device), user='root')
    except Exception as exc:  # pylint: disable=broad-except
        base.update(state='error', error='replica instance not reachable: %s' % exc,
                    tables=[], differing_tables=[], tables_checked=0)
    else:
        try:
            dialect = Dialect.from_version_string(replica.get_server_info())
            base.update(consistency.check_device(
                device_connect, replica, dialect, channel,
                consistency.schema_map_for(config.get('databases') or ['app'],
                                           device.get('schema_prefix') or ''),
                options))
        finally:
            replica.close()
    results_dir = config.get('consistency_dir') or '/var/lib/edgefleet/consistency'
    fleet_status_collect.write_atomic(os.path.join(results_dir, '%s.json' % device['id']),
                                      json.dumps(base, indent=2, sort_keys=True) + '\n', 0o640)
    return base


def cmd_consistency(config, args):
    password = read_secret((config.get('check') or {})['password_file'])
    devices = config.get('devices') or []
    if args.device:
        wanted = set(args.device)
        unknown = wanted - set(d['id'] for d in devices)
        if unknown:
            sys.stderr.write('not on this host: %s\n' % ', '.join(sorted(unknown)))
            return 2
        devices = [d for d in devices if d['id'] in wanted]
    worst = 0
    for device in devices:
        base = check_device(config, device, password)
        sys.stdout.write('%s: %s%s\n' % (device['id'], base['state'], (
            ' (%s)' % ', '.join(base['differing_tables']) if base.get('differing_tables')
            else (' - %s' % base['error'] if base.get('error') else ''))))
        worst = max(worst, 0 if base['state'] == 'ok' else 1)
    cmd_collect(config, args)
    return worst


def cmd_repair(config, args):
    """Re-seed the opted-in devices that need it, within the rate limits (module_utils/auto_repair.py)."""
    repair_config = config.get('repair') or {}
    repair_dir = config.get('repair_dir') or '/var/lib/edgefleet/repair'
    if not os.path.isdir(repair_dir):
        os.makedirs(repair_dir, 0o750)
    lock = open(os.path.join(repair_dir, '.lock'), 'a')  # pylint: disable=consider-using-with
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.stdout.write('another repair runs on this host: nothing done\n')
        return 0
    try:
        devices = dict((d['id'], d) for d in config.get('devices') or [])
        if not any(d.get('auto_repair') for d in devices.values()):
            sys.stdout.write('no device opted in for automatic repair\n')
            return 0
        password = read_secret((config.get('check') or {})['password_file'])
        check = config.get('check') or {}

        def repair(device, _reason):
            try:
                done = reseed.reseed_channel(
                    device['id'], instance_socket(config, device),
                    device.get('channel_name') or device['id'], config.get('databases') or ['app'],
                    device.get('schema_prefix') or '',
                    {'login_host': check.get('source_host') or '127.0.0.1',
                     'login_port': int(device['tunnel_mysql_port']),
                     'login_user': check.get('user') or 'edgefleet_check', 'login_password': password},
                    repair_config.get('work_dir') or '/var/lib/edgefleet/resync',
                    warn=lambda message: sys.stderr.write('warning: %s\n' % message))
            except reseed.ReseedError as exc:
                return False, str(exc)
            result = check_device(config, device, password)
            if result['state'] != 'ok':
                return False, 're-seeded from GTID %s, but the check says %s: %s' % (
                    done['gtid_pos'] or '-', result['state'],
                    ', '.join(result.get('differing_tables') or []) or result.get('error') or '')
            return True, 're-seeded from GTID %s (%d bytes), consistency check ok' % (
                done['gtid_pos'] or '-', done['loaded_bytes'])

        outcomes = auto_repair.run(
            collect_report(config)['devices'], devices, repair_dir,
            dict((key, repair_config.get(key)) for key in auto_repair.DEFAULT_POLICY),
            repair, lambda path, text: fleet_status_collect.write_atomic(path, text, 0o640),
            log=lambda line: sys.stdout.write(line + '\n'))
        if not outcomes:
            sys.stdout.write('no opted-in device needs a repair\n')
        cmd_collect(config, args)
        return 1 if any(outcome == 'failed' for _device, outcome, _detail in outcomes) else 0
    finally:
        lock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog='edgefleet-monitor', description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--config', default='/etc/edgefleet/monitoring.json')
    sub = parser.add_subparsers(dest='command')
    sub.add_parser('collect', help='write metrics, JSON and HTML')
    status = sub.add_parser('status', help='print the status of this host')
    status.add_argument('--json', action='store_true')
    check = sub.add_parser('consistency', help='compare devices with their replicas')
    check.add_argument('--device', action='append', help='only this device (repeatable)')
    sub.add_parser('repair', help='re-seed opted-in devices that diverged or lost their binlogs')
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    config = load_config(args.config)
    return {'collect': cmd_collect, 'status': cmd_status,
            'consistency': cmd_consistency, 'repair': cmd_repair}[args.command](config, args)
