# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup program's commands (run, verify, prune, list, show, restore, status): each takes
the run's Context (None for restore, which needs no configuration) and the parsed arguments
and returns its result dict (``ok`` False when something failed). cli.py parses and prints."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server, sql_string
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULT_TOOLS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.dump import backup_device, device_schemas
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.listing import (
    describe, list_backups, newest_good_ts, newest_local_mtime, pick_devices)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.offsite import (
    offsite_fetch, offsite_push, offsite_snapshots, offsite_status_path)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.physical import backup_instance
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import STOPPING, Worker
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.restore import load_backup, restore_file
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.retention import apply_retention
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.sql_thread import resume_held
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.verify import verify_device


def parallel(ctx, function, items):
    """[function(item) for item in items], at most `concurrency` at a time."""
    items = list(items)
    results = [None] * len(items)
    todo, todo_lock = iter(range(len(items))), threading.Lock()

    def work():
        while True:
            with todo_lock:
                index = next(todo, None)
            if index is None:
                return
            results[index] = function(items[index])

    count = min(max(1, int(ctx.config['concurrency'])), len(items))
    workers = [Worker(work) for _worker in range(count)]
    for worker in workers:
        worker.result()
    return results


def run_device(ctx, device):
    """Backup + retention + status for one device; never raises. Returns a summary dict."""
    device_id = device['id']
    started = time.monotonic()
    try:
        log('%s: backup started (instance %s, %s mode)' % (device_id, device['instance'], device['mode']))
        meta = backup_device(ctx, device)
        keep, removed = apply_retention(ctx, ctx.logical_dir(device_id), device_id, 'logical',
                                        ctx.config['keep_last'], ctx.config['keep_days'])
        ctx.update_status(device_id, lambda s: P.record_attempt(
            s, True, meta['started_ts'], file_name=meta['file'], size=meta['size_bytes'],
            duration=meta['duration_s'], kept=len(keep), position=meta['position']['device_gtid_pos']))
        log('%s: backup ok %s: %d bytes (%d raw), %.1fs, SQL thread paused %.1fs, at %s; kept %d, removed %d'
            % (device_id, meta['file'], meta['size_bytes'], meta['raw_bytes'], meta['duration_s'],
               meta['sql_thread_paused_s'], meta['position']['device_gtid_pos'] or '(empty position)',
               len(keep), len(removed)))
        result = {'device': device_id, 'ok': True, 'file': meta['file'], 'size_bytes': meta['size_bytes'],
                  'duration_s': meta['duration_s'], 'position': meta['position']['device_gtid_pos'],
                  'kept': len(keep), 'removed': removed}
        if ctx.config.get('verify_after_backup'):
            result['verify'] = verify_device(ctx, device)
        return result
    except Exception as exc:  # pylint: disable=broad-except
        message = str(exc) or exc.__class__.__name__
        if STOPPING.is_set():
            message = 'interrupted by a stop signal (%s)' % message
        kept = len(list_backups(ctx.logical_dir(device_id), device_id))
        try:
            ctx.update_status(device_id, lambda s: P.record_attempt(s, False, ctx.now(), error=message, kept=kept))
        except OSError as status_exc:
            log('%s: could not write the status file: %s' % (device_id, status_exc))
        log('%s: backup FAILED after %.1fs (nothing deleted, %d good backups kept): %s'
            % (device_id, time.monotonic() - started, kept, message))
        return {'device': device_id, 'ok': False, 'error': message, 'kept': kept}


def run_instance(ctx, instance):
    """Physical backup + retention + status of one replica instance; never raises."""
    name = instance['name']
    physical = ctx.config['physical']
    status_path = os.path.join(ctx.config['backup_dir'], 'physical', '%s.status.json' % name)
    status = read_json(status_path) or {'instance': name}
    try:
        log('%s: physical backup started (mariabackup)' % name)
        meta = backup_instance(ctx, instance)
        keep, removed = apply_retention(ctx, ctx.physical_dir(name), name, 'physical',
                                        physical.get('keep_last', 2), physical.get('keep_days', 14))
        status.update(last_success_ts=meta['started_ts'], last_success_file=meta['file'],
                      last_size_bytes=meta['size_bytes'], last_duration_s=meta['duration_s'],
                      last_attempt_ts=meta['started_ts'], last_attempt_ok=True, last_error=None,
                      backups_kept=len(keep))
        log('%s: physical backup ok %s: %d bytes, %.1fs; kept %d, removed %d'
            % (name, meta['file'], meta['size_bytes'], meta['duration_s'], len(keep), len(removed)))
        result = {'instance': name, 'ok': True, 'file': meta['file'], 'size_bytes': meta['size_bytes'],
                  'duration_s': meta['duration_s'], 'removed': removed}
    except Exception as exc:  # pylint: disable=broad-except
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=False, last_error=str(exc)[:2000])
        log('%s: physical backup FAILED (nothing deleted): %s' % (name, exc))
        result = {'instance': name, 'ok': False, 'error': str(exc)}
    ctx.mkdir(os.path.join(ctx.config['backup_dir'], 'physical'))
    ctx.write_json(status_path, status)
    return result


