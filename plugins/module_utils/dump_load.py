# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one home of the ``mariadb-dump`` and ``mariadb`` (load) command lines.

Three purposes dump schemas, each with the flags it needs (why is said next to each flag):

``backup``
    The backup program's logical dump of one schema of a replica instance
    (roles/backup: host program edgefleet-backup). Streamed through zstd into a backup file;
    its per-table digests are compared by verify and restore, so the dump must be byte-stable.
``seed``
    A device's schemas dumped through its tunnel with the read-only check account, loaded into
    the replica before (or instead of) its channel: roles/replication tasks/seed.yml
    (onboarding with data, playbooks/resync.yml). The dump carries the snapshot's GTID position,
    where the channel starts.
``move``
    A device's schemas dumped from its old replica (root over the instance socket, the device's
    channel stopped) and loaded into its new replica on another cloud host: roles/rebalance.
    The position comes from the stopped channel, not from the dump (see MOVE_OPTIONS).

Every load goes through :func:`load_argv` (``sql_log_bin=0``, see there). Pure functions
(argv, dump-text parsing, schema renaming) are unit-tested; :func:`dump_to_file` and
:func:`load_file` run the client programs (standard library only, so the host programs can use
them too).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import os
import re
import subprocess
import tempfile

# Flags every purpose shares.
# --single-transaction: one consistent InnoDB snapshot (REPEATABLE READ) without locking the
#   tables, so the source keeps applying/accepting writes while the dump runs.
# --triggers: triggers are part of a schema; a copy without them behaves differently.
SNAPSHOT_OPTIONS = ('--single-transaction', '--triggers')

BACKUP_OPTIONS = SNAPSHOT_OPTIONS + (
    '--quick',            # rows streamed, never buffered (large tables, bounded memory)
    '--routines',         # a restore brings back everything of the schema
    '--events',
    '--hex-blob',         # binary columns as hex: byte-exact text, stable digests
    '--skip-dump-date',   # the same data dumps to the same bytes (digests compare dumps)
    '--default-character-set=utf8mb4',  # pinned, not taken from the host's client config
    '--max-allowed-packet=1G',          # rows up to the server's largest packet
)

SEED_OPTIONS = SNAPSHOT_OPTIONS + (
    # The snapshot's GTID position as a comment near the end (-- SET GLOBAL gtid_slave_pos='...'),
    # read by dump_gtid_pos(): the channel starts there. A comment (=2): loading does not run it.
    '--gtid',
    '--master-data=2',
    # No LOCK TABLES around each table's inserts: the load writes schemas only it writes to.
    '--skip-add-locks',
    # CREATE DATABASE/USE lines, so the load recreates the schemas by name (renamed to the
    # device's prefix in channel mode by rename_schemas()). No --routines/--events: the check
    # account (SELECT, SHOW VIEW, TRIGGER) may not read them, and devices keep their logic in
    # the application.
    '--databases',
)

MOVE_OPTIONS = SNAPSHOT_OPTIONS + (
    # Everything the old replica holds for the device moves with it.
    '--routines',
    '--events',
    # A new replica that holds a partial earlier load of the same device is replaced, not merged.
    '--add-drop-database',
    # No --gtid/--master-data: on a replica they give the replica's own binlog position, not the
    # device's; the move reads the stopped channel's position instead (replication_info).
    '--databases',
)

PURPOSES = {'backup': BACKUP_OPTIONS, 'seed': SEED_OPTIONS, 'move': MOVE_OPTIONS}

# The backup pins its whole command line (no option file can change what it dumps or how the
# digests come out); seed and move keep the host's client configuration, as they always did.
NO_DEFAULTS = frozenset(['backup'])

# What a load must never do: write the copied rows into the replica's own binlog. The replica
# instance's binlog (when on) would give them a GTID of the replica's server, and a replica of
# this replica (or a later physical backup's position) would see transactions the device never
# made.
LOAD_INIT_COMMAND = 'SET SESSION sql_log_bin=0'

# Written instead of a dump when a device has no schema to copy yet (the load is then a no-op).
EMPTY_DUMP = b'-- nothing replicated yet\n'

_GTID_LINE = re.compile(br"^-- SET GLOBAL gtid_slave_pos='([^']*)';\s*$")
_COMPLETED = b'-- Dump completed'
_IDENT = re.compile(r'^[^`/\\.\x00]{1,64}$')


class DumpLoadError(Exception):
    """A dump or load failed; the message says which step and why."""


def dump_options(purpose, extra=()):
    """The mariadb-dump options of ``purpose`` (plus ``extra``, e.g. backup_dump_extra_options)."""
    if purpose not in PURPOSES:
        raise DumpLoadError('unknown dump purpose %r (one of %s)' % (purpose, ', '.join(sorted(PURPOSES))))
    return list(PURPOSES[purpose]) + list(extra)


