# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The physical backup of one replica instance: mariabackup --stream=xbstream through zstd
into one file (every channel's position recorded by --slave-info), checked with `zstd -t`."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import tempfile
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.dump import compress_args
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import remove_unfinished, sha256_file
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.listing import unique_name
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import (
    reap, register, run_cmd, stream_into, tool_version, widen_pipe)


def mariabackup_args(tools, instance, server, scratch):
    """argv of mariabackup streaming the whole instance (xbstream) to stdout."""
    args = [tools['mariabackup']]
    if instance.get('defaults_group_suffix'):
        args.append('--defaults-group-suffix=%s' % instance['defaults_group_suffix'])
    else:
        args.append('--no-defaults')
    args += ['--backup', '--stream=xbstream', '--target-dir=%s' % scratch, '--socket=%s' % server.socket,
             '--user=%s' % server.user, '--slave-info', '--safe-slave-backup', '--parallel=1']
    if instance.get('datadir'):
        args.append('--datadir=%s' % instance['datadir'])
    return args


def slave_info(text):
    """The replica positions mariabackup reports on stderr (--slave-info), one line each."""
    return [line.split('] ', 1)[-1].strip() for line in text.splitlines()
            if 'slave binlog position' in line.lower() or 'gtid_slave_pos' in line.lower()]


def backup_instance(ctx, instance):
    """One physical backup of one replica instance. Returns its metadata; raises BackupError."""
    config = ctx.config
    now = ctx.now()
    started = time.monotonic()
    name_ = instance['name']
    server = Server(instance['socket'], ctx.tools, config['login_user'])
    directory = ctx.mkdir(ctx.physical_dir(name_))
    name = unique_name(directory, name_, now, 'physical')
    path = os.path.join(directory, name)
    partial = path + P.PARTIAL_SUFFIX
    raw = [0]
    try:
        position_before = server.gtid_slave_pos()
        channels = sorted(server.channels())
        with tempfile.TemporaryDirectory(prefix='edgefleet-mariabackup-') as scratch:
            args = mariabackup_args(ctx.tools, instance, server, scratch)
            with open(partial, 'wb') as out_file:
                os.chmod(partial, config['file_mode_i'])
                zstd = register(subprocess.Popen(
                    compress_args(ctx.tools, config),
                    stdin=subprocess.PIPE, stdout=out_file, stderr=subprocess.PIPE))
                widen_pipe(zstd.stdin)
                try:
                    text = stream_into(zstd.stdin, args, raw)
                    zstd.stdin.close()
                    if zstd.wait() != 0:
                        raise BackupError('zstd failed: %s' % zstd.stderr.read().decode('utf-8', 'replace')[-500:])
                finally:
                    reap(zstd)
                out_file.flush()
                os.fsync(out_file.fileno())
        run_cmd([ctx.tools['zstd'], '-q', '-t', partial], timeout=3600)
        size = os.path.getsize(partial)
        digest = sha256_file(partial)
        os.rename(partial, path)
        duration = time.monotonic() - started
        meta = {
            'format': 1, 'ok': True, 'kind': 'physical', 'file': name, 'instance': name_,
            'devices': instance.get('devices', []), 'cloud_host': ctx.hostname,
            'started_ts': now, 'finished_ts': now + int(round(duration)), 'duration_s': round(duration, 3),
            'size_bytes': size, 'raw_bytes': raw[0], 'sha256': digest,
            'compression': 'zstd -%d' % int(config['zstd_level']), 'format_detail': 'mariabackup xbstream',
            'position': {'gtid_slave_pos_before': position_before, 'channels': channels,
                         'mariabackup_slave_info': slave_info(text)},
            'tools': dict(ctx.versions(), server=server.version(),
                          mariabackup=tool_version([ctx.tools['mariabackup'], '--version'])),
        }
        ctx.write_json(path + P.META_SUFFIX, meta)
        return meta
    except BaseException:
        remove_unfinished(partial, path)
        raise
    finally:
        server.close()
