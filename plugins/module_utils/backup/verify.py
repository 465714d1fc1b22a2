# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified restore: a device's backup restored into scratch schemas on its replica instance
and compared per table with what was recorded at the backup's position; the scratch schemas
are always dropped and the result goes into the device's status file."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.listing import list_backups
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.restore import load_backup, restore_file


def verify_device(ctx, device, file_name=None):
    """Restore a device's newest (or the given) backup into scratch schemas and compare
    per-table checksums with the replica's recorded at the backup's position. Never raises."""
    device_id = device['id']
    directory = ctx.logical_dir(device_id)
    now = ctx.now()
    backups = list_backups(directory, device_id)
    if file_name:
        backups = [b for b in backups if b[0] == file_name]
    if not backups:
        detail = 'no backup to verify' if not file_name else 'backup %s not found' % file_name
        ctx.update_status(device_id, lambda s: P.record_verify(s, False, now, detail))
        log('%s: verify FAILED: %s' % (device_id, detail))
        return {'device': device_id, 'ok': False, 'detail': detail}
    name, _ts, meta = backups[-1]
    server = Server(ctx.config.get('verify_socket') or device['socket'], ctx.tools, ctx.config['login_user'])
    mapping = dict((s['name'], P.scratch_schema_name(ctx.config['verify_prefix'], device_id, s['name']))
                   for s in meta['schemas'])
    try:
        load_backup(os.path.join(directory, name))
        result = restore_file(os.path.join(directory, name), server, mapping, overwrite=True, no_binlog=True,
                              tools=ctx.tools, meta=meta)
        ok, detail = result['ok'], '%s: %s at %s (restore %.1fs)' % (
            name, result['detail'], meta['position'].get('device_gtid_pos') or '(empty position)', result['duration_s'])
    except Exception as exc:  # pylint: disable=broad-except
        ok, detail = False, '%s: %s' % (name, exc)
    finally:
        for scratch in mapping.values():
            try:
                server.execute('DROP DATABASE IF EXISTS %s' % P.quote_ident(scratch), no_binlog=True, cleanup=True)
            except BackupError as exc:
                log('%s: could not drop scratch schema %s: %s' % (device_id, scratch, exc))
        server.close()
    ctx.update_status(device_id, lambda s: P.record_verify(s, ok, ctx.now(), detail, file_name=name))
    log('%s: verify %s: %s' % (device_id, 'ok' if ok else 'FAILED', detail))
    return {'device': device_id, 'ok': ok, 'file': name, 'detail': detail}
