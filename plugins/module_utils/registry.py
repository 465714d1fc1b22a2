# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device registry (single source of truth) and its allocation state.

Two backends share one interface:

* :class:`FileRegistry` - a YAML file for GitOps (``devices:``, ``cloud_hosts:``); allocations
  live in a JSON-formatted YAML file next to it (``<registry>.alloc.yml``). Writers take an
  exclusive ``fcntl`` lock and replace files atomically (temp file, fsync, rename), so readers
  never need a lock and never see half a file.
* :class:`MySQLRegistry` - tables in a MySQL/MariaDB database (devices register themselves).
  Allocation runs serialize on a row lock; a ``ports`` table with ``PRIMARY KEY (cloud_host,
  port)`` and UNIQUE server_id/gtid_domain_id make duplicates impossible even for a writer
  that skips the lock; conflicts roll back and retry.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time

from ansible.module_utils.common.yaml import HAS_YAML

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write  # noqa: F401 (re-exported)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, STATUSES, REPLICA_MODES, REACH_MODES, RESERVED_NAMES, RESERVED_PREFIXES, ID_RE, SITE_RE,
    LABEL_KEY_RE, check_device_id, check_cloud_host_name, check_site, check_labels, check_choice,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    parse_port_ranges, parse_port_list, format_port_ranges, _as_int, _as_bool,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib

try:
    import fcntl
    HAS_FCNTL = True
except ImportError:  # pragma: no cover - not on POSIX
    HAS_FCNTL = False

try:
    import pymysql
    HAS_PYMYSQL = True
    PYMYSQL_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the host
    pymysql = None
    HAS_PYMYSQL = False
    PYMYSQL_IMPORT_ERROR = _exc

if HAS_YAML:
    import yaml as _yaml
else:  # pragma: no cover
    _yaml = None

DEVICE_FIELDS = ('id', 'site', 'status', 'address', 'labels', 'vars', 'replica_mode', 'reach', 'ssh_public_key')
DEVICE_FIELD_SET = frozenset(DEVICE_FIELDS)
CLOUD_FIELDS = ('name', 'address', 'capacity', 'tunnel_ports', 'replica_ports', 'reserved_ports', 'drain', 'vars')
CLOUD_FIELD_SET = frozenset(CLOUD_FIELDS)
TOP_LEVEL_KEYS = frozenset(('devices', 'cloud_hosts', 'version'))
VAR_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
ADDRESS_RE = re.compile(r'^[A-Za-z0-9_.:%\[\]-]{1,255}$')
PUBLIC_KEY_RE = re.compile(r'^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|'
                           r'sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$')
FORMAT_NAME = 'edgefleet.mysql_backup.allocations'
_ID_MATCH = ID_RE.fullmatch
_SITE_MATCH = SITE_RE.fullmatch
_LABEL_MATCH = LABEL_KEY_RE.fullmatch
_VAR_MATCH = VAR_NAME_RE.fullmatch
_ADDRESS_MATCH = ADDRESS_RE.fullmatch


# --------------------------------------------------------------------------- normalization

