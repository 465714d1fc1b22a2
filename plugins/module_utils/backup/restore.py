# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a logical backup into a MariaDB server (also what verify does into scratch schemas).
Needs no configuration file, so the same code restores onto a device (playbooks/restore.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import tempfile
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import sql_string
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULT_TOOLS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.dump import dump_digests
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json, sha256_file
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import read_errors, reap, register


def load_backup(path, check_sha=True):
    """The metadata of the logical backup ``path``, its sha256 checked. Raises BackupError."""
    meta = read_json(path + P.META_SUFFIX)
    if not meta or not meta.get('ok'):
        raise BackupError('%s has no good metadata file (%s%s)' % (path, path, P.META_SUFFIX))
    if meta.get('kind') != 'logical':
        raise BackupError('%s is a %s backup; restore loads logical backups (see docs/backup.md for mariabackup)'
                          % (path, meta.get('kind')))
    if check_sha:
        digest = sha256_file(path)
        if digest != meta.get('sha256'):
            raise BackupError('%s: sha256 %s does not match the metadata (%s): the file is damaged'
                              % (path, digest, meta.get('sha256')))
    return meta


def schema_is_empty(server, schema):
    counts = server.object_counts(schema)
    return not any(counts.values())


def inspect_target(server, targets, overwrite=False, position=None, gtid_state='skip'):
    """What a restore of schemas ``targets`` ({source: target or None}) into ``server`` would do,
    read-only: {present, busy ({schema: object counts}), refused (message or None), drop
    (schemas dropped first), gtid (the GTID decision of restore_gtid_state)}. restore_file acts
    on exactly this; playbooks/restore.yml --check prints it (module backup_restore_target)."""
    present = set(server.schemas())
    busy = {}
    for target in targets.values():
        if target is not None and target in present:
            counts = server.object_counts(target)
            if any(counts.values()):
                busy[target] = counts
    refused = None
    if busy and not overwrite:
        refused = ('target schema(s) %s already exist and are not empty on %s; nothing was changed. '
                   'Choose other names or overwrite explicitly' % (', '.join(sorted(busy)), server.socket))
    drop = sorted(t for t in targets.values() if t is not None and t in present and (overwrite or t not in busy))
    return {'present': sorted(t for t in targets.values() if t in present), 'busy': busy, 'refused': refused,
            'drop': drop, 'gtid': gtid_decision(server, position, gtid_state)}


def restore_file(path, server, mapping, overwrite=False, no_binlog=True, tools=None, meta=None,
                 compare=True, device_target=False, gtid_state='skip'):
    """Load a logical backup into ``server`` with schemas renamed by ``mapping`` (source ->
    target, None = skip). Refuses non-empty targets unless ``overwrite``. Returns a result
    dict with the per-table comparison against the checksums recorded at backup time."""
    tools = tools or DEFAULT_TOOLS
    meta = meta or load_backup(path)
    started = time.monotonic()
    sources = [s['name'] for s in meta['schemas']]
    targets = dict((db, mapping.get(db, db) if mapping is not None else db) for db in sources)
    targets = P.target_schemas(sources, mapping=targets)
    plan = inspect_target(server, targets, overwrite)
    if plan['refused']:
        raise BackupError(plan['refused'])
    for target in plan['drop']:
        server.execute('DROP DATABASE %s' % P.quote_ident(target), no_binlog=no_binlog)
    args = server.client_args('--max-allowed-packet=1G', '--batch')
    if no_binlog:
        args.append('--init-command=SET SESSION sql_log_bin=0')
    rewriter = P.SchemaRewriter(meta['marker_nonce'], dict((k, v) for k, v in targets.items() if v != k))
    with tempfile.TemporaryFile() as errors:
        unzip = register(subprocess.Popen([tools['zstd'], '-q', '-dc', path], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
        client = register(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=errors, stderr=errors))
        try:
            try:
                for line in unzip.stdout:
                    data = rewriter.feed(line)
                    if data:
                        client.stdin.write(data)
                client.stdin.close()
            except BrokenPipeError:
                pass
            unzip_rc, client_rc = unzip.wait(), client.wait()
        finally:
            reap(unzip, client)
        error_text = read_errors(errors)
    if unzip_rc != 0:
        raise BackupError('zstd -dc %s failed: %s' % (path, unzip.stderr.read().decode('utf-8', 'replace')[-500:]))
    if client_rc != 0:
        raise BackupError('loading %s failed (mariadb exit %d): %s' % (os.path.basename(path), client_rc, error_text[-1500:]))
    if not rewriter.ended:
        raise BackupError('%s ends before its end marker: the dump is truncated' % path)
    result = {'file': os.path.basename(path), 'device': meta.get('device'), 'targets': targets,
              'position': meta['position'].get('device_gtid_pos'), 'backup_ts': meta.get('started_ts')}
    if device_target:
        result['events_enabled'] = enable_replica_disabled_events(server, [t for t in targets.values() if t])
        result['gtid'] = restore_gtid_state(server, meta, gtid_state)
    if compare:
        result.update(compare_restored(server, meta, targets, tools))
    else:
        result.update(ok=True, detail='loaded (not compared)')
    result['duration_s'] = round(time.monotonic() - started, 3)
    return result


def compare_restored(server, meta, targets, tools):
    """{ok, detail, tables}: the restored schemas' per-table digests or checksums (the method the
    backup recorded) and object counts against the backup's metadata."""
    actual = {}
    method = meta.get('checksum_method', 'server')
    for source, target in targets.items():
        if target is None:
            continue
        tables = server.base_tables(target)
        if method == 'dump':
            values = dump_digests(server, tools, meta['dump_options'], target, tables)
        elif method == 'server':
            values = server.table_checksums(target, tables)
        else:
            values = dict((table, {}) for table in tables)
        for table, value in values.items():
            actual['%s.%s' % (source, table)] = value
    expected = dict((k, v) for k, v in meta['tables'].items() if targets.get(k.split('.', 1)[0]) is not None)
    ok, detail = P.compare_tables(expected, actual)
    objects_ok = True
    for source, target in targets.items():
        if target is None or source not in meta.get('objects', {}):
            continue
        have, want = server.object_counts(target), meta['objects'][source]
        if have != want:
            objects_ok = False
            detail += '; %s objects %s != %s' % (source, have, want)
    return {'ok': ok and objects_ok, 'detail': detail, 'tables': len(actual)}


def enable_replica_disabled_events(server, schemas):
    """Events replicate as SLAVESIDE_DISABLED; on a device taking over they must run again."""
    enabled = []
    for schema in schemas:
        for row in server.query("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s "
                                "AND STATUS = 'SLAVESIDE_DISABLED'" % sql_string(schema)):
            server.execute('ALTER EVENT %s.%s ENABLE' % (P.quote_ident(schema), P.quote_ident(row['EVENT_NAME'])),
                           no_binlog=True)
            enabled.append('%s.%s' % (schema, row['EVENT_NAME']))
    return enabled


def gtid_decision(server, position, mode):
    """What restore_gtid_state would do on ``server`` for a backup at ``position`` (read-only):
    {action: 'set', gtid_binlog_state} or {action: 'skipped', reason}."""
    position = position or ''
    if mode == 'skip' or not position:
        return {'action': 'skipped', 'reason': 'not requested' if mode == 'skip' else 'backup has no position'}
    if server.value('SELECT @@GLOBAL.log_bin') != '1':
        return {'action': 'skipped', 'reason': 'the server has no binary log (log_bin=OFF)'}
    current = server.value('SELECT @@GLOBAL.gtid_binlog_state') or ''
    mine, have = P.parse_gtid_pos(position), P.parse_gtid_pos(current)
    if set(mine) & set(have):
        return {'action': 'skipped', 'reason': 'server already has binlog GTIDs in domain(s) %s: %s'
                % (', '.join(str(d) for d in sorted(set(mine) & set(have))), current)}
    merged = dict(have)
    merged.update(mine)
    return {'action': 'set', 'gtid_binlog_state': P.format_gtid_pos(merged)}


def restore_gtid_state(server, meta, mode):
    """On a replacement device, continue the device's GTID sequence from the backup position,
    so its replica channel resumes with no gap. Only on a server that has no transaction of
    the device's domain in its binlog (a fresh device); otherwise leave it alone."""
    decision = gtid_decision(server, meta['position'].get('device_gtid_pos'), mode)
    if decision['action'] == 'set':
        server.execute('RESET MASTER; SET GLOBAL gtid_binlog_state = %s' % sql_string(decision['gtid_binlog_state']))
    return decision
