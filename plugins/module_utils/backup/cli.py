# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-backup: backups of the replica instances of an edgefleet cloud host.

Installed by the backup role below /usr/local/lib/edgefleet-backup (this package and the
module_utils it imports, at the collection's import path) and run through the launcher
/usr/local/sbin/edgefleet-backup (/usr/bin/python3 -I, the system Python, calling main()).

Backups are taken from the replicas, never from the devices. Python 3 standard library only.
The package, by concern: config (the configuration file), context (one run's clock, paths,
status files), client (SQL through the mariadb client), process (child processes, stop
signal), files, log, listing (backups on disk), sql_thread (pausing a channel), dump (logical
backup), physical (mariabackup), retention, restore, verify, offsite (restic), commands (one
function per command) and cli (this module: arguments and output). The pure logic (names,
retention, schedules, GTID positions, status record) is module_utils/backup_policy.py.

Commands (all read /etc/edgefleet/backup.json unless --config says otherwise):

  run      back up every due device (logical, zstd) and, if enabled, every due instance
           (mariabackup); apply retention after each successful backup; push offsite
  first    the first backup of every device that has none, verified right away (at most
           first_max_per_run devices per run; edgefleet-backup-first.timer)
  verify   restore each device's newest backup into scratch schemas and compare per-table
           checksums with the replica's at the recorded position
  prune    apply the retention policy now (never to a device whose newest attempt failed)
  list     backups on this host
  show     metadata of one backup (newest, as of a date, or by file name)
  restore  load a backup into a MariaDB server (scratch schemas or a replacement device);
           needs no config file, so it also runs on a device
  status   per-device status (the monitoring contract files)
  offsite  snapshots | fetch --device X [--from-host LOST_HOST]: the offsite repository, and a
           device's backups brought back from it (onto a fresh cloud host)
  scratch  list | drop --device X: scratch schemas of restore.yml's scratch restores

Exit code: 0 when everything asked for succeeded, 1 when something failed, 2 on bad usage.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import signal
import sys
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup import commands
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULT_CONFIG, load_config
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.context import Context
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError, HostBusy
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import host_lock
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import configure, log
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import on_signal

# Commands that change the backup directory take the host lock; the others only read.
LOCKED_COMMANDS = {'run': commands.cmd_run, 'first': commands.cmd_first, 'verify': commands.cmd_verify,
                   'prune': commands.cmd_prune,
                   'offsite': commands.cmd_offsite, 'scratch': commands.cmd_scratch}
READ_COMMANDS = {'list': commands.cmd_list, 'show': commands.cmd_show, 'status': commands.cmd_status}
# Sub-commands that only read take no lock (offsite snapshots, fetch --dry-run, scratch list).
READ_ONLY_SUBCOMMANDS = ('snapshots', 'list')


def say(text):
    """One line on stdout (the result; log lines go to stderr)."""
    sys.stdout.write('%s\n' % text)


def print_human(command, result):
    """What a command prints without --json: tables for status and list, else indented JSON."""
    if command == 'status':
        say('%-20s %-20s %12s %6s %-8s %-8s %s' % ('DEVICE', 'LAST SUCCESS (UTC)', 'SIZE', 'KEPT', 'ATTEMPT', 'VERIFY', 'ERROR'))
        for s in result['devices']:
            ts = s.get('last_success_ts')
            say('%-20s %-20s %12s %6s %-8s %-8s %s' % (
                s['device'], time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ts)) if ts else 'never',
                s.get('last_size_bytes') or '-', s.get('backups_kept'),
                {True: 'ok', False: 'FAILED', None: '-'}[s.get('last_attempt_ok')],
                {True: 'ok', False: 'FAILED', None: '-'}[s.get('last_verify_ok')], s.get('last_error') or ''))
    elif command == 'list':
        say('%-20s %-45s %20s %12s %s' % ('DEVICE', 'FILE', 'TAKEN (UTC)', 'BYTES', 'GTID POSITION'))
        for device in result['devices']:
            for b in device['backups']:
                say('%-20s %-45s %20s %12s %s' % (device['device'], b['file'], b['time'], b['size_bytes'], b['position']))
    elif command == 'scratch' and 'schemas' in result:
        say('%-64s %-8s %-12s %7s %14s %s' % ('SCHEMA', 'KIND', 'DEVICE', 'TABLES', 'BYTES', 'SOCKET'))
        for s in result['schemas']:
            say('%-64s %-8s %-12s %7s %14s %s' % (s['schema'], s['kind'], s['device'] or '-', s['tables'], s['bytes'], s['socket']))
    else:
        say(json.dumps(result, indent=2, sort_keys=True))


