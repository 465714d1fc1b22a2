# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is on disk: the good backups of a device or instance, leftovers of interrupted runs,
free file names, and the configured devices a command works on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json


def list_backups(directory, subject=None, kind='logical'):
    """Good backups in ``directory``: [(name, epoch, meta)], oldest first. A backup is good
    when its data file and its metadata (written last, ok=true) both exist."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        parsed = P.parse_backup_file_name(name)
        if not parsed or parsed[2] != kind or (subject and parsed[0] != subject):
            continue
        meta = read_json(os.path.join(directory, name + P.META_SUFFIX))
        if not meta or not meta.get('ok'):
            continue
        out.append((name, parsed[1], meta))
    out.sort(key=P.sort_key)
    return out


def orphans(directory, kind='logical'):
    """Data files without metadata and metadata without data (left by a crash)."""
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        if name.endswith(P.PARTIAL_SUFFIX) or '.partial.' in name:
            out.append(name)
            continue
        parsed = P.parse_backup_file_name(name)
        if parsed and parsed[2] == kind and name + P.META_SUFFIX not in names:
            out.append(name)
        elif name.endswith(P.META_SUFFIX) and P.parse_backup_file_name(name[:-len(P.META_SUFFIX)]) \
                and name[:-len(P.META_SUFFIX)] not in names:
            out.append(name)
    return out


def unique_name(directory, subject, epoch, kind):
    """A backup file name for ``subject`` at ``epoch`` that neither a backup nor a partial one uses."""
    for seq in range(0, 1000):
        name = P.backup_file_name(subject, epoch, kind, seq)
        if not os.path.exists(os.path.join(directory, name)) and \
                not os.path.exists(os.path.join(directory, name + P.PARTIAL_SUFFIX)):
            return name
    raise BackupError('cannot find a free file name for %s at %s' % (subject, epoch))


def newest_good_ts(ctx, device_id):
    backups = list_backups(ctx.logical_dir(device_id), device_id)
    return backups[-1][1] if backups else None


def newest_local_mtime(backup_dir):
    """Wall-clock mtime of the newest backup metadata file (a backup made with --no-offsite, or
    while the target was down, makes the next run push even when nothing new is due)."""
    newest = 0
    for kind in ('logical', 'physical'):
        base = os.path.join(backup_dir, kind)
        for subject in (os.listdir(base) if os.path.isdir(base) else []):
            directory = os.path.join(base, subject)
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.endswith(P.META_SUFFIX):
                    with contextlib.suppress(OSError):
                        newest = max(newest, int(os.path.getmtime(os.path.join(directory, name))))
    return newest


def pick_devices(config, wanted, backups_only=False):
    """Configured devices (all, or the ``wanted`` ones). With ``backups_only``, a device that is
    no longer configured here (retired, moved) but still has backups is accepted too."""
    devices = config['devices']
    if not wanted:
        return list(devices)
    known = dict((d['id'], d) for d in devices)
    if backups_only:
        for name in wanted:
            if name not in known and os.path.isdir(os.path.join(config['backup_dir'], 'logical', name)):
                known[name] = {'id': name, 'socket': None, 'mode': None, 'channel': None, 'instance': None}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise BackupError('unknown device(s) on this host: %s' % ', '.join(unknown))
    return [known[w] for w in wanted]


def describe(directory, name, meta):
    """One backup as `list` and `show` print it."""
    return {'file': name, 'path': os.path.join(directory, name), 'ts': meta.get('started_ts'),
            'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(meta.get('started_ts') or 0)),
            'size_bytes': meta.get('size_bytes'), 'duration_s': meta.get('duration_s'),
            'position': (meta.get('position') or {}).get('device_gtid_pos'), 'kind': meta.get('kind'),
            'schemas': [s['name'] for s in meta.get('schemas', [])], 'tables': len(meta.get('tables', {})),
            'sha256': meta.get('sha256')}
