# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-backup: backups of the replica instances of an edgefleet cloud host.

Installed by the backup role as /usr/local/lib/edgefleet-backup/edgefleet_backup.py and run
through the wrapper /usr/local/sbin/edgefleet-backup (/usr/bin/python3 -I, the system Python).

Backups are taken from the replicas, never from the devices. Python 3 standard library only;
the pure logic (names, retention, schedules, GTID positions, status record) lives in
backup_policy.py next to this file (the collection's plugins/module_utils/backup_policy.py).

Commands (all read /etc/edgefleet/backup.json unless --config says otherwise):

  run      back up every due device (logical, zstd) and, if enabled, every due instance
           (mariabackup); apply retention after each successful backup; push offsite
  verify   restore each device's newest backup into scratch schemas and compare per-table
           checksums with the replica's at the recorded position
  prune    apply the retention policy now (never to a device whose newest attempt failed)
  list     backups on this host
  show     metadata of one backup (newest, as of a date, or by file name)
  restore  load a backup into a MariaDB server (scratch schemas or a replacement device);
           needs no config file, so it also runs on a device
  status   per-device status (the monitoring contract files)

Exit code: 0 when everything asked for succeeded, 1 when something failed, 2 on bad usage.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.realpath(__file__))
for _candidate in (HERE, os.path.join(HERE, '..', '..', '..', 'plugins', 'module_utils')):
    if os.path.isfile(os.path.join(_candidate, 'backup_policy.py')):
        sys.path.insert(0, os.path.abspath(_candidate))
        break
import backup_policy as P  # noqa: E402  pylint: disable=wrong-import-position

VERSION = '1.0.0'
DEFAULT_CONFIG = '/etc/edgefleet/backup.json'
SYSTEM_SCHEMAS = frozenset(('mysql', 'information_schema', 'performance_schema', 'sys'))
RESERVED_SCHEMA_PREFIXES = ('edgefleet_verify_', 'edgefleet_restore_')
CHUNK = 1 << 20
CLIENT_READ = 1 << 16
SINGLE_THREAD_MAX_LEVEL = 6

DEFAULTS = {
    'backup_dir': '/var/lib/edgefleet/backup',
    'status_dir': None,                     # <backup_dir>/status
    'log_file': '/var/log/edgefleet-backup.log',
    'lock_file': '/run/lock/edgefleet-backup.lock',
    'lock_wait': 7200,
    'concurrency': 2,
    'min_age': '20h',
    'keep_last': 7,
    'keep_days': 14,
    'databases': ['app'],
    'zstd_level': 6,
    'zstd_threads': 1,
    'checksums': 'dump',                   # dump | server | none (backup_policy.CHECKSUM_METHODS)
    'dump_options': [],
    'login_user': 'root',
    'verify_prefix': 'edgefleet_verify_',
    'verify_socket': None,                  # default: the device's replica instance
    'verify_after_backup': False,
    'file_mode': '0640',
    'dir_mode': '0750',
    'group': None,
    'devices': [],
    'physical': {'enabled': False, 'min_age': '7d', 'keep_last': 2, 'keep_days': 14, 'instances': []},
    'offsite': {'enabled': False},
    'tools': {'mariadb': 'mariadb', 'mariadb-dump': 'mariadb-dump', 'mariabackup': 'mariabackup',
              'mbstream': 'mbstream', 'zstd': 'zstd', 'restic': 'restic'},
}

DUMP_OPTIONS = ['--single-transaction', '--quick', '--routines', '--triggers', '--events', '--hex-blob',
                '--skip-dump-date', '--default-character-set=utf8mb4', '--max-allowed-packet=1G']


class BackupError(Exception):
    """A failure with a message meant for the log and the status file."""


