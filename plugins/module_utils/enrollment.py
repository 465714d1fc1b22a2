# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero-touch enrollment: request validation, enrollment tokens, the enroll transaction.

Pure logic shared by the enrollment service (``module_utils/enrollment_service``), its
CLI and the tests. Nothing here imports a web framework.

* A device sends ``{token, device_id, site, labels, tunnel_public_key, host_public_key}``;
  :func:`validate_request` checks every field (ids, sites and labels with the registry's own
  checks, keys parsed down to their key material) and raises :class:`EnrollError` naming it.
* Tokens are ``efe1.<token id>.<secret>``; only ``sha256(token)`` is stored, compared in
  constant time. Operator credentials (``efo1.<name>.<secret>``) likewise.
* :func:`enroll` runs in ONE registry transaction: token checks, the device row and its
  allocation (``registry_ops.update_device_locked`` + ``allocate_locked``: the code
  ``register.yml`` runs), the token use. Any error rolls all of it back (MySQL: the
  transaction; file registry: the files are restored under the lock before it is released).

Where the enrollment state lives: MySQL registry - table ``<prefix>enroll`` in the registry
database; file registry - ``.<registry file>.enroll.json`` (mode 0600) next to the registry file,
written under the registry's lock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
import threading
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, check_device_id, check_site, check_labels,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import check_public_key
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import with_retries
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import placement_signature
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import (
    update_device_locked, allocate_locked,
)

# The device's SSH host key lives in the registry as this device var: the inventory exposes it as
# a host var and known_hosts_text() renders "<device id> <key>" lines for HostKeyAlias=<device id>.
HOST_KEY_VAR = 'edgefleet_host_public_key'

MAX_BODY = 16 * 1024
MAX_LABELS = 32
MAX_LABEL_VALUE = 128
LABEL_VALUE_RE = re.compile(r'^[A-Za-z0-9_.:/@+=-]{0,128}$')
REQUEST_FIELDS = ('token', 'device_id', 'site', 'labels', 'tunnel_public_key', 'host_public_key')
REQUIRED_FIELDS = ('token', 'device_id', 'tunnel_public_key', 'host_public_key')
TOKEN_PREFIX = 'efe1'
OPERATOR_PREFIX = 'efo1'
TOKEN_RE = re.compile(r'^efe1\.([a-f0-9]{12})\.([A-Za-z0-9_-]{43})$')
OPERATOR_RE = re.compile(r'^efo1\.([a-z][a-z0-9_]{0,31})\.([A-Za-z0-9_-]{43})$')
OPERATOR_NAME_RE = re.compile(r'^[a-z][a-z0-9_]{0,31}$')
NOTE_RE = re.compile(r'^[^\x00-\x1f\x7f]{0,200}$')
MIN_RSA_BITS = 3072
ECDSA_CURVES = {'ecdsa-sha2-nistp256': ('nistp256', 65), 'ecdsa-sha2-nistp384': ('nistp384', 97),
                'ecdsa-sha2-nistp521': ('nistp521', 133)}
WEAK_TYPES = ('ssh-dss', 'ssh-dsa')
STATE_FORMAT = 'edgefleet.mysql_backup.enrollment'


class EnrollError(Exception):
    """A refused request: HTTP status, machine code, a sentence naming the field or problem."""

    def __init__(self, status, code, message):
        super(EnrollError, self).__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_dict(self):
        return {'error': self.code, 'message': self.message}


# --------------------------------------------------------------------------- keys

def _ssh_strings(blob):
    """Split an SSH wire-format blob into its length-prefixed strings."""
    out = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError('truncated length')
        (size,) = struct.unpack('>I', blob[pos:pos + 4])
        pos += 4
        if size > len(blob) - pos:
            raise ValueError('truncated string')
        out.append(blob[pos:pos + size])
        pos += size
    return out


