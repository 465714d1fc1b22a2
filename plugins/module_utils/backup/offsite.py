# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offsite copy: the host's backup directories pushed with restic (encrypted, deduplicated) to
an SFTP host or an S3-compatible object store (``offsite.backend``), the repository created on
first use only when it is missing (a refused key, a TLS error or an unreachable store is
reported and nothing is written), restic's own retention applied after each push; the outcome
kept in <backup_dir>/offsite.json. ``offsite_fetch`` brings one device's backups back from a
host's repository (this host's, or a lost host's on a fresh one)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import shutil
import tempfile
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import run_cmd

_CAUSE_TEXT = {
    'credentials': 'the repository refused the credentials (S3 access key/secret, SSH key or restic password)',
    'tls': 'the TLS certificate of the object store is not trusted (backup_offsite_s3_ca_cert)',
    'unreachable': 'the offsite target cannot be reached',
    'other': 'restic cannot open the repository',
}


def offsite_status_path(config):
    return os.path.join(config['backup_dir'], 'offsite.json')


def backend(offsite):
    """The configured backend (sftp when not named: configurations before the S3 backend)."""
    name = offsite.get('backend') or ('s3' if str(offsite.get('repository', '')).startswith('s3:') else 'sftp')
    if name not in P.OFFSITE_BACKENDS:
        raise BackupError('unknown offsite backend %r (choose one of %s)' % (name, ', '.join(P.OFFSITE_BACKENDS)))
    return name


def restic_env(offsite, repository=None):
    """restic's environment: repository, password file, cache and, for S3, the access key read
    from the credentials file (0600, JSON {"access_key_id", "secret_access_key"})."""
    env = dict(os.environ)
    env['RESTIC_REPOSITORY'] = repository or offsite['repository']
    env['RESTIC_PASSWORD_FILE'] = offsite['password_file']
    env['RESTIC_CACHE_DIR'] = offsite.get('cache_dir', '/var/cache/edgefleet-backup/restic')
    if backend(offsite) == 's3':
        creds = read_json(offsite.get('credentials_file') or '') if offsite.get('credentials_file') else None
        if not creds or not creds.get('access_key_id') or not creds.get('secret_access_key'):
            raise BackupError('offsite s3: credentials file %s is missing or lacks access_key_id/secret_access_key'
                              % offsite.get('credentials_file'))
        env['AWS_ACCESS_KEY_ID'] = creds['access_key_id']
        env['AWS_SECRET_ACCESS_KEY'] = creds['secret_access_key']
        if offsite.get('region'):
            env['AWS_DEFAULT_REGION'] = offsite['region']
    return env


def restic_args(ctx, offsite, *args):
    base = [ctx.tools['restic']]
    if offsite.get('sftp_command'):
        base += ['-o', 'sftp.command=%s' % offsite['sftp_command']]
    if offsite.get('cacert'):
        base += ['--cacert', offsite['cacert']]
    if offsite.get('region'):
        base += ['-o', 's3.region=%s' % offsite['region']]
    return base + list(args)


def forget_args(hostname, offsite):
    """restic forget arguments of the offsite retention (keep_last snapshots, keep_days days)."""
    forget = ['forget', '--tag', 'edgefleet', '--host', hostname, '--prune',
              '--keep-last', str(int(offsite.get('keep_last', 14)))]
    if int(offsite.get('keep_days', 0)):
        forget += ['--keep-within', '%dd' % int(offsite['keep_days'])]
    return forget


def backup_summary(stdout):
    """The summary message of `restic backup --json` output ({} when there is none)."""
    summary = {}
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if item.get('message_type') == 'summary':
                summary = item
    return summary


def open_repository(ctx, offsite, env, repository, create):
    """Make sure the repository opens. A missing one is created when ``create``; any other
    failure (refused credentials, untrusted certificate, unreachable) raises BackupError with
    the cause, before anything is written."""
    probe = run_cmd(restic_args(ctx, offsite, 'cat', 'config'), env=env, check=False, timeout=600)
    if probe.returncode == 0:
        return False
    text = (probe.stderr + probe.stdout).strip()
    cause = P.restic_open_failure(text)
    if cause == 'missing' and create:
        run_cmd(restic_args(ctx, offsite, 'init'), env=env, timeout=600)
        log('offsite: initialised restic repository %s' % repository)
        return True
    if cause == 'missing':
        raise BackupError('offsite: there is no restic repository at %s' % repository)
    raise BackupError('offsite: %s: %s; nothing was written (%s)'
                      % (_CAUSE_TEXT[cause], repository, text.splitlines()[0][-600:] if text else 'no output'))