class Worker:
    """One call on its own thread; result() waits for it and returns or raises what it did.
    (concurrent.futures would do, but its import costs ~6 ms of every run.)"""

    def __init__(self, function, *args):
        self._outcome = {}
        self._thread = threading.Thread(target=self._call, args=(function, args), daemon=True)
        self._thread.start()

    def _call(self, function, args):
        try:
            self._outcome['value'] = function(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            self._outcome['error'] = exc

    def wait(self):
        self._thread.join()

    def result(self):
        self.wait()
        if 'error' in self._outcome:
            raise self._outcome['error']
        return self._outcome['value']


# ---------------------------------------------------------------------------------------
# Process registry: a SIGTERM (systemctl stop, timeout) kills our children, so every
# worker unwinds through its finally blocks (partial files removed, SQL threads resumed).
# ---------------------------------------------------------------------------------------

_PROCS = set()
_PROCS_LOCK = threading.Lock()
STOPPING = threading.Event()


def _register(proc):
    with _PROCS_LOCK:
        _PROCS.add(proc)
    return proc


def _unregister(proc):
    with _PROCS_LOCK:
        _PROCS.discard(proc)


def _reap(*procs):
    """Kill whichever of ``procs`` still runs (an error or a stop unwinds) and forget them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _unregister(proc)


def _read_errors(errors):
    """The text a subprocess wrote into the temporary file ``errors``."""
    errors.seek(0)
    return errors.read().decode('utf-8', 'replace').strip()


def _on_signal(signum, _frame):
    STOPPING.set()
    with _PROCS_LOCK:
        for proc in list(_PROCS):
            with contextlib.suppress(OSError):
                proc.terminate()
    log('received signal %d: stopping (running work is unwound, partial files removed)' % signum)


def run_cmd(args, input_bytes=None, env=None, check=True, timeout=None, cleanup=False):
    """Run a command; return CompletedProcess with text stdout/stderr. Once a stop signal
    arrived only ``cleanup`` commands (resuming SQL threads, dropping scratch schemas) run."""
    if STOPPING.is_set() and not cleanup:
        raise BackupError('stopping')
    proc = _register(subprocess.Popen(args, stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    try:
        out, err = proc.communicate(input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise BackupError('%s timed out after %ss' % (args[0], timeout))
    finally:
        _unregister(proc)
    result = subprocess.CompletedProcess(args, proc.returncode, out.decode('utf-8', 'replace'),
                                         err.decode('utf-8', 'replace'))
    if check and proc.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-1500:]
        raise BackupError('%s failed (exit %d): %s' % (os.path.basename(args[0]), proc.returncode, detail))
    return result


# ---------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------

_LOG_LOCK = threading.Lock()
_LOG_FILE = None
_QUIET = False


def log(message):
    line = '%s %s' % (time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), message)
    with _LOG_LOCK:
        if not _QUIET:
            print(message, file=sys.stderr, flush=True)
        if _LOG_FILE:
            try:
                fd = os.open(_LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                with os.fdopen(fd, 'a', encoding='utf-8') as handle:
                    handle.write(line + '\n')
            except OSError:
                pass


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------

def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, data, mode=0o640, group=None):
    """Write JSON to path atomically: temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write('\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if group is not None:
            os.chown(tmp, -1, group)
        os.rename(tmp, path)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def ensure_dir(path, mode, group=None):
    os.makedirs(path, mode=mode, exist_ok=True)
    if (os.stat(path).st_mode & 0o7777) != mode:
        os.chmod(path, mode)
    if group is not None and os.stat(path).st_gid != group:
        os.chown(path, -1, group)


# ---------------------------------------------------------------------------------------
# SQL through the mariadb command-line client over the instance's unix socket
# ---------------------------------------------------------------------------------------

_UNESCAPE = {'\\t': '\t', '\\n': '\n', '\\\\': '\\', '\\0': '\0'}


def _unescape(value):
    if value == 'NULL':
        return None
    return re.sub(r'\\[tn\\0]', lambda m: _UNESCAPE[m.group(0)], value)


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
        self.tools = tools or DEFAULTS['tools']
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
        _reap(proc)
        proc.stdout.close()
        self._errors.close()

    def _client(self):
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._end_client()
        self._errors = tempfile.TemporaryFile()
        self._proc = _register(subprocess.Popen(self.client_args('--batch', '--unbuffered'), stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=self._errors))
        return self._proc

    def _failed(self, proc, timeout=None):
        """The client ended (or hung past ``timeout``): a BackupError with its error text; the
        client is gone."""
        if timeout is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # its output ended: it is exiting, let it finish its message
        _reap(proc)
        # The client echoes the failed statement between dashed lines before the error: one line.
        text = ' '.join(line for line in _read_errors(self._errors).splitlines() if line.strip('- '))
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
        header = [_unescape(f) for f in lines[0].split('\t')]
        return [dict(zip(header, (_unescape(f) for f in line.split('\t')))) for line in lines[1:]]

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


def sql_string(value):
    return "'%s'" % str(value).replace('\\', '\\\\').replace("'", "''")


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


def binary_identity(command):
    """[path, inode, size, mtime] of the executable ``command`` names (None if not found)."""
    path = shutil.which(command)
    if path is None:
        return None
    info = os.stat(path)
    return [os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns]


def tool_version(args):
    try:
        out = run_cmd(args, check=False, timeout=30)
    except (OSError, BackupError):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------

def load_config(path):
    loaded = read_json(path)
    if loaded is None:
        raise BackupError('configuration %s not found (written by the edgefleet backup role)' % path)
    config = dict(DEFAULTS)
    config.update(loaded)
    for key in ('physical', 'offsite', 'tools'):
        merged = dict(DEFAULTS[key])
        merged.update(loaded.get(key) or {})
        config[key] = merged
    config['status_dir'] = config.get('status_dir') or os.path.join(config['backup_dir'], 'status')
    config['min_age_s'] = P.parse_duration(config['min_age'])
    try:
        config['checksum_method'] = P.checksum_method(config['checksums'])
    except ValueError as exc:
        raise BackupError('configuration %s: %s' % (path, exc))
    P.check_retention_policy(config['keep_last'], config['keep_days'])
    physical = config['physical']
    physical['min_age_s'] = P.parse_duration(physical.get('min_age', '7d'))
    P.check_retention_policy(physical.get('keep_last', 2), physical.get('keep_days', 14))
    config['file_mode_i'] = int(str(config['file_mode']), 8)
    config['dir_mode_i'] = int(str(config['dir_mode']), 8)
    group = config.get('group')
    if group in (None, ''):
        config['gid'] = None
    else:
        import grp  # pylint: disable=import-outside-toplevel
        config['gid'] = grp.getgrnam(group).gr_gid if not str(group).isdigit() else int(group)
    ids = [d['id'] for d in config['devices']]
    if len(set(ids)) != len(ids):
        raise BackupError('configuration %s lists a device twice' % path)
    for device in config['devices']:
        for key in ('id', 'socket'):
            if not device.get(key):
                raise BackupError('configuration %s: device %r has no %s' % (path, device, key))
        device.setdefault('mode', 'instance')
        device.setdefault('channel', device['id'])
        device.setdefault('instance', device['id'])
        device.setdefault('schema_prefix', device['id'] + '_' if device['mode'] == 'channel' else '')
    return config


class Context:
    def __init__(self, config, now=None):
        self.config = config
        self.fixed_now = now
        self.status_lock = threading.Lock()
        self.hostname = os.uname().nodename
        self.tools = config['tools']
        self._versions = None
        self._versions_lock = threading.Lock()

    def now(self):
        return int(self.fixed_now) if self.fixed_now is not None else int(time.time())

    def logical_dir(self, device_id):
        return os.path.join(self.config['backup_dir'], 'logical', device_id)

    def physical_dir(self, instance):
        return os.path.join(self.config['backup_dir'], 'physical', instance)

    def held_dir(self):
        return os.path.join(self.config['backup_dir'], '.held')

    def mkdir(self, path):
        ensure_dir(path, self.config['dir_mode_i'], self.config['gid'])
        return path

    def versions(self):
        """The tools' versions for the metadata. Asking a tool costs a process start per tool
        and run, so the answers are kept in <backup_dir>/tool-versions.json, each with the
        identity of the binary that gave it (an upgrade changes it)."""
        with self._versions_lock:
            if self._versions is None:
                path = os.path.join(self.config['backup_dir'], 'tool-versions.json')
                known = read_json(path) or {}
                versions = {'edgefleet-backup': VERSION, 'python': sys.version.split()[0]}
                for name in ('mariadb-dump', 'mariadb', 'zstd'):
                    identity = binary_identity(self.tools[name])
                    entry = known.get(name) or {}
                    if identity is None or entry.get('identity') != identity or entry.get('version') is None:
                        entry = {'identity': identity, 'version': tool_version([self.tools[name], '--version'])}
                        if identity is not None and entry['version'] is not None and known.get(name) != entry:
                            known[name] = entry
                            with contextlib.suppress(OSError):
                                write_json_atomic(path, known, self.config['file_mode_i'], self.config['gid'])
                    versions[name] = entry['version']
                self._versions = versions
        return dict(self._versions)

    # status ---------------------------------------------------------------------------

    def status_path(self, device_id):
        return os.path.join(self.config['status_dir'], '%s.json' % device_id)

    def update_status(self, device_id, change):
        """Read-modify-write one device's status under the context's lock, atomically."""
        with self.status_lock:
            self.mkdir(self.config['status_dir'])
            path = self.status_path(device_id)
            status = P.normalize_status(device_id, read_json(path))
            status = change(status)
            write_json_atomic(path, status, self.config['file_mode_i'], self.config['gid'])
            return status

    def read_status(self, device_id):
        return P.normalize_status(device_id, read_json(self.status_path(device_id)))


@contextlib.contextmanager
def host_lock(path, wait):
    """The whole host runs one backup/verify/prune command at a time (concurrency inside)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline or STOPPING.is_set():
                    raise BackupError('another edgefleet-backup run holds %s (waited %ds)' % (path, wait))
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode())
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Backup listing
# ---------------------------------------------------------------------------------------

def list_backups(directory, subject=None, kind='logical'):
    """Good backups in ``directory``: [(name, epoch, meta)], oldest first. A backup is good
    when its data file and its metadata (written last, ok=true) both exist."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        parsed = P.parse_backup_file_name(name)
        if not parsed or parsed[2] != kind or (subject and parsed[0] != subject):
            continue
        meta = read_json(os.path.join(directory, name + P.META_SUFFIX))
        if not meta or not meta.get('ok'):
            continue
        out.append((name, parsed[1], meta))
    out.sort(key=P.sort_key)
    return out


def orphans(directory, kind='logical'):
    """Data files without metadata and metadata without data (left by a crash)."""
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        if name.endswith(P.PARTIAL_SUFFIX) or '.partial.' in name:
            out.append(name)
            continue
        parsed = P.parse_backup_file_name(name)
        if parsed and parsed[2] == kind and name + P.META_SUFFIX not in names:
            out.append(name)
        elif name.endswith(P.META_SUFFIX) and P.parse_backup_file_name(name[:-len(P.META_SUFFIX)]) \
                and name[:-len(P.META_SUFFIX)] not in names:
            out.append(name)
    return out


def unique_name(directory, subject, epoch, kind):
    for seq in range(0, 1000):
        name = P.backup_file_name(subject, epoch, kind, seq)
        if not os.path.exists(os.path.join(directory, name)) and \
                not os.path.exists(os.path.join(directory, name + P.PARTIAL_SUFFIX)):
            return name
    raise BackupError('cannot find a free file name for %s at %s' % (subject, epoch))


# ---------------------------------------------------------------------------------------
# Pausing a channel's SQL thread (crash-safe: a marker file records what we stopped)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Logical backup of one device
# ---------------------------------------------------------------------------------------

def device_schemas(server, device, databases):
    """[(source schema, replica schema)] of a device on its replica instance."""
    present = set(server.schemas())
    if device['mode'] == 'channel':
        pairs = [(db, device['schema_prefix'] + db) for db in databases]
        return [(db, replica) for db, replica in pairs if replica in present]
    return [(name, name) for name in sorted(present)
            if name not in SYSTEM_SCHEMAS and not name.startswith(RESERVED_SCHEMA_PREFIXES)]


def _remove_unfinished(partial, path):
    """After a failed backup: its partial file, and its final file unless the meta file (written
    last) says the backup is complete."""
    for leftover in (partial, path):
        if os.path.exists(leftover) and not os.path.exists(path + P.META_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


class _Discard:
    """A writer that keeps nothing (re-dumps read only for their digests)."""

    def write(self, block):
        return len(block)


def _digest_worker(digest, blocks, failed):
    """Feed ``digest`` from a queue until None: SHA-256 releases the GIL, so the digest runs on
    another core while the main thread keeps zstd fed. Keeps draining after an error (recorded
    in ``failed``) so the producer never blocks."""
    while True:
        block = blocks.get()
        if block is None:
            return
        if not failed:
            try:
                digest.feed(block)
            except Exception as exc:  # pylint: disable=broad-except
                failed.append(exc)


def widen_pipe(pipe):
    """Let ``pipe`` hold CHUNK bytes instead of 64 KiB: the dump, this process and zstd then
    run side by side instead of in lock step (best effort: pipe-max-size may be lower)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


def stream_into(writer, args, counter, digest=None):
    """Copy the stdout of ``args`` into ``writer`` (and ``digest``); return the process' stderr text."""
    blocks, worker = None, None
    if digest is not None:
        blocks, failed = queue.Queue(maxsize=16), []
        worker = threading.Thread(target=_digest_worker, args=(digest, blocks, failed), daemon=True)
        worker.start()
    with tempfile.TemporaryFile() as errors:
        proc = _register(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL))
        try:
            widen_pipe(proc.stdout)
            # read1: whatever the pipe holds now (not a full CHUNK), so zstd never waits for
            # a block to fill while the dump waits for room in its pipe.
            # The digest thread gets CHUNK-sized pieces: its cost is per piece, and a pipe read
            # may return a few KiB.
            pending, pending_size = [], 0
            for block in iter(lambda: proc.stdout.read1(CHUNK), b''):
                writer.write(block)
                counter[0] += len(block)
                if blocks is not None:
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size >= CHUNK:
                        blocks.put(b''.join(pending))
                        pending, pending_size = [], 0
            if pending:
                blocks.put(b''.join(pending))
            proc.stdout.close()
            rc = proc.wait()
        finally:
            _reap(proc)
            if worker is not None:
                blocks.put(None)
                worker.join()
        text = _read_errors(errors)
    if worker is not None and failed:
        raise BackupError('computing the table digests failed: %s' % failed[0])
    if rc != 0:
        raise BackupError('%s failed (exit %d): %s' % (os.path.basename(args[0]), rc, text[-1500:]))
    return text


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


def dump_args(server, tools, options, schema):
    return [tools['mariadb-dump'], '--no-defaults', '--socket=%s' % server.socket, '--user=%s' % server.user] + \
        list(options) + [schema]


def dump_digests(server, tools, options, schema, tables):
    """{table: {"digest"}} of a schema as it is now, dumped with ``options`` (verify, restore)."""
    digest = P.DumpDigest()
    stream_into(_Discard(), dump_args(server, tools, options, schema), [0], digest)
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
            zstd = _register(subprocess.Popen(zstd_args, stdin=subprocess.PIPE, stdout=out_file,
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
                            options = P.database_options(
                                server.query('SHOW CREATE DATABASE %s' % P.quote_ident(replica))[0]['Create Database'])
                            tables = server.base_tables(replica)
                            recorded.append((source, Worker(
                                record_schema, recorder_server, replica, tables, config['checksum_method'])))
                            schemas_meta.append({'name': source, 'replica_schema': replica, 'options': options})
                            header = ''.join(P.section_header(nonce, source, options)).encode('utf-8')
                            zstd.stdin.write(header)
                            raw[0] += len(header)
                            digest = P.DumpDigest() if config['checksum_method'] == 'dump' else None
                            stream_into(zstd.stdin, dump_args(server, ctx.tools, DUMP_OPTIONS + list(config['dump_options']),
                                                              replica), raw, digest)
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
                _reap(zstd)
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
            'marker_nonce': nonce, 'dump_options': DUMP_OPTIONS + list(config['dump_options']),
            'invoked_by': invoked_by(),
            'tools': dict(ctx.versions(), server=server_version),
        }
        write_json_atomic(path + P.META_SUFFIX, meta, ctx.config['file_mode_i'], ctx.config['gid'])
        return meta
    except BaseException:
        _remove_unfinished(partial, path)
        raise
    finally:
        server.close()
        recorder_server.close()


def apply_retention(ctx, directory, subject, kind, keep_last, keep_days):
    """Delete what the policy does not keep; log every removal. Returns (kept, removed)."""
    backups = list_backups(directory, subject, kind)
    keep, remove = P.retention([(n, ts) for n, ts, _m in backups], keep_last, keep_days, ctx.now())
    sizes = dict((n, m.get('size_bytes')) for n, _ts, m in backups)
    for name in remove:
        for victim in (os.path.join(directory, name + P.META_SUFFIX), os.path.join(directory, name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(victim)
        log('retention: removed %s/%s (%s bytes; policy keep_last=%s keep_days=%s)'
            % (subject, name, sizes.get(name), keep_last, keep_days))
    for name in orphans(directory, kind):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
        log('retention: removed leftover %s/%s of an interrupted run' % (subject, name))
    if remove:
        fsync_dir(directory)
    return keep, remove


def run_device(ctx, device):
    """Backup + retention + status for one device; never raises. Returns a summary dict."""
    device_id = device['id']
    started = time.monotonic()
    try:
        log('%s: backup started (instance %s, %s mode)' % (device_id, device['instance'], device['mode']))
        meta = backup_device(ctx, device)
        keep, removed = apply_retention(ctx, ctx.logical_dir(device_id), device_id, 'logical',
                                        ctx.config['keep_last'], ctx.config['keep_days'])
        ctx.update_status(device_id, lambda s: P.record_attempt(
            s, True, meta['started_ts'], file_name=meta['file'], size=meta['size_bytes'],
            duration=meta['duration_s'], kept=len(keep), position=meta['position']['device_gtid_pos']))
        log('%s: backup ok %s: %d bytes (%d raw), %.1fs, SQL thread paused %.1fs, at %s; kept %d, removed %d'
            % (device_id, meta['file'], meta['size_bytes'], meta['raw_bytes'], meta['duration_s'],
               meta['sql_thread_paused_s'], meta['position']['device_gtid_pos'] or '(empty position)',
               len(keep), len(removed)))
        result = {'device': device_id, 'ok': True, 'file': meta['file'], 'size_bytes': meta['size_bytes'],
                  'duration_s': meta['duration_s'], 'position': meta['position']['device_gtid_pos'],
                  'kept': len(keep), 'removed': removed}
        if ctx.config.get('verify_after_backup'):
            result['verify'] = verify_device(ctx, device)
        return result
    except Exception as exc:  # pylint: disable=broad-except
        message = str(exc) or exc.__class__.__name__
        if STOPPING.is_set():
            message = 'interrupted by a stop signal (%s)' % message
        kept = len(list_backups(ctx.logical_dir(device_id), device_id))
        try:
            ctx.update_status(device_id, lambda s: P.record_attempt(s, False, ctx.now(), error=message, kept=kept))
        except OSError as status_exc:
            log('%s: could not write the status file: %s' % (device_id, status_exc))
        log('%s: backup FAILED after %.1fs (nothing deleted, %d good backups kept): %s'
            % (device_id, time.monotonic() - started, kept, message))
        return {'device': device_id, 'ok': False, 'error': message, 'kept': kept}


# ---------------------------------------------------------------------------------------
# Physical backup (mariabackup) of one replica instance
# ---------------------------------------------------------------------------------------

def backup_instance(ctx, instance):
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
            args = [ctx.tools['mariabackup']]
            if instance.get('defaults_group_suffix'):
                args.append('--defaults-group-suffix=%s' % instance['defaults_group_suffix'])
            else:
                args.append('--no-defaults')
            args += ['--backup', '--stream=xbstream', '--target-dir=%s' % scratch, '--socket=%s' % server.socket,
                     '--user=%s' % server.user, '--slave-info', '--safe-slave-backup', '--parallel=1']
            if instance.get('datadir'):
                args.append('--datadir=%s' % instance['datadir'])
            with open(partial, 'wb') as out_file:
                os.chmod(partial, config['file_mode_i'])
                zstd = _register(subprocess.Popen(
                    compress_args(ctx.tools, config),
                    stdin=subprocess.PIPE, stdout=out_file, stderr=subprocess.PIPE))
                widen_pipe(zstd.stdin)
                try:
                    text = stream_into(zstd.stdin, args, raw)
                    zstd.stdin.close()
                    if zstd.wait() != 0:
                        raise BackupError('zstd failed: %s' % zstd.stderr.read().decode('utf-8', 'replace')[-500:])
                finally:
                    _reap(zstd)
                out_file.flush()
                os.fsync(out_file.fileno())
        slave_info = [line.split('] ', 1)[-1].strip() for line in text.splitlines()
                      if 'slave binlog position' in line.lower() or 'gtid_slave_pos' in line.lower()]
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
                         'mariabackup_slave_info': slave_info},
            'tools': dict(ctx.versions(), server=server.version(),
                          mariabackup=tool_version([ctx.tools['mariabackup'], '--version'])),
        }
        write_json_atomic(path + P.META_SUFFIX, meta, config['file_mode_i'], config['gid'])
        return meta
    except BaseException:
        _remove_unfinished(partial, path)
        raise
    finally:
        server.close()


def run_instance(ctx, instance):
    name = instance['name']
    physical = ctx.config['physical']
    status_path = os.path.join(ctx.config['backup_dir'], 'physical', '%s.status.json' % name)
    status = read_json(status_path) or {'instance': name}
    try:
        log('%s: physical backup started (mariabackup)' % name)
        meta = backup_instance(ctx, instance)
        keep, removed = apply_retention(ctx, ctx.physical_dir(name), name, 'physical',
                                        physical.get('keep_last', 2), physical.get('keep_days', 14))
        status.update(last_success_ts=meta['started_ts'], last_success_file=meta['file'],
                      last_size_bytes=meta['size_bytes'], last_duration_s=meta['duration_s'],
                      last_attempt_ts=meta['started_ts'], last_attempt_ok=True, last_error=None,
                      backups_kept=len(keep))
        log('%s: physical backup ok %s: %d bytes, %.1fs; kept %d, removed %d'
            % (name, meta['file'], meta['size_bytes'], meta['duration_s'], len(keep), len(removed)))
        result = {'instance': name, 'ok': True, 'file': meta['file'], 'size_bytes': meta['size_bytes'],
                  'duration_s': meta['duration_s'], 'removed': removed}
    except Exception as exc:  # pylint: disable=broad-except
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=False, last_error=str(exc)[:2000])
        log('%s: physical backup FAILED (nothing deleted): %s' % (name, exc))
        result = {'instance': name, 'ok': False, 'error': str(exc)}
    ctx.mkdir(os.path.join(ctx.config['backup_dir'], 'physical'))
    write_json_atomic(status_path, status, ctx.config['file_mode_i'], ctx.config['gid'])
    return result


# ---------------------------------------------------------------------------------------
# Restore (also used by verify) -- works without a config file
# ---------------------------------------------------------------------------------------

def load_backup(path, check_sha=True):
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


def restore_file(path, server, mapping, overwrite=False, no_binlog=True, tools=None, meta=None,
                 compare=True, device_target=False, gtid_state='skip'):
    """Load a logical backup into ``server`` with schemas renamed by ``mapping`` (source ->
    target, None = skip). Refuses non-empty targets unless ``overwrite``. Returns a result
    dict with the per-table comparison against the checksums recorded at backup time."""
    tools = tools or DEFAULTS['tools']
    meta = meta or load_backup(path)
    started = time.monotonic()
    sources = [s['name'] for s in meta['schemas']]
    targets = dict((db, mapping.get(db, db) if mapping is not None else db) for db in sources)
    targets = P.target_schemas(sources, mapping=targets)
    present = set(server.schemas())
    busy = [t for t in targets.values() if t is not None and t in present and not schema_is_empty(server, t)]
    if busy and not overwrite:
        raise BackupError('target schema(s) %s already exist and are not empty on %s; nothing was changed. '
                          'Choose other names or overwrite explicitly' % (', '.join(busy), server.socket))
    for target in targets.values():
        if target is not None and target in present and (overwrite or target not in busy):
            server.execute('DROP DATABASE %s' % P.quote_ident(target), no_binlog=no_binlog)
    args = server.client_args('--max-allowed-packet=1G', '--batch')
    if no_binlog:
        args.append('--init-command=SET SESSION sql_log_bin=0')
    rewriter = P.SchemaRewriter(meta['marker_nonce'], dict((k, v) for k, v in targets.items() if v != k))
    with tempfile.TemporaryFile() as errors:
        unzip = _register(subprocess.Popen([tools['zstd'], '-q', '-dc', path], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
        client = _register(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=errors, stderr=errors))
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
            _reap(unzip, client)
        error_text = _read_errors(errors)
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
        result.update(ok=ok and objects_ok, detail=detail, tables=len(actual))
    else:
        result.update(ok=True, detail='loaded (not compared)')
    result['duration_s'] = round(time.monotonic() - started, 3)
    return result


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


def restore_gtid_state(server, meta, mode):
    """On a replacement device, continue the device's GTID sequence from the backup position,
    so its replica channel resumes with no gap. Only on a server that has no transaction of
    the device's domain in its binlog (a fresh device); otherwise leave it alone."""
    position = meta['position'].get('device_gtid_pos') or ''
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
    state = P.format_gtid_pos(merged)
    server.execute('RESET MASTER; SET GLOBAL gtid_binlog_state = %s' % sql_string(state))
    return {'action': 'set', 'gtid_binlog_state': state}


# ---------------------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Offsite copy (restic over SFTP)
# ---------------------------------------------------------------------------------------

def restic_env(offsite):
    env = dict(os.environ)
    env['RESTIC_REPOSITORY'] = offsite['repository']
    env['RESTIC_PASSWORD_FILE'] = offsite['password_file']
    env['RESTIC_CACHE_DIR'] = offsite.get('cache_dir', '/var/cache/edgefleet-backup/restic')
    return env


def restic_args(ctx, offsite, *args):
    base = [ctx.tools['restic']]
    if offsite.get('sftp_command'):
        base += ['-o', 'sftp.command=%s' % offsite['sftp_command']]
    return base + list(args)


def offsite_push(ctx):
    offsite = ctx.config['offsite']
    started = time.monotonic()
    wall_started = time.time()
    env = restic_env(offsite)
    status_path = os.path.join(ctx.config['backup_dir'], 'offsite.json')
    status = read_json(status_path) or {}
    try:
        probe = run_cmd(restic_args(ctx, offsite, 'cat', 'config'), env=env, check=False, timeout=600)
        if probe.returncode != 0:
            if 'does not exist' not in (probe.stderr + probe.stdout) and 'no such file' not in (probe.stderr + probe.stdout).lower():
                raise BackupError('restic cannot open %s: %s' % (offsite['repository'], probe.stderr.strip()[-800:]))
            run_cmd(restic_args(ctx, offsite, 'init'), env=env, timeout=600)
            log('offsite: initialised restic repository %s' % offsite['repository'])
        paths = [p for p in (os.path.join(ctx.config['backup_dir'], 'logical'),
                             os.path.join(ctx.config['backup_dir'], 'physical')) if os.path.isdir(p)]
        out = run_cmd(restic_args(ctx, offsite, 'backup', '--json', '--tag', 'edgefleet', '--host', ctx.hostname,
                                  '--exclude', '*.partial') + paths, env=env, timeout=int(offsite.get('timeout', 21600)))
        summary = {}
        for line in out.stdout.splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if item.get('message_type') == 'summary':
                    summary = item
        forget = ['forget', '--tag', 'edgefleet', '--host', ctx.hostname, '--prune',
                  '--keep-last', str(int(offsite.get('keep_last', 14)))]
        if int(offsite.get('keep_days', 0)):
            forget += ['--keep-within', '%dd' % int(offsite['keep_days'])]
        run_cmd(restic_args(ctx, offsite, *forget), env=env, timeout=int(offsite.get('timeout', 21600)))
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=True, last_success_ts=ctx.now(), last_error=None,
                      last_success_wall_ts=int(wall_started),
                      snapshot_id=summary.get('snapshot_id'), data_added=summary.get('data_added'),
                      files_new=summary.get('files_new'), duration_s=round(time.monotonic() - started, 3),
                      repository=offsite['repository'])
        log('offsite: restic snapshot %s (%s new files, %s bytes added) in %.1fs'
            % (summary.get('snapshot_id'), summary.get('files_new'), summary.get('data_added'),
               time.monotonic() - started))
        ok = True
    except Exception as exc:  # pylint: disable=broad-except
        status.update(last_attempt_ts=ctx.now(), last_attempt_ok=False, last_error=str(exc)[:2000],
                      repository=offsite['repository'])
        log('offsite: push FAILED: %s' % exc)
        ok = False
    write_json_atomic(status_path, status, ctx.config['file_mode_i'], ctx.config['gid'])
    return {'ok': ok, 'snapshot_id': status.get('snapshot_id'), 'error': None if ok else status.get('last_error')}


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------

def pick_devices(config, wanted, backups_only=False):
    """Configured devices (all, or the ``wanted`` ones). With ``backups_only``, a device that is
    no longer configured here (retired, moved) but still has backups is accepted too."""
    devices = config['devices']
    if not wanted:
        return list(devices)
    known = dict((d['id'], d) for d in devices)
    if backups_only:
        for name in wanted:
            if name not in known and os.path.isdir(os.path.join(config['backup_dir'], 'logical', name)):
                known[name] = {'id': name, 'socket': None, 'mode': None, 'channel': None, 'instance': None}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise BackupError('unknown device(s) on this host: %s' % ', '.join(unknown))
    return [known[w] for w in wanted]


def newest_good_ts(ctx, device_id):
    backups = list_backups(ctx.logical_dir(device_id), device_id)
    return backups[-1][1] if backups else None


def newest_local_mtime(backup_dir):
    """Wall-clock mtime of the newest backup metadata file (a backup made with --no-offsite, or
    while the target was down, makes the next run push even when nothing new is due)."""
    newest = 0
    for kind in ('logical', 'physical'):
        base = os.path.join(backup_dir, kind)
        for subject in (os.listdir(base) if os.path.isdir(base) else []):
            directory = os.path.join(base, subject)
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.endswith(P.META_SUFFIX):
                    with contextlib.suppress(OSError):
                        newest = max(newest, int(os.path.getmtime(os.path.join(directory, name))))
    return newest


def parallel(ctx, function, items):
    """[function(item) for item in items], at most `concurrency` at a time."""
    items = list(items)
    results = [None] * len(items)
    todo, todo_lock = iter(range(len(items))), threading.Lock()

    def work():
        while True:
            with todo_lock:
                index = next(todo, None)
            if index is None:
                return
            results[index] = function(items[index])

    count = min(max(1, int(ctx.config['concurrency'])), len(items))
    workers = [Worker(work) for _worker in range(count)]
    for worker in workers:
        worker.result()
    return results


def cmd_run(ctx, args):
    config = ctx.config
    now = ctx.now()
    resume_held(ctx)
    devices = pick_devices(config, args.device)
    for device in devices:
        if not os.path.exists(ctx.status_path(device['id'])):
            ctx.update_status(device['id'], lambda s: s)
    due = [d for d in devices if P.is_due(newest_good_ts(ctx, d['id']), config['min_age_s'], now, args.force)]
    log('run: %d device(s) configured, %d due (min age %s), concurrency %d'
        % (len(devices), len(due), config['min_age'], int(config['concurrency'])))
    results = {'devices': [], 'instances': [], 'offsite': None}
    if not args.physical_only:
        results['devices'] = parallel(ctx, lambda d: run_device(ctx, d), due)
    physical = config['physical']
    if physical.get('enabled') and not args.no_physical:
        instances = physical.get('instances', [])
        if args.device:
            instances = [i for i in instances if set(i.get('devices', [])) & set(args.device)]
        due_instances = [i for i in instances if P.is_due(
            (list_backups(ctx.physical_dir(i['name']), i['name'], 'physical') or [(None, None)])[-1][1],
            physical['min_age_s'], now, args.force)]
        results['instances'] = parallel(ctx, lambda i: run_instance(ctx, i), due_instances)
    new_files = any(r.get('ok') for r in results['devices'] + results['instances'])
    offsite_state = read_json(os.path.join(config['backup_dir'], 'offsite.json')) or {}
    behind = offsite_state.get('last_attempt_ok') is not True or \
        newest_local_mtime(config['backup_dir']) > (offsite_state.get('last_success_wall_ts') or 0)
    if config['offsite'].get('enabled') and not args.no_offsite and (new_files or behind or args.force):
        results['offsite'] = offsite_push(ctx)
    failed = [r for r in results['devices'] + results['instances'] if not r.get('ok')]
    if results['offsite'] and not results['offsite']['ok']:
        failed.append(results['offsite'])
    results['ok'] = not failed
    log('run: %d backed up, %d failed' % (len([r for r in results['devices'] + results['instances'] if r.get('ok')]),
                                          len(failed)))
    return results


def cmd_verify(ctx, args):
    resume_held(ctx)
    devices = pick_devices(ctx.config, args.device)
    if not args.all and not args.file:
        due = []
        for device in devices:
            backups = list_backups(ctx.logical_dir(device['id']), device['id'])
            status = ctx.read_status(device['id'])
            if backups and (status.get('last_verify_file') != backups[-1][0] or status.get('last_verify_ok') is not True):
                due.append(device)
        devices = due
    log('verify: %d device(s) to verify' % len(devices))
    results = parallel(ctx, lambda d: verify_device(ctx, d, args.file), devices)
    return {'devices': results, 'ok': all(r['ok'] for r in results)}


def cmd_prune(ctx, args):
    results = []
    for device in pick_devices(ctx.config, args.device):
        status = ctx.read_status(device['id'])
        if status.get('last_attempt_ok') is False:
            log('%s: prune skipped: the last backup attempt failed (retention runs only after a good one)' % device['id'])
            results.append({'device': device['id'], 'skipped': True})
            continue
        keep, removed = apply_retention(ctx, ctx.logical_dir(device['id']), device['id'], 'logical',
                                        ctx.config['keep_last'], ctx.config['keep_days'])
        ctx.update_status(device['id'], lambda s, n=len(keep): dict(s, backups_kept=n))
        results.append({'device': device['id'], 'kept': keep, 'removed': removed})
    return {'devices': results, 'ok': True}


def describe(directory, name, meta):
    return {'file': name, 'path': os.path.join(directory, name), 'ts': meta.get('started_ts'),
            'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(meta.get('started_ts') or 0)),
            'size_bytes': meta.get('size_bytes'), 'duration_s': meta.get('duration_s'),
            'position': (meta.get('position') or {}).get('device_gtid_pos'), 'kind': meta.get('kind'),
            'schemas': [s['name'] for s in meta.get('schemas', [])], 'tables': len(meta.get('tables', {})),
            'sha256': meta.get('sha256')}


def cmd_list(ctx, args):
    out = []
    for device in pick_devices(ctx.config, args.device, backups_only=True):
        directory = ctx.logical_dir(device['id'])
        out.append({'device': device['id'],
                    'backups': [describe(directory, n, m) for n, _ts, m in list_backups(directory, device['id'])]})
    return {'devices': out, 'ok': True}


def cmd_show(ctx, args):
    device = pick_devices(ctx.config, [args.device], backups_only=True)[0]
    directory = ctx.logical_dir(device['id'])
    backups = list_backups(directory, device['id'])
    if args.file:
        chosen = args.file if any(b[0] == args.file for b in backups) else None
    else:
        chosen = P.select_backup([(n, ts) for n, ts, _m in backups], P.parse_when(args.as_of))
    if not chosen:
        if args.file:
            which = ' named %s' % args.file
        else:
            which = ' taken at or before %s' % args.as_of if args.as_of else ''
        raise BackupError('no good backup of %s%s' % (device['id'], which))
    meta = dict((n, m) for n, _ts, m in backups)[chosen]
    result = describe(directory, chosen, meta)
    result.update(ok=True, device=device['id'], socket=device['socket'], mode=device['mode'],
                  channel=device['channel'], gtid_domain_id=device.get('gtid_domain_id'),
                  metadata_path=os.path.join(directory, chosen + P.META_SUFFIX),
                  available=len(backups))
    return result


def cmd_restore(_ctx, args):
    tools = dict(DEFAULTS['tools'])
    server = Server(args.socket, tools, args.login_user)
    meta = load_backup(args.file)
    mapping = {}
    for db in (s['name'] for s in meta['schemas']):
        mapping[db] = (args.prefix or '') + db
    for item in args.map or []:
        if '=' not in item:
            raise BackupError('--map takes SOURCE=TARGET (or SOURCE= to skip), got %r' % item)
        source, target = item.split('=', 1)
        if source not in mapping:
            raise BackupError('--map %s: the backup has no schema %r (it has %s)' % (item, source, ', '.join(mapping)))
        mapping[source] = target or None
    log('restore: %s (%s, position %s) into %s on %s'
        % (os.path.basename(args.file), meta.get('device'), meta['position'].get('device_gtid_pos'),
           ', '.join('%s->%s' % kv for kv in mapping.items()), args.socket))
    with server:
        result = restore_file(args.file, server, mapping, overwrite=args.overwrite, no_binlog=not args.binlog,
                              tools=tools, meta=meta, device_target=args.device_target, gtid_state=args.gtid_state)
    log('restore: %s: %s' % ('ok' if result['ok'] else 'CHECKSUM MISMATCH', result['detail']))
    return result


def cmd_status(ctx, args):
    out = []
    for device in pick_devices(ctx.config, args.device):
        status = ctx.read_status(device['id'])
        out.append(status)
    return {'devices': out, 'ok': all(s.get('last_attempt_ok') is not False for s in out)}


def print_human(command, result):
    if command == 'status':
        print('%-20s %-20s %12s %6s %-8s %-8s %s' % ('DEVICE', 'LAST SUCCESS (UTC)', 'SIZE', 'KEPT', 'ATTEMPT', 'VERIFY', 'ERROR'))
        for s in result['devices']:
            ts = s.get('last_success_ts')
            print('%-20s %-20s %12s %6s %-8s %-8s %s' % (
                s['device'], time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ts)) if ts else 'never',
                s.get('last_size_bytes') or '-', s.get('backups_kept'),
                {True: 'ok', False: 'FAILED', None: '-'}[s.get('last_attempt_ok')],
                {True: 'ok', False: 'FAILED', None: '-'}[s.get('last_verify_ok')], s.get('last_error') or ''))
    elif command == 'list':
        for device in result['devices']:
            for b in device['backups']:
                print('%-20s %-45s %20s %12s %s' % (device['device'], b['file'], b['time'], b['size_bytes'], b['position']))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))