def parse_public_key(value, field):
    """Check an OpenSSH public key line down to its key material; return ``"<type> <base64>"``.

    Accepted: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa of at least 3072 bits.
    The comment is dropped (the registry's authorized_keys template appends the device id).
    """
    if not isinstance(value, str):
        raise EnrollError(400, 'invalid_public_key', 'field "%s" must be a string holding one OpenSSH public key '
                          'line ("ssh-ed25519 AAAA...")' % field)
    parts = value.strip().split()
    if parts and parts[0] in WEAK_TYPES:
        raise EnrollError(400, 'weak_key', 'field "%s": DSA keys (%s) are refused; use ssh-ed25519 (or ecdsa, '
                          'or ssh-rsa of at least %d bits)' % (field, parts[0], MIN_RSA_BITS))
    try:
        line = check_public_key(value, 'field "%s"' % field)
    except FleetError as exc:
        raise EnrollError(400, 'invalid_public_key', str(exc).replace('field "ssh_public_key" ', '')
                          + ': not an OpenSSH public key')
    if not line:
        raise EnrollError(400, 'invalid_public_key', 'field "%s" is empty' % field)
    ktype, b64 = line.split()[:2]
    if ktype.startswith('sk-'):
        raise EnrollError(400, 'weak_key', 'field "%s": security-key types (%s) need a person to touch the key; '
                          'a device enrolls unattended, use ssh-ed25519' % (field, ktype))
    try:
        blob = base64.b64decode(b64, validate=True)
        strings = _ssh_strings(blob)
    except (binascii.Error, ValueError):
        raise EnrollError(400, 'invalid_public_key', 'field "%s": the base64 part is not an SSH public key blob'
                          % field)
    if not strings or strings[0] != ktype.encode('ascii'):
        raise EnrollError(400, 'invalid_public_key', 'field "%s": the key blob says %r, the line says %r'
                          % (field, strings[0].decode('ascii', 'replace') if strings else '', ktype))
    if ktype == 'ssh-ed25519':
        if len(strings) != 2 or len(strings[1]) != 32:
            raise EnrollError(400, 'invalid_public_key', 'field "%s": an ssh-ed25519 key holds 32 bytes' % field)
    elif ktype == 'ssh-rsa':
        if len(strings) != 3:
            raise EnrollError(400, 'invalid_public_key', 'field "%s": malformed ssh-rsa key' % field)
        bits = int.from_bytes(strings[2], 'big').bit_length()
        if bits < MIN_RSA_BITS:
            raise EnrollError(400, 'weak_key', 'field "%s": RSA key of %d bits is too short (at least %d; '
                              'ssh-ed25519 is preferred)' % (field, bits, MIN_RSA_BITS))
    elif ktype in ECDSA_CURVES:
        curve, size = ECDSA_CURVES[ktype]
        if len(strings) != 3 or strings[1] != curve.encode('ascii') or len(strings[2]) != size \
                or strings[2][:1] != b'\x04':
            raise EnrollError(400, 'invalid_public_key', 'field "%s": malformed %s key' % (field, ktype))
    else:
        raise EnrollError(400, 'weak_key', 'field "%s": key type %s is not accepted (ssh-ed25519, ecdsa-sha2-nistp*, '
                          'ssh-rsa >= %d bits)' % (field, ktype, MIN_RSA_BITS))
    return '%s %s' % (ktype, b64)


def key_material(line):
    """``"<type> <base64>"`` of a stored key line (comment ignored), or None."""
    if not line:
        return None
    parts = line.split()
    return ' '.join(parts[:2]) if len(parts) >= 2 else None


def fingerprint(line):
    """OpenSSH SHA256 fingerprint of a key line."""
    material = key_material(line)
    if not material:
        return None
    digest = hashlib.sha256(base64.b64decode(material.split()[1])).digest()
    return 'SHA256:' + base64.b64encode(digest).decode('ascii').rstrip('=')


# --------------------------------------------------------------------------- request

def parse_body(data):
    """Bytes of a request body -> dict, or EnrollError (size, encoding, JSON, type)."""
    if data is None or len(data) == 0:
        raise EnrollError(400, 'empty_body', 'the request body is empty: send a JSON object with token, device_id, '
                          'tunnel_public_key and host_public_key')
    if len(data) > MAX_BODY:
        raise EnrollError(413, 'body_too_large', 'the request body is larger than %d bytes' % MAX_BODY)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise EnrollError(400, 'invalid_encoding', 'the request body is not UTF-8')
    try:
        doc = json.loads(text)
    except RecursionError:
        raise EnrollError(400, 'malformed_json', 'the request body is not valid JSON (nested too deeply)')
    except ValueError as exc:
        raise EnrollError(400, 'malformed_json', 'the request body is not valid JSON (%s at line %d column %d)'
                          % (getattr(exc, 'msg', 'error'), getattr(exc, 'lineno', 0), getattr(exc, 'colno', 0)))
    if not isinstance(doc, dict):
        raise EnrollError(400, 'malformed_json', 'the request body must be a JSON object, got %s'
                          % type(doc).__name__)
    return doc


def check_fields(doc, allowed, required):
    """EnrollError for a field outside ``allowed`` or a ``required`` one missing or empty."""
    unknown = sorted(k for k in doc if k not in allowed)
    if unknown:
        raise EnrollError(400, 'unknown_field', 'unknown field(s) %s (allowed: %s)'
                          % (', '.join(repr(k[:40]) for k in unknown[:5]), ', '.join(allowed)))
    missing = [k for k in required if doc.get(k) in (None, '')]
    if missing:
        raise EnrollError(400, 'missing_field', 'missing required field(s): %s' % ', '.join(missing))