def login_args(socket=None, host=None, port=None, user=None):
    """Connection options of the mariadb clients: a socket, or host and port; the password goes
    through the MYSQL_PWD environment variable, never the command line."""
    args = []
    if socket:
        args.append('--socket=%s' % socket)
    if host:
        args.append('--host=%s' % host)
    if port:
        args.append('--port=%d' % int(port))
    if user:
        args.append('--user=%s' % user)
    return args


def dump_argv(purpose, databases, socket=None, host=None, port=None, user=None, binary='mariadb-dump',
              extra=(), options=None):
    """argv of one dump. ``options`` replaces the purpose's options (a verify re-dumps with the
    options recorded by the backup it checks). The backup dumps one schema per call (no
    --databases: the restore chooses the schema's name), so it passes one name."""
    opts = dump_options(purpose, extra) if options is None else list(options)
    databases = list(databases)
    if purpose == 'backup' and len(databases) != 1:
        raise DumpLoadError('a backup dump takes exactly one schema, got %d' % len(databases))
    for name in databases:
        check_schema_name(name)
    head = [binary] + (['--no-defaults'] if purpose in NO_DEFAULTS else [])
    return head + login_args(socket, host, port, user) + opts + databases


def load_argv(socket=None, host=None, port=None, user=None, binary='mariadb'):
    """argv of a load into a replica: statements from stdin, not binlogged (LOAD_INIT_COMMAND)."""
    return [binary] + login_args(socket, host, port, user) + ['--init-command=%s' % LOAD_INIT_COMMAND]


