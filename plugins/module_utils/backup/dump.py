# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logical backup of one device: its schemas on its replica instance dumped with
mariadb-dump (argv from module_utils/dump_load.py) through zstd into one file, at one GTID
position (the channel's SQL thread paused), with per-table digests or checksums and a metadata
file written last."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import dump_load as D
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import remove_unfinished, sha256_file
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.listing import unique_name
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import (
    Discard, Worker, reap, register, stream_into, widen_pipe)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.sql_thread import sql_thread_paused

SYSTEM_SCHEMAS = frozenset(('mysql', 'information_schema', 'performance_schema', 'sys'))
# Scratch schemas of verify and restore are never part of an instance-mode backup.
RESERVED_SCHEMA_PREFIXES = ('edgefleet_verify_', 'edgefleet_restore_')
SINGLE_THREAD_MAX_LEVEL = 6


def invoked_by():
    """'systemd:<unit>' when a systemd unit (the timer's service) runs us, else 'cli'."""
    if os.environ.get('INVOCATION_ID'):
        try:
            with open('/proc/self/cgroup', encoding='utf-8') as handle:
                for line in handle:
                    unit = line.strip().rsplit('/', 1)[-1]
                    if unit.endswith('.service'):
                        return 'systemd:%s' % unit
        except OSError:
            pass
        return 'systemd'
    return 'cli'


def device_schemas(server, device, databases, present=None):
    """[(source schema, replica schema)] of a device on its replica instance (present: the
    instance's schemas, when already read)."""
    present = set(server.schemas() if present is None else present)
    if device['mode'] == 'channel':
        pairs = [(db, device['schema_prefix'] + db) for db in databases]
        return [(db, replica) for db, replica in pairs if replica in present]
    return [(name, name) for name in sorted(present)
            if name not in SYSTEM_SCHEMAS and not name.startswith(RESERVED_SCHEMA_PREFIXES)]


def compress_args(tools, config):
    """zstd compressing stdin to stdout. One thread at a fast level (<= 6, faster than
    mariadb-dump writes: ~80 MB/s and more) is --single-thread: compression keeps pace with the
    input, nothing is left to compress when the input ends (-T1, zstd's default, collects input
    into jobs for a worker and finishes the last one after the dump: ~0.08 s) and it needs ~8 MB
    instead of ~50 MB. At slower levels -T1 stays: reading ahead into its jobs lets the dump, and
    so the SQL-thread pause, end before the compression does."""
    level, threads = int(config['zstd_level']), int(config['zstd_threads'])
    single = threads == 1 and level <= SINGLE_THREAD_MAX_LEVEL
    return [tools['zstd'], '-q', '-%d' % level] + (['--single-thread'] if single else ['-T%d' % threads]) + ['-c']


def record_schema(server, schema, tables, method):
    """Object counts, and with the server method per-table CHECKSUM TABLE and row count."""
    if method == 'server':
        values = server.table_checksums(schema, tables)
    else:
        values = dict((table, {'checksum': None, 'rows': None}) for table in tables)
    return values, server.object_counts(schema)


def dump_options(config):
    """The mariadb-dump options of a backup (recorded in its metadata; verify re-dumps with them)."""
    return D.dump_options('backup', config['dump_options'])


def dump_args(server, tools, schema, options):
    """argv dumping ``schema`` of ``server`` with ``options``."""
    try:
        return D.dump_argv('backup', [schema], socket=server.socket, user=server.user,
                           binary=tools['mariadb-dump'], options=options)
    except D.DumpLoadError as exc:
        raise BackupError(str(exc))


def dump_digests(server, tools, options, schema, tables):
    """{table: {"digest"}} of a schema as it is now, dumped with ``options`` (verify, restore)."""
    digest = P.DumpDigest()
    stream_into(Discard(), dump_args(server, tools, schema, options), [0], digest)
    return dict((table, {'digest': value}) for table, value in digest.digests(tables).items())


def backup_device(ctx, device):
    """One logical backup of one device. Returns a result dict; raises BackupError."""
    config = ctx.config
    now = ctx.now()
    started = time.monotonic()
    server = Server(device['socket'], ctx.tools, config['login_user'])
    # Object counts and server checksums run on their own client while the dump streams.
    recorder_server = Server(device['socket'], ctx.tools, config['login_user'])
    directory = ctx.mkdir(ctx.logical_dir(device['id']))
    name = unique_name(directory, device['id'], now, 'logical')
    path = os.path.join(directory, name)
    partial = path + P.PARTIAL_SUFFIX
    nonce = os.urandom(8).hex()
    domains = [device['gtid_domain_id']] if device.get('gtid_domain_id') is not None else None
    options = dump_options(config)
    raw = [0]
    schemas_meta, tables_meta, objects = [], {}, {}
    try:
        schemas = device_schemas(server, device, config['databases'])
        if not schemas:
            raise BackupError('no schema of device %s on its replica instance (%s)' % (
                device['id'], 'looked for ' + ', '.join(device['schema_prefix'] + d for d in config['databases'])
                if device['mode'] == 'channel' else 'instance has no user schema'))
        server_version = server.version()
        zstd_args = compress_args(ctx.tools, config)
        with open(partial, 'wb') as out_file:
            os.chmod(partial, ctx.config['file_mode_i'])
            zstd = register(subprocess.Popen(zstd_args, stdin=subprocess.PIPE, stdout=out_file,
                                             stderr=subprocess.PIPE))
            widen_pipe(zstd.stdin)
            try:
                pause_started = time.monotonic()
                with sql_thread_paused(ctx, server, device) as channel_row:
                    position_before = server.gtid_slave_pos()
                    # Checksums and object counts are recorded on another connection while the
                    # dump runs: both happen with the SQL thread stopped, i.e. on the same frozen
                    # data (as before, when they ran one after the other), and the position check
                    # below covers both. The recorders are joined before the SQL thread resumes.
                    recorded = []
                    try:
                        for source, replica in schemas:
                            schema_options = P.database_options(
                                server.query('SHOW CREATE DATABASE %s' % P.quote_ident(replica))[0]['Create Database'])
                            tables = server.base_tables(replica)
                            recorded.append((source, Worker(
                                record_schema, recorder_server, replica, tables, config['checksum_method'])))
                            schemas_meta.append({'name': source, 'replica_schema': replica, 'options': schema_options})
                            header = ''.join(P.section_header(nonce, source, schema_options)).encode('utf-8')
                            zstd.stdin.write(header)
                            raw[0] += len(header)
                            digest = P.DumpDigest() if config['checksum_method'] == 'dump' else None
                            stream_into(zstd.stdin, dump_args(server, ctx.tools, replica, options), raw, digest)
                            recorded[-1] += (digest.digests(tables) if digest is not None else {},)
                        for source, worker, digests in recorded:
                            checksums, objects[source] = worker.result()
                            for table, value in checksums.items():
                                if table in digests:
                                    value['digest'] = digests[table]
                                tables_meta['%s.%s' % (source, table)] = value
                    finally:
                        for item in recorded:
                            item[1].wait()
                    footer = P.stream_end(nonce, len(schemas)).encode('utf-8')
                    zstd.stdin.write(footer)
                    raw[0] += len(footer)
                    position_after = server.gtid_slave_pos()
                    channel_after = server.channels().get(device['channel'])
                paused = time.monotonic() - pause_started
                zstd.stdin.close()
                zstd_err = zstd.stderr.read().decode('utf-8', 'replace')
                if zstd.wait() != 0:
                    raise BackupError('zstd failed: %s' % zstd_err.strip()[-500:])
            finally:
                reap(zstd)
            out_file.flush()
            os.fsync(out_file.fileno())
        mine_before = P.filter_gtid_pos(position_before, domains) if domains else position_before
        mine_after = P.filter_gtid_pos(position_after, domains) if domains else position_after
        if channel_row is not None and channel_row.get('Slave_SQL_Running') == 'Yes' and mine_before != mine_after:
            raise BackupError('the position of channel %s moved during the dump (%s -> %s): something restarted '
                              'its SQL thread; the dump is not at one position' % (device['channel'], mine_before, mine_after))
        # No `zstd -t` here: zstd exited 0 on what it wrote, and reading the file back now would
        # read the page cache, not the disk. The verify timer decompresses and restores every
        # new backup; the sha256 below catches later damage.
        size = os.path.getsize(partial)
        digest = sha256_file(partial)
        os.rename(partial, path)
        duration = time.monotonic() - started
        meta = {
            'format': 1, 'ok': True, 'kind': 'logical', 'file': name, 'device': device['id'],
            'cloud_host': ctx.hostname, 'instance': device['instance'], 'mode': device['mode'],
            'channel': device['channel'], 'site': device.get('site'),
            'started_ts': now, 'finished_ts': now + int(round(duration)), 'duration_s': round(duration, 3),
            'sql_thread_paused_s': round(paused, 3) if channel_row is not None and channel_row.get('Slave_SQL_Running') == 'Yes' else 0.0,
            'size_bytes': size, 'raw_bytes': raw[0], 'sha256': digest,
            'compression': 'zstd -%d' % int(config['zstd_level']),
            'position': {
                'gtid_slave_pos': position_before,
                'device_gtid_pos': mine_before,
                'gtid_domain_id': device.get('gtid_domain_id'),
                'channel_found': channel_row is not None,
                'io_running': (channel_after or {}).get('Slave_IO_Running'),
                'sql_running_before': (channel_row or {}).get('Slave_SQL_Running'),
                'gtid_io_pos': (channel_after or {}).get('Gtid_IO_Pos'),
                'seconds_behind_master': (channel_row or {}).get('Seconds_Behind_Master'),
                'last_error': (channel_row or {}).get('Last_Error') or None,
            },
            'schemas': schemas_meta, 'tables': tables_meta, 'objects': objects,
            'checksum_method': config['checksum_method'],
            'marker_nonce': nonce, 'dump_options': options,
            'invoked_by': invoked_by(),
            'tools': dict(ctx.versions(), server=server_version),
        }
        ctx.write_json(path + P.META_SUFFIX, meta)
        return meta
    except BaseException:
        remove_unfinished(partial, path)
        raise
    finally:
        server.close()
        recorder_server.close()