def validate_request(doc):
    """Check an enroll request; returns a normalized dict. Raises EnrollError naming the field."""
    check_fields(doc, REQUEST_FIELDS, REQUIRED_FIELDS)
    token = doc['token']
    if not isinstance(token, str) or len(token) > 256:
        raise EnrollError(400, 'invalid_token', 'field "token" must be a string of at most 256 characters')
    try:
        device_id = check_device_id(doc['device_id'], 'field "device_id"')
    except FleetError as exc:
        message = _short(str(exc)).replace('field "device_id": field "id"', 'field "device_id"')
        raise EnrollError(400, 'invalid_device_id', message)
    try:
        site = check_site(doc.get('site'), 'field "site"')
    except FleetError as exc:
        message = _short(str(exc)).replace('field "site": field "site"', 'field "site"')
        raise EnrollError(400, 'invalid_site', message)
    labels_raw = doc.get('labels')
    if labels_raw is not None and isinstance(labels_raw, dict) and len(labels_raw) > MAX_LABELS:
        raise EnrollError(400, 'invalid_labels', 'field "labels" has %d entries (at most %d)'
                          % (len(labels_raw), MAX_LABELS))
    try:
        labels = check_labels(labels_raw, 'field "labels"')
    except FleetError as exc:
        message = _short(str(exc)).replace('field "labels": field "labels"', 'field "labels"')
        raise EnrollError(400, 'invalid_labels', message)
    for key, val in labels.items():
        if not LABEL_VALUE_RE.fullmatch(val):
            raise EnrollError(400, 'invalid_labels', 'field "labels.%s" value must be at most %d characters of '
                              'letters, digits and _.:/@+=-' % (key, MAX_LABEL_VALUE))
    tunnel_key = parse_public_key(doc['tunnel_public_key'], 'tunnel_public_key')
    host_key = parse_public_key(doc['host_public_key'], 'host_public_key')
    if tunnel_key == host_key:
        raise EnrollError(400, 'invalid_public_key', 'fields "tunnel_public_key" and "host_public_key" are the same '
                          'key: the tunnel key must be a key pair of its own')
    return {'token': token, 'device_id': device_id, 'site': site, 'labels': labels,
            'tunnel_public_key': tunnel_key, 'host_public_key': host_key}


def _short(text, limit=300):
    return text if len(text) <= limit else text[:limit] + '...'


# --------------------------------------------------------------------------- secrets

def hash_secret(text):
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def new_token():
    """Return (token id, token). The token is shown once; only its sha256 is stored."""
    token_id = secrets.token_hex(6)
    return token_id, '%s.%s.%s' % (TOKEN_PREFIX, token_id, secrets.token_urlsafe(32))


def new_operator_credential(name):
    check_operator_name(name)
    return '%s.%s.%s' % (OPERATOR_PREFIX, name, secrets.token_urlsafe(32))


def check_operator_name(name):
    if not isinstance(name, str) or not OPERATOR_NAME_RE.fullmatch(name):
        raise FleetError('operator name %r must match %s' % (name, OPERATOR_NAME_RE.pattern))
    return name


_DUMMY_HASH = hash_secret('edgefleet-no-such-token')


def secret_matches(stored_hash, text):
    """Constant-time comparison of sha256(text) with a stored hex digest (None: compare a dummy)."""
    return hmac.compare_digest(stored_hash or _DUMMY_HASH, hash_secret(text)) and stored_hash is not None