def offsite_push(ctx):
    """Push the backup directories offsite; never raises. Returns {ok, snapshot_id, error}."""
    offsite = ctx.config['offsite']
    started = time.monotonic()
    wall_started = time.time()
    status_path = offsite_status_path(ctx.config)
    status = read_json(status_path) or {}
    try:
        env = restic_env(offsite)
        open_repository(ctx, offsite, env, offsite['repository'], create=True)
        paths = [p for p in (os.path.join(ctx.config['backup_dir'], 'logical'),
                             os.path.join(ctx.config['backup_dir'], 'physical')) if os.path.isdir(p)]
        out = run_cmd(restic_args(ctx, offsite, 'backup', '--json', '--tag', 'edgefleet', '--host', ctx.hostname,
                                  '--exclude', '*.partial') + paths, env=env, timeout=int(offsite.get('timeout', 21600)))
        summary = backup_summary(out.stdout)
        run_cmd(restic_args(ctx, offsite, *forget_args(ctx.hostname, offsite)), env=env,
                timeout=int(offsite.get('timeout', 21600)))
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=True, last_success_ts=ctx.now(), last_error=None,
                      last_success_wall_ts=int(wall_started),
                      snapshot_id=summary.get('snapshot_id'), data_added=summary.get('data_added'),
                      files_new=summary.get('files_new'), duration_s=round(time.monotonic() - started, 3),
                      repository=offsite['repository'], backend=backend(offsite))
        log('offsite: restic snapshot %s (%s new files, %s bytes added) in %.1fs'
            % (summary.get('snapshot_id'), summary.get('files_new'), summary.get('data_added'),
               time.monotonic() - started))
        ok = True
    except Exception as exc:  # pylint: disable=broad-except
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=False, last_error=str(exc)[:2000],
                      repository=offsite['repository'])
        log('offsite: push FAILED: %s' % exc)
        ok = False
    ctx.write_json(status_path, status)
    return {'ok': ok, 'snapshot_id': status.get('snapshot_id'), 'error': None if ok else status.get('last_error')}


def _configured(ctx):
    offsite = ctx.config['offsite']
    if not offsite.get('enabled'):
        raise BackupError('no offsite copy is configured on this host (backup_offsite_enabled)')
    return offsite


def offsite_snapshots(ctx, from_host=None):
    """The edgefleet snapshots of a host's repository (this host's when ``from_host`` is None)."""
    offsite = _configured(ctx)
    repository = P.offsite_repository(offsite, from_host)
    env = restic_env(offsite, repository)
    open_repository(ctx, offsite, env, repository, create=False)
    out = run_cmd(restic_args(ctx, offsite, 'snapshots', '--json', '--tag', 'edgefleet'), env=env, timeout=600)
    snapshots = json.loads(out.stdout or '[]') or []
    return {'ok': True, 'repository': repository,
            'snapshots': [{'id': s.get('short_id') or s.get('id', '')[:8], 'time': s.get('time'), 'host': s.get('hostname'),
                           'paths': s.get('paths')} for s in snapshots]}


def offsite_fetch(ctx, device_id, from_host=None, snapshot='latest', dry_run=False):
    """Bring ``device_id``'s logical backups from a repository into this host's
    <backup_dir>/logical/<device>/: only files that are not here yet, each data file before its
    metadata (so a backup is never half there). ``dry_run`` only lists what would come."""
    offsite = _configured(ctx)
    repository = P.offsite_repository(offsite, from_host)
    env = restic_env(offsite, repository)
    open_repository(ctx, offsite, env, repository, create=False)
    select = [snapshot]
    if snapshot == 'latest':
        select = ['--host', from_host or ctx.hostname, '--tag', 'edgefleet', 'latest']
    listing = run_cmd(restic_args(ctx, offsite, 'ls', '--json') + select, env=env, timeout=3600)
    suffix = '/logical/%s' % device_id
    files, snapshot_id, source_dir = {}, None, None
    for line in listing.stdout.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if item.get('struct_type') == 'snapshot':
                snapshot_id = item.get('short_id') or (item.get('id') or '')[:8]
                continue
            path = item.get('path') or ''
            if item.get('type') == 'file' and os.path.dirname(path).endswith(suffix):
                source_dir = os.path.dirname(path)
                files[os.path.basename(path)] = item.get('size')
    if snapshot_id is None:
        raise BackupError('offsite: no snapshot %s in %s' % (' '.join(select), repository))
    local_dir = ctx.logical_dir(device_id)
    backups = sorted(n for n in files if P.parse_backup_file_name(n) and n + P.META_SUFFIX in files)
    wanted = [n for n in backups if not os.path.exists(os.path.join(local_dir, n + P.META_SUFFIX))]
    result = {'ok': True, 'repository': repository, 'snapshot': snapshot_id, 'device': device_id,
              'in_snapshot': backups, 'fetched' if not dry_run else 'would_fetch': wanted,
              'already_here': [n for n in backups if n not in wanted], 'dry_run': dry_run}
    if not backups:
        raise BackupError('offsite: snapshot %s of %s holds no backup of %s' % (snapshot_id, repository, device_id))
    if dry_run or not wanted:
        return result
    ctx.mkdir(os.path.join(ctx.config['backup_dir'], 'logical'))
    ctx.mkdir(local_dir)
    work = tempfile.mkdtemp(prefix='.offsite-fetch-', dir=ctx.config['backup_dir'])
    try:
        includes = []
        for name in wanted:
            includes += ['--include', '%s/%s' % (source_dir, name), '--include', '%s/%s%s' % (source_dir, name, P.META_SUFFIX)]
        run_cmd(restic_args(ctx, offsite, 'restore', '--target', work) + includes + [snapshot_id], env=env, timeout=21600)
        for name in wanted:
            for part in (name, name + P.META_SUFFIX):
                src = os.path.join(work, source_dir.lstrip('/'), part)
                if not os.path.exists(src):
                    raise BackupError('offsite: restic restored no %s from snapshot %s' % (part, snapshot_id))
                os.chmod(src, ctx.config['file_mode_i'])
                if ctx.config['gid'] is not None:
                    os.chown(src, -1, ctx.config['gid'])
                os.rename(src, os.path.join(local_dir, part))
        log('offsite: fetched %d backup(s) of %s from snapshot %s of %s' % (len(wanted), device_id, snapshot_id, repository))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
