# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pausing a channel's SQL thread for a dump, crash-safe: a marker file in <backup_dir>/.held
records what was stopped, so the next run resumes a thread a killed run left stopped."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import write_json_atomic
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server, sql_string
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log


def held_marker(ctx, device):
    return os.path.join(ctx.held_dir(), '%s.json' % device['id'])


def resume_held(ctx):
    """Resume SQL threads a killed run left stopped."""
    directory = ctx.held_dir()
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        marker = read_json(path) or {}
        try:
            with Server(marker['socket'], ctx.tools) as server:
                server.execute('START SLAVE %s SQL_THREAD' % sql_string(marker['channel']))
            log('resumed the SQL thread of channel %s left stopped by an interrupted run' % marker.get('channel'))
        except (KeyError, BackupError) as exc:
            log('could not resume a channel recorded in %s: %s' % (path, exc))
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def sql_thread_paused(ctx, server, device):
    """Stop the device's channel SQL thread (if it runs) for the duration; yields the channel
    status row (or None when the instance has no such channel)."""
    channel = device['channel']
    row = server.channels().get(channel)
    if row is None:
        # The device has no channel here (not set up yet, or pruned): back up what there is.
        yield None
        return
    running = row.get('Slave_SQL_Running') == 'Yes'
    marker = held_marker(ctx, device)
    if running:
        ctx.mkdir(ctx.held_dir())
        write_json_atomic(marker, {'socket': server.socket, 'channel': channel, 'pid': os.getpid()}, 0o600)
        server.execute('STOP SLAVE %s SQL_THREAD' % sql_string(channel))
    try:
        yield row
    finally:
        if running:
            try:
                server.execute('START SLAVE %s SQL_THREAD' % sql_string(channel), cleanup=True)
                os.unlink(marker)
            except (BackupError, OSError) as exc:
                log('%s: could not resume the SQL thread of channel %s (next run retries): %s'
                    % (device['id'], channel, exc))
