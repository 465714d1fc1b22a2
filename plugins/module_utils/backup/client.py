# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL through the mariadb command-line client over an instance's unix socket.

Hosts have no PyMySQL in the system Python the backup program runs with, and root logs in by
unix_socket authentication, so statements go through the `mariadb` client.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import select
import subprocess
import tempfile
import threading
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULT_TOOLS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import (
    STOPPING, read_errors, reap, register)

# Bytes read from the client per call (its output is a few rows per statement).
CLIENT_READ = 1 << 16

_UNESCAPE = {'\\t': '\t', '\\n': '\n', '\\\\': '\\', '\\0': '\0'}


def unescape(value):
    """A field of `mariadb --batch` output as the server holds it (None for NULL)."""
    if value == 'NULL':
        return None
    return re.sub(r'\\[tn\\0]', lambda m: _UNESCAPE[m.group(0)], value)


def sql_string(value):
    """``value`` as an SQL string literal."""
    return "'%s'" % str(value).replace('\\', '\\\\').replace("'", "''")


class Server:
    """A MariaDB server reached through its unix socket as root (unix_socket auth).

    Statements go through one `mariadb --batch` client kept open (started on first use, again
    after an error): starting a client costs ~6 ms, more than the statements a backup runs, and
    a device backup runs a dozen of them. Each statement is followed by a marker row, so the
    output of one statement is everything before its marker; an error ends the client (no
    --force), its message is raised and the next statement starts a new one. One statement at a
    time per object: a thread that runs statements alongside another gets its own Server."""

    def __init__(self, socket_path, tools=None, user='root', timeout=3600):
        self.socket = socket_path
        self.tools = tools or DEFAULT_TOOLS
        self.user = user
        self.timeout = timeout  # seconds one statement may take
        self._lock = threading.Lock()
        self._proc = None
        self._errors = None

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def client_args(self, *extra):
        return [self.tools['mariadb'], '--no-defaults', '--socket=%s' % self.socket, '--user=%s' % self.user] + list(extra)

    def close(self):
        """End the client (it exits on end of input); kill it if it does not."""
        with self._lock:
            self._end_client()

    def _end_client(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        reap(proc)
        proc.stdout.close()
        self._errors.close()

    def _client(self):
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._end_client()
        self._errors = tempfile.TemporaryFile()
        self._proc = register(subprocess.Popen(self.client_args('--batch', '--unbuffered'), stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=self._errors))
        return self._proc

    def _failed(self, proc, timeout=None):
        """The client ended (or hung past ``timeout``): a BackupError with its error text; the
        client is gone."""
        if timeout is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # its output ended: it is exiting, let it finish its message
        reap(proc)
        # The client echoes the failed statement between dashed lines before the error: one line.
        text = ' '.join(line for line in read_errors(self._errors).splitlines() if line.strip('- '))
        self._end_client()
        how = 'timed out after %ss' % timeout if timeout else 'failed (exit %s)' % proc.returncode
        return BackupError('%s %s: %s' % (os.path.basename(self.tools['mariadb']), how, text[-1500:]))

    def _lines(self, sql, cleanup=False):
        """The output lines of ``sql`` (one or more statements)."""
        marker = 'edgefleet_end_' + os.urandom(8).hex()
        request = '%s;\nSELECT %s AS %s;\n' % (sql.strip().rstrip(';'), sql_string(marker), marker)
        expected = marker.encode('ascii')
        deadline = time.monotonic() + self.timeout
        with self._lock:
            if STOPPING.is_set() and not cleanup:
                raise BackupError('stopping')
            proc = self._client()
            try:
                proc.stdin.write(request.encode('utf-8'))
                proc.stdin.flush()
            except OSError:
                raise self._failed(proc) from None
            pending, lines, fd = b'', [], proc.stdout.fileno()
            while len(lines) < 2 or lines[-1] != expected or lines[-2] != expected:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise self._failed(proc, self.timeout)
                block = os.read(fd, CLIENT_READ)
                if not block:
                    raise self._failed(proc)
                pending += block
                *complete, pending = pending.split(b'\n')
                lines.extend(complete)
        return [line.decode('utf-8', 'replace') for line in lines[:-2]]

    def query(self, sql, cleanup=False):
        """Rows (list of dicts) of ``sql``, one statement (its first line names the columns;
        an empty result prints nothing)."""
        lines = self._lines(sql, cleanup=cleanup)
        if not lines:
            return []
        header = [unescape(f) for f in lines[0].split('\t')]
        return [dict(zip(header, (unescape(f) for f in line.split('\t')))) for line in lines[1:]]

    def value(self, sql):
        """The first column of the first row of ``sql`` (None without rows)."""
        rows = self.query(sql)
        return next(iter(rows[0].values())) if rows else None

    def execute(self, sql, no_binlog=False, cleanup=False):
        if no_binlog:
            # The session outlives the statement: binary logging is switched back on after it.
            sql = 'SET SESSION sql_log_bin=0; %s; SET SESSION sql_log_bin=1' % sql.strip().rstrip(';')
        self._lines(sql, cleanup=cleanup)

    def version(self):
        return self.value('SELECT VERSION()')

    def gtid_slave_pos(self):
        return self.value('SELECT @@GLOBAL.gtid_slave_pos') or ''

    def channels(self):
        rows = self.query('SHOW ALL SLAVES STATUS')
        return dict((row.get('Connection_name') or '', row) for row in rows)

    def schemas(self):
        return [row['SCHEMA_NAME'] for row in
                self.query('SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME')]

    def base_tables(self, schema):
        return [row['TABLE_NAME'] for row in self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' "
            "ORDER BY TABLE_NAME" % sql_string(schema))]

    def object_counts(self, schema):
        row = self.query(
            'SELECT '
            "(SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {s} AND TABLE_TYPE = 'BASE TABLE') AS tables_, "
            '(SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {s}) AS views, '
            '(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {s}) AS routines, '
            '(SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {s}) AS triggers, '
            '(SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {s}) AS events'.format(
                s=sql_string(schema)))[0]
        return dict(tables=int(row['tables_']), views=int(row['views']), routines=int(row['routines']),
                    triggers=int(row['triggers']), events=int(row['events']))

    def table_checksums(self, schema, tables, with_rows=True):
        """{table: {"checksum": int|None, "rows": int|None}} (CHECKSUM TABLE + COUNT(*))."""
        result = {}
        for start in range(0, len(tables), 200):
            chunk = tables[start:start + 200]
            names = ['%s.%s' % (P.quote_ident(schema), P.quote_ident(t)) for t in chunk]
            rows = self.query('CHECKSUM TABLE %s EXTENDED' % ', '.join(names))
            if len(rows) != len(chunk):
                raise BackupError('CHECKSUM TABLE on %s returned %d rows for %d tables' % (schema, len(rows), len(chunk)))
            counts = {}
            if with_rows:
                union = ' UNION ALL '.join('SELECT %d AS i, COUNT(*) AS n FROM %s' % (i, name) for i, name in enumerate(names))
                counts = dict((int(r['i']), int(r['n'])) for r in self.query(union))
            for index, (table, row) in enumerate(zip(chunk, rows)):
                checksum = row.get('Checksum')
                result[table] = {'checksum': None if checksum is None else int(checksum),
                                 'rows': counts.get(index)}
        return result
