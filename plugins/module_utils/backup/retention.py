# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention on disk: delete the backups backup_policy.retention() does not keep, and the
leftovers of interrupted runs. Callers apply it only after a good backup (or, for `prune`, to a
device whose last attempt did not fail)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import fsync_dir
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.listing import list_backups, orphans
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log


def apply_retention(ctx, directory, subject, kind, keep_last, keep_days):
    """Delete what the policy does not keep; log every removal. Returns (kept, removed)."""
    backups = list_backups(directory, subject, kind)
    keep, remove = P.retention([(n, ts) for n, ts, _m in backups], keep_last, keep_days, ctx.now())
    sizes = dict((n, m.get('size_bytes')) for n, _ts, m in backups)
    for name in remove:
        for victim in (os.path.join(directory, name + P.META_SUFFIX), os.path.join(directory, name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(victim)
        log('retention: removed %s/%s (%s bytes; policy keep_last=%s keep_days=%s)'
            % (subject, name, sizes.get(name), keep_last, keep_days))
    for name in orphans(directory, kind):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
        log('retention: removed leftover %s/%s of an interrupted run' % (subject, name))
    if remove:
        fsync_dir(directory)
    return keep, remove
