# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure replication logic: status parsing, GTID position merging, desired-state planning,
health and diagnosis.  No database access here; the modules feed rows in and run the
statements that come out, so everything below is unit-tested without a server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import (  # noqa: F401 (re-exported)
    format_gtid_pos, merge_gtid_pos, parse_gtid_pos,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    BOTH_THREADS, CHANNEL_OPTIONS, GTID_OPTION, MASK, OPTION_ORDER, THREAD_IO, THREAD_SQL,
    channel_key, render,
)

# ---------------------------------------------------------------------------------------
# Status rows (SHOW ALL SLAVES STATUS / SHOW REPLICA STATUS) -> one canonical dict
# ---------------------------------------------------------------------------------------

# canonical key -> candidate column names (MariaDB / old MySQL first, then MySQL 8.0.22+)
STATUS_COLUMNS = {
    'name': ('Connection_name', 'Channel_Name', 'Channel_name'),
    'source_host': ('Master_Host', 'Source_Host'),
    'source_port': ('Master_Port', 'Source_Port'),
    'source_user': ('Master_User', 'Source_User'),
    'connect_retry': ('Connect_Retry',),
    'retry_count': ('Master_Retry_Count', 'Source_Retry_Count'),
    'heartbeat_period': ('Slave_heartbeat_period', 'Replica_heartbeat_period'),
    'io_state': ('Slave_IO_State', 'Replica_IO_State'),
    'io_running_raw': ('Slave_IO_Running', 'Replica_IO_Running'),
    'sql_running_raw': ('Slave_SQL_Running', 'Replica_SQL_Running'),
    'sql_state': ('Slave_SQL_Running_State', 'Replica_SQL_Running_State'),
    'seconds_behind': ('Seconds_Behind_Master', 'Seconds_Behind_Source'),
    'last_io_errno': ('Last_IO_Errno',),
    'last_io_error': ('Last_IO_Error',),
    'last_sql_errno': ('Last_SQL_Errno',),
    'last_sql_error': ('Last_SQL_Error',),
    'using_gtid_raw': ('Using_Gtid',),
    'auto_position_raw': ('Auto_Position',),
    'gtid_io_pos': ('Gtid_IO_Pos',),
    'retrieved_gtid_set': ('Retrieved_Gtid_Set',),
    'executed_gtid_set': ('Executed_Gtid_Set',),
    'rewrite_db_raw': ('Replicate_Rewrite_DB', 'Replicate_Rewrite_Db'),
    'delay': ('SQL_Delay',),
    'ssl_raw': ('Master_SSL_Allowed', 'Source_SSL_Allowed'),
    'ssl_ca': ('Master_SSL_CA_File', 'Source_SSL_CA_File'),
    'ssl_capath': ('Master_SSL_CA_Path', 'Source_SSL_CA_Path'),
    'ssl_cert': ('Master_SSL_Cert', 'Source_SSL_Cert'),
    'ssl_key': ('Master_SSL_Key', 'Source_SSL_Key'),
    'ssl_cipher': ('Master_SSL_Cipher', 'Source_SSL_Cipher'),
    'ssl_crl': ('Master_SSL_Crl', 'Source_SSL_Crl'),
    'ssl_verify_raw': ('Master_SSL_Verify_Server_Cert', 'Source_SSL_Verify_Server_Cert'),
    'source_server_id': ('Master_Server_Id', 'Source_Server_Id'),
    'source_log_file': ('Master_Log_File', 'Source_Log_File'),
    'read_source_log_pos': ('Read_Master_Log_Pos', 'Read_Source_Log_Pos'),
}


def _pick(row, candidates):
    for column in candidates:
        if column in row:
            return row[column]
    return None


def _text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode('utf-8', 'replace')
    return value


def _int_or_none(value):
    if value is None or value == '':
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value):
    if value is None or value == '':
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _yes(value):
    return str(value).strip().lower() in ('yes', '1', 'true', 'on')


def parse_rewrite_rules(text):
    """'a->b,c->d' -> [{'from': 'a', 'to': 'b'}, ...] (MariaDB Replicate_Rewrite_DB)."""
    rules = []
    for part in (text or '').split(','):
        part = part.strip()
        if '->' in part:
            source, target = part.split('->', 1)
            rules.append({'from': source.strip(), 'to': target.strip()})
    return rules


