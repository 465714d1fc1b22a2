# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistency check: per-table checksums of a device and its replica at one GTID position.

The device is never paused. For each device:

1. on the replica, stop the device's channel (both threads) under the same server lock as
   ``replication_source``, so nothing restarts it behind our back;
2. on the device (through its tunnel), open a consistent snapshot and read the GTID position
   it corresponds to (``binlog_snapshot_file/position`` -> ``BINLOG_GTID_POS()``, exactly what
   ``mariadb-dump --single-transaction --gtid`` does), then checksum every table inside it;
3. on the replica, ``START REPLICA 'ch' UNTIL master_gtid_pos = <that position>``: both threads
   stop exactly there (checked), then checksum the same tables (renamed schema in channel mode);
4. compare; for tables that differ and have a primary key, compare per-row hashes to name the
   differing keys (bounded by ``locate_max_rows``);
5. always: close the device snapshot, and start the channel again if it was running.

Checksums are computed by the servers: ``COUNT(*)`` and the sums of both halves of each row's
MD5 (order independent, and unlike XOR two identical rows do not cancel out). Every column is
hashed by value: strings and binaries as ``HEX()``, everything else as ``CAST(... AS CHAR)``,
plus a NULL map. Standard library plus PyMySQL; no Ansible imports (the collector on the cloud
host runs this file outside Ansible).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    channel_key,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import format_gtid_pos, parse_gtid_pos
# HAS_PYMYSQL is re-exported for the status collector.
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (  # noqa: F401 pylint: disable=unused-import
    HAS_PYMYSQL, connect_pymysql,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_state import REPLICA_LOCK_NAME, parse_status_row

# Data types hashed through HEX() (their bytes); every other type through CAST(... AS CHAR).
HEX_TYPES = frozenset([
    'char', 'varchar', 'tinytext', 'text', 'mediumtext', 'longtext', 'binary', 'varbinary',
    'tinyblob', 'blob', 'mediumblob', 'longblob', 'enum', 'set', 'json', 'bit', 'geometry',
    'point', 'linestring', 'polygon', 'multipoint', 'multilinestring', 'multipolygon',
    'geometrycollection', 'inet6', 'uuid', 'inet4',
])
LOCK_NAME = REPLICA_LOCK_NAME
TABLE_STATUSES = ('same', 'differs', 'missing_on_replica', 'missing_on_device',
                  'columns_differ')


class CheckError(Exception):
    """The check could not reach a common position; the message says why."""


def connect(host=None, port=None, user=None, password=None, unix_socket=None,
            connect_timeout=10, read_timeout=3600):
    """A PyMySQL connection with dict rows, as every function here expects (a unix socket, or
    TCP to host:port, default 127.0.0.1:3306)."""
    if unix_socket:
        host = port = None
    else:
        host, port, unix_socket = host or '127.0.0.1', int(port or 3306), None
    return connect_pymysql(host=host, port=port, user=user, password=password, unix_socket=unix_socket,
                           connect_timeout=connect_timeout, read_timeout=read_timeout, dict_rows=True)


def quote_ident(name):
    return '`%s`' % str(name).replace('`', '``')


def column_expr(name, data_type):
    col = quote_ident(name)
    if (data_type or '').lower() in HEX_TYPES:
        return 'HEX(%s)' % col
    return 'CAST(%s AS CHAR)' % col


def row_hash_sql(columns):
    """MD5 of one row: every column by value, then a NULL map (CONCAT_WS skips NULLs)."""
    if not columns:
        return "MD5('')"
    values = ', '.join(column_expr(name, data_type) for name, data_type in columns)
    nulls = ', '.join('ISNULL(%s)' % quote_ident(column[0]) for column in columns)
    return "MD5(CONCAT_WS('#', %s, CONCAT(%s)))" % (values, nulls)


def table_checksum_sql(schema, table, columns):
    """One statement: row count and the sums of both 64-bit halves of every row's MD5."""
    return ('SELECT COUNT(*) AS row_count, '
            'COALESCE(SUM(CAST(CONV(SUBSTRING(h, 1, 16), 16, 10) AS UNSIGNED)), 0) AS sum_a, '
            'COALESCE(SUM(CAST(CONV(SUBSTRING(h, 17, 16), 16, 10) AS UNSIGNED)), 0) AS sum_b '
            'FROM (SELECT %s AS h FROM %s.%s) AS edgefleet_rows'
            % (row_hash_sql(columns), quote_ident(schema), quote_ident(table)))


def row_hashes_sql(schema, table, columns, key_columns):
    """Primary key (as text) and row hash of every row, for locating differences."""
    key = "CONCAT_WS(',', %s)" % ', '.join(
        "CONCAT(%s, '=', COALESCE(CAST(%s AS CHAR), 'NULL'))"
        % ("'%s'" % name.replace("'", "''"), quote_ident(name)) for name in key_columns)
    return 'SELECT %s AS k, %s AS h FROM %s.%s' % (
        key, row_hash_sql(columns), quote_ident(schema), quote_ident(table))


def _text(value):
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def query(connection, sql, params=None):
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [dict((k, _text(v)) for k, v in row.items()) for row in cur.fetchall()]


def schema_tables(connection, schema):
    """{table: {'columns': [(name, data_type)], 'column_types': [...], 'key': [names]}}."""
    tables = {}
    for row in query(connection, "SELECT TABLE_NAME AS t FROM information_schema.TABLES "
                                 "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
                     [schema]):
        tables[row['t']] = {'columns': [], 'column_types': [], 'key': []}
    for row in query(connection, 'SELECT TABLE_NAME AS t, COLUMN_NAME AS c, DATA_TYPE AS d, '
                                 'COLUMN_TYPE AS ct FROM information_schema.COLUMNS WHERE '
                                 'TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION',
                     [schema]):
        if row['t'] in tables:
            tables[row['t']]['columns'].append((row['c'], row['d']))
            tables[row['t']]['column_types'].append('%s %s' % (row['c'], row['ct']))
    for row in query(connection, "SELECT TABLE_NAME AS t, COLUMN_NAME AS c FROM "
                                 "information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND "
                                 "INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX",
                     [schema]):
        if row['t'] in tables:
            tables[row['t']]['key'].append(row['c'])
    return tables


def schema_exists(connection, schema):
    return bool(query(connection, 'SELECT SCHEMA_NAME FROM information_schema.SCHEMATA '
                                  'WHERE SCHEMA_NAME = %s', [schema]))


def checksum_table(connection, schema, table, columns):
    row = query(connection, table_checksum_sql(schema, table, columns))[0]
    return int(row['row_count']), '%s-%s' % (row['sum_a'], row['sum_b'])


def checksum_schemas(connection, schema_map, side, tables_filter=None):
    """Checksums of every base table of the mapped schemas on one side ('device'/'replica').

    Returns {(source_schema, table): {'schema', 'table', 'columns', 'column_types', 'key',
    'rows', 'checksum'}} and the list of source schemas missing on that side.
    """
    out, missing = {}, []
    for source_schema, replica_schema in schema_map:
        schema = source_schema if side == 'device' else replica_schema
        if not schema_exists(connection, schema):
            missing.append(source_schema)
            continue
        for table, meta in sorted(schema_tables(connection, schema).items()):
            if tables_filter and '%s.%s' % (source_schema, table) not in tables_filter \
                    and table not in tables_filter:
                continue
            rows, checksum = checksum_table(connection, schema, table, meta['columns'])
            entry = dict(meta, schema=schema, table=table, rows=rows, checksum=checksum)
            out[(source_schema, table)] = entry
    return out, missing


def compare(device_sums, replica_sums, schema_map):
    """Per-table comparison (pure). Returns a list of table results, sorted by name."""
    renamed = dict(schema_map)
    results = []
    for key in sorted(set(device_sums) | set(replica_sums)):
        source_schema, table = key
        dev, rep = device_sums.get(key), replica_sums.get(key)
        result = {
            'table': '%s.%s' % (source_schema, table),
            'replica_table': '%s.%s' % (renamed.get(source_schema, source_schema), table),
            'device_rows': dev['rows'] if dev else None,
            'replica_rows': rep['rows'] if rep else None,
            'device_checksum': dev['checksum'] if dev else None,
            'replica_checksum': rep['checksum'] if rep else None,
        }
        if rep is None:
            result['status'] = 'missing_on_replica'
        elif dev is None:
            result['status'] = 'missing_on_device'
        elif dev['column_types'] != rep['column_types']:
            result['status'] = 'columns_differ'
            result['device_columns'] = dev['column_types']
            result['replica_columns'] = rep['column_types']
        elif dev['rows'] != rep['rows'] or dev['checksum'] != rep['checksum']:
            result['status'] = 'differs'
        else:
            result['status'] = 'same'
        results.append(result)
    return results


def diff_rows(device_rows, replica_rows, limit):
    """Compare {key: hash} maps (pure): keys missing on the replica, extra, and different."""
    missing = sorted(k for k in device_rows if k not in replica_rows)
    extra = sorted(k for k in replica_rows if k not in device_rows)
    different = sorted(k for k in device_rows if k in replica_rows
                       and device_rows[k] != replica_rows[k])
    return {
        'missing_on_replica': missing[:limit], 'extra_on_replica': extra[:limit],
        'different': different[:limit],
        'counts': {'missing_on_replica': len(missing), 'extra_on_replica': len(extra),
                   'different': len(different)},
    }


def row_hashes(connection, schema, table, columns, key_columns):
    return dict((row['k'], row['h']) for row in query(
        connection, row_hashes_sql(schema, table, columns, key_columns)))


# ---------------------------------------------------------------------------------------
# Replica side (MariaDB multi-source)
# ---------------------------------------------------------------------------------------

def channel_status(replica, dialect, channel):
    for raw in query(replica, dialect.status_all()[0]):
        status = parse_status_row(raw, dialect.is_mariadb)
        if channel_key(status['name']) == channel_key(channel):
            return status
    return None


def gtid_slave_pos(replica):
    value = query(replica, 'SELECT @@GLOBAL.gtid_slave_pos AS p')[0]['p'] or ''
    return value.replace('\n', '')


def reached(position, target):
    """True when every domain of ``target`` is at its sequence number in ``position``."""
    have = parse_gtid_pos(position)
    for domain, gtid in parse_gtid_pos(target).items():
        if domain not in have or have[domain][2] != gtid[2]:
            return False
    return True


def device_snapshot(device):
    """Open a consistent snapshot on the device; return the GTID position it shows."""
    query(device, 'SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ')
    query(device, 'START TRANSACTION WITH CONSISTENT SNAPSHOT')
    status = dict((row['Variable_name'].lower(), row['Value']) for row in query(
        device, "SHOW STATUS LIKE 'binlog_snapshot_%'"))
    log_file = status.get('binlog_snapshot_file')
    position = status.get('binlog_snapshot_position')
    if not log_file:
        raise CheckError('the device has no binary log (binlog_snapshot_file is empty); '
                         'replication cannot work without it')
    gtid = query(device, 'SELECT BINLOG_GTID_POS(%s, %s) AS g', [log_file, int(position)])
    gtid = (gtid[0]['g'] or '') if gtid else ''
    return gtid.replace('\n', '')


def _wait_until_stopped(replica, dialect, channel, target, timeout, poll=0.2):
    deadline = time.time() + timeout
    while True:
        status = channel_status(replica, dialect, channel)
        if status is None:
            raise CheckError('channel %r disappeared during the check' % channel)
        if status['last_sql_errno'] and not status['sql_thread']:
            raise CheckError('the replica stopped on SQL error %d before reaching %s: %s'
                             % (status['last_sql_errno'], target, status['last_sql_error']))
        if not status['sql_thread'] and not status['io_thread']:
            return status
        if time.time() > deadline:
            raise CheckError('the replica did not reach the device position %s within %ds '
                             '(now at %s); it may be far behind' % (
                                 target, timeout, gtid_slave_pos(replica)))
        time.sleep(poll)


def check_device(device_connect, replica, dialect, channel, schema_map, options=None,
                 clock=time.time):
    """Run the whole check for one device. ``device_connect()`` returns a new connection to
    the device (through its tunnel); ``replica`` is an open connection to its replica
    instance. Never raises: errors are reported in the result (state ``error``).
    """
    opts = {'until_timeout': 300, 'lock_timeout': 60, 'locate_max_rows': 1000000,
            'locate_limit': 20, 'tables': None}
    opts.update(dict((k, v) for k, v in (options or {}).items() if v is not None))
    started = clock()
    result = {'channel': channel, 'state': 'error', 'checked_ts': int(started),
              'gtid_pos': None, 'replica_pos_before': None, 'tables_checked': 0,
              'differing_tables': [], 'tables': [], 'missing_schemas': {}, 'error': None,
              'paused_s': None, 'duration_s': None, 'restarted': False}
    device = None
    paused_at = None
    was_running = False
    locked = False
    try:
        if not dialect.is_mariadb:
            raise CheckError('the consistency check needs MariaDB replicas (START REPLICA UNTIL '
                             'master_gtid_pos); %s is not supported yet' % dialect.label)
        status = channel_status(replica, dialect, channel)
        if status is None:
            raise CheckError('no replication channel %r on the replica' % channel)
        if status['last_sql_errno'] and not status['sql_thread']:
            raise CheckError('replication is stopped on SQL error %d (%s); fix or resync it '
                             'first (playbooks/resync.yml)'
                             % (status['last_sql_errno'], status['last_sql_error']))
        was_running = bool(status['io_thread'] and status['sql_thread'])
        try:
            device = device_connect()
        except Exception as exc:  # pylint: disable=broad-except
            raise CheckError('device not reachable through its tunnel: %s' % exc)
        got = query(replica, 'SELECT GET_LOCK(%s, %s) AS l', [LOCK_NAME, int(opts['lock_timeout'])])
        if not got or str(got[0]['l']) != '1':
            raise CheckError('another run holds the replica lock %s' % LOCK_NAME)
        locked = True
        # 1. freeze the replica's copy of this device
        query(replica, *dialect.stop(channel))
        paused_at = clock()
        result['replica_pos_before'] = gtid_slave_pos(replica)
        # 2. the device's snapshot and its position (always at or after the replica's)
        target = device_snapshot(device)
        result['gtid_pos'] = target
        device_sums, device_missing = checksum_schemas(device, schema_map, 'device',
                                                       opts['tables'])
        # 3. bring the replica exactly to the device's position (an empty position means the
        #    device has never logged a transaction: the stopped replica is already there)
        if target:
            sql, params = dialect.start(channel)
            query(replica, sql + ' UNTIL master_gtid_pos = %s', params + [target])
            _wait_until_stopped(replica, dialect, channel, target, opts['until_timeout'])
            position = gtid_slave_pos(replica)
            if not reached(position, target):
                raise CheckError('the replica stopped at %s, not at the device position %s'
                                 % (position, target))
        replica_sums, replica_missing = checksum_schemas(replica, schema_map, 'replica',
                                                         opts['tables'])
        # 4. compare, and name the differing rows where a primary key allows it
        tables = compare(device_sums, replica_sums, schema_map)
        for table in tables:
            if table['status'] != 'differs':
                continue
            key = tuple(table['table'].split('.', 1))
            dev, rep = device_sums[key], replica_sums[key]
            if not dev['key'] or dev['key'] != rep['key']:
                table['rows_located'] = False
                table['locate_note'] = 'no primary key: rows cannot be named'
            elif max(dev['rows'], rep['rows']) > opts['locate_max_rows']:
                table['rows_located'] = False
                table['locate_note'] = 'more than %d rows: not located' % opts['locate_max_rows']
            else:
                table['rows_located'] = True
                table['keys'] = diff_rows(
                    row_hashes(device, dev['schema'], dev['table'], dev['columns'], dev['key']),
                    row_hashes(replica, rep['schema'], rep['table'], rep['columns'], rep['key']),
                    opts['locate_limit'])
        result['tables'] = tables
        result['tables_checked'] = len(tables)
        result['differing_tables'] = [t['table'] for t in tables if t['status'] != 'same']
        result['missing_schemas'] = {'device': device_missing, 'replica': [
            s for s in replica_missing if s not in device_missing]}
        result['state'] = 'diverged' if result['differing_tables'] else 'ok'
    except CheckError as exc:
        result['error'] = str(exc)
    except Exception as exc:  # pylint: disable=broad-except
        result['error'] = 'unexpected error: %s: %s' % (type(exc).__name__, exc)
    finally:
        if device is not None:
            try:
                query(device, 'ROLLBACK')
                device.close()
            except Exception:  # pylint: disable=broad-except
                pass
        if paused_at is not None:
            if was_running:
                try:
                    query(replica, *dialect.start(channel))
                    result['restarted'] = True
                except Exception as exc:  # pylint: disable=broad-except
                    result['error'] = (result['error'] or '') + (
                        ' RESTART FAILED: %s (start the channel by hand)' % exc)
                    result['state'] = 'error'
            result['paused_s'] = round(clock() - paused_at, 3)
        if locked:
            try:
                query(replica, 'SELECT RELEASE_LOCK(%s)', [LOCK_NAME])
            except Exception:  # pylint: disable=broad-except
                pass
        result['duration_s'] = round(clock() - started, 3)
    return result


def schema_map_for(databases, schema_prefix):
    """[(device schema, replica schema)]: channel mode prefixes, instance mode keeps names."""
    return [(db, '%s%s' % (schema_prefix or '', db)) for db in databases]


def summarize(results):
    summary = {'devices': len(results), 'ok': 0, 'diverged': 0, 'error': 0,
               'tables_checked': 0, 'tables_differing': 0}
    for result in results:
        summary[result['state']] = summary.get(result['state'], 0) + 1
        summary['tables_checked'] += result.get('tables_checked') or 0
        summary['tables_differing'] += len(result.get('differing_tables') or [])
    return summary


def describe_table(table):
    """One line for a compared table: 'app.t differs (3/3 rows; different: id=2)'."""
    status = table.get('status')
    name = table.get('table')
    if status == 'same':
        return '%s same' % name
    if status == 'missing_on_replica':
        return '%s missing on the replica' % name
    if status == 'missing_on_device':
        return '%s exists only on the replica' % name
    if status == 'columns_differ':
        return '%s has different columns' % name
    parts = ['%s/%s rows' % (table.get('device_rows'), table.get('replica_rows'))]
    keys = table.get('keys') or {}
    counts = keys.get('counts') or {}
    for kind, label in (('different', 'different'), ('missing_on_replica', 'missing'),
                        ('extra_on_replica', 'extra')):
        if counts.get(kind):
            shown = keys.get(kind) or []
            more = counts[kind] - len(shown)
            parts.append('%s: %s%s' % (label, ' '.join(shown),
                                       ' (+%d more)' % more if more > 0 else ''))
    if table.get('locate_note'):
        parts.append(table['locate_note'])
    return '%s differs (%s)' % (name, '; '.join(parts))


def format_gtid(text):
    """Normalise a GTID position text (sorted by domain)."""
    return format_gtid_pos(parse_gtid_pos(text))