def build_parser():
    parser = argparse.ArgumentParser(prog='edgefleet-backup', description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--config', default=os.environ.get('EDGEFLEET_BACKUP_CONFIG', DEFAULT_CONFIG))
    parser.add_argument('--json', action='store_true', help='print the result as JSON on stdout')
    parser.add_argument('--quiet', action='store_true', help='no log lines on stderr (the log file still gets them)')
    parser.add_argument('--now', type=int, help='pretend the time is this epoch (simulations and tests)')
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='back up every due device')
    run.add_argument('--device', action='append', help='only this device (repeatable)')
    run.add_argument('--force', action='store_true', help='back up even if not due')
    run.add_argument('--no-physical', action='store_true')
    run.add_argument('--physical-only', action='store_true')
    run.add_argument('--no-offsite', action='store_true')
    verify = sub.add_parser('verify', help='verify newest backups by restoring them into scratch schemas')
    verify.add_argument('--device', action='append')
    verify.add_argument('--all', action='store_true', help='also devices whose newest backup was verified already')
    verify.add_argument('--file', help='verify this backup file (name) instead of the newest')
    prune = sub.add_parser('prune', help='apply the retention policy')
    prune.add_argument('--device', action='append')
    lister = sub.add_parser('list', help='list good backups')
    lister.add_argument('--device', action='append')
    show = sub.add_parser('show', help='metadata of one backup')
    show.add_argument('--device', required=True)
    show.add_argument('--as-of', help='newest backup taken at or before this UTC date/time')
    show.add_argument('--file', help='this backup file name')
    restore = sub.add_parser('restore', help='load a logical backup into a server')
    restore.add_argument('--file', required=True, help='backup file (its .json metadata must sit next to it)')
    restore.add_argument('--socket', required=True, help='unix socket of the target server')
    restore.add_argument('--login-user', default='root')
    restore.add_argument('--prefix', help='restore schema S as PREFIX+S')
    restore.add_argument('--map', action='append', help='SOURCE=TARGET schema name (SOURCE= skips it)')
    restore.add_argument('--overwrite', action='store_true', help='drop and replace non-empty target schemas')
    restore.add_argument('--binlog', action='store_true', help='write the restore to the binlog (default: not)')
    restore.add_argument('--device-target', action='store_true',
                         help='the target is a (replacement) device: re-enable events the replica disabled')
    restore.add_argument('--gtid-state', choices=('auto', 'skip'), default='skip',
                         help='auto: on a server with no binlog GTID of the device domain, continue from the backup position')
    status = sub.add_parser('status', help='per-device status')
    status.add_argument('--device', action='append')
    return parser


def main(argv=None):
    global _LOG_FILE, _QUIET  # pylint: disable=global-statement
    args = build_parser().parse_args(argv)
    _QUIET = args.quiet
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    os.umask(0o027)
    try:
        if args.command == 'restore':
            result = cmd_restore(None, args)
        else:
            config = load_config(args.config)
            _LOG_FILE = config.get('log_file')
            ctx = Context(config, args.now)
            if args.command in ('run', 'verify', 'prune'):
                ctx.mkdir(config['backup_dir'])
                with host_lock(config['lock_file'], int(config['lock_wait'])):
                    result = {'run': cmd_run, 'verify': cmd_verify, 'prune': cmd_prune}[args.command](ctx, args)
            else:
                result = {'list': cmd_list, 'show': cmd_show, 'status': cmd_status}[args.command](ctx, args)
    except (BackupError, P.PolicyError, OSError) as exc:
        log('error: %s' % exc)
        if args.json:
            print(json.dumps({'ok': False, 'error': str(exc)}))
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_human(args.command, result)
    return 0 if result.get('ok', True) else 1


if __name__ == '__main__':
    sys.exit(main())