def parse_status_row(row, is_mariadb=True):
    """Normalise one status row (dict of column -> value) into canonical keys."""
    row = dict((key, _text(value)) for key, value in row.items())
    raw = dict((key, _pick(row, columns)) for key, columns in STATUS_COLUMNS.items())
    io_raw = (raw['io_running_raw'] or 'No')
    sql_raw = (raw['sql_running_raw'] or 'No')
    using_gtid_raw = raw['using_gtid_raw']
    if is_mariadb:
        gtid_mode = (using_gtid_raw or 'No').lower()
        use_gtid = gtid_mode == 'slave_pos'
    else:
        use_gtid = _yes(raw['auto_position_raw'])
        gtid_mode = 'auto_position' if use_gtid else 'no'
    ssl_raw = raw['ssl_raw']
    status = {
        'name': raw['name'] or '',
        'source_host': raw['source_host'] or '',
        'source_port': _int_or_none(raw['source_port']),
        'source_user': raw['source_user'] or '',
        'connect_retry': _int_or_none(raw['connect_retry']),
        'retry_count': _int_or_none(raw['retry_count']),
        'heartbeat_period': _float_or_none(raw['heartbeat_period']),
        'delay': _int_or_none(raw['delay']),
        'use_gtid': use_gtid,
        'gtid_mode': gtid_mode,
        'io_running': io_raw,
        'sql_running': sql_raw,
        'io_thread': io_raw.lower() in ('yes', 'connecting'),
        'sql_thread': sql_raw.lower() == 'yes',
        'io_state': raw['io_state'] or '',
        'sql_state': raw['sql_state'] or '',
        'seconds_behind': _int_or_none(raw['seconds_behind']),
        'last_io_errno': _int_or_none(raw['last_io_errno']) or 0,
        'last_io_error': raw['last_io_error'] or '',
        'last_sql_errno': _int_or_none(raw['last_sql_errno']) or 0,
        'last_sql_error': raw['last_sql_error'] or '',
        'gtid_io_pos': raw['gtid_io_pos'],
        'retrieved_gtid_set': raw['retrieved_gtid_set'],
        'executed_gtid_set': raw['executed_gtid_set'],
        'rewrite_db': parse_rewrite_rules(raw['rewrite_db_raw']),
        'ssl': (str(ssl_raw).lower() in ('yes', 'ignored')) if ssl_raw is not None else None,
        'ssl_ca': raw['ssl_ca'] or '',
        'ssl_capath': raw['ssl_capath'] or '',
        'ssl_cert': raw['ssl_cert'] or '',
        'ssl_key': raw['ssl_key'] or '',
        'ssl_cipher': raw['ssl_cipher'] or '',
        'ssl_crl': raw['ssl_crl'] or '',
        'ssl_verify_server_cert': (_yes(raw['ssl_verify_raw'])
                                   if raw['ssl_verify_raw'] is not None else None),
        'source_server_id': _int_or_none(raw['source_server_id']),
    }
    if isinstance(status['gtid_io_pos'], str):
        status['gtid_io_pos'] = status['gtid_io_pos'].strip()
    for key in ('retrieved_gtid_set', 'executed_gtid_set'):
        if isinstance(status[key], str):
            status[key] = status[key].replace('\n', '')
    return status


def apply_connection_config(statuses, rows):
    """Fold MySQL performance_schema.replication_connection_configuration rows in."""
    by_name = dict((channel_key(s['name']), s) for s in statuses)
    for row in rows or []:
        row = dict((key.upper(), _text(value)) for key, value in row.items())
        status = by_name.get(channel_key(row.get('CHANNEL_NAME')))
        if status is None:
            continue
        if row.get('HEARTBEAT_INTERVAL') is not None:
            status['heartbeat_period'] = _float_or_none(row['HEARTBEAT_INTERVAL'])
        if row.get('CONNECTION_RETRY_INTERVAL') is not None:
            status['connect_retry'] = _int_or_none(row['CONNECTION_RETRY_INTERVAL'])
        if row.get('CONNECTION_RETRY_COUNT') is not None:
            status['retry_count'] = _int_or_none(row['CONNECTION_RETRY_COUNT'])
    return statuses


def read_channel_statuses(session):
    """parse_status_row() dicts of every channel of a server (a mysql_connection session),
    with MySQL's connection configuration folded in."""
    dialect = session.dialect
    statuses = [parse_status_row(row, dialect.is_mariadb) for row in session.query(*dialect.status_all())]
    config_query = dialect.connection_config_query()
    if config_query:
        apply_connection_config(statuses, session.try_query(*config_query))
    return statuses


