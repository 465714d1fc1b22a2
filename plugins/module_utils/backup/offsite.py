# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offsite copy: the host's backup directories pushed with restic over SFTP (encrypted,
deduplicated), the repository created on first use, restic's own retention applied after each
push; the outcome kept in <backup_dir>/offsite.json."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import run_cmd


def offsite_status_path(config):
    return os.path.join(config['backup_dir'], 'offsite.json')


def restic_env(offsite):
    env = dict(os.environ)
    env['RESTIC_REPOSITORY'] = offsite['repository']
    env['RESTIC_PASSWORD_FILE'] = offsite['password_file']
    env['RESTIC_CACHE_DIR'] = offsite.get('cache_dir', '/var/cache/edgefleet-backup/restic')
    return env


def restic_args(ctx, offsite, *args):
    base = [ctx.tools['restic']]
    if offsite.get('sftp_command'):
        base += ['-o', 'sftp.command=%s' % offsite['sftp_command']]
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


def offsite_push(ctx):
    """Push the backup directories offsite; never raises. Returns {ok, snapshot_id, error}."""
    offsite = ctx.config['offsite']
    started = time.monotonic()
    wall_started = time.time()
    env = restic_env(offsite)
    status_path = offsite_status_path(ctx.config)
    status = read_json(status_path) or {}
    try:
        probe = run_cmd(restic_args(ctx, offsite, 'cat', 'config'), env=env, check=False, timeout=600)
        if probe.returncode != 0:
            if 'does not exist' not in (probe.stderr + probe.stdout) and 'no such file' not in (probe.stderr + probe.stdout).lower():
                raise BackupError('restic cannot open %s: %s' % (offsite['repository'], probe.stderr.strip()[-800:]))
            run_cmd(restic_args(ctx, offsite, 'init'), env=env, timeout=600)
            log('offsite: initialised restic repository %s' % offsite['repository'])
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
                      repository=offsite['repository'])
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
