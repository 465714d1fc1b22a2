# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One version table that decides the replication SQL for a server flavor and version.

Everything that differs between MySQL and MariaDB (and between their versions) lives in
``DIALECT_TABLE`` below; callers never test versions themselves.  Statements are returned as
``(sql, params)`` pairs: every string value (channel name, host, user, password, file paths) is
a ``%s`` placeholder filled by the driver's escaping; numbers are validated and rendered
inline; keywords come only from this table.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

# A channel / connection name: letters, digits, '_', '.', '-', at most 64 characters.  The
# empty string is the default (unnamed) channel.  Names are matched case-insensitively because
# both servers treat them that way.
CHANNEL_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$')
RESERVED_CHANNEL_NAMES = frozenset(['group_replication_applier', 'group_replication_recovery'])

THREAD_IO = 'io'
THREAD_SQL = 'sql'
BOTH_THREADS = frozenset([THREAD_IO, THREAD_SQL])

# Channel options that map to one CHANGE ... TO option.  kind: str | int | float | bool.
# 'thread' tells which replication thread must be stopped on MySQL to change it (MariaDB needs
# both stopped for any change).
CHANNEL_OPTIONS = {
    'source_host': {'sql': 'HOST', 'kind': 'str', 'thread': THREAD_IO},
    'source_port': {'sql': 'PORT', 'kind': 'int', 'thread': THREAD_IO},
    'source_user': {'sql': 'USER', 'kind': 'str', 'thread': THREAD_IO},
    'source_password': {'sql': 'PASSWORD', 'kind': 'str', 'thread': THREAD_IO, 'secret': True},
    'connect_retry': {'sql': 'CONNECT_RETRY', 'kind': 'int', 'thread': THREAD_IO},
    'retry_count': {'sql': 'RETRY_COUNT', 'kind': 'int', 'thread': THREAD_IO},
    'heartbeat_period': {'sql': 'HEARTBEAT_PERIOD', 'kind': 'float', 'thread': THREAD_IO},
    'delay': {'sql': 'DELAY', 'kind': 'int', 'thread': THREAD_SQL},
    'ssl': {'sql': 'SSL', 'kind': 'bool', 'thread': THREAD_IO},
    'ssl_ca': {'sql': 'SSL_CA', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_capath': {'sql': 'SSL_CAPATH', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_cert': {'sql': 'SSL_CERT', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_key': {'sql': 'SSL_KEY', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_cipher': {'sql': 'SSL_CIPHER', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_crl': {'sql': 'SSL_CRL', 'kind': 'str', 'thread': THREAD_IO},
    'ssl_verify_server_cert': {'sql': 'SSL_VERIFY_SERVER_CERT', 'kind': 'bool', 'thread': THREAD_IO},
}
# use_gtid is rendered by the dialect (MASTER_USE_GTID / SOURCE_AUTO_POSITION); on MySQL it
# needs both threads stopped.
GTID_OPTION = 'use_gtid'
# Order in which options appear in a CHANGE statement (stable output, readable queries).
OPTION_ORDER = ('source_host', 'source_port', 'source_user', 'source_password', 'use_gtid',
                'connect_retry', 'retry_count', 'heartbeat_period', 'delay', 'ssl', 'ssl_ca',
                'ssl_capath', 'ssl_cert', 'ssl_key', 'ssl_cipher', 'ssl_crl',
                'ssl_verify_server_cert')

MASK = '********'


class Secret(str):
    """A string parameter that must be masked wherever a statement is shown."""

    __slots__ = ()


class UnsupportedServer(Exception):
    """The server flavor or version is outside the version table."""


def _row(flavor, since, label, **traits):
    return {'flavor': flavor, 'since': since, 'label': label, 'traits': traits}


# THE version table.  For each flavor, rows are in ascending `since` order; a server uses the
# last row whose `since` is <= its version.  A version below the first row is rejected.
#
# traits:
#   change        statement head for CHANGE ... TO
#   option_prefix prefix of option names in CHANGE (MASTER_ / SOURCE_)
#   channel_style 'prefix': CHANGE MASTER 'name' TO / START SLAVE 'name' (MariaDB)
#                 'suffix': ... FOR CHANNEL 'name' (MySQL)
#   start/stop    statement head for starting / stopping threads
#   reset_all     statement that deletes a channel
#   status_all    statement that lists the status of every channel (one row each)
#   gtid          'mariadb' (MASTER_USE_GTID=slave_pos|no) or 'mysql' (X_AUTO_POSITION=1|0)
#   gtid_pos_var  server variable with the replica's GTID position (read-only on MySQL)
#   retry_count   whether RETRY_COUNT is a per-channel CHANGE option
#   change_needs  'both': any CHANGE needs both threads stopped (MariaDB);
#                 'per_option': only the thread an option belongs to (MySQL, see
#                 CHANNEL_OPTIONS[...]['thread']; auto-position needs both)
#   legacy_removed True when MASTER/SLAVE spellings no longer exist (MySQL 8.4+)
DIALECT_TABLE = (
    # MariaDB: multi-source since 10.0; we accept 10.3+ (older is long out of support).
    _row('mariadb', (10, 3, 0), 'mariadb-10.3',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='prefix',
         start='START SLAVE', stop='STOP SLAVE', reset_all='RESET SLAVE {channel} ALL',
         status_all='SHOW ALL SLAVES STATUS', gtid='mariadb', gtid_pos_var='gtid_slave_pos',
         retry_count=False, change_needs='both', legacy_removed=False),
    # 10.5.1 adds the REPLICA spellings (START/STOP REPLICA, SHOW ALL REPLICAS STATUS).
    _row('mariadb', (10, 5, 1), 'mariadb-10.5',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='prefix',
         start='START REPLICA', stop='STOP REPLICA', reset_all='RESET REPLICA {channel} ALL',
         status_all='SHOW ALL REPLICAS STATUS', gtid='mariadb', gtid_pos_var='gtid_slave_pos',
         retry_count=False, change_needs='both', legacy_removed=False),
    # 12.0 makes MASTER_RETRY_COUNT a per-connection CHANGE MASTER option (MDEV-25674).
    _row('mariadb', (12, 0, 0), 'mariadb-12.0',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='prefix',
         start='START REPLICA', stop='STOP REPLICA', reset_all='RESET REPLICA {channel} ALL',
         status_all='SHOW ALL REPLICAS STATUS', gtid='mariadb', gtid_pos_var='gtid_slave_pos',
         retry_count=True, change_needs='both', legacy_removed=False),
    # MySQL 5.7 has channels (FOR CHANNEL) and auto-positioning with the old spellings.  It is
    # past end of life; accepted with a warning so old replicas can still be migrated.
    _row('mysql', (5, 7, 6), 'mysql-5.7',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='suffix',
         start='START SLAVE', stop='STOP SLAVE', reset_all='RESET SLAVE ALL',
         status_all='SHOW SLAVE STATUS', gtid='mysql', gtid_pos_var='gtid_executed',
         retry_count=True, change_needs='per_option', legacy_removed=False,
         warning='MySQL 5.7 is past end of life; the old CHANGE MASTER syntax is used.'),
    _row('mysql', (8, 0, 0), 'mysql-8.0',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='suffix',
         start='START SLAVE', stop='STOP SLAVE', reset_all='RESET SLAVE ALL',
         status_all='SHOW SLAVE STATUS', gtid='mysql', gtid_pos_var='gtid_executed',
         retry_count=True, change_needs='per_option', legacy_removed=False),
    # 8.0.22: START/STOP/RESET REPLICA and SHOW REPLICA STATUS; CHANGE MASTER still the only form.
    _row('mysql', (8, 0, 22), 'mysql-8.0.22',
         change='CHANGE MASTER', option_prefix='MASTER_', channel_style='suffix',
         start='START REPLICA', stop='STOP REPLICA', reset_all='RESET REPLICA ALL',
         status_all='SHOW REPLICA STATUS', gtid='mysql', gtid_pos_var='gtid_executed',
         retry_count=True, change_needs='per_option', legacy_removed=False),
    # 8.0.23: CHANGE REPLICATION SOURCE TO with SOURCE_* options.
    _row('mysql', (8, 0, 23), 'mysql-8.0.23',
         change='CHANGE REPLICATION SOURCE', option_prefix='SOURCE_', channel_style='suffix',
         start='START REPLICA', stop='STOP REPLICA', reset_all='RESET REPLICA ALL',
         status_all='SHOW REPLICA STATUS', gtid='mysql', gtid_pos_var='gtid_executed',
         retry_count=True, change_needs='per_option', legacy_removed=False),
    # 8.4 LTS removes CHANGE MASTER, START/STOP/SHOW SLAVE and the MASTER_* options.
    _row('mysql', (8, 4, 0), 'mysql-8.4',
         change='CHANGE REPLICATION SOURCE', option_prefix='SOURCE_', channel_style='suffix',
         start='START REPLICA', stop='STOP REPLICA', reset_all='RESET REPLICA ALL',
         status_all='SHOW REPLICA STATUS', gtid='mysql', gtid_pos_var='gtid_executed',
         retry_count=True, change_needs='per_option', legacy_removed=True),
)

_VERSION_RE = re.compile(r'^\s*(\d+)\.(\d+)\.(\d+)')


def parse_server_version(version_string, version_comment=''):
    """Return (flavor, (major, minor, patch)) from SELECT VERSION() / @@version_comment."""
    match = _VERSION_RE.match(version_string or '')
    if not match:
        raise UnsupportedServer('cannot parse server version %r' % (version_string,))
    text = ('%s %s' % (version_string, version_comment or '')).lower()
    flavor = 'mariadb' if 'mariadb' in text else 'mysql'
    numbers = tuple(int(part) for part in match.groups())
    # Old MariaDB clients saw "5.5.5-10.x.y-MariaDB"; VERSION() does not, but be tolerant.
    if flavor == 'mariadb' and numbers[:3] == (5, 5, 5):
        rest = _VERSION_RE.match(version_string.split('-', 1)[1]) if '-' in version_string else None
        if rest:
            numbers = tuple(int(part) for part in rest.groups())
    return flavor, numbers


def format_version(version):
    return '.'.join(str(part) for part in version)


def select_row(flavor, version):
    rows = [row for row in DIALECT_TABLE if row['flavor'] == flavor]
    chosen = None
    for row in rows:
        if tuple(version) >= row['since']:
            chosen = row
    if chosen is None:
        raise UnsupportedServer(
            '%s %s is not supported for replication management; the oldest supported %s is %s'
            % (flavor, format_version(version), flavor, format_version(rows[0]['since'])))
    return chosen


def validate_channel_name(name):
    """Return an error message for an unacceptable channel name, or None."""
    if not isinstance(name, str):
        return 'channel name must be a string, got %r' % (name,)
    if name == '':
        return None
    if not CHANNEL_NAME_RE.match(name):
        return ('invalid channel name %r: use 1-64 characters from A-Z a-z 0-9 _ . - '
                '(not starting with . or -)' % (name,))
    if name.lower() in RESERVED_CHANNEL_NAMES:
        return 'channel name %r is reserved for group replication' % (name,)
    return None


def channel_key(name):
    """Channel names are case-insensitive on both servers."""
    return (name or '').lower()


class Dialect(object):
    """SQL for one server (flavor + version), chosen from DIALECT_TABLE."""

    def __init__(self, flavor, version):
        self.flavor = flavor
        self.version = tuple(version)
        self.row = select_row(flavor, self.version)
        self.traits = self.row['traits']
        self.label = self.row['label']

    @classmethod
    def from_version_string(cls, version_string, version_comment=''):
        flavor, version = parse_server_version(version_string, version_comment)
        return cls(flavor, version)

    # --- facts -------------------------------------------------------------------------
    @property
    def is_mariadb(self):
        return self.flavor == 'mariadb'

    @property
    def gtid_pos_var(self):
        return self.traits['gtid_pos_var']

    @property
    def warning(self):
        return self.traits.get('warning')

    def supports_option(self, option):
        if option == 'retry_count':
            return bool(self.traits['retry_count'])
        if option == 'ssl_crl' and not self.is_mariadb and self.version < (5, 7, 0):
            return False
        return option in CHANNEL_OPTIONS or option == GTID_OPTION

    def supports_gtid_pos_seed(self):
        return self.is_mariadb

    def threads_for_change(self, options):
        """Threads that must be stopped before CHANGE can set `options`."""
        options = set(options)
        if not options:
            return frozenset()
        if self.traits['change_needs'] == 'both':
            return BOTH_THREADS
        needed = set()
        for option in options:
            if option == GTID_OPTION:
                needed |= BOTH_THREADS
            else:
                needed.add(CHANNEL_OPTIONS[option]['thread'])
        return frozenset(needed)

    # --- statements --------------------------------------------------------------------
    def _with_channel(self, head, name, tail=''):
        """Place the channel name where this flavor wants it; returns (sql, params)."""
        tail = (' ' + tail) if tail else ''
        if self.traits['channel_style'] == 'prefix':
            return '%s %%s%s' % (head, tail), [name]
        return '%s%s FOR CHANNEL %%s' % (head, tail), [name]

    def _option_sql(self, option, value):
        """Return (fragment, params) for one option; numbers inline after validation."""
        if option == GTID_OPTION:
            if self.traits['gtid'] == 'mariadb':
                return 'MASTER_USE_GTID=%s' % ('slave_pos' if value else 'no'), []
            return '%sAUTO_POSITION=%d' % (self.traits['option_prefix'], 1 if value else 0), []
        spec = CHANNEL_OPTIONS[option]
        name = self.traits['option_prefix'] + spec['sql']
        kind = spec['kind']
        if kind == 'str':
            return '%s=%%s' % name, [Secret(value) if spec.get('secret') else str(value)]
        if kind == 'bool':
            return '%s=%d' % (name, 1 if value else 0), []
        if kind == 'int':
            if isinstance(value, bool) or int(value) != value:
                raise ValueError('%s must be an integer' % option)
            return '%s=%d' % (name, int(value)), []
        if kind == 'float':
            number = float(value)
            if math.isnan(number) or math.isinf(number):
                raise ValueError('%s must be a finite number' % option)
            return '%s=%s' % (name, ('%.3f' % number).rstrip('0').rstrip('.') or '0'), []
        raise ValueError('unknown option kind %s' % kind)

    def change(self, name, options):
        """CHANGE ... TO for `options` (dict canonical option -> value)."""
        fragments, params = [], []
        for option in OPTION_ORDER:
            if option in options:
                fragment, values = self._option_sql(option, options[option])
                fragments.append(fragment)
                params.extend(values)
        if not fragments:
            raise ValueError('CHANGE without options')
        body = ', '.join(fragments)
        if self.traits['channel_style'] == 'prefix':
            return '%s %%s TO %s' % (self.traits['change'], body), [name] + params
        return '%s TO %s FOR CHANNEL %%s' % (self.traits['change'], body), params + [name]

    def _threads_clause(self, threads):
        threads = frozenset(threads or BOTH_THREADS)
        if threads == BOTH_THREADS:
            return ''
        return 'IO_THREAD' if THREAD_IO in threads else 'SQL_THREAD'

    def start(self, name, threads=None):
        return self._with_channel(self.traits['start'], name, self._threads_clause(threads))

    def stop(self, name, threads=None):
        return self._with_channel(self.traits['stop'], name, self._threads_clause(threads))

    def reset_all(self, name):
        statement = self.traits['reset_all']
        if '{channel}' in statement:
            return statement.replace('{channel}', '%s'), [name]
        return statement + ' FOR CHANNEL %s', [name]

    def status_all(self):
        return self.traits['status_all'], []

    def set_gtid_pos(self, value):
        if not self.is_mariadb:
            raise UnsupportedServer('gtid_slave_pos seeding exists only on MariaDB')
        return 'SET GLOBAL gtid_slave_pos = %s', [value]

    def server_facts_query(self):
        if self.is_mariadb:
            return ('SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.server_id AS server_id, '
                    '@@GLOBAL.gtid_slave_pos AS gtid_slave_pos, '
                    '@@GLOBAL.gtid_binlog_pos AS gtid_binlog_pos, '
                    '@@GLOBAL.gtid_domain_id AS gtid_domain_id, '
                    '@@GLOBAL.gtid_strict_mode AS gtid_strict_mode'), []
        return ('SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.server_id AS server_id, '
                '@@GLOBAL.gtid_executed AS gtid_executed, @@GLOBAL.gtid_mode AS gtid_mode, '
                '@@GLOBAL.super_read_only AS super_read_only'), []

    def connection_config_query(self):
        """MySQL keeps the heartbeat and retry settings out of SHOW REPLICA STATUS."""
        if self.is_mariadb:
            return None
        return ('SELECT CHANNEL_NAME, HEARTBEAT_INTERVAL, CONNECTION_RETRY_INTERVAL, '
                'CONNECTION_RETRY_COUNT FROM performance_schema.replication_connection_configuration'
                ), []

    def stored_password_query(self):
        """MySQL 8 keeps connection metadata in a table root can read; MariaDB in files."""
        if self.is_mariadb or self.version < (8, 0, 0):
            return None
        return 'SELECT Channel_name, User_password FROM mysql.slave_master_info', []


def escape_literal(value):
    """Render a parameter as an SQL literal for display (never for execution)."""
    if value is None:
        return 'NULL'
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    for char, replacement in (('\\', '\\\\'), ("'", "\\'"), ('\n', '\\n'), ('\r', '\\r'),
                              ('\x00', '\\0'), ('\x1a', '\\Z')):
        text = text.replace(char, replacement)
    return "'%s'" % text


def plain_params(params):
    """Parameters as the driver should receive them (Secret unwrapped to str)."""
    return [str(value) if isinstance(value, Secret) else value for value in params]


def render(sql, params):
    """Return the statement as text for humans, with Secret parameters masked."""
    shown = []
    for value in params:
        if isinstance(value, Secret):
            shown.append("'%s'" % MASK)
        else:
            shown.append(escape_literal(value))
    return sql % tuple(shown) if shown else sql