# ---------------------------------------------------------------------------------------
# MariaDB GTID positions of a channel (parsing and formatting: module_utils/gtid.py)
# ---------------------------------------------------------------------------------------

def applied_pos(gtid_io_pos, gtid_slave_pos):
    """Entries of gtid_slave_pos for the domains a channel receives (MariaDB); '' when either
    position cannot be parsed."""
    try:
        received = parse_gtid_pos(gtid_io_pos or '')
        applied = parse_gtid_pos(gtid_slave_pos or '')
    except ValueError:
        return ''
    return format_gtid_pos(dict((domain, applied[domain]) for domain in received
                                if domain in applied))


# ---------------------------------------------------------------------------------------
# Desired state
# ---------------------------------------------------------------------------------------

# The server-wide named lock (GET_LOCK) that serialises replication_source runs and the consistency
# check on one replica: both stop and start channels, so they must never interleave.
REPLICA_LOCK_NAME = 'edgefleet.mysql_backup.replication_source'

CONFIG_KEYS = ('source_host', 'source_port', 'source_user', 'use_gtid', 'connect_retry',
               'retry_count', 'heartbeat_period', 'delay', 'ssl', 'ssl_ca', 'ssl_capath',
               'ssl_cert', 'ssl_key', 'ssl_cipher', 'ssl_crl', 'ssl_verify_server_cert')


def config_view(status):
    """The comparable configuration of a live channel (what a diff shows)."""
    view = dict((key, status.get(key)) for key in CONFIG_KEYS)
    view['state'] = live_state(status)
    return view


def desired_view(channel, live=None):
    """What the channel's configuration will be after this run (for the diff)."""
    view = config_view(live) if live else dict((key, None) for key in CONFIG_KEYS)
    for key in CONFIG_KEYS:
        if channel.get(key) is not None:
            view[key] = channel[key]
    view['state'] = channel.get('state') or 'running'
    return view


def _equal(option, desired, live):
    if live is None:
        return False
    kind = CHANNEL_OPTIONS[option]['kind'] if option in CHANNEL_OPTIONS else 'bool'
    if kind == 'float':
        return abs(float(desired) - float(live)) < 0.0005
    if kind == 'int':
        return int(desired) == int(live)
    if kind == 'bool':
        return bool(desired) == bool(live)
    return str(desired) == str(live)


def diff_options(channel, live, password_differs=False):
    """Options of `channel` (desired, None = don't care) that differ from `live`."""
    changed = {}
    for option in OPTION_ORDER:
        if option == 'source_password':
            continue
        desired = channel.get(option)
        if desired is None:
            continue
        if not _equal(option, desired, live.get(option)):
            changed[option] = desired
    if password_differs and channel.get('source_password') is not None:
        changed['source_password'] = channel['source_password']
    return changed


def create_options(channel):
    options = {}
    for option in OPTION_ORDER:
        if option in (GTID_OPTION,):
            continue
        if channel.get(option) is not None:
            options[option] = channel[option]
    options[GTID_OPTION] = True if channel.get(GTID_OPTION) is None else channel[GTID_OPTION]
    return options


# ---------------------------------------------------------------------------------------
# Planning: desired channels + live statuses -> ordered statements and per-channel results
# ---------------------------------------------------------------------------------------

class PlanError(Exception):
    pass


class Plan(object):
    def __init__(self):
        self.statements = []          # list of (sql, params)
        self.steps = []               # per statement: (verb, channel name, threads)
        self.channels = {}            # key -> result dict
        self.gtid = None              # {'before', 'after', 'changed'} on MariaDB
        self.warnings = []
        self.diff_before = {}
        self.diff_after = {}

    @property
    def changed(self):
        return bool(self.statements)

    def queries(self):
        return [render(sql, params) for sql, params in self.statements]

    def recovery(self, failed_index):
        """Statements that restart channels this plan stopped before statement `failed_index`
        failed and would have started again later (best effort after a partial run)."""
        stopped = {}
        for verb, name, threads in self.steps[:failed_index]:
            key = channel_key(name)
            if verb == 'stop':
                stopped[key] = (name, stopped.get(key, (name, frozenset()))[1] | threads)
            elif verb == 'start' and key in stopped:
                remaining = stopped[key][1] - threads
                if remaining:
                    stopped[key] = (name, remaining)
                else:
                    del stopped[key]
            elif verb == 'remove':
                stopped.pop(key, None)
        later_starts = set(channel_key(name) for verb, name, _threads
                           in self.steps[failed_index:] if verb == 'start')
        return [(name, threads) for key, (name, threads) in sorted(stopped.items())
                if key in later_starts]