def offsite_behind(offsite_state, newest_mtime):
    """True when the last push failed, never happened, or is older than the newest local
    backup (made with --no-offsite, or while the target was down)."""
    return offsite_state.get('last_attempt_ok') is not True or \
        newest_mtime > (offsite_state.get('last_success_wall_ts') or 0)


def cmd_run(ctx, args):
    config = ctx.config
    now = ctx.now()
    resume_held(ctx)
    devices = pick_devices(config, args.device)
    for device in devices:
        if not os.path.exists(ctx.status_path(device['id'])):
            ctx.update_status(device['id'], lambda s: s)
    due = [d for d in devices if P.is_due(newest_good_ts(ctx, d['id']), config['min_age_s'], now, args.force)]
    log('run: %d device(s) configured, %d due (min age %s), concurrency %d'
        % (len(devices), len(due), config['min_age'], int(config['concurrency'])))
    results = {'devices': [], 'instances': [], 'offsite': None}
    if not args.physical_only:
        results['devices'] = parallel(ctx, lambda d: run_device(ctx, d), due)
    physical = config['physical']
    if physical.get('enabled') and not args.no_physical:
        instances = physical.get('instances', [])
        if args.device:
            instances = [i for i in instances if set(i.get('devices', [])) & set(args.device)]
        due_instances = [i for i in instances if P.is_due(
            (list_backups(ctx.physical_dir(i['name']), i['name'], 'physical') or [(None, None)])[-1][1],
            physical['min_age_s'], now, args.force)]
        results['instances'] = parallel(ctx, lambda i: run_instance(ctx, i), due_instances)
    new_files = any(r.get('ok') for r in results['devices'] + results['instances'])
    behind = offsite_behind(read_json(offsite_status_path(config)) or {}, newest_local_mtime(config['backup_dir']))
    if config['offsite'].get('enabled') and not args.no_offsite and (new_files or behind or args.force):
        results['offsite'] = offsite_push(ctx)
    failed = [r for r in results['devices'] + results['instances'] if not r.get('ok')]
    if results['offsite'] and not results['offsite']['ok']:
        failed.append(results['offsite'])
    results['ok'] = not failed
    log('run: %d backed up, %d failed' % (len([r for r in results['devices'] + results['instances'] if r.get('ok')]),
                                          len(failed)))
    return results


def first_backup_order(devices, statuses):
    """Devices never backed up, those never attempted first, then the longest since their last
    attempt (one that keeps failing cannot hold the others back)."""
    return sorted(devices, key=lambda d: ((statuses.get(d['id']) or {}).get('last_attempt_ts') or 0, d['id']))


def cmd_first(ctx, args):
    """The first backup of every device that has none, verified right away: a newly onboarded
    device is protected within minutes instead of waiting for the nightly run. At most
    ``first_max_per_run`` (or --limit) devices per run, so hundreds of new devices are spread over
    successive runs of edgefleet-backup-first.timer instead of dumping at once."""
    resume_held(ctx)
    limit = int(args.limit if args.limit is not None else ctx.config['first_max_per_run'])
    if limit < 1:
        raise BackupError('--limit (first_max_per_run) must be at least 1, got %d' % limit)
    never = [d for d in pick_devices(ctx.config, args.device) if newest_good_ts(ctx, d['id']) is None]
    not_ready = first_backup_not_ready(ctx, never)
    for device_id, reason in sorted(not_ready.items()):
        log('first: %s waits: %s' % (device_id, reason))
    ready = [d for d in never if d['id'] not in not_ready]
    chosen = first_backup_order(ready, dict((d['id'], ctx.read_status(d['id'])) for d in ready))[:limit]
    log('first: %d device(s) never backed up, %d not ready, %d now (at most %d per run)'
        % (len(never), len(not_ready), len(chosen), limit))
    for device in chosen:
        if not os.path.exists(ctx.status_path(device['id'])):
            ctx.update_status(device['id'], lambda s: s)
    backed = parallel(ctx, lambda d: run_device(ctx, d), chosen)
    good = [d for d, r in zip(chosen, backed) if r.get('ok')]
    verified = parallel(ctx, lambda d: verify_device(ctx, d), good)
    waiting = sorted(set(d['id'] for d in ready) - set(d['id'] for d in chosen))
    ok = all(r.get('ok') for r in backed + verified)
    log('first: %d backed up, %d verified, %d failed, %d waiting for a later run'
        % (len(good), len([r for r in verified if r.get('ok')]),
           len([r for r in backed + verified if not r.get('ok')]), len(waiting) + len(not_ready)))
    return {'devices': backed, 'verify': verified, 'waiting': waiting, 'not_ready': not_ready, 'ok': ok}