def _check_vars(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FleetError('%s: field "vars" must be a mapping, got %s' % (where, type(value).__name__))
    for key in value:
        if not isinstance(key, str) or not VAR_NAME_RE.fullmatch(key):
            raise FleetError('%s: field "vars" key %r is not a valid variable name' % (where, key))
    return dict(value)


def check_address(value, where):
    if value is None or value == '':
        return None
    if not isinstance(value, str) or not ADDRESS_RE.fullmatch(value):
        raise FleetError('%s: field "address" value %r is not a host name or IP address' % (where, value))
    return value


def check_public_key(value, where):
    if value is None or value == '':
        return None
    if not isinstance(value, str):
        raise FleetError('%s: field "ssh_public_key" must be a string' % where)
    value = value.strip()
    if '\n' in value or not PUBLIC_KEY_RE.fullmatch(value):
        raise FleetError('%s: field "ssh_public_key" is not a single OpenSSH public key line '
                         '("ssh-ed25519 AAAA... comment")' % where)
    return value


def _check_entry(raw, index, kind, key, check_key, fields, field_set):
    """What every registry entry must be: a mapping with its key field and only known fields.
    Returns (the checked key, 'kind key' to name the entry in messages)."""
    where = '%s #%d' % (kind, index) if index is not None else kind
    if not isinstance(raw, dict):
        raise FleetError('%s: must be a mapping with at least "%s", got %r' % (where, key, raw))
    if key not in raw:
        raise FleetError('%s: field "%s" is missing' % (where, key))
    value = check_key(raw[key], where)
    where = '%s %s' % (kind, value)
    extra = set(raw) - field_set
    if extra:
        raise FleetError('%s: unknown field(s) %s (allowed: %s)' % (where, ', '.join(sorted(extra)), ', '.join(fields)))
    return value, where


def normalize_device(raw, index=None):
    """Validate one registry entry; returns a dict with every DEVICE_FIELDS key."""
    fast = _normalize_device_fast(raw)
    if fast is not None:
        return fast
    dev_id, where = _check_entry(raw, index, 'device', 'id', check_device_id, DEVICE_FIELDS, DEVICE_FIELD_SET)
    return {
        'id': dev_id,
        'site': check_site(raw.get('site'), where),
        'status': check_choice(raw.get('status'), STATUSES, 'status', where, 'active'),
        'address': check_address(raw.get('address'), where),
        'labels': check_labels(raw.get('labels'), where),
        'vars': _check_vars(raw.get('vars'), where),
        'replica_mode': check_choice(raw.get('replica_mode'), REPLICA_MODES, 'replica_mode', where),
        'reach': check_choice(raw.get('reach'), REACH_MODES, 'reach', where),
        'ssh_public_key': check_public_key(raw.get('ssh_public_key'), where),
    }


_STATUS_SET = frozenset(STATUSES)
_MODE_SET = frozenset(REPLICA_MODES + (None,))
_REACH_SET = frozenset(REACH_MODES + (None,))


def _normalize_device_fast(raw):
    """The common, valid case without per-field function calls; None means "use the slow path"."""
    if not isinstance(raw, dict) or not raw.keys() <= DEVICE_FIELD_SET:
        return None
    dev_id = raw.get('id')
    if not isinstance(dev_id, str) or not _ID_MATCH(dev_id) or dev_id in RESERVED_NAMES or dev_id.startswith(RESERVED_PREFIXES):
        return None
    status = raw.get('status', 'active')
    site = raw.get('site')
    address = raw.get('address')
    labels = raw.get('labels')
    hvars = raw.get('vars')
    mode = raw.get('replica_mode')
    reach = raw.get('reach')
    key = raw.get('ssh_public_key')
    if status not in _STATUS_SET or mode not in _MODE_SET or reach not in _REACH_SET:
        return None
    if site is not None and (not isinstance(site, str) or not _SITE_MATCH(site)):
        return None
    if address is not None and (not isinstance(address, str) or not _ADDRESS_MATCH(address)):
        return None
    if labels is None:
        labels = {}
    elif not isinstance(labels, dict):
        return None
    else:
        for lkey, lval in labels.items():
            if not isinstance(lkey, str) or not isinstance(lval, str) or not _LABEL_MATCH(lkey):
                return None
    if hvars is None:
        hvars = {}
    elif not isinstance(hvars, dict):
        return None
    else:
        for vkey in hvars:
            if not isinstance(vkey, str) or not _VAR_MATCH(vkey):
                return None
    if key is not None:
        return None
    return {'id': dev_id, 'site': site, 'status': status, 'address': address or None, 'labels': labels,
            'vars': hvars, 'replica_mode': mode, 'reach': reach, 'ssh_public_key': None}


def normalize_cloud_host(raw, index=None):
    name, where = _check_entry(raw, index, 'cloud host', 'name', check_cloud_host_name, CLOUD_FIELDS, CLOUD_FIELD_SET)
    return {
        'name': name,
        'address': check_address(raw.get('address'), where),
        'capacity': _as_int(raw.get('capacity'), 'capacity', where, 0, allow_none=True),
        'tunnel_ports': parse_port_ranges(raw.get('tunnel_ports'), where + ' field "tunnel_ports"') or None,
        'replica_ports': parse_port_ranges(raw.get('replica_ports'), where + ' field "replica_ports"') or None,
        'reserved_ports': sorted(parse_port_list(raw.get('reserved_ports'), where + ' field "reserved_ports"')),
        'drain': _as_bool(raw.get('drain', False), 'drain', where),
        'vars': _check_vars(raw.get('vars'), where),
    }


def normalize_registry(devices_raw, cloud_raw, source):
    """Validate lists of devices and cloud hosts; duplicate ids/names are errors."""
    if devices_raw is None:
        devices_raw = []
    if cloud_raw is None:
        cloud_raw = []
    if not isinstance(devices_raw, list):
        raise FleetError('registry %s: "devices" must be a list' % source)
    if not isinstance(cloud_raw, list):
        raise FleetError('registry %s: "cloud_hosts" must be a list' % source)
    devices = []
    seen = {}
    for index, raw in enumerate(devices_raw):
        dev = normalize_device(raw, index)
        if dev['id'] in seen:
            raise FleetError('registry %s: device %s: field "id" is duplicated (entries #%d and #%d)'
                             % (source, dev['id'], seen[dev['id']], index))
        seen[dev['id']] = index
        devices.append(dev)
    hosts = []
    seen_hosts = {}
    for index, raw in enumerate(cloud_raw):
        host = normalize_cloud_host(raw, index)
        if host['name'] in seen_hosts:
            raise FleetError('registry %s: cloud host %s: field "name" is duplicated (entries #%d and #%d)'
                             % (source, host['name'], seen_hosts[host['name']], index))
        if host['name'] in seen:
            raise FleetError('registry %s: cloud host %s: field "name" is also a device id (inventory host names '
                             'must be unique)' % (source, host['name']))
        seen_hosts[host['name']] = index
        hosts.append(host)
    return devices, hosts


def device_to_raw(dev):
    """Compact registry form of a normalized device (empty fields left out, status always kept)."""
    out = {'id': dev['id']}
    for key in DEVICE_FIELDS[1:]:
        value = dev.get(key)
        if value in (None, {}, ''):
            continue
        out[key] = value
    out.setdefault('status', 'active')
    return out


def cloud_host_to_raw(host):
    out = {'name': host['name']}
    for key in CLOUD_FIELDS[1:]:
        value = host.get(key)
        if value in (None, {}, [], '') or (key == 'drain' and not value):
            continue
        if key in ('tunnel_ports', 'replica_ports'):
            value = format_port_ranges(value)
        out[key] = value
    return out


def device_diff_view(dev):
    if dev is None:
        return {}
    return device_to_raw(dev)


# --------------------------------------------------------------------------- state (de)serialization

def state_to_doc(state, stamp=None):
    return {
        'format': FORMAT_NAME,
        'version': 1,
        'updated_at': stamp,
        'counters': state.get('counters', {}),
        'allocations': state['allocations'],
        'ids': state['ids'],
        'instances': [state['instances'][k] for k in sorted(state['instances'])],
        'quarantine': [dict(cloud_host=k[0], port=k[1], **state['quarantine'][k]) for k in sorted(state['quarantine'])],
    }


def state_from_doc(doc, source):
    state = alloc_lib.empty_state()
    if not doc:
        return state
    if not isinstance(doc, dict) or doc.get('format') != FORMAT_NAME:
        raise FleetError('allocation file %s is not an edgefleet allocation file (format: %s)' % (source, FORMAT_NAME))
    try:
        state['counters'].update(doc.get('counters') or {})
        state['allocations'] = dict(doc.get('allocations') or {})
        state['ids'] = dict(doc.get('ids') or {})
        for inst in doc.get('instances') or []:
            state['instances'][(inst['cloud_host'], inst['name'])] = inst
        for entry in doc.get('quarantine') or []:
            entry = dict(entry)
            key = (entry.pop('cloud_host'), int(entry.pop('port')))
            state['quarantine'][key] = entry
        for dev_id, rec in state['allocations'].items():
            if rec.get('id') != dev_id:
                raise FleetError('allocation file %s: entry %s carries id %r' % (source, dev_id, rec.get('id')))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FleetError('allocation file %s is malformed: %s' % (source, exc))
    return state


def _flat_records_json(mapping):
    """JSON of {name: flat dict} with one entry per line, in one C-encoder call.

    Entries are flat (no nested containers), so inside the encoded text the sequence ``}, "``
    can only be the boundary between two entries (quotes inside strings are escaped).
    """
    if not mapping:
        return '{}'
    text = json.dumps(dict((k, mapping[k]) for k in sorted(mapping)), separators=(', ', ': '))
    return '{\n' + text[1:-1].replace('}, "', '},\n"') + '\n}'


def _flat_list_json(items):
    if not items:
        return '[]'
    text = json.dumps(items, separators=(', ', ': '))
    return '[\n' + text[1:-1].replace('}, {', '},\n{') + '\n]'


def dump_state_text(state, stamp=None):
    """JSON (a subset of YAML), one record per line: fast to parse, reviewable in diffs."""
    doc = state_to_doc(state, stamp)
    return ''.join((
        '{"format": %s, "version": 1, "updated_at": %s,\n' % (json.dumps(FORMAT_NAME), json.dumps(stamp)),
        '"counters": %s,\n' % json.dumps(doc['counters'], sort_keys=True),
        '"allocations": %s,\n' % _flat_records_json(doc['allocations']),
        '"ids": %s,\n' % _flat_records_json(doc['ids']),
        '"instances": %s,\n' % _flat_list_json(doc['instances']),
        '"quarantine": %s\n' % _flat_list_json(doc['quarantine']),
        '}\n'))


# Characters YAML does not accept raw or reads as line breaks (NEL, LS, PS): escape them.
_YAML_UNSAFE = re.compile('[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]')


def _escape_unsafe(match):
    return '\\u%04x' % ord(match.group(0))


def _item_json(value):
    return _YAML_UNSAFE.sub(_escape_unsafe, json.dumps(value, ensure_ascii=False, separators=(', ', ': ')))


def dump_registry_text(devices, cloud_hosts, extra=None):
    """Registry YAML, one JSON-style flow mapping per device / cloud host.

    Valid YAML (JSON flow mappings are YAML) that reads like the hand-written ``- {id: ...}``
    form, diffs one line per device and parses fast (see :func:`parse_registry_text`).
    """
    lines = ['# edgefleet.mysql_backup device registry (see docs/allocation.md).',
             '# Rewritten by the edgefleet.mysql_backup.registry module: comments are not preserved.']
    for key in sorted(extra or {}):
        lines.append('%s: %s' % (key, _item_json(extra[key])))
    lines.append('devices:' if devices else 'devices: []')
    for dev in devices:
        lines.append('  - ' + _item_json(device_to_raw(dev)))
    lines.append('cloud_hosts:' if cloud_hosts else 'cloud_hosts: []')
    for host in cloud_hosts:
        lines.append('  - ' + _item_json(cloud_host_to_raw(host)))
    return '\n'.join(lines) + '\n'


_LINE_ITEM = re.compile(r'^[ ]*- (\{.*\})[ \t]*$')
_LINE_SECTION = re.compile(r'^(devices|cloud_hosts):[ \t]*(\[\])?[ \t]*$')
_LINE_VERSION = re.compile(r'^version:[ \t]*([0-9]+)[ \t]*$')


def _no_floats(text):
    raise ValueError('float')


_STRICT_DECODER = json.JSONDecoder(parse_float=_no_floats, parse_constant=_no_floats)


def parse_registry_text(text):
    """Fast path for registries in the one-JSON-mapping-per-line form; None means "parse as YAML".

    Only a file made of comments, blank lines, ``devices:``/``cloud_hosts:``/``version:`` lines
    and ``- {json}`` items (exactly one JSON object per line) takes this path; such a JSON line
    means the same in YAML. Numbers with a fraction or exponent go to the YAML parser (YAML 1.1
    reads ``1e3`` as a string, JSON as a number).
    """
    doc = {}
    current = None
    scan = _STRICT_DECODER.scan_once
    item_match = _LINE_ITEM.match
    try:
        for line in text.splitlines():
            if line.startswith('  - {') and line.endswith('}'):
                if current is None:
                    return None
                obj, end = scan(line, 4)
                if end != len(line) or not isinstance(obj, dict):
                    return None
                current.append(obj)
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith('#'):
                continue
            match = _LINE_SECTION.match(line)
            if match:
                if match.group(1) in doc:
                    return None
                current = doc[match.group(1)] = []
                if match.group(2):
                    current = None
                continue
            match = _LINE_VERSION.match(line)
            if match and 'version' not in doc:
                doc['version'] = int(match.group(1))
                current = None
                continue
            match = item_match(line)
            if match is None or current is None:
                return None
            item = match.group(1)
            obj, end = scan(item, 0)
            if end != len(item) or not isinstance(obj, dict):
                return None
            current.append(obj)
    except (StopIteration, ValueError):
        return None
    return doc


# --------------------------------------------------------------------------- files

@contextlib.contextmanager
def file_lock(path, timeout=60.0):
    """Exclusive fcntl lock on ``path`` (created if missing), waiting up to ``timeout`` seconds."""
    if not HAS_FCNTL:  # pragma: no cover
        raise FleetError('file locking needs fcntl (POSIX)')
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FleetError('cannot open lock file %s: %s' % (path, exc))
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise FleetError('cannot lock %s: %s' % (path, exc))
                if time.monotonic() >= deadline:
                    raise FleetError('timed out after %.0fs waiting for the registry lock %s (another allocation '
                                     'or registration is running)' % (timeout, path))
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _load_yaml_file(path, what):
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise FleetError('%s %s cannot be read: %s' % (what, path, exc))
    return _load_yaml_text(data, path, what)


def _load_yaml_text(data, path, what):
    try:
        return _yaml.load(data, Loader=_FastLoader)
    except Exception as exc:
        raise FleetError('%s %s is not valid YAML: %s' % (what, path, exc))


if HAS_YAML:
    try:
        from yaml import CSafeLoader as _FastLoader
    except ImportError:  # pragma: no cover
        from yaml import SafeLoader as _FastLoader


class FileRegistry(object):
    """YAML registry file + JSON-formatted allocation file, fcntl lock, atomic writes."""

    kind = 'file'

    def __init__(self, spec, lock_timeout=60.0):
        if not HAS_YAML:
            raise FleetError('PyYAML is required for the file registry')
        self.path = spec['path']
        self.alloc_path = spec['alloc_path']
        self.lock_path = spec['lock_path']
        self.lock_timeout = lock_timeout
        self._extra = {}

    def describe(self):
        return self.path

    def close(self):
        pass

    # registry
    def load_registry(self, missing_ok=False):
        if not os.path.exists(self.path):
            if missing_ok:
                self._extra = {}
                return [], []
            raise FleetError('registry file %s does not exist' % self.path)
        try:
            with open(self.path, 'rb') as handle:
                data = handle.read()
        except (IOError, OSError) as exc:
            raise FleetError('registry file %s cannot be read: %s' % (self.path, exc))
        try:
            doc = parse_registry_text(data.decode('utf-8'))
        except UnicodeDecodeError:
            raise FleetError('registry file %s is not UTF-8' % self.path)
        if doc is None:
            doc = _load_yaml_text(data, self.path, 'registry file')
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise FleetError('registry file %s must be a mapping with "devices:" (and "cloud_hosts:")' % self.path)
        unknown = sorted(set(doc) - TOP_LEVEL_KEYS)
        if unknown:
            raise FleetError('registry file %s: unknown top-level key(s) %s (allowed: devices, cloud_hosts, version)'
                             % (self.path, ', '.join(unknown)))
        self._extra = dict((k, v) for k, v in doc.items() if k not in ('devices', 'cloud_hosts'))
        return normalize_registry(doc.get('devices'), doc.get('cloud_hosts'), self.path)

    def write_registry(self, devices, cloud_hosts):
        atomic_write(self.path, dump_registry_text(devices, cloud_hosts, self._extra))

    # allocation state
    def load_state(self):
        if not os.path.exists(self.alloc_path):
            return alloc_lib.empty_state()
        try:
            with open(self.alloc_path, 'rb') as handle:
                data = handle.read()
        except (IOError, OSError) as exc:
            raise FleetError('allocation file %s cannot be read: %s' % (self.alloc_path, exc))
        if not data.strip():
            return alloc_lib.empty_state()
        try:
            doc = json.loads(data)
        except ValueError:
            doc = _load_yaml_file(self.alloc_path, 'allocation file')  # hand-edited into plain YAML
        return state_from_doc(doc, self.alloc_path)

    def write_state(self, result, stamp):
        atomic_write(self.alloc_path, dump_state_text(result.state, stamp))

    @contextlib.contextmanager
    def transaction(self, write=True):
        """Exclusive lock for writers; readers rely on atomic renames and take none."""
        if not write:
            yield self
            return
        directory = os.path.dirname(self.path) or '.'
        if not os.path.isdir(directory):
            raise FleetError('registry directory %s does not exist' % directory)
        with file_lock(self.lock_path, self.lock_timeout):
            yield self


# --------------------------------------------------------------------------- MySQL / MariaDB

SCHEMA_VERSION = 1


def _ddl(p):
    return [
        """CREATE TABLE IF NOT EXISTS `{p}devices` (
  id VARCHAR(32) NOT NULL PRIMARY KEY,
  site VARCHAR(63) NULL,
  status ENUM('active','disabled','retired') NOT NULL DEFAULT 'active',
  address VARCHAR(255) NULL,
  labels TEXT NULL,
  vars MEDIUMTEXT NULL,
  replica_mode VARCHAR(16) NULL,
  reach VARCHAR(16) NULL,
  ssh_public_key TEXT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}cloud_hosts` (
  name VARCHAR(32) NOT NULL PRIMARY KEY,
  address VARCHAR(255) NULL,
  capacity INT UNSIGNED NULL,
  tunnel_ports VARCHAR(255) NULL,
  replica_ports VARCHAR(255) NULL,
  reserved_ports VARCHAR(1024) NULL,
  drain TINYINT(1) NOT NULL DEFAULT 0,
  vars TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}device_ids` (
  device_id VARCHAR(32) NOT NULL PRIMARY KEY,
  server_id INT UNSIGNED NOT NULL,
  gtid_domain_id INT UNSIGNED NOT NULL,
  UNIQUE KEY uq_server_id (server_id),
  UNIQUE KEY uq_gtid_domain_id (gtid_domain_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}allocations` (
  device_id VARCHAR(32) NOT NULL PRIMARY KEY,
  cloud_host VARCHAR(32) NOT NULL,
  tunnel_mysql_port SMALLINT UNSIGNED NOT NULL,
  tunnel_ssh_port SMALLINT UNSIGNED NOT NULL,
  server_id INT UNSIGNED NOT NULL,
  gtid_domain_id INT UNSIGNED NOT NULL,
  replica_mode VARCHAR(16) NOT NULL,
  replica_instance VARCHAR(64) NOT NULL,
  replica_port SMALLINT UNSIGNED NOT NULL,
  replica_datadir VARCHAR(255) NOT NULL,
  replica_server_id INT UNSIGNED NOT NULL,
  channel_name VARCHAR(64) NOT NULL,
  schema_prefix VARCHAR(64) NOT NULL,
  allocated_at VARCHAR(20) NOT NULL,
  UNIQUE KEY uq_tunnel_mysql (cloud_host, tunnel_mysql_port),
  UNIQUE KEY uq_tunnel_ssh (cloud_host, tunnel_ssh_port),
  UNIQUE KEY uq_alloc_server_id (server_id),
  UNIQUE KEY uq_alloc_domain_id (gtid_domain_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}ports` (
  cloud_host VARCHAR(32) NOT NULL,
  port SMALLINT UNSIGNED NOT NULL,
  kind ENUM('tunnel_mysql','tunnel_ssh','replica','instance','quarantine') NOT NULL,
  owner VARCHAR(64) NOT NULL,
  released_at VARCHAR(20) NULL,
  PRIMARY KEY (cloud_host, port),
  KEY k_owner (owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}instances` (
  cloud_host VARCHAR(32) NOT NULL,
  name VARCHAR(64) NOT NULL,
  mode VARCHAR(16) NOT NULL,
  port SMALLINT UNSIGNED NOT NULL,
  datadir VARCHAR(255) NOT NULL,
  server_id INT UNSIGNED NOT NULL,
  created_at VARCHAR(20) NOT NULL,
  PRIMARY KEY (cloud_host, name),
  UNIQUE KEY uq_instance_port (cloud_host, port),
  UNIQUE KEY uq_instance_server_id (server_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}meta` (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]


RETRYABLE_MYSQL_ERRORS = (1062, 1213, 1205)  # duplicate key, deadlock, lock wait timeout


class MySQLRegistry(object):
    """Registry and allocation state in MySQL/MariaDB tables (see :func:`_ddl`)."""

    kind = 'mysql'

    def __init__(self, spec, lock_timeout=60.0):
        if not HAS_PYMYSQL:
            raise FleetError('the mysql registry needs the PyMySQL Python library')
        self.spec = spec
        self.p = spec['table_prefix']
        self.lock_timeout = int(spec.get('lock_timeout') or lock_timeout)
        self.conn = None
        self.use_lock = True
        self.conflicts = 0
        self._schema_checked = False

    def describe(self):
        return 'mysql://%s:%s/%s' % (self.spec.get('host'), self.spec.get('port'), self.spec.get('database'))

    def connect(self):
        if self.conn is not None:
            return self.conn
        spec = self.spec
        kwargs = dict(host=spec.get('host'), port=spec.get('port'), user=spec.get('user'),
                      password=spec.get('password') or '', database=spec['database'], autocommit=False,
                      charset='utf8mb4', connect_timeout=spec.get('connect_timeout', 10))
        if spec.get('unix_socket'):
            kwargs['unix_socket'] = spec['unix_socket']
        if spec.get('defaults_file'):
            kwargs['read_default_file'] = spec['defaults_file']
        ssl = dict((k[4:], spec[k]) for k in ('ssl_ca', 'ssl_cert', 'ssl_key') if spec.get(k))
        if ssl:
            kwargs['ssl'] = ssl
        try:
            self.conn = pymysql.connect(**kwargs)
        except pymysql.MySQLError as exc:
            raise FleetError('registry %s is unreachable: %s' % (self.describe(), exc))
        with self.conn.cursor() as cur:
            cur.execute('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
            cur.execute('SET SESSION innodb_lock_wait_timeout = %s', (self.lock_timeout,))
        return self.conn

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        self._schema_checked = False

    def ensure_schema(self):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for stmt in _ddl(self.p):
                    cur.execute(stmt.format(p=self.p))
                cur.execute('INSERT IGNORE INTO `{p}meta` (name, value) VALUES (%s, %s), (%s, 0), (%s, 0), (%s, 0), '
                            '(%s, 0)'.format(p=self.p),
                            ('schema_version', SCHEMA_VERSION, 'lock', 'server_id', 'gtid_domain_id', 'replica_server_id'))
            conn.commit()
        except pymysql.MySQLError as exc:
            conn.rollback()
            raise FleetError('registry %s: cannot create tables: %s' % (self.describe(), exc))

    def _query(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql.format(p=self.p), args)
            return cur.fetchall()

    def _many(self, sql, rows):
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.format(p=self.p), rows)

    def _schema_ready(self):
        """True when the tables exist (checked once per connection, without DDL)."""
        if not self._schema_checked:
            try:
                rows = self._query("SELECT value FROM `{p}meta` WHERE name = 'schema_version'")
                self.conn.rollback()
            except pymysql.MySQLError as exc:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                if exc.args and exc.args[0] == 1146:
                    return False
                raise FleetError('registry %s: %s' % (self.describe(), exc))
            if not rows:
                return False
            self._schema_checked = True
        return True

    @contextlib.contextmanager
    def transaction(self, write=True):
        conn = self.connect()
        if write and not self._schema_ready():
            self.ensure_schema()
            self._schema_checked = True
        try:
            conn.begin()
            if write and self.use_lock:
                self._query('SELECT value FROM `{p}meta` WHERE name = %s FOR UPDATE', ('lock',))
            yield self
            if write:
                conn.commit()
            else:
                conn.rollback()
        except pymysql.MySQLError as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            if exc.args and exc.args[0] in RETRYABLE_MYSQL_ERRORS:
                self.conflicts += 1
                raise RetryableConflict(str(exc))
            if exc.args and exc.args[0] == 1146:
                raise FleetError('registry %s has no edgefleet tables yet (run the registry or allocation module '
                                 'once to create them): %s' % (self.describe(), exc))
            raise FleetError('registry %s: %s' % (self.describe(), exc))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    # registry
    def load_registry(self, missing_ok=False):
        rows = self._query('SELECT id, site, status, address, labels, vars, replica_mode, reach, ssh_public_key '
                           'FROM `{p}devices` ORDER BY id')
        devices = []
        for row in rows:
            raw = {'id': row[0], 'status': row[2]}
            if row[1] is not None:
                raw['site'] = row[1]
            if row[3] is not None:
                raw['address'] = row[3]
            if row[4]:
                raw['labels'] = _json_field(row[4], row[0], 'labels')
            if row[5]:
                raw['vars'] = _json_field(row[5], row[0], 'vars')
            if row[6]:
                raw['replica_mode'] = row[6]
            if row[7]:
                raw['reach'] = row[7]
            if row[8]:
                raw['ssh_public_key'] = row[8]
            devices.append(raw)
        hosts = []
        for row in self._query('SELECT name, address, capacity, tunnel_ports, replica_ports, reserved_ports, drain, '
                               'vars FROM `{p}cloud_hosts` ORDER BY name'):
            raw = {'name': row[0], 'address': row[1], 'capacity': row[2], 'drain': bool(row[6])}
            for i, key in ((3, 'tunnel_ports'), (4, 'replica_ports'), (5, 'reserved_ports')):
                if row[i]:
                    raw[key] = [part.strip() for part in row[i].split(',') if part.strip()]
            if row[7]:
                raw['vars'] = _json_field(row[7], row[0], 'vars')
            hosts.append(raw)
        return normalize_registry(devices, hosts, self.describe())

    def get_device(self, dev_id, for_update=False):
        rows = self._query('SELECT id FROM `{p}devices` WHERE id = %s' + (' FOR UPDATE' if for_update else ''),
                           (dev_id,))
        if not rows:
            return None
        devices, _hosts = self._load_one(dev_id)
        return devices

    def _load_one(self, dev_id):
        row = self._query('SELECT id, site, status, address, labels, vars, replica_mode, reach, ssh_public_key '
                          'FROM `{p}devices` WHERE id = %s', (dev_id,))[0]
        raw = {'id': row[0], 'status': row[2], 'site': row[1], 'address': row[3],
               'labels': _json_field(row[4], row[0], 'labels') if row[4] else None,
               'vars': _json_field(row[5], row[0], 'vars') if row[5] else None,
               'replica_mode': row[6] or None, 'reach': row[7] or None, 'ssh_public_key': row[8] or None}
        return normalize_device(raw), None

    def upsert_device(self, dev):
        self._query('INSERT INTO `{p}devices` (id, site, status, address, labels, vars, replica_mode, reach, '
                    'ssh_public_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE '
                    'site = VALUES(site), status = VALUES(status), address = VALUES(address), labels = VALUES(labels), '
                    'vars = VALUES(vars), replica_mode = VALUES(replica_mode), reach = VALUES(reach), '
                    'ssh_public_key = VALUES(ssh_public_key)',
                    (dev['id'], dev['site'], dev['status'], dev['address'],
                     json.dumps(dev['labels'], sort_keys=True) if dev['labels'] else None,
                     json.dumps(dev['vars'], sort_keys=True) if dev['vars'] else None,
                     dev['replica_mode'], dev['reach'], dev['ssh_public_key']))

    def upsert_cloud_host(self, host):
        def ranges(value):
            return ','.join(format_port_ranges(value)) if value else None
        self._query('INSERT INTO `{p}cloud_hosts` (name, address, capacity, tunnel_ports, replica_ports, '
                    'reserved_ports, drain, vars) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE '
                    'address = VALUES(address), capacity = VALUES(capacity), tunnel_ports = VALUES(tunnel_ports), '
                    'replica_ports = VALUES(replica_ports), reserved_ports = VALUES(reserved_ports), '
                    'drain = VALUES(drain), vars = VALUES(vars)',
                    (host['name'], host['address'], host['capacity'], ranges(host['tunnel_ports']),
                     ranges(host['replica_ports']),
                     ','.join(str(p) for p in host['reserved_ports']) or None, 1 if host['drain'] else 0,
                     json.dumps(host['vars'], sort_keys=True) if host['vars'] else None))

    def delete_cloud_host(self, name):
        self._query('DELETE FROM `{p}cloud_hosts` WHERE name = %s', (name,))

    # allocation state
    def load_state(self):
        state = alloc_lib.empty_state()
        cols = alloc_lib.RECORD_KEYS
        rows = self._query('SELECT device_id, cloud_host, tunnel_mysql_port, tunnel_ssh_port, server_id, gtid_domain_id, '
                           'replica_mode, replica_instance, replica_port, replica_datadir, replica_server_id, '
                           'channel_name, schema_prefix, allocated_at FROM `{p}allocations`')
        allocations = state['allocations']
        for row in rows:
            allocations[row[0]] = dict(zip(cols, row))
        ids = state['ids']
        for row in self._query('SELECT device_id, server_id, gtid_domain_id FROM `{p}device_ids`'):
            ids[row[0]] = {'server_id': row[1], 'gtid_domain_id': row[2]}
        for row in self._query('SELECT cloud_host, name, mode, port, datadir, server_id, created_at FROM `{p}instances`'):
            state['instances'][(row[0], row[1])] = dict(zip(alloc_lib.INSTANCE_KEYS, row))
        for row in self._query("SELECT cloud_host, port, owner, released_at FROM `{p}ports` WHERE kind = 'quarantine'"):
            state['quarantine'][(row[0], row[1])] = {'released_at': row[3], 'owner': row[2]}
        for row in self._query("SELECT name, value FROM `{p}meta` WHERE name IN "
                               "('server_id', 'gtid_domain_id', 'replica_server_id')"):
            state['counters'][row[0]] = int(row[1])
        return state

    def write_state(self, result, stamp):
        """Persist the delta of one allocation run (inside the open transaction)."""
        if result.quarantine_del:
            self._many("DELETE FROM `{p}ports` WHERE cloud_host = %s AND port = %s AND kind = 'quarantine'",
                       list(result.quarantine_del))
        for key in result.inst_del:
            self._query('DELETE FROM `{p}instances` WHERE cloud_host = %s AND name = %s', key)
            self._query("DELETE FROM `{p}ports` WHERE cloud_host = %s AND owner = %s AND kind = 'instance'",
                        (key[0], 'instance:' + key[1]))
        if result.alloc_del:
            self._many('DELETE FROM `{p}allocations` WHERE device_id = %s', [(d,) for d in result.alloc_del])
            self._many("DELETE FROM `{p}ports` WHERE owner = %s AND kind IN ('tunnel_mysql', 'tunnel_ssh', 'replica')",
                       [(d,) for d in result.alloc_del])
        if result.quarantine_add:
            self._many("INSERT INTO `{p}ports` (cloud_host, port, kind, owner, released_at) "
                       "VALUES (%s, %s, 'quarantine', %s, %s)",
                       [(h, port, e['owner'], e['released_at']) for h, port, e in result.quarantine_add])
        if result.ids_add:
            self._many('INSERT INTO `{p}device_ids` (device_id, server_id, gtid_domain_id) VALUES (%s, %s, %s)',
                       [(d, v['server_id'], v['gtid_domain_id']) for d, v in result.ids_add.items()])
        if result.inst_add:
            self._many('INSERT INTO `{p}instances` (cloud_host, name, mode, port, datadir, server_id, created_at) '
                       'VALUES (%s, %s, %s, %s, %s, %s, %s)',
                       [tuple(i[k] for k in alloc_lib.INSTANCE_KEYS) for i in result.inst_add])
            self._many("INSERT INTO `{p}ports` (cloud_host, port, kind, owner) VALUES (%s, %s, 'instance', %s)",
                       [(i['cloud_host'], i['port'], 'instance:' + i['name']) for i in result.inst_add])
        if result.alloc_add:
            recs = list(result.alloc_add.values())
            self._many('INSERT INTO `{p}allocations` (device_id, cloud_host, tunnel_mysql_port, tunnel_ssh_port, '
                       'server_id, gtid_domain_id, replica_mode, replica_instance, replica_port, replica_datadir, '
                       'replica_server_id, channel_name, schema_prefix, allocated_at) '
                       'VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)',
                       [tuple(r[k] for k in alloc_lib.RECORD_KEYS) for r in recs])
            ports = []
            for r in recs:
                ports.append((r['cloud_host'], r['tunnel_mysql_port'], 'tunnel_mysql', r['id']))
                ports.append((r['cloud_host'], r['tunnel_ssh_port'], 'tunnel_ssh', r['id']))
                if r['replica_mode'] == 'instance':
                    ports.append((r['cloud_host'], r['replica_port'], 'replica', r['id']))
            self._many('INSERT INTO `{p}ports` (cloud_host, port, kind, owner) VALUES (%s, %s, %s, %s)', ports)
        changed_counters = [(v, k) for k, v in result.counters.items() if result.counters_before.get(k) != v]
        self._many('UPDATE `{p}meta` SET value = %s WHERE name = %s', changed_counters)


class RetryableConflict(Exception):
    """A concurrent writer won (duplicate key, deadlock): roll back and run again."""


def _json_field(text, owner, field):
    try:
        return json.loads(text)
    except ValueError:
        raise FleetError('device %s: field "%s" in the registry table is not valid JSON' % (owner, field))


def open_registry(spec, lock_timeout=60.0):
    if spec['type'] == 'file':
        return FileRegistry(spec, lock_timeout)
    return MySQLRegistry(spec, lock_timeout)


def read_snapshot(spec, lock_timeout=60.0):
    """(devices, cloud_hosts, state) read in one read-only transaction of the registry ``spec``."""
    registry = open_registry(spec, lock_timeout)
    try:
        with registry.transaction(write=False) as tx:
            devices, cloud_hosts = tx.load_registry()
            return devices, cloud_hosts, tx.load_state()
    finally:
        registry.close()


def with_retries(func, attempts=5):
    """Run ``func()`` again when a concurrent writer made it conflict (DB backend)."""
    for attempt in range(attempts):
        try:
            return func()
        except RetryableConflict as exc:
            if attempt == attempts - 1:
                raise FleetError('gave up after %d conflicting concurrent writes: %s' % (attempts, exc))
            time.sleep(0.05 * (attempt + 1))
    return None  # pragma: no cover