def _running_threads(sim):
    threads = set()
    if sim['io']:
        threads.add(THREAD_IO)
    if sim['sql']:
        threads.add(THREAD_SQL)
    return frozenset(threads)


def plan_channels(dialect, desired, live_statuses, prune_unlisted=False,
                  update_password='on_create', stored_passwords=None, gtid_slave_pos=None):
    """Compute the statements that take the server from `live_statuses` to `desired`.

    desired: list of channel dicts (name, state, options..., gtid_pos)
    live_statuses: list of parse_status_row() dicts
    stored_passwords: {channel_key: password} when the server lets us read them (MySQL 8),
        else None; a readable password is compared instead of trusting update_password.
    gtid_slave_pos: current value (MariaDB) for gtid_pos seeding.
    """
    plan = Plan()
    live = dict((channel_key(s['name']), s) for s in live_statuses)
    sim = dict((key, {'io': s['io_thread'], 'sql': s['sql_thread']}) for key, s in live.items())
    desired_by_key = {}
    for channel in desired:
        key = channel_key(channel['name'])
        if key in desired_by_key:
            raise PlanError('channel %r is listed twice (names are case-insensitive)'
                            % channel['name'])
        desired_by_key[key] = channel

    def emit(statement, verb='other', name=None, threads=frozenset()):
        plan.statements.append(statement)
        plan.steps.append((verb, name, frozenset(threads)))

    def stop(key, name, threads):
        threads = frozenset(threads) & _running_threads(sim[key])
        if not threads:
            return False
        emit(dialect.stop(name, threads), 'stop', name, threads)
        if THREAD_IO in threads:
            sim[key]['io'] = False
        if THREAD_SQL in threads:
            sim[key]['sql'] = False
        return True

    def start(key, name, threads=BOTH_THREADS):
        missing = frozenset(threads) - _running_threads(sim[key])
        if not missing:
            return False
        emit(dialect.start(name, missing), 'start', name, missing)
        sim[key]['io'] = sim[key]['io'] or THREAD_IO in missing
        sim[key]['sql'] = sim[key]['sql'] or THREAD_SQL in missing
        return True

    def result(key, name):
        if key not in plan.channels:
            plan.channels[key] = {'name': name, 'action': 'unchanged', 'actions': [],
                                  'changed_options': []}
        return plan.channels[key]

    # 1. removals: absent channels and (with prune_unlisted) every live channel not listed
    removals = []
    for key, status in sorted(live.items()):
        channel = desired_by_key.get(key)
        if channel is not None and channel.get('state') == 'absent':
            removals.append((key, status['name']))
        elif channel is None and prune_unlisted:
            removals.append((key, status['name']))
    for key, name in removals:
        res = result(key, name)
        res['pruned'] = key not in desired_by_key
        plan.diff_before[name] = config_view(live[key])
        stop(key, name, BOTH_THREADS)
        emit(dialect.reset_all(name), 'remove', name)
        del sim[key]
        res['actions'].append('removed')
    for key, channel in desired_by_key.items():
        if channel.get('state') == 'absent' and key not in live:
            result(key, channel['name'])

    # 2. changes to existing channels, 3. creations
    created = set()
    for key, channel in sorted(desired_by_key.items()):
        name = channel['name']
        state = channel.get('state') or 'running'
        if state == 'absent':
            continue
        res = result(key, name)
        if key in live:
            status = live[key]
            stored = None if stored_passwords is None else stored_passwords.get(key)
            if channel.get('source_password') is None:
                password_differs = False
            elif stored is not None:
                password_differs = stored != channel['source_password']
            else:
                password_differs = update_password == 'always'
            options = diff_options(channel, status, password_differs)
            plan.diff_before[status['name']] = config_view(status)
            plan.diff_after[name] = desired_view(channel, status)
            if options:
                stop(key, name, dialect.threads_for_change(options))
                emit(dialect.change(name, options), 'change', name)
                res['actions'].append('changed')
                res['changed_options'] = [option for option in OPTION_ORDER if option in options]
                if 'source_password' in options:
                    plan.diff_after[name]['source_password'] = MASK
        else:
            if not channel.get('source_host'):
                raise PlanError('channel %r does not exist yet: source_host is required to create '
                                'it' % name)
            emit(dialect.change(name, create_options(channel)), 'create', name)
            sim[key] = {'io': False, 'sql': False}
            created.add(key)
            res['actions'].append('created')
            view = desired_view(channel)
            if view['use_gtid'] is None:
                view['use_gtid'] = True
            if channel.get('source_password') is not None:
                view['source_password'] = MASK
            plan.diff_after[name] = view

    # 4. gtid_slave_pos seeds (MariaDB): merged by domain, applied in one stop-all window
    seeds = {}
    if any(c.get('gtid_pos') for c in desired_by_key.values() if c.get('state') != 'absent'):
        if not dialect.supports_gtid_pos_seed():
            raise PlanError('gtid_pos seeds exist only on MariaDB (gtid_slave_pos); on MySQL '
                            'seed a replica with gtid_purged from the dump instead')
        try:
            current = parse_gtid_pos(gtid_slave_pos or '')
        except ValueError as exc:
            raise PlanError('cannot parse the server gtid_slave_pos: %s' % exc)
        owner = {}
        for key, channel in sorted(desired_by_key.items()):
            if channel.get('state') == 'absent' or not channel.get('gtid_pos'):
                continue
            try:
                wanted = parse_gtid_pos(channel['gtid_pos'])
            except ValueError as exc:
                raise PlanError('channel %r: %s' % (channel['name'], exc))
            res = result(key, channel['name'])
            for domain, gtid in sorted(wanted.items()):
                if domain in owner and seeds[domain] != gtid:
                    raise PlanError('channels %r and %r seed GTID domain %d with different '
                                    'positions' % (owner[domain], channel['name'], domain))
                if domain not in current or key in created or channel.get('gtid_pos_force'):
                    if current.get(domain) != gtid:
                        seeds[domain] = gtid
                        owner[domain] = channel['name']
                        res.setdefault('gtid_seeded', []).append('%d-%d-%d' % gtid)
                elif current[domain] != gtid:
                    res.setdefault('gtid_seed_skipped', []).append(
                        'domain %d keeps %d-%d-%d (seed %d-%d-%d applies only when the channel '
                        'is created, the domain has no position, or gtid_pos_force is set)'
                        % ((domain,) + current[domain] + gtid))
        if gtid_slave_pos is not None:
            merged = merge_gtid_pos(current, seeds)
            plan.gtid = {'before': format_gtid_pos(current), 'after': format_gtid_pos(merged),
                         'changed': bool(seeds)}
        if seeds:
            # gtid_slave_pos can change only while every replication thread is stopped
            paused = {}
            for key in sorted(sim):
                threads = _running_threads(sim[key])
                if threads:
                    name = desired_by_key[key]['name'] if key in desired_by_key else live[key]['name']
                    paused[key] = (name, threads)
                    stop(key, name, threads)
            emit(dialect.set_gtid_pos(format_gtid_pos(merge_gtid_pos(current, seeds))))
            for key, (name, threads) in sorted(paused.items()):
                channel = desired_by_key.get(key)
                if channel is None:
                    start(key, name, threads)  # unlisted channel: put it back as it was
                    result(key, name)['restarted'] = True
                    continue
                res = result(key, name)
                if (channel.get('state') or 'running') == 'running':
                    res['restarted'] = True  # step 5 starts it again

    # 5. running / stopped
    for key, channel in sorted(desired_by_key.items()):
        state = channel.get('state') or 'running'
        if state == 'absent':
            continue
        name = channel['name']
        res = result(key, name)
        before = live.get(key)
        was_running = bool(before) and before['io_thread'] and before['sql_thread']
        if state == 'running':
            started = start(key, name, BOTH_THREADS)
            if key in created or (started and not was_running):
                res['actions'].append('started')
        elif key in live:
            stop(key, name, BOTH_THREADS)
            if before['io_thread'] or before['sql_thread']:
                res['actions'].append('stopped')

    for res in plan.channels.values():
        for action in ('removed', 'created', 'changed', 'started', 'stopped'):
            if action in res['actions']:
                res['action'] = action
                break
        res['changed'] = bool(res['actions']) or bool(res.get('gtid_seeded'))
    return plan