def check_schema_name(name):
    """Schema names go into SQL and dump rewriting: refuse backticks, dots, slashes."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise DumpLoadError('not a plain schema name: %r' % (name,))
    return name


def dump_gtid_pos(lines):
    """The GTID position written by ``--gtid --master-data=2``: MariaDB prints it near the end of
    the dump, after the data, as ``-- SET GLOBAL gtid_slave_pos='...';`` (a comment, so loading
    does not run it; data never starts a line with ``--``: mariadb-dump escapes newlines in
    values). '' when the source has not logged a transaction yet (its binlog then holds
    everything after the snapshot). Raises DumpLoadError when there is no such line."""
    for line in lines:
        match = _GTID_LINE.match(line)
        if match:
            return match.group(1).decode('ascii')
    raise DumpLoadError('no GTID line in the dump (was it taken with --gtid --master-data=2?)')


def dump_completed(last_line):
    """mariadb-dump ends a complete dump with '-- Dump completed [on <date>]'."""
    return last_line.rstrip(b'\r\n').startswith(_COMPLETED)


def schema_renamer(renames):
    """A function rewriting the CREATE DATABASE and USE lines of a --databases dump so that
    schema ``old`` is loaded as ``renames[old]`` (channel mode: <prefix><schema>). Data lines
    are returned unchanged (they name no schema)."""
    if not renames:
        return lambda line: line
    pairs = {}
    for old, new in renames.items():
        pairs[check_schema_name(old).encode('utf-8')] = check_schema_name(new).encode('utf-8')
    create = re.compile(br'^(CREATE DATABASE /\*!32312 IF NOT EXISTS\*/ )`([^`]+)`')
    use = re.compile(br'^USE `([^`]+)`;(\r?\n)?$')

    def rename(line):
        if line.startswith(b'CREATE DATABASE'):
            return create.sub(lambda m: m.group(1) + b'`' + pairs.get(m.group(2), m.group(2)) + b'`', line)
        if line.startswith(b'USE `'):
            return use.sub(lambda m: b'USE `' + pairs.get(m.group(1), m.group(1)) + b'`;' + (m.group(2) or b''),
                           line)
        return line
    return rename


def drop_statements(databases):
    """DROP DATABASE IF EXISTS for each schema (a seed replaces the schemas it loads)."""
    return ['DROP DATABASE IF EXISTS `%s`' % check_schema_name(name) for name in databases]


def _open(path, mode, name=None):
    """The file ``path``, gzip-compressed when ``name`` (default ``path``) ends in .gz."""
    return gzip.open(path, mode) if (name or path).endswith('.gz') else open(path, mode)


def _password_env(password):
    env = dict(os.environ)
    if password is not None:
        env['MYSQL_PWD'] = password
    return env


def dump_to_file(argv, path, password=None, gtid=False):
    """Run the dump ``argv`` into ``path`` (gzip when it ends in .gz), written to a private
    temporary file and renamed only when the dump is complete: an existing file is always a
    whole dump. Returns {'bytes', 'gtid_pos'} (gtid_pos only with ``gtid``)."""
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    partial = path + '.tmp'
    old_umask = os.umask(0o077)
    try:
        with _open(partial, 'wb', path) as out:
            if argv is None:
                out.write(EMPTY_DUMP)
            else:
                # stderr into a file: a pipe nobody reads during the dump could fill and stall it
                with tempfile.TemporaryFile() as errors:
                    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, env=_password_env(password))
                    tail = _copy_keeping_tail(proc.stdout, out)
                    proc.stdout.close()
                    proc.wait()
                    errors.seek(0)
                    err = errors.read()
                if proc.returncode != 0:
                    raise DumpLoadError('%s failed (exit %d): %s' % (
                        os.path.basename(argv[0]), proc.returncode, err.decode('utf-8', 'replace').strip()[-1500:]))
        result = {'bytes': os.path.getsize(partial)}
        if argv is not None:
            if not dump_completed(tail.rstrip().rpartition(b'\n')[2]):
                raise DumpLoadError('dump incomplete (no "-- Dump completed" line at its end)')
            if gtid:
                result['gtid_pos'] = dump_gtid_pos(tail.splitlines(True))
        os.rename(partial, path)
        return result
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    finally:
        os.umask(old_umask)


def _copy_keeping_tail(source, out, keep=16384):
    """Copy ``source`` to ``out`` in blocks; return its last ``keep`` bytes (where mariadb-dump
    writes the GTID position and the completion line: ~1 KB)."""
    tail = b''
    while True:
        block = source.read(1 << 20)
        if not block:
            return tail
        out.write(block)
        tail = (tail + block)[-keep:]


def run_statements(argv, statements):
    """Run SQL statements through the load client (e.g. drop_statements())."""
    if not statements:
        return
    proc = subprocess.run(argv, input=(';\n'.join(statements) + ';\n').encode('utf-8'),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise DumpLoadError('%s failed (exit %d): %s' % (
            os.path.basename(argv[0]), proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()[-1500:]))


def load_file(argv, path, renames=None):
    """Stream the dump ``path`` (gzip when .gz) into the load client ``argv``, renaming schemas
    on the way (schema_renamer). Returns the bytes read."""
    rename = schema_renamer(renames)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    size = 0
    try:
        with _open(path, 'rb') as dump:
            if renames:
                for line in dump:
                    size += len(line)
                    proc.stdin.write(rename(line))
            else:
                while True:
                    block = dump.read(1 << 20)
                    if not block:
                        break
                    size += len(block)
                    proc.stdin.write(block)
    except BrokenPipeError:
        pass  # the client stopped reading: its exit code and output say why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    output = proc.stdout.read()
    if proc.wait() != 0:
        raise DumpLoadError('%s failed (exit %d) loading %s: %s' % (
            os.path.basename(argv[0]), proc.returncode, path, output.decode('utf-8', 'replace').strip()[-1500:]))
    return size


def copy_schemas(purpose, databases, path, dump=None, load=None, rename_prefix='', replace=False,
                 keep=True, loaded_marker=None):
    """Dump ``databases`` into ``path`` (``dump``: login_* options of the source), load ``path``
    into a replica (``load``: login_unix_socket, login_user), or both: the schema_copy module and
    the cloud hosts' automatic repair (module_utils/auto_repair.py) share this sequence.

    With ``replace`` the target schemas (renamed to ``rename_prefix`` + name) are dropped first;
    the file is removed after a load unless ``keep``. Returns the result (changed, gtid_pos for a
    seed, loaded_bytes); raises DumpLoadError."""
    result = {'changed': True}
    try:
        if dump:
            argv = dump_argv(purpose, databases, socket=dump.get('login_unix_socket'),
                             host=dump.get('login_host'), port=dump.get('login_port'),
                             user=dump.get('login_user')) if databases else None
            result.update(dump_to_file(argv, path, password=dump.get('login_password'),
                                       gtid=purpose == 'seed' and argv is not None))
            if purpose == 'seed':
                result.setdefault('gtid_pos', '')
        if load:
            client = load_argv(socket=load['login_unix_socket'], user=load.get('login_user') or 'root')
            prefix = rename_prefix or ''
            renames = dict((db, prefix + db) for db in databases) if prefix else {}
            if replace:
                run_statements(client, drop_statements([renames.get(db, db) for db in databases]))
            result['loaded_bytes'] = load_file(client, path, renames)
            if loaded_marker:
                with open(loaded_marker, 'a'):
                    pass
    finally:
        if load and not keep and os.path.exists(path):
            os.unlink(path)
    return result