def parse_duration(text):
    """``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` or seconds -> seconds (float)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = re.fullmatch(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*', str(text))
    if not match:
        raise FleetError('duration %r must be a number followed by s, m, h, d or w' % (text,))
    scale = {'': 1, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}[match.group(2)]
    return float(match.group(1)) * scale


def make_token_record(token, max_uses=1, expires_in=None, sites=None, labels=None, device_id=None, note=None,
                      now=None):
    """The stored form of a new token (no secret in it)."""
    now = time.time() if now is None else now
    match = TOKEN_RE.fullmatch(token)
    if not match:
        raise FleetError('not an enrollment token')
    if isinstance(max_uses, bool) or not isinstance(max_uses, int) or not 1 <= max_uses <= 1000000:
        raise FleetError('max_uses must be an integer from 1 to 1000000, got %r' % (max_uses,))
    sites = sorted(set(check_site(s, 'token sites') for s in (sites or [])))
    labels = check_labels(labels or {}, 'token labels')
    for key, val in labels.items():
        if not LABEL_VALUE_RE.fullmatch(val):
            raise FleetError('token labels.%s: value must be letters, digits and _.:/@+=-' % key)
    if device_id is not None:
        check_device_id(device_id, 'token device_id')
    if note is not None and not NOTE_RE.fullmatch(note):
        raise FleetError('token note must be at most 200 printable characters')
    expires = None
    if expires_in is not None:
        seconds = parse_duration(expires_in)
        if seconds <= 0:
            raise FleetError('token expiry must be in the future')
        expires = now + seconds
    return {'id': match.group(1), 'hash': hash_secret(token), 'created_at': now, 'expires_at': expires,
            'max_uses': max_uses, 'uses': 0, 'sites': sites, 'labels': labels, 'device_id': device_id,
            'revoked_at': None, 'note': note, 'last_used_at': None}


def token_view(rec, now=None):
    """What `token list` shows: everything but the hash."""
    now = time.time() if now is None else now
    out = dict((k, v) for k, v in rec.items() if k != 'hash')
    if rec.get('revoked_at'):
        out['state'] = 'revoked'
    elif rec.get('expires_at') is not None and rec['expires_at'] <= now:
        out['state'] = 'expired'
    elif rec['uses'] >= rec['max_uses']:
        out['state'] = 'exhausted'
    else:
        out['state'] = 'valid'
    return out


# --------------------------------------------------------------------------- state store

MYSQL_DDL = """CREATE TABLE IF NOT EXISTS `{p}enroll` (
  kind VARCHAR(16) NOT NULL,
  name VARCHAR(64) NOT NULL,
  data TEXT NOT NULL,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (kind, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""

KINDS = ('token', 'operator', 'rotation')


def state_path(registry):
    """File registry: where tokens, operator credentials and rotation allowances live."""
    return os.path.join(os.path.dirname(registry.path), '.%s.enroll.json' % os.path.basename(registry.path))


def ensure_schema(registry):
    """Create the enrollment table (MySQL) next to the registry tables; no-op for files."""
    _STORES[registry.kind].ensure_schema(registry)


class _FileEnrollStore(object):
    """Enrollment records in a JSON file next to the registry file (mode 0600), written by
    :meth:`flush` before the registry lock is released."""

    def __init__(self, tx):
        self.tx = tx
        self.dirty = False
        self.path = state_path(tx)
        self.doc = _read_state_file(self.path)

    @staticmethod
    def ensure_schema(registry):
        return None

    @staticmethod
    def snapshot(registry):
        """The files an enrollment may change, to put back if it fails half-way (files have no
        rollback; the database has)."""
        return _FileSnapshot(registry)

    def get(self, kind, name, for_update=False):
        rec = self.doc[kind].get(name)
        return dict(rec) if rec is not None else None

    def all(self, kind):
        return dict((k, dict(v)) for k, v in self.doc[kind].items())

    def put(self, kind, name, rec):
        self.doc[kind][name] = rec
        self.dirty = True

    def delete(self, kind, name):
        if self.doc[kind].pop(name, None) is not None:
            self.dirty = True

    def flush(self):
        if self.dirty:
            atomic_write(self.path, json.dumps(self.doc, sort_keys=True, indent=1) + '\n', mode=0o600)
            self.dirty = False


class _MySQLEnrollStore(object):
    """Enrollment records in the ``<prefix>enroll`` table, inside the registry's transaction."""

    def __init__(self, tx):
        self.tx = tx

    @staticmethod
    def ensure_schema(registry):
        with registry.transaction(write=True) as tx:
            with tx.conn.cursor() as cur:
                cur.execute(MYSQL_DDL.format(p=tx.p))

    @staticmethod
    def snapshot(registry):
        return None  # the transaction's rollback undoes everything

    def get(self, kind, name, for_update=False):
        with self.tx.conn.cursor() as cur:
            cur.execute('SELECT data FROM `%senroll` WHERE kind = %%s AND name = %%s%s'
                        % (self.tx.p, ' FOR UPDATE' if for_update else ''), (kind, name))
            row = cur.fetchone()
        return json.loads(row[0]) if row else None

    def all(self, kind):
        with self.tx.conn.cursor() as cur:
            cur.execute('SELECT name, data FROM `%senroll` WHERE kind = %%s ORDER BY name' % self.tx.p, (kind,))
            return dict((row[0], json.loads(row[1])) for row in cur.fetchall())

    def put(self, kind, name, rec):
        with self.tx.conn.cursor() as cur:
            cur.execute('INSERT INTO `%senroll` (kind, name, data) VALUES (%%s, %%s, %%s) ON DUPLICATE KEY UPDATE '
                        'data = VALUES(data)' % self.tx.p, (kind, name, json.dumps(rec, sort_keys=True)))

    def delete(self, kind, name):
        with self.tx.conn.cursor() as cur:
            cur.execute('DELETE FROM `%senroll` WHERE kind = %%s AND name = %%s' % self.tx.p, (kind, name))

    def flush(self):
        return None  # written in the transaction


# Enrollment records beside each registry backend (the registry keeps devices and allocations).
_STORES = {'file': _FileEnrollStore, 'mysql': _MySQLEnrollStore}


def EnrollStore(tx):  # pylint: disable=invalid-name
    """Enrollment records (tokens, operators, rotations) inside an open registry transaction."""
    return _STORES[tx.kind](tx)


def _read_state_file(path):
    empty = {'format': STATE_FORMAT, 'version': 1, 'token': {}, 'operator': {}, 'rotation': {}}
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except FileNotFoundError:
        return empty
    except OSError as exc:
        raise FleetError('enrollment state %s cannot be read: %s' % (path, exc))
    try:
        doc = json.loads(data) if data.strip() else empty
    except ValueError:
        raise FleetError('enrollment state %s is not valid JSON' % path)
    if not isinstance(doc, dict) or doc.get('format') != STATE_FORMAT:
        raise FleetError('enrollment state %s is not an edgefleet enrollment file' % path)
    for kind in KINDS:
        doc.setdefault(kind, {})
    return doc


@contextlib.contextmanager
def store_transaction(registry, write=True):
    """A registry transaction with the enrollment store; file changes flushed before the lock ends."""
    _ensure_once(registry)
    with registry.transaction(write=write) as tx:
        store = EnrollStore(tx)
        yield store
        if write:
            store.flush()


_SCHEMA_DONE = set()
_SCHEMA_LOCK = threading.Lock()


def _ensure_once(registry):
    key = registry.describe() + '/' + getattr(registry, 'p', '')
    with _SCHEMA_LOCK:
        if key in _SCHEMA_DONE:
            return
    ensure_schema(registry)
    with _SCHEMA_LOCK:
        _SCHEMA_DONE.add(key)


# --------------------------------------------------------------------------- operator commands

def create_token(registry, **kwargs):
    """Create a token; returns (token, record view). The token itself is never stored."""
    token_id, token = new_token()
    rec = make_token_record(token, **kwargs)
    with store_transaction(registry) as store:
        store.put('token', token_id, rec)
    return token, token_view(rec)


def list_tokens(registry, now=None):
    with store_transaction(registry, write=False) as store:
        records = store.all('token')
    return [token_view(records[k], now) for k in sorted(records, key=lambda k: (records[k]['created_at'], k))]


def revoke_token(registry, token_id, now=None):
    """Revoke a token by its id; returns True when it changed."""
    now = time.time() if now is None else now
    with store_transaction(registry) as store:
        rec = store.get('token', token_id, for_update=True)
        if rec is None:
            raise FleetError('token %s: no such token' % token_id)
        if rec.get('revoked_at'):
            return False
        rec['revoked_at'] = now
        store.put('token', token_id, rec)
    return True


def create_operator(registry, name, now=None):
    """Create (or replace) an operator credential; returns the credential (shown once)."""
    now = time.time() if now is None else now
    credential = new_operator_credential(name)
    with store_transaction(registry) as store:
        store.put('operator', name, {'name': name, 'hash': hash_secret(credential), 'created_at': now})
    return credential


def list_operators(registry):
    with store_transaction(registry, write=False) as store:
        records = store.all('operator')
    return [{'name': k, 'created_at': records[k]['created_at']} for k in sorted(records)]


def revoke_operator(registry, name):
    with store_transaction(registry) as store:
        if store.get('operator', name) is None:
            return False
        store.delete('operator', name)
    return True


def check_operator(registry, header):
    """True when ``header`` is ``Bearer <a valid operator credential>``."""
    if not isinstance(header, str) or not header.startswith('Bearer '):
        return False
    credential = header[7:].strip()
    match = OPERATOR_RE.fullmatch(credential)
    name = match.group(1) if match else None
    rec = None
    if name is not None:
        with store_transaction(registry, write=False) as store:
            rec = store.get('operator', name)
    return secret_matches(rec['hash'] if rec else None, credential)


def allow_rotation(registry, device_id, expires_in='24h', now=None):
    """Let the next enrollment of ``device_id`` replace its keys (one use, expires)."""
    now = time.time() if now is None else now
    check_device_id(device_id, 'device')
    with store_transaction(registry) as store:
        store.put('rotation', device_id, {'device_id': device_id, 'created_at': now,
                                          'expires_at': now + parse_duration(expires_in)})


# --------------------------------------------------------------------------- service config

def normalize_service_config(raw):
    """Validate the service's settings that enroll() uses (cloud hosts, tunnel user, keys)."""
    if not isinstance(raw, dict):
        raise FleetError('enrollment config must be a mapping')
    clouds = {}
    for name, entry in (raw.get('cloud_hosts') or {}).items():
        if not isinstance(entry, dict):
            raise FleetError('enrollment config cloud_hosts.%s must be a mapping' % name)
        keys = entry.get('host_keys') or []
        if isinstance(keys, str):
            keys = [keys]
        checked = []
        for key in keys:
            try:
                checked.append(parse_public_key(key, 'cloud_hosts.%s.host_keys' % name))
            except EnrollError as exc:
                raise FleetError('enrollment config: %s' % exc.message)
        port = entry.get('ssh_port', 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise FleetError('enrollment config cloud_hosts.%s.ssh_port must be a port number' % name)
        clouds[name] = {'address': entry.get('address') or None, 'ssh_port': port, 'host_keys': checked}
    mgmt = []
    for key in raw.get('management_public_keys') or []:
        try:
            mgmt.append(parse_public_key(key, 'management_public_keys'))
        except EnrollError as exc:
            raise FleetError('enrollment config: %s' % exc.message)
    tunnel_user = raw.get('tunnel_user') or 'edgefleet-tunnel'
    if not re.fullmatch(r'[a-z_][a-z0-9_-]{0,31}', tunnel_user):
        raise FleetError('enrollment config tunnel_user %r is not a user name' % tunnel_user)
    return {'cloud_hosts': clouds, 'management_public_keys': mgmt, 'tunnel_user': tunnel_user}


# --------------------------------------------------------------------------- enroll

def _check_token(store, token, req, now):
    match = TOKEN_RE.fullmatch(token)
    token_id = match.group(1) if match else None
    rec = store.get('token', token_id, for_update=True) if token_id else None
    if not secret_matches(rec['hash'] if rec else None, token):
        raise EnrollError(401, 'unknown_token', 'field "token": unknown enrollment token')
    if rec.get('revoked_at'):
        raise EnrollError(401, 'token_revoked', 'field "token": this enrollment token (id %s) was revoked'
                          % token_id)
    if rec.get('expires_at') is not None and rec['expires_at'] <= now:
        raise EnrollError(401, 'token_expired', 'field "token": this enrollment token (id %s) has expired'
                          % token_id)
    if rec.get('device_id') and rec['device_id'] != req['device_id']:
        raise EnrollError(403, 'token_device_mismatch', 'field "device_id": this enrollment token is bound to another '
                          'device id')
    for key, val in (rec.get('labels') or {}).items():
        if key in req['labels'] and req['labels'][key] != val:
            raise EnrollError(403, 'token_label_mismatch', 'field "labels.%s": this enrollment token requires %s=%s'
                              % (key, key, val))
    return token_id, rec


def _resolve_site(rec, req, current):
    site = req['site']
    if current is not None and current.get('site') and site and site != current['site']:
        raise EnrollError(409, 'site_mismatch', 'field "site": device %s is registered at site %s, not %s (moving '
                          'a device between sites is an operator change)' % (req['device_id'], current['site'], site))
    if site is None and current is not None:
        site = current.get('site')
    sites = rec.get('sites') or []
    if site is None and len(sites) == 1:
        site = sites[0]
    if sites and site is None:
        raise EnrollError(400, 'missing_field', 'field "site" is required: this enrollment token is limited to '
                          'sites %s' % ', '.join(sites))
    if sites and site not in sites:
        raise EnrollError(403, 'token_site_mismatch', 'field "site": this enrollment token is not valid for site %s'
                          % site)
    return site


def _enroll_locked(tx, registry, policy, config, req, now):
    store = EnrollStore(tx)
    token_id, tok = _check_token(store, req['token'], req, now)
    dev_id = req['device_id']
    current = tx.get_device(dev_id, for_update=True)
    if current is None and tx.get_cloud_host(dev_id) is not None:
        raise EnrollError(409, 'id_taken', 'field "device_id": %s is the name of a cloud host (inventory host names '
                          'must be unique)' % dev_id)
    site = _resolve_site(tok, req, current)
    tunnel_key = req['tunnel_public_key']
    host_key = req['host_public_key']
    outcome = 'created'
    if current is not None:
        if current['status'] != 'active':
            raise EnrollError(403, 'device_%s' % current['status'], 'field "device_id": device %s is %s and cannot '
                              'enroll (an operator must re-activate it first)' % (dev_id, current['status']))
        old_tunnel = key_material(current.get('ssh_public_key'))
        old_host = key_material((current.get('vars') or {}).get(HOST_KEY_VAR))
        if old_tunnel == tunnel_key and old_host == host_key:
            outcome = 'repeated'
        elif old_tunnel is None and old_host is None:
            outcome = 'claimed'
        else:
            rotation = store.get('rotation', dev_id, for_update=True)
            if rotation is None or rotation['expires_at'] <= now:
                raise EnrollError(409, 'key_mismatch', 'field "tunnel_public_key"/"host_public_key": device %s is '
                                  'already enrolled with other keys; an operator must allow a key rotation first '
                                  '(edgefleet-enroll device allow-rotation %s)' % (dev_id, dev_id))
            store.delete('rotation', dev_id)
            outcome = 'rotated'
    if outcome != 'repeated':
        if tok['uses'] >= tok['max_uses']:
            raise EnrollError(401, 'token_exhausted', 'field "token": this enrollment token (id %s) has been used %d '
                              'of %d times' % (token_id, tok['uses'], tok['max_uses']))
        tok['uses'] += 1
        tok['last_used_at'] = now
        store.put('token', token_id, tok)
        labels = dict((current or {}).get('labels') or {})
        labels.update(req['labels'])
        for key, val in (tok.get('labels') or {}).items():
            labels.setdefault(key, val)
        hvars = dict((current or {}).get('vars') or {})
        hvars[HOST_KEY_VAR] = host_key
        fields = {'site': site, 'labels': labels, 'vars': hvars, 'status': 'active', 'reach': 'tunnel',
                  'ssh_public_key': tunnel_key}
        update_device_locked(tx, registry, dev_id, fields)
    # A repeat of an allocated device reads its own allocation only (allocation is sticky: nothing
    # would change); everything else runs the allocation as register.yml does.
    rec = tx.get_allocation(dev_id) if outcome == 'repeated' else None
    if rec is None:
        try:
            result = allocate_locked(tx, registry, policy, only=[dev_id], now=now)
        except FleetError as exc:
            if 'no cloud host can take it' not in str(exc):
                raise
            raise EnrollError(503, 'no_capacity', 'no cloud host has room for device %s now; nothing was enrolled, '
                              'retry later (an operator must add capacity)' % dev_id)
        rec = result.state['allocations'].get(dev_id)
    if rec is None:
        raise EnrollError(503, 'no_capacity', 'no cloud host has room for device %s' % dev_id)
    if current is not None:
        site = current.get('site') if outcome == 'repeated' else site
    response = placement_answer(config, dev_id, site, rec, lambda: _cloud_address(tx, rec['cloud_host']),
                                'nothing was enrolled')
    store.flush()
    return outcome, token_id, response


def placement_answer(config, dev_id, site, rec, registry_address, refused_note):
    """The placement a device is told (enroll and placement answers): its cloud host, how to reach
    and pin it, its tunnel ports and ids. ``registry_address()`` gives the registry's address of the
    cloud host when the service configuration has none. 503 when the host cannot be pinned."""
    cloud_cfg = config['cloud_hosts'].get(rec['cloud_host']) or {}
    address = cloud_cfg.get('address') or registry_address()
    if not cloud_cfg.get('host_keys') or not address:
        raise EnrollError(503, 'cloud_host_not_configured', 'cloud host %s has no address or SSH host key in the '
                          'enrollment service configuration (cloud_hosts.%s); %s'
                          % (rec['cloud_host'], rec['cloud_host'], refused_note))
    return {
        'device_id': dev_id, 'site': site, 'cloud_host': rec['cloud_host'], 'cloud_address': address,
        'cloud_ssh_port': cloud_cfg.get('ssh_port', 22), 'cloud_host_keys': list(cloud_cfg['host_keys']),
        'tunnel_user': config['tunnel_user'], 'tunnel_mysql_port': rec['tunnel_mysql_port'],
        'tunnel_ssh_port': rec['tunnel_ssh_port'], 'server_id': rec['server_id'],
        'gtid_domain_id': rec['gtid_domain_id'], 'replica_mode': rec['replica_mode'],
        'management_public_keys': list(config['management_public_keys']),
    }


def _cloud_address(tx, name):
    """The registry's address of cloud host ``name`` (when the service config gives none)."""
    host = tx.get_cloud_host(name)
    return host['address'] if host else None


class _FileSnapshot(object):
    """The registry, allocation and enrollment files as they were when the lock was taken."""

    def __init__(self, registry):
        self.files = {}
        for path in (registry.path, registry.alloc_path, state_path(registry)):
            try:
                with open(path, 'rb') as handle:
                    self.files[path] = (handle.read(), os.stat(path).st_mode & 0o7777)
            except FileNotFoundError:
                self.files[path] = None

    def restore(self):
        for path, saved in self.files.items():
            try:
                with open(path, 'rb') as handle:
                    now = handle.read()
            except FileNotFoundError:
                now = None
            if saved is None:
                if now is not None:
                    os.unlink(path)
            elif now != saved[0]:
                atomic_write(path, saved[0].decode('utf-8'), mode=saved[1])


def enroll(registry, policy, config, req, now=None, attempts=8):
    """Enroll (or re-enroll) a device in one registry transaction.

    Returns ``(http status, outcome, token id, response)``; outcome is created or claimed (a device
    registered by an operator without keys) - 201 -, repeated or rotated - 200. Raises EnrollError (nothing written) or FleetError.
    """
    now = time.time() if now is None else now
    _ensure_once(registry)
    store_class = _STORES[registry.kind]

    def attempt():
        with registry.transaction(write=True) as tx:
            snapshot = store_class.snapshot(registry)
            try:
                return _enroll_locked(tx, registry, policy, config, req, now)
            except BaseException:
                if snapshot is not None:
                    snapshot.restore()
                raise

    outcome, token_id, response = with_retries(attempt, attempts)
    return (201 if outcome in ('created', 'claimed') else 200), outcome, token_id, response


# --------------------------------------------------------------------------- reading

def device_listing(registry):
    """The operator listing: registry devices with their allocation and key fingerprints."""
    with registry.transaction(write=False) as tx:
        devices, _hosts = tx.load_registry()
        allocations = tx.load_state()['allocations']
    out = []
    for dev in devices:
        rec = allocations.get(dev['id']) or {}
        out.append({
            'device_id': dev['id'], 'site': dev['site'], 'status': dev['status'], 'labels': dev['labels'],
            'reach': dev['reach'], 'cloud_host': rec.get('cloud_host'),
            'tunnel_mysql_port': rec.get('tunnel_mysql_port'), 'tunnel_ssh_port': rec.get('tunnel_ssh_port'),
            'server_id': rec.get('server_id'), 'gtid_domain_id': rec.get('gtid_domain_id'),
            'replica_mode': rec.get('replica_mode'),
            'tunnel_key_fingerprint': fingerprint(dev['ssh_public_key']),
            'host_key_fingerprint': fingerprint((dev['vars'] or {}).get(HOST_KEY_VAR)),
        })
    return out


def known_hosts_text(devices):
    """known_hosts lines ``<device id> <type> <base64>`` for devices whose host key is in the registry.

    The fleet inventory plugin reaches a device with ``HostKeyAlias=<device id>``, so the device
    id is the host field; point ``UserKnownHostsFile`` (``ssh_common_args``) at this file.
    """
    lines = []
    for dev in sorted(devices, key=lambda d: d['id']):
        if dev.get('status') == 'retired':
            continue
        material = key_material((dev.get('vars') or {}).get(HOST_KEY_VAR))
        if material:
            lines.append('%s %s' % (dev['id'], material))
    return ''.join(line + '\n' for line in lines)


# --------------------------------------------------------------------------- rate limits

class RateLimiter(object):
    """Token buckets: one per client address and one global (thread-safe, in memory)."""

    def __init__(self, per_client_rate, per_client_burst, global_rate, global_burst, max_clients=100000,
                 clock=time.monotonic):
        self.rates = (float(per_client_rate), float(per_client_burst), float(global_rate), float(global_burst))
        self.clock = clock
        self.max_clients = max_clients
        self.lock = threading.Lock()
        self.clients = {}
        self.global_bucket = [float(global_burst), clock()]

    @staticmethod
    def _take(bucket, rate, burst, now):
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / rate if rate > 0 else 3600.0

    def check(self, client):
        """Return (allowed, scope, retry_after seconds); scope is 'client' or 'global'."""
        rate, burst, grate, gburst = self.rates
        now = self.clock()
        with self.lock:
            bucket = self.clients.get(client)
            if bucket is None:
                if len(self.clients) >= self.max_clients:
                    self.clients.clear()
                bucket = self.clients[client] = [burst, now]
            wait = self._take(bucket, rate, burst, now)
            if wait:
                return False, 'client', wait
            wait = self._take(self.global_bucket, grate, gburst, now)
            if wait:
                bucket[0] = min(burst, bucket[0] + 1.0)  # the client's own allowance is not spent
                return False, 'global', wait
        return True, None, 0.0


# --------------------------------------------------------------------------- placement (read-only)

PLACEMENT_FIELDS = ('device_id', 'timestamp', 'signature')
MAX_PLACEMENT_BODY = 4 * 1024
# A public key whose private half was discarded when it was made: a request for an unknown id is
# verified against it (and refused whatever the result), so it costs what a known id costs.
_NOBODY_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILoJVd9O5sRygiHvzLlnhKb+3ICaW2zVZ97A7vVVI/sy'
NOT_AUTHORIZED = ('the placement request was not accepted: unknown device id, a device that is not active, or a '
                  'signature that does not verify with the tunnel key registered for that id')


class PlacementRateLimited(EnrollError):
    """A device asked more often than its own allowance (only verified requests spend it)."""

    def __init__(self, retry_after):
        EnrollError.__init__(self, 429, 'rate_limited', 'too many placement requests for this device '
                             '(per-device limit); retry after %d s' % max(1, int(retry_after + 0.999)))
        self.retry_after = retry_after


def validate_placement_request(doc):
    """Check a placement request's shape; returns ``{device_id, timestamp, signature}``."""
    check_fields(doc, PLACEMENT_FIELDS, PLACEMENT_FIELDS)
    try:
        device_id = check_device_id(doc['device_id'], 'field "device_id"')
    except FleetError as exc:
        raise EnrollError(400, 'invalid_device_id', _short(str(exc)).replace('field "device_id": field "id"',
                                                                             'field "device_id"'))
    stamp = doc['timestamp']
    if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 < stamp < 2 ** 40:
        raise EnrollError(400, 'invalid_timestamp', 'field "timestamp" must be the signing time in whole seconds '
                          'since the epoch (an integer)')
    if not placement_signature.well_formed(doc['signature']):
        raise EnrollError(400, 'invalid_signature', 'field "signature" must be an armored OpenSSH signature '
                          '(ssh-keygen -Y sign -n %s) of at most %d characters'
                          % (placement_signature.NAMESPACE, placement_signature.MAX_SIGNATURE))
    return {'device_id': device_id, 'timestamp': stamp, 'signature': doc['signature']}


def placement(registry, config, req, now=None, max_skew=placement_signature.MAX_SKEW, charge=None,
              verify=placement_signature.verify):
    """The current placement of a device that proves it holds its registered tunnel key.

    Read-only: one read transaction, nothing is written. Refusals: 403 ``clock_skew`` (timestamp
    outside +-max_skew, checked before anything is looked up), 403 ``not_authorized`` for an
    unknown id, a retired or disabled device and a signature that does not verify: the same code,
    message and work (one ``ssh-keygen -Y verify``) for the three, so the answer does not tell
    which ids exist. ``charge(device_id)`` -> (allowed, retry_after) is the per-device rate limit,
    spent only by verified requests (nobody can use up another device's allowance). 503 when the
    device has no placement yet or its cloud host cannot be pinned.
    """
    now = time.time() if now is None else now
    dev_id = req['device_id']
    if abs(now - req['timestamp']) > max_skew:
        raise EnrollError(403, 'clock_skew', 'field "timestamp" is %d s away from the service clock (%s UTC); at '
                          'most %d s are accepted: set the device clock (NTP)'
                          % (int(req['timestamp'] - now), time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now)),
                             max_skew))
    with registry.transaction(write=False) as tx:
        current = tx.get_device(dev_id, missing_ok=True)  # None: unknown id
        rec = tx.get_allocation(dev_id) if current is not None else None
        host = tx.get_cloud_host(rec['cloud_host']) if rec else None
    key = key_material((current or {}).get('ssh_public_key'))
    good = verify(key or _NOBODY_KEY, dev_id, req['timestamp'], req['signature'])
    if not good or key is None or current['status'] != 'active':
        raise EnrollError(403, 'not_authorized', NOT_AUTHORIZED)
    if charge is not None:
        allowed, wait = charge(dev_id)
        if not allowed:
            raise PlacementRateLimited(wait)
    if rec is None:
        raise EnrollError(503, 'not_placed', 'device %s has no placement yet (no allocation); retry later' % dev_id)
    return placement_answer(config, dev_id, current.get('site'), rec, lambda: host['address'] if host else None,
                            'no placement was given')