def live_state(status):
    """running | stopped | partial (one thread only) for a live channel."""
    if status['io_thread'] and status['sql_thread']:
        return 'running'
    if status['io_thread'] or status['sql_thread']:
        return 'partial'
    return 'stopped'


# ---------------------------------------------------------------------------------------
# Health and diagnosis (replication_info)
# ---------------------------------------------------------------------------------------

HEALTH_VALUES = ('ok', 'lagging', 'connecting', 'stopped', 'error')

# IO errors that retrying will not fix: the channel is misconfigured, not merely offline.
FATAL_IO_ERRNOS = frozenset([1045, 1236, 1593, 1595, 1597, 2026, 2061, 1251])
NETWORK_IO_ERRNOS = frozenset([2003, 2005, 2006, 2013, 1158, 1159, 1160, 1161])

_QUALIFIED_NAME_RE = re.compile(r'`?([A-Za-z0-9_$]+)`?\s*\.\s*`?([A-Za-z0-9_$]+)`?')
_DEFAULT_DB_RE = re.compile(r"Default database:\s*'([^']*)'")
_QUERY_RE = re.compile(r"Query:\s*'(.*)'", re.S)


def _rewrite_diagnosis(status):
    """Explain the replicate_rewrite_db + qualified DDL sharp edge, or return None."""
    errno = status.get('last_sql_errno') or 0
    error = status.get('last_sql_error') or ''
    rules = status.get('rewrite_db') or []
    if errno not in (1146, 1049, 1050, 1051) or not rules:
        return None
    default_db = _DEFAULT_DB_RE.search(error)
    default_db = default_db.group(1) if default_db else None
    query = _QUERY_RE.search(error)
    query = query.group(1) if query else ''
    sources = dict((rule['from'].lower(), rule) for rule in rules)
    hit = None
    for match in _QUALIFIED_NAME_RE.finditer(query or error):
        if match.group(1).lower() in sources:
            hit = (sources[match.group(1).lower()], match.group(1), match.group(2))
            break
    if hit is None:
        # "Table 'app.t' doesn't exist" / "Unknown database 'app'" name the schema too
        for rule in rules:
            if re.search(r"'%s[.']" % re.escape(rule['from']), error, re.I):
                hit = (rule, rule['from'], None)
                break
    if hit is None:
        return _filtered_ddl_diagnosis(status, rules, errno, error)
    rule, schema, table = hit
    named = '%s.%s' % (schema, table) if table else schema
    default_note = ('no default database' if not default_db
                    else 'default database %r' % default_db)
    name = status.get('name', '')
    if query:
        fixed = re.sub(r'(`?)\b%s\b(`?)\s*\.' % re.escape(schema),
                       lambda m: '%s%s%s.' % (m.group(1), rule['to'], m.group(2)), query)
        redo = 'run %s on the replica' % fixed
    else:
        redo = 'apply the statement on the replica against %s' % rule['to']
    return (
        'qualified DDL not rewritten by replicate_rewrite_db: the statement names %s with %s, '
        'so the rule %s->%s did not apply and the SQL thread stopped with error %d. '
        "Fix: %s, then skip the failed transaction: SET @@default_master_connection='%s'; "
        "SET GLOBAL sql_slave_skip_counter=1; START SLAVE '%s'. "
        'Prevent: run DDL on the device after USE %s with unqualified table names, or give this '
        'device its own replica instance (instance mode has no rewrite).'
        % (named, default_note, rule['from'], rule['to'], status.get('last_sql_errno') or 0,
           redo, name, name, rule['from']))


