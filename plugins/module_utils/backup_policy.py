# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of edgefleet backups: names, schedules, retention, restore selection, GTID
positions, dump stream markers, checksum comparison and the per-device status record.

One source of truth for two users:

* the backup program (the ``backup`` package next to this file, ``edgefleet-backup`` on every
  cloud host, which the backup role ships with the modules it imports, this one included);
* the unit and property tests.

So: standard library only, no Ansible imports, no I/O except what callers pass in.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import hashlib
import re
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import gtid as gtid_lib

DAY = 86400
TS_FORMAT = '%Y%m%dT%H%M%SZ'
KIND_SUFFIX = {'logical': '.sql.zst', 'physical': '.xbstream.zst'}
META_SUFFIX = '.json'
PARTIAL_SUFFIX = '.partial'
STATUS_VERSION = 1

# <subject>-<UTC timestamp>[-<n>]<suffix>; subjects are device ids / instance names
# (^[a-z][a-z0-9_]{0,31}$), so "-" and "." never occur in them.
_NAME_RE = re.compile(
    r'^(?P<subject>[a-z][a-z0-9_-]{0,63})-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d{1,4}))?'
    r'(?P<suffix>\.sql\.zst|\.xbstream\.zst)$')
_DURATION_RE = re.compile(r'^\s*(\d+)\s*([smhdw]?)\s*$')
_DURATION_UNITS = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': DAY, 'w': 7 * DAY}


class PolicyError(ValueError):
    """Bad policy value or argument; the message says which and why."""


# ---------------------------------------------------------------------------------------
# Time and names
# ---------------------------------------------------------------------------------------

def format_ts(epoch):
    """UTC timestamp used in file names: 20250102T030405Z."""
    return time.strftime(TS_FORMAT, time.gmtime(int(epoch)))


def parse_ts(text):
    return calendar.timegm(time.strptime(text, TS_FORMAT))