def first_backup_not_ready(ctx, devices):
    """{device id: why its first backup waits} (backup_policy.first_backup_wait_reason), one look
    at the schemas and channels per replica instance. An instance that cannot be read is left to
    the backup attempt, which records the error."""
    by_socket, reasons = {}, {}
    for device in devices:
        by_socket.setdefault(device['socket'], []).append(device)
    for socket, here in sorted(by_socket.items()):
        server = Server(socket, ctx.tools, ctx.config['login_user'])
        try:
            channels, present = server.channels(), server.schemas()
            schemas = dict((d['id'], bool(device_schemas(server, d, ctx.config['databases'], present))) for d in here)
        except (BackupError, OSError) as exc:
            log('first: cannot read %s (%s): its devices are attempted' % (socket, exc))
            continue
        for device in here:
            reason = P.first_backup_wait_reason(schemas[device['id']], channels.get(device['channel']),
                                                ctx.config['first_max_lag'])
            if reason:
                reasons[device['id']] = reason
    return reasons


def cmd_verify(ctx, args):
    resume_held(ctx)
    devices = pick_devices(ctx.config, args.device)
    if not args.all and not args.file:
        due = []
        for device in devices:
            backups = list_backups(ctx.logical_dir(device['id']), device['id'])
            status = ctx.read_status(device['id'])
            if backups and (status.get('last_verify_file') != backups[-1][0] or status.get('last_verify_ok') is not True):
                due.append(device)
        devices = due
    log('verify: %d device(s) to verify' % len(devices))
    results = parallel(ctx, lambda d: verify_device(ctx, d, args.file), devices)
    return {'devices': results, 'ok': all(r['ok'] for r in results)}


def cmd_prune(ctx, args):
    results = []
    for device in pick_devices(ctx.config, args.device):
        status = ctx.read_status(device['id'])
        if status.get('last_attempt_ok') is False:
            log('%s: prune skipped: the last backup attempt failed (retention runs only after a good one)' % device['id'])
            results.append({'device': device['id'], 'skipped': True})
            continue
        keep, removed = apply_retention(ctx, ctx.logical_dir(device['id']), device['id'], 'logical',
                                        ctx.config['keep_last'], ctx.config['keep_days'])
        ctx.update_status(device['id'], lambda s, n=len(keep): dict(s, backups_kept=n))
        results.append({'device': device['id'], 'kept': keep, 'removed': removed})
    return {'devices': results, 'ok': True}


def cmd_list(ctx, args):
    out = []
    for device in pick_devices(ctx.config, args.device, backups_only=True):
        directory = ctx.logical_dir(device['id'])
        out.append({'device': device['id'],
                    'backups': [describe(directory, n, m) for n, _ts, m in list_backups(directory, device['id'])]})
    return {'devices': out, 'ok': True}


def cmd_show(ctx, args):
    device = pick_devices(ctx.config, [args.device], backups_only=True)[0]
    directory = ctx.logical_dir(device['id'])
    backups = list_backups(directory, device['id'])
    if args.file:
        chosen = args.file if any(b[0] == args.file for b in backups) else None
    else:
        chosen = P.select_backup([(n, ts) for n, ts, _m in backups], P.parse_when(args.as_of))
    if not chosen:
        if args.file:
            which = ' named %s' % args.file
        else:
            which = ' taken at or before %s' % args.as_of if args.as_of else ''
        raise BackupError('no good backup of %s%s' % (device['id'], which))
    meta = dict((n, m) for n, _ts, m in backups)[chosen]
    result = describe(directory, chosen, meta)
    result.update(ok=True, device=device['id'], socket=device['socket'], mode=device['mode'],
                  channel=device['channel'], gtid_domain_id=device.get('gtid_domain_id'),
                  metadata_path=os.path.join(directory, chosen + P.META_SUFFIX),
                  available=len(backups))
    return result