_MISSING_TABLE_RE = re.compile(r"Table '([^'.]+)\.([^']+)' doesn't exist")


def _filtered_ddl_diagnosis(status, rules, errno, error):
    """A row event for a renamed schema's table that the replica never created: the device created
    it with qualified DDL (`app.t` without `USE app`), which is not rewritten, so the channel's
    isolation filter (replicate_wild_do_table on the renamed schemas only) ignored it."""
    match = _MISSING_TABLE_RE.search(error)
    if errno != 1146 or not match:
        return None
    targets = dict((rule['to'].lower(), rule) for rule in rules)
    rule = targets.get(match.group(1).lower())
    if rule is None:
        return None
    name = status.get('name', '')
    return (
        'table %s.%s is missing on the replica: the device created it with DDL that named %s.%s without '
        'USE %s; replicate_rewrite_db does not rewrite such DDL and the channel\'s isolation filter '
        'ignores every schema but its own, so the SQL thread stopped at the first row for it (error 1146). '
        'Fix: run SHOW CREATE TABLE %s.%s on the device, run that statement on the replica in %s with '
        "sql_log_bin=0, then START SLAVE '%s' (or re-seed with resync.yml). Prevent: run DDL on the "
        'device after USE %s with unqualified table names.'
        % (rule['to'], match.group(2), rule['from'], match.group(2), rule['from'], rule['from'],
           match.group(2), rule['to'], name, rule['from']))