def build_parser():
    parser = argparse.ArgumentParser(prog='edgefleet-backup', description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--config', default=os.environ.get('EDGEFLEET_BACKUP_CONFIG', DEFAULT_CONFIG))
    parser.add_argument('--json', action='store_true', help='print the result as JSON on stdout')
    parser.add_argument('--quiet', action='store_true', help='no log lines on stderr (the log file still gets them)')
    parser.add_argument('--now', type=int, help='pretend the time is this epoch (simulations and tests)')
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='back up every due device')
    run.add_argument('--device', action='append', help='only this device (repeatable)')
    run.add_argument('--force', action='store_true', help='back up even if not due')
    run.add_argument('--no-physical', action='store_true')
    run.add_argument('--physical-only', action='store_true')
    run.add_argument('--no-offsite', action='store_true')
    first = sub.add_parser('first', help='first backup of devices never backed up, verified right away')
    first.add_argument('--device', action='append', help='only this device (repeatable)')
    first.add_argument('--limit', type=int, help='devices per run at most (default first_max_per_run)')
    verify = sub.add_parser('verify', help='verify newest backups by restoring them into scratch schemas')
    verify.add_argument('--device', action='append')
    verify.add_argument('--all', action='store_true', help='also devices whose newest backup was verified already')
    verify.add_argument('--file', help='verify this backup file (name) instead of the newest')
    prune = sub.add_parser('prune', help='apply the retention policy')
    prune.add_argument('--device', action='append')
    lister = sub.add_parser('list', help='list good backups')
    lister.add_argument('--device', action='append')
    show = sub.add_parser('show', help='metadata of one backup')
    show.add_argument('--device', required=True)
    show.add_argument('--as-of', help='newest backup taken at or before this UTC date/time')
    show.add_argument('--file', help='this backup file name')
    restore = sub.add_parser('restore', help='load a logical backup into a server')
    restore.add_argument('--file', required=True, help='backup file (its .json metadata must sit next to it)')
    restore.add_argument('--socket', required=True, help='unix socket of the target server')
    restore.add_argument('--login-user', default='root')
    restore.add_argument('--prefix', help='restore schema S as PREFIX+S')
    restore.add_argument('--map', action='append', help='SOURCE=TARGET schema name (SOURCE= skips it)')
    restore.add_argument('--overwrite', action='store_true', help='drop and replace non-empty target schemas')
    restore.add_argument('--binlog', action='store_true', help='write the restore to the binlog (default: not)')
    restore.add_argument('--device-target', action='store_true',
                         help='the target is a (replacement) device: re-enable events the replica disabled')
    restore.add_argument('--gtid-state', choices=('auto', 'skip'), default='skip',
                         help='auto: on a server with no binlog GTID of the device domain, continue from the backup position')
    offsite = sub.add_parser('offsite', help='the offsite repository: snapshots, fetch a device\'s backups back')
    offsite_sub = offsite.add_subparsers(dest='offsite_command', required=True)
    snapshots = offsite_sub.add_parser('snapshots', help='snapshots of a host\'s repository')
    snapshots.add_argument('--from-host', help='another cloud host\'s repository (same bucket/target and password)')
    fetch = offsite_sub.add_parser('fetch', help='bring a device\'s backups from a repository into this host\'s backups')
    fetch.add_argument('--device', required=True)
    fetch.add_argument('--from-host', help='the repository of this (lost) cloud host instead of this host\'s own')
    fetch.add_argument('--snapshot', default='latest', help='restic snapshot id (default: the host\'s latest)')
    fetch.add_argument('--dry-run', action='store_true', help='only list what would be fetched')
    scratch = sub.add_parser('scratch', help='scratch schemas left by restore.yml (or a killed verify)')
    scratch_sub = scratch.add_subparsers(dest='scratch_command', required=True)
    scratch_list = scratch_sub.add_parser('list', help='scratch schemas on the replica instances')
    scratch_list.add_argument('--device', action='append')
    scratch_drop = scratch_sub.add_parser('drop', help='drop a device\'s scratch restore schemas (edgefleet_restore_<device>_*)')
    scratch_drop.add_argument('--device', action='append', required=True)
    scratch_drop.add_argument('--schema', action='append', help='only these scratch schemas (also verify leftovers)')
    status = sub.add_parser('status', help='per-device status')
    status.add_argument('--device', action='append')
    return parser


def main(argv=None):
    """The edgefleet-backup command: returns its exit code (0 ok, 1 failed; 2 from argparse)."""
    args = build_parser().parse_args(argv)
    configure(quiet=args.quiet)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.umask(0o027)
    try:
        if args.command == 'restore':
            result = commands.cmd_restore(None, args)
        else:
            config = load_config(args.config)
            configure(log_file=config.get('log_file'))
            ctx = Context(config, args.now)
            if args.command in LOCKED_COMMANDS and not (
                    getattr(args, 'offsite_command', None) in READ_ONLY_SUBCOMMANDS or getattr(args, 'dry_run', False)
                    or getattr(args, 'scratch_command', None) in READ_ONLY_SUBCOMMANDS):
                ctx.mkdir(config['backup_dir'])
                # A first-backup run does not queue behind a long nightly run: the next timer tick retries.
                wait = min(60, int(config['lock_wait'])) if args.command == 'first' else int(config['lock_wait'])
                try:
                    with host_lock(config['lock_file'], wait):
                        result = LOCKED_COMMANDS[args.command](ctx, args)
                except HostBusy as exc:
                    if args.command != 'first':
                        raise
                    log('first: skipped, %s; the next run of the timer tries again' % exc)
                    result = {'devices': [], 'verify': [], 'waiting': [], 'skipped': str(exc), 'ok': True}
            elif args.command in LOCKED_COMMANDS:
                result = LOCKED_COMMANDS[args.command](ctx, args)
            else:
                result = READ_COMMANDS[args.command](ctx, args)
    except (BackupError, P.PolicyError, OSError) as exc:
        log('error: %s' % exc)
        if args.json:
            say(json.dumps({'ok': False, 'error': str(exc)}))
        return 1
    if args.json:
        say(json.dumps(result, sort_keys=True))
    else:
        print_human(args.command, result)
    return 0 if result.get('ok', True) else 1
