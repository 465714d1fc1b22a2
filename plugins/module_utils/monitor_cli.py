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

Configuration: /etc/edgefleet/monitoring.json (--config), written by the role.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import (
    consistency, fleet_status_collect, fleet_status_html, fleet_status_render,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    Dialect,
)


def load_config(path):
    with open(path) as handle:
        return json.load(handle)


def collect_report(config):
    options = dict((key, config.get(key)) for key in (
        'socket_dir', 'backup_status_dir', 'consistency_dir', 'lag_threshold', 'backup_max_age',
        'connect_timeout'))
    return fleet_status_collect.collect(config.get('devices') or [], config.get('instances') or [],
                                        config.get('cloud_host') or os.uname()[1], options)


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


def cmd_consistency(config, args):
    check = config.get('check') or {}
    password = read_secret(check['password_file'])
    devices = config.get('devices') or []
    if args.device:
        wanted = set(args.device)
        unknown = wanted - set(d['id'] for d in devices)
        if unknown:
            sys.stderr.write('not on this host: %s\n' % ', '.join(sorted(unknown)))
            return 2
        devices = [d for d in devices if d['id'] in wanted]
    options = dict((key, check.get(key)) for key in (
        'until_timeout', 'lock_timeout', 'locate_max_rows', 'locate_limit'))
    results_dir = config.get('consistency_dir') or '/var/lib/edgefleet/consistency'
    worst = 0
    for device in devices:
        instance = device.get('replica_instance') or device['id']
        socket_path = os.path.join(config.get('socket_dir') or '/run/mysqld',
                                   'edgefleet-%s.sock' % instance)
        channel = device.get('channel_name') or device['id']

        def device_connect(port=device['tunnel_mysql_port']):
            return consistency.connect(host=check.get('source_host') or '127.0.0.1',
                                       port=int(port), user=check.get('user') or 'edgefleet_check',
                                       password=password,
                                       connect_timeout=check.get('connect_timeout') or 10)

        base = {'device': device['id'], 'channel': channel, 'instance': instance}
        try:
            replica = consistency.connect(unix_socket=socket_path, user='root')
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
        fleet_status_collect.write_atomic(os.path.join(results_dir, '%s.json' % device['id']),
                                          json.dumps(base, indent=2, sort_keys=True) + '\n',
                                          0o640)
        sys.stdout.write('%s: %s%s\n' % (device['id'], base['state'], (
            ' (%s)' % ', '.join(base['differing_tables']) if base.get('differing_tables')
            else (' - %s' % base['error'] if base.get('error') else ''))))
        worst = max(worst, 0 if base['state'] == 'ok' else 1)
    cmd_collect(config, args)
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(prog='edgefleet-monitor', description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--config', default='/etc/edgefleet/monitoring.json')
    sub = parser.add_subparsers(dest='command')
    sub.add_parser('collect', help='write metrics, JSON and HTML')
    status = sub.add_parser('status', help='print the status of this host')
    status.add_argument('--json', action='store_true')
    check = sub.add_parser('consistency', help='compare devices with their replicas')
    check.add_argument('--device', action='append', help='only this device (repeatable)')
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    config = load_config(args.config)
    return {'collect': cmd_collect, 'status': cmd_status,
            'consistency': cmd_consistency}[args.command](config, args)