_REQUESTED_GTID_RE = re.compile(r'start from GTID (\d+)-(\d+)-(\d+)')


def _foreign_position_diagnosis(status):
    """For a source's refusal (1236) of a position whose GTID another server wrote: the replica's
    position in this channel's domain came from a server that is not this channel's source, so
    another source wrote under the domain (a device forging a neighbour's gtid_domain_id on a
    shared instance: docs/security.md, Limits) or the device's server id changed. None when the
    error names no GTID or the source's server id is not known."""
    match = _REQUESTED_GTID_RE.search(status.get('last_io_error') or '')
    source_id = status.get('source_server_id')
    if not match or not source_id or int(match.group(2)) == int(source_id):
        return None
    return ('the replica\'s position in GTID domain %s (%s) was written by server %s, not by this '
            'channel\'s source (server %s): another source wrote under this domain, or the device\'s '
            'server_id changed; re-seed the channel (resync.yml)'
            % (match.group(1), '-'.join(match.groups()), match.group(2), source_id))


def diagnose(status, lag_threshold):
    """Return (health, diagnosis) for one parsed status row."""
    io_raw = (status.get('io_running') or 'No').lower()
    sql_running = status.get('sql_thread')
    io_errno = status.get('last_io_errno') or 0
    sql_errno = status.get('last_sql_errno') or 0
    io_error = status.get('last_io_error') or ''
    sql_error = status.get('last_sql_error') or ''

    if sql_errno and not sql_running:
        special = _rewrite_diagnosis(status)
        if special:
            return 'error', special
        hint = {
            1062: 'a row the source inserts already exists here: data drift; re-seed this '
                  'channel from a fresh dump',
            1032: 'a row the source changes is missing here: data drift; re-seed this channel',
            1146: 'a table the source changes does not exist here; was the schema seeded?',
            1049: 'a database the source uses does not exist here; was the schema seeded?',
            1950: 'GTID strict mode rejected an out-of-order GTID: two sources share a '
                  'gtid_domain_id, or the position was seeded wrongly',
        }.get(sql_errno, 'the SQL thread stopped on an error')
        return 'error', 'SQL thread error %d: %s. %s' % (sql_errno, hint, sql_error)
    if io_errno and io_raw == 'no':
        forged = _foreign_position_diagnosis(status) if io_errno == 1236 else None
        if forged:
            return 'error', 'IO thread error 1236: %s. %s' % (forged, io_error)
        hint = {
            1236: 'the source no longer has the binlogs for the requested GTID position '
                  '(purged, or the position is wrong): re-seed the channel',
            1045: 'access denied: check the replication user and password on the device',
        }.get(io_errno, 'the IO thread stopped on an error')
        return 'error', 'IO thread error %d: %s. %s' % (io_errno, hint, io_error)
    if io_raw == 'connecting':
        if io_errno in FATAL_IO_ERRNOS:
            hint = ('access denied: check the replication user and password'
                    if io_errno == 1045 else 'the source refuses this connection')
            return 'error', 'IO thread cannot connect (error %d: %s). %s' % (
                io_errno, hint, io_error)
        if io_errno:
            return 'connecting', ('source unreachable (error %d): the device or its tunnel is '
                                  'probably offline; the IO thread keeps retrying. %s'
                                  % (io_errno, io_error))
        return 'connecting', 'IO thread is connecting to the source'
    if io_raw != 'yes' and not sql_running:
        return 'stopped', 'both replication threads are stopped'
    if io_raw != 'yes':
        return 'stopped', 'IO thread is stopped (SQL thread running)'
    if not sql_running:
        return 'stopped', 'SQL thread is stopped (IO thread running)'
    behind = status.get('seconds_behind')
    if behind is not None and lag_threshold is not None and behind > lag_threshold:
        return 'lagging', '%d seconds behind the source (threshold %d)' % (behind, lag_threshold)
    return 'ok', ''