def restore_mapping(meta, prefix, maps):
    """{source schema: target schema or None (skipped)} of a restore: every schema of the backup
    as PREFIX+name (as is without a prefix), changed by --map SOURCE=TARGET items."""
    mapping = {}
    for db in (s['name'] for s in meta['schemas']):
        mapping[db] = (prefix or '') + db
    for item in maps or []:
        if '=' not in item:
            raise BackupError('--map takes SOURCE=TARGET (or SOURCE= to skip), got %r' % item)
        source, target = item.split('=', 1)
        if source not in mapping:
            raise BackupError('--map %s: the backup has no schema %r (it has %s)' % (item, source, ', '.join(mapping)))
        mapping[source] = target or None
    return mapping


def cmd_restore(_ctx, args):
    tools = dict(DEFAULT_TOOLS)
    server = Server(args.socket, tools, args.login_user)
    meta = load_backup(args.file)
    mapping = restore_mapping(meta, args.prefix, args.map)
    log('restore: %s (%s, position %s) into %s on %s'
        % (os.path.basename(args.file), meta.get('device'), meta['position'].get('device_gtid_pos'),
           ', '.join('%s->%s' % kv for kv in mapping.items()), args.socket))
    with server:
        result = restore_file(args.file, server, mapping, overwrite=args.overwrite, no_binlog=not args.binlog,
                              tools=tools, meta=meta, device_target=args.device_target, gtid_state=args.gtid_state)
    log('restore: %s: %s' % ('ok' if result['ok'] else 'CHECKSUM MISMATCH', result['detail']))
    return result


def cmd_status(ctx, args):
    out = []
    for device in pick_devices(ctx.config, args.device):
        status = ctx.read_status(device['id'])
        out.append(status)
    return {'devices': out, 'ok': all(s.get('last_attempt_ok') is not False for s in out)}


def cmd_offsite(ctx, args):
    """offsite snapshots | fetch: what a host's repository holds, and one device's backups
    brought back from it (onto this host, e.g. a fresh cloud host after a lost one)."""
    if args.offsite_command == 'snapshots':
        return offsite_snapshots(ctx, args.from_host)
    return offsite_fetch(ctx, args.device, args.from_host, args.snapshot, args.dry_run)


# Scratch schemas: restore.yml's scratch restores (edgefleet_restore_<device>_<db>) and verify's
# (edgefleet_verify_<hash>_<db>, dropped by verify itself unless it was killed).
RESTORE_SCRATCH_PREFIX = 'edgefleet_restore_'


def scratch_prefixes(ctx):
    return (RESTORE_SCRATCH_PREFIX, ctx.config['verify_prefix'])


def scratch_sockets(ctx, devices):
    """{socket: [device ids]} of the given devices' replica instances, in order."""
    sockets = {}
    for device in devices:
        if device.get('socket'):
            sockets.setdefault(device['socket'], []).append(device['id'])
    return sockets


def cmd_scratch(ctx, args):
    """scratch list: every scratch schema on the replica instances (of --device, or all);
    scratch drop --device X: drop X's scratch restore schemas (or the --schema ones)."""
    devices = pick_devices(ctx.config, args.device)
    prefixes = scratch_prefixes(ctx)
    found = []
    for socket, ids in scratch_sockets(ctx, devices).items():
        with Server(socket, ctx.tools, ctx.config['login_user']) as server:
            for schema in server.schemas():
                if not schema.startswith(prefixes):
                    continue
                owner = next((d for d in ids if schema.startswith('%s%s_' % (RESTORE_SCRATCH_PREFIX, d))), None)
                if args.device and owner is None and not schema.startswith(ctx.config['verify_prefix']):
                    continue
                counts = server.object_counts(schema)
                size = server.value("SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES "
                                    "WHERE TABLE_SCHEMA = %s" % sql_string(schema))
                found.append({'schema': schema, 'socket': socket, 'device': owner,
                              'kind': 'restore' if schema.startswith(RESTORE_SCRATCH_PREFIX) else 'verify',
                              'tables': counts['tables'], 'bytes': int(size or 0)})
    if args.scratch_command == 'list':
        return {'ok': True, 'schemas': found}
    if args.schema:
        unknown = [s for s in args.schema if s not in [f['schema'] for f in found]]
        if unknown:
            raise BackupError('not a scratch schema of %s here: %s (nothing was dropped; see `edgefleet-backup scratch '
                              'list`)' % (', '.join(args.device), ', '.join(unknown)))
        chosen = [f for f in found if f['schema'] in args.schema]
    else:
        chosen = [f for f in found if f['kind'] == 'restore']
    for item in chosen:
        with Server(item['socket'], ctx.tools, ctx.config['login_user']) as server:
            server.execute('DROP DATABASE IF EXISTS %s' % P.quote_ident(item['schema']), no_binlog=True)
        log('scratch: dropped %s on %s (%d tables, %d bytes)' % (item['schema'], item['socket'], item['tables'], item['bytes']))
    return {'ok': True, 'dropped': chosen}