def parse_duration(value):
    """Seconds from 90, "90", "90s", "30m", "20h", "7d" or "2w"."""
    if isinstance(value, bool):
        raise PolicyError('duration %r must be a number of seconds or a string such as 20h or 7d' % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise PolicyError('duration %r must not be negative' % (value,))
        return int(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise PolicyError('duration %r must be a number of seconds or a number followed by s, m, h, d or w'
                          % (value,))
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_when(value, end_of_day=True):
    """Epoch seconds from an epoch number or an ISO-8601 UTC date/time.

    A bare date (2025-05-01) means the end of that day (UTC) when ``end_of_day``: "as of
    2025-05-01" then selects the newest backup taken on that day or before. ``newest``,
    ``latest``, empty and None mean "no limit" and return None.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise PolicyError('time %r is not a date' % (value,))
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.lower() in ('', 'newest', 'latest', 'now'):
        return None
    if re.match(r'^\d+(\.\d+)?$', text):
        return int(float(text))
    text = text.replace(' ', 'T')
    if text.endswith('Z'):
        text = text[:-1]
    elif text.endswith('+00:00'):
        text = text[:-6]
    for fmt, is_date in (('%Y-%m-%d', True), ('%Y-%m-%dT%H:%M', False), ('%Y-%m-%dT%H:%M:%S', False),
                         ('%Y%m%dT%H%M%S', False)):
        try:
            parsed = calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
        return parsed + DAY - 1 if (is_date and end_of_day) else parsed
    raise PolicyError('time %r: use YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z] (UTC) or epoch seconds' % (value,))


def backup_file_name(subject, epoch, kind='logical', seq=0):
    """File name of a backup of ``subject`` (device id or instance name) taken at ``epoch``."""
    if kind not in KIND_SUFFIX:
        raise PolicyError('backup kind %r must be one of %s' % (kind, ', '.join(sorted(KIND_SUFFIX))))
    # Shared (channel-mode) instance names carry a '-' (multi-01), device ids never do.
    if not re.match(r'^[a-z][a-z0-9_-]{0,63}$', subject or ''):
        raise PolicyError('backup subject %r is not a device id or instance name' % (subject,))
    extra = '-%d' % seq if seq else ''
    return '%s-%s%s%s' % (subject, format_ts(epoch), extra, KIND_SUFFIX[kind])


def parse_backup_file_name(name):
    """(subject, epoch, kind, seq) of a backup file name, or None for anything else."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    kind = 'logical' if match.group('suffix') == KIND_SUFFIX['logical'] else 'physical'
    try:
        epoch = parse_ts(match.group('ts'))
    except ValueError:
        return None
    return match.group('subject'), epoch, kind, int(match.group('seq') or 0)


def sort_key(entry):
    """Order of backups: by time, then by name (same-second backups carry -1, -2 ...)."""
    name, epoch = entry[0], entry[1]
    parsed = parse_backup_file_name(name)
    return (epoch, parsed[3] if parsed else 0, name)


# ---------------------------------------------------------------------------------------
# Scheduling and retention
# ---------------------------------------------------------------------------------------

def is_due(last_success_ts, min_age, now, force=False):
    """A subject is due when forced, never backed up, or its newest good backup is at least
    ``min_age`` seconds old. Failed attempts do not count, so a failing device is retried on
    every run."""
    if force or last_success_ts is None:
        return True
    return now - last_success_ts >= min_age


def first_backup_wait_reason(has_schema, channel, max_lag):
    """Why a device's first backup waits for a later run, or None when its replica is ready.

    has_schema: the replica holds a schema of the device (else there is nothing to protect yet, and
    an attempt would only record a failure and raise an alert for a device just enrolled);
    channel: its SHOW ALL SLAVES STATUS row (None: no channel); max_lag: seconds behind its device
    the channel may be (a replica still replaying its seed or a backlog would be backed up stale)."""
    if not has_schema:
        return 'no schema of the device on its replica yet'
    if channel is None:
        return 'no replication channel yet'
    if channel.get('Slave_SQL_Running') != 'Yes':
        return 'its channel is not applying (SQL thread %s)' % (channel.get('Slave_SQL_Running') or 'stopped')
    behind = channel.get('Seconds_Behind_Master')
    if behind not in (None, '', 'NULL') and int(behind) > int(max_lag):
        return 'catching up: %s s behind its device (first_max_lag %d s)' % (behind, int(max_lag))
    return None


def check_retention_policy(keep_last, keep_days):
    for name, value in (('keep_last', keep_last), ('keep_days', keep_days)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PolicyError('retention %s must be a number >= 0, got %r' % (name, value))


def retention(backups, keep_last, keep_days, now):
    """Split the good backups of ONE subject into (keep, remove), both lists of names, newest
    first.

    ``backups`` is an iterable of (name, epoch) of successful backups. A backup is kept when it
    is one of the ``keep_last`` newest, or younger than ``keep_days`` days (backups dated in
    the future count as young), and the newest backup is always kept, whatever the policy.
    Callers run this only after a successful backup (never on a failed run).
    """
    check_retention_policy(keep_last, keep_days)
    ordered = sorted(backups, key=sort_key, reverse=True)
    names = [entry[0] for entry in ordered]
    if len(set(names)) != len(names):
        raise PolicyError('duplicate backup names in %r' % (names,))
    max_age = keep_days * DAY
    keep, remove = [], []
    for index, (name, epoch) in enumerate((entry[0], entry[1]) for entry in ordered):
        if index == 0 or index < keep_last or now - epoch < max_age:
            keep.append(name)
        else:
            remove.append(name)
    return keep, remove


def select_backup(backups, as_of=None):
    """Name of the newest backup taken at or before ``as_of`` (epoch; None = newest)."""
    candidates = [entry for entry in backups if as_of is None or entry[1] <= as_of]
    if not candidates:
        return None
    return max(candidates, key=sort_key)[0]


# ---------------------------------------------------------------------------------------
# GTID positions (MariaDB domain-server-seq lists)
# ---------------------------------------------------------------------------------------

def parse_gtid_pos(text):
    """{domain: (server_id, seq)} of a MariaDB GTID position such as "0-1-5,1000-1000-42"
    (module_utils/gtid.py parses; this shape is what backup metadata and restore use)."""
    try:
        return dict((domain, (gtid.server_id, gtid.seq_no)) for domain, gtid in gtid_lib.parse_gtid_pos(text).items())
    except gtid_lib.GtidError as exc:
        raise PolicyError(str(exc))


def format_gtid_pos(position):
    """{domain: (server_id, seq)} -> "domain-server-seq,..." (module_utils/gtid.py formats)."""
    return gtid_lib.format_gtid_pos(dict((domain, (domain,) + tuple(pair)) for domain, pair in position.items()))


def filter_gtid_pos(text, domains):
    """Only the given domains of a position (a device's own domain of a shared replica)."""
    wanted = set(int(d) for d in domains)
    return format_gtid_pos(dict((d, v) for d, v in parse_gtid_pos(text).items() if d in wanted))


def gtid_behind(current, target):
    """Domains where ``current`` has not reached ``target`` (both position strings):
    {domain: (current_seq or None, target_seq)}."""
    cur, tgt = parse_gtid_pos(current), parse_gtid_pos(target)
    out = {}
    for domain, (_server, seq) in tgt.items():
        have = cur.get(domain)
        if have is None or have[1] < seq:
            out[domain] = (have[1] if have else None, seq)
    return out


# ---------------------------------------------------------------------------------------
# Dump stream: one zstd file carries every schema of a device, each section introduced by a
# marker line carrying a per-backup nonce, so a restore can rename (or skip) schemas without
# touching anything else; `zstd -dc FILE | mariadb` restores the device's own names.
# ---------------------------------------------------------------------------------------

MARKER_PREFIX = '-- edgefleet-schema '
END_PREFIX = '-- edgefleet-end '


def quote_ident(name):
    return '`%s`' % name.replace('`', '``')


def database_options(create_sql):
    """The options part of SHOW CREATE DATABASE (character set, collation, comment)."""
    match = re.match(r'^\s*CREATE DATABASE\s+(?:/\*!32312 IF NOT EXISTS\*/\s+|IF NOT EXISTS\s+)?`(?:[^`]|``)*`\s*(.*?)\s*;?\s*$',
                     create_sql or '', re.S)
    return match.group(1) if match else ''


def section_header(nonce, db, options=''):
    """Lines (str, newline-terminated) that open the section of schema ``db``."""
    create = 'CREATE DATABASE IF NOT EXISTS %s%s;\n' % (quote_ident(db), (' ' + options) if options else '')
    return ['%s%s: %s\n' % (MARKER_PREFIX, nonce, db), create, 'USE %s;\n' % quote_ident(db)]


def stream_end(nonce, count):
    return '%s%s: %d schemas\n' % (END_PREFIX, nonce, count)


class SchemaRewriter:
    """Streams a dump line by line, renaming or skipping schema sections.

    ``mapping`` maps a schema name in the file to the target name, or to None to skip that
    schema. Schemas not in ``mapping`` keep their names. Only the two statements right after a
    marker line (CREATE DATABASE, USE) are rewritten. Works on bytes.
    """

    def __init__(self, nonce, mapping=None):
        self.marker = (MARKER_PREFIX + nonce + ': ').encode()
        self.end = (END_PREFIX + nonce + ': ').encode()
        self.mapping = dict(mapping or {})
        self.sections = []
        self.ended = False
        self._current = None
        self._target = None
        self._header_left = 0
        self._skip = False

    def feed(self, line):
        """Return the bytes to send on for one input line (possibly b'')."""
        if line.startswith(self.marker):
            db = line[len(self.marker):].decode('utf-8').strip()
            self._current = db
            self._target = self.mapping.get(db, db)
            self._skip = db in self.mapping and self.mapping[db] is None
            self._header_left = 2
            self.sections.append(db)
            if self._skip:
                return b''
            return line
        if line.startswith(self.end):
            self.ended = True
            self._skip = False
            return line
        if self._skip:
            return b''
        if self._header_left and self._target != self._current:
            self._header_left -= 1
            old, new = quote_ident(self._current).encode(), quote_ident(self._target).encode()
            if line.startswith(b'CREATE DATABASE') or line.startswith(b'USE '):
                return line.replace(old, new, 1)
            return line
        if self._header_left:
            self._header_left -= 1
        return line


def scratch_schema_name(prefix, device, db):
    """A scratch schema name (<= 64 characters) unique per device and schema."""
    digest = hashlib.sha1(('%s\0%s' % (device, db)).encode('utf-8')).hexdigest()[:10]
    name = '%s%s_%s' % (prefix, digest, db)
    return name[:64]


def target_schemas(schemas, prefix=None, mapping=None):
    """{source schema: target schema} for a restore; an explicit mapping wins over a prefix."""
    mapping = dict(mapping or {})
    out = {}
    for db in schemas:
        target = mapping.get(db) if db in mapping else ((prefix or '') + db)
        if target is not None and (len(target) > 64 or not re.match(r'^[A-Za-z0-9_$]+$', target)):
            raise PolicyError('target schema %r for %r must be 1-64 characters of A-Z a-z 0-9 _ $' % (target, db))
        out[db] = target
    targets = [t for t in out.values() if t is not None]
    if len(set(targets)) != len(targets):
        raise PolicyError('two schemas would be restored into the same target: %r' % (out,))
    return out


# ---------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------

# How a backup records what its tables hold at the backup's position, for verify and restore:
#   dump    per-table SHA-256 of the table's INSERT lines in the dump stream itself (no extra scan
#           of the replica); verify re-dumps the restored copy with the same options and compares;
#   server  CHECKSUM TABLE ... EXTENDED and COUNT(*) on the replica (two more full scans, an
#           independent check computed by the server);
#   none    nothing recorded; verify only proves the file loads.
CHECKSUM_METHODS = ('dump', 'server', 'none')
_INSERT_PREFIX = b'INSERT INTO `'
_EMPTY_DIGEST = hashlib.sha256(b'').hexdigest()


def checksum_method(value):
    """The configured method; booleans are what configurations before the methods said."""
    if value is True:
        return 'server'
    if value is False or value is None:
        return 'none'
    if value not in CHECKSUM_METHODS:
        raise ValueError('checksums must be one of %s, not %r' % (', '.join(CHECKSUM_METHODS), value))
    return value


def insert_table(line):
    """Table name of a mariadb-dump ``INSERT INTO `name` ...`` line (bytes), else None."""
    if not line.startswith(_INSERT_PREFIX):
        return None
    name, start = bytearray(), len(_INSERT_PREFIX)
    while True:
        quote = line.find(b'`', start)
        if quote < 0:
            return None
        if line[quote + 1:quote + 2] == b'`':
            name += line[start:quote + 1]
            start = quote + 2
            continue
        name += line[start:quote]
        return bytes(name).decode('utf-8', 'replace')


class DumpDigest:
    """Per-table SHA-256 of the INSERT statements of one schema's mariadb-dump stream, fed in
    blocks of any size. An INSERT may span lines (MariaDB 10.11 writes one row per line); it
    ends with the line that ends in ``;`` (values never hold a raw newline: the dump escapes
    them). Rows come out of the dump in the same order for the same data (clustered index
    order; the same options split the extended INSERTs the same way), so the same data gives
    the same digests and a single changed, missing or extra row changes its table's."""

    def __init__(self):
        self._hashes = {}
        self._pending = bytearray()
        self._statement = None  # the digest of the INSERT being read, across lines

    def feed(self, block):
        # Inside an INSERT one C-level search finds its end (``;`` + newline), so the Python work
        # is per statement (~1 MB each), not per row line.
        self._pending += block
        data, start = self._pending, 0
        view = memoryview(data)
        try:
            while start < len(data):
                if self._statement is not None:
                    end = data.find(b';\n', start)
                    if end < 0:
                        keep = max(start, len(data) - 1)  # the last byte may be the ';' of a split ';\n'
                        self._statement.update(view[start:keep])
                        start = keep
                        break
                    self._statement.update(view[start:end + 2])
                    self._statement = None
                    start = end + 2
                    continue
                newline = data.find(b'\n', start)
                if newline < 0:
                    break
                table = insert_table(bytes(view[start:min(newline + 1, start + 4096)]))
                if table is None:
                    start = newline + 1
                else:
                    self._statement = self._hashes.get(table)
                    if self._statement is None:
                        self._statement = self._hashes[table] = hashlib.sha256()
        finally:
            view.release()
        del self._pending[:start]

    def digests(self, tables=()):
        """{table: hex digest} for every table seen, and the empty digest for ``tables`` without rows."""
        if self._pending and self._statement is not None:
            self._statement.update(bytes(self._pending))
        elif self._pending:
            self.feed(b'\n')
        del self._pending[:]
        self._statement = None
        out = dict((table, _EMPTY_DIGEST) for table in tables)
        out.update((table, digest.hexdigest()) for table, digest in self._hashes.items())
        return out


def compare_tables(expected, actual):
    """Compare per-table {"db.table": {"checksum", "rows", "digest"}} maps (None: not recorded) keyed by
    the SOURCE names. Returns (ok, detail) with detail a short human sentence."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = []
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        for field in ('checksum', 'rows', 'digest'):
            if want.get(field) is not None and want.get(field) != got.get(field):
                differ.append('%s %s %s != %s' % (key, field, got.get(field), want.get(field)))
    problems = []
    if missing:
        problems.append('missing tables: %s' % ', '.join(missing))
    if extra:
        problems.append('unexpected tables: %s' % ', '.join(extra))
    if differ:
        problems.append('differences: %s' % '; '.join(differ))
    if problems:
        return False, '; '.join(problems)
    if any(v.get('rows') is not None for v in expected.values()):
        rows = sum(int(v.get('rows') or 0) for v in expected.values())
        return True, '%d tables (%d rows) match' % (len(expected), rows)
    return True, '%d tables match' % len(expected)


# ---------------------------------------------------------------------------------------
# Status record (monitoring contract: /var/lib/edgefleet/backup/status/<device>.json)
# ---------------------------------------------------------------------------------------

STATUS_KEYS = ('device', 'last_success_ts', 'last_success_file', 'last_size_bytes', 'last_duration_s',
               'last_attempt_ts', 'last_attempt_ok', 'last_error', 'last_verify_ts', 'last_verify_ok',
               'last_verify_detail', 'backups_kept')


def new_status(device):
    status = dict((key, None) for key in STATUS_KEYS)
    status.update(device=device, backups_kept=0, status_version=STATUS_VERSION)
    return status


def normalize_status(device, loaded):
    """A status dict with every contract key, from whatever was on disk (or None)."""
    status = new_status(device)
    if isinstance(loaded, dict):
        for key, value in loaded.items():
            status[key] = value
    status['device'] = device
    status['status_version'] = STATUS_VERSION
    return status


def record_attempt(status, ok, now, error=None, file_name=None, size=None, duration=None, kept=None,
                   position=None):
    status = dict(status)
    status['last_attempt_ts'] = int(now)
    status['last_attempt_ok'] = bool(ok)
    if ok:
        status.update(last_success_ts=int(now), last_success_file=file_name, last_size_bytes=size,
                      last_duration_s=None if duration is None else round(float(duration), 3),
                      last_error=None, last_success_gtid=position)
    else:
        status['last_error'] = (error or 'unknown error')[:2000]
    if kept is not None:
        status['backups_kept'] = int(kept)
    return status


def record_verify(status, ok, now, detail, file_name=None):
    status = dict(status)
    status.update(last_verify_ts=int(now), last_verify_ok=ok, last_verify_detail=(detail or '')[:2000],
                  last_verify_file=file_name)
    return status


# ---------------------------------------------------------------------------------------
# Offsite (restic) repositories
# ---------------------------------------------------------------------------------------

OFFSITE_BACKENDS = ('sftp', 's3')

# What restic says when it cannot open a repository, by cause. Only "missing" lets the
# program create the repository; every other cause is reported and nothing is written.
_RESTIC_OPEN_FAILURES = (
    ('credentials', ('access key id you provided does not exist', 'access key ID you provided does not exist',
                     'signature we calculated does not match', 'invalidaccesskeyid', 'signaturedoesnotmatch',
                     'access denied', 'accessdenied', 'forbidden', 'wrong password', 'permission denied (publickey')),
    ('tls', ('x509:', 'certificate signed by unknown authority', 'tls: ', 'certificate is not valid')),
    ('unreachable', ('connection refused', 'no route to host', 'i/o timeout', 'no such host',
                     'network is unreachable', 'connection reset')),
    ('missing', ('the specified bucket does not exist', 'the specified key does not exist', 'nosuchbucket',
                 'nosuchkey', 'no such file or directory', 'file does not exist', 'repository does not exist')),
)


def restic_open_failure(text):
    """Why restic could not open a repository, from its error text: 'credentials', 'tls',
    'unreachable', 'missing' (nothing there yet: may be initialised) or 'other'. Causes are
    tried in that order, so a refused key whose message says "does not exist" is never taken
    for a missing repository."""
    lowered = (text or '').lower()
    for cause, needles in _RESTIC_OPEN_FAILURES:
        if any(needle.lower() in lowered for needle in needles):
            return cause
    return 'other'


def offsite_repository(offsite, host=None):
    """The restic repository of cloud host ``host`` (this host's own when None): the
    configuration's ``repository_pattern`` with {host} replaced, else its ``repository``."""
    pattern = offsite.get('repository_pattern')
    if host is None or not pattern:
        if host is not None and not pattern:
            raise PolicyError('the offsite configuration has no repository_pattern: cannot open the repository of %s' % host)
        return offsite['repository']
    if not re.match(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$', host):
        raise PolicyError('not a host name: %r' % (host,))
    return pattern.replace('{host}', host)
