# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device record: the one home of its keys, their meaning and their validation.

A device appears in three shapes, all built from the keys below; docs/inventory.md explains them
for operators and points here:

* the **registry entry** (:data:`REGISTRY_FIELDS`): what an operator, the registry module or the
  enrollment service writes about a device; checked by :func:`normalize_device`;
* the **allocation record** (:data:`ALLOCATION_KEYS`): what the allocation gives the device on its
  cloud host (ports, ids, replica placement); written by module_utils/allocation.py;
* the **cloud device entry** (:data:`CLOUD_DEVICE_ENTRY_KEYS`): one item of a cloud host's
  ``edgefleet_cloud_devices`` inventory variable, built by :func:`cloud_device_entry` from the
  other two. Roles (tunnel gateway, replicas, backup, monitoring) and host programs (status
  collector, tunnel guard, checksums) read these dicts; :func:`device_records_error` says why a
  list handed to a module is not made of them. The inventory also exposes the allocation keys of
  :data:`DEVICE_HOST_VAR_KEYS` as the device's host variables ``edgefleet_<key>``; the rest
  (:data:`ENTRY_ONLY_KEYS`) only in the cloud host's entry.

The key names are a contract across layers (SQL columns, inventory variables, role templates,
JSON status files): rename none of them without changing every reader.

Standard library plus module_utils/identifiers.py: host programs import this module too.
"""

from __future__ import annotations

import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, STATUSES, REPLICA_MODES, REACH_MODES, RESERVED_NAMES, RESERVED_PREFIXES, ID_RE, SITE_RE,
    LABEL_KEY_RE, check_device_id, check_site, check_labels, check_choice,
)

# --------------------------------------------------------------------------- keys and meaning

#: Registry entry: field -> meaning (order = order in the registry file and the SQL table).
REGISTRY_FIELDS = {
    'id': 'device id and inventory host name: a-z first, then a-z, 0-9, _ (at most 32)',
    'site': 'site name (groups site_<site>), or none',
    'status': 'active (configured and replicated), disabled (kept, not configured) or retired (released)',
    'address': 'host name or IP address to reach the device directly, or none',
    'labels': 'string -> string mapping for the operator (keyed_groups)',
    'vars': "merged into the device's host vars (data, never templated)",
    'replica_mode': 'instance or channel: overrides the fleet policy for this device',
    'reach': "auto, address or tunnel: overrides the inventory's reach (see docs/inventory.md)",
    'ssh_public_key': "the device's tunnel key (one OpenSSH public key line), recorded by device_tunnel or enrollment",
}
DEVICE_FIELDS = tuple(REGISTRY_FIELDS)
DEVICE_FIELD_SET = frozenset(DEVICE_FIELDS)

#: Allocation record: key -> meaning (order = column order of the allocations table).
ALLOCATION_KEYS_DOC = {
    'id': 'device id',
    'cloud_host': 'the cloud host carrying the device',
    'tunnel_mysql_port': "loopback port on the cloud host where the device's MySQL is reachable (reverse tunnel)",
    'tunnel_ssh_port': "loopback port on the cloud host where the device's sshd is reachable (reverse tunnel)",
    'server_id': "the device's MySQL server_id (unique in the fleet)",
    'gtid_domain_id': "the device's gtid_domain_id (unique in the fleet)",
    'replica_mode': 'instance (a replica server of its own) or channel (a channel on a shared replica)',
    'replica_instance': 'name of the replica instance holding the copy (the device id, or multi-NN)',
    'replica_port': "TCP port of that replica instance on the cloud host",
    'replica_datadir': "data directory of that replica instance",
    'replica_server_id': "server_id of that replica instance",
    'channel_name': 'replication channel name on the replica (the device id)',
    'schema_prefix': "prefix of the device's schemas on the replica ('' in instance mode, '<id>_' in channel mode)",
    'allocated_at': 'UTC time of the allocation (ISO 8601)',
}
ALLOCATION_KEYS = tuple(ALLOCATION_KEYS_DOC)

#: Allocation keys copied into a cloud device entry (and exposed as edgefleet_<key> host vars).
CLOUD_DEVICE_KEYS = ('tunnel_mysql_port', 'tunnel_ssh_port', 'server_id', 'gtid_domain_id', 'replica_mode',
                     'replica_instance', 'replica_port', 'replica_datadir', 'channel_name', 'schema_prefix')
#: Allocation keys a device also carries as its own ``edgefleet_<key>`` host vars; the other
#: CLOUD_DEVICE_KEYS (ENTRY_ONLY_KEYS) are only in its cloud host's entry (one copy per device:
#: fleet_inventory.device_entry_vars, the filter cloud_table_devices), except replica_instance,
#: which a device also carries when it is not its own id (channel mode: the shared instance).
DEVICE_HOST_VAR_KEYS = ('tunnel_mysql_port', 'tunnel_ssh_port', 'server_id', 'gtid_domain_id', 'replica_mode')
ENTRY_ONLY_KEYS = tuple(key for key in CLOUD_DEVICE_KEYS if key not in DEVICE_HOST_VAR_KEYS)
#: One item of edgefleet_cloud_devices.
CLOUD_DEVICE_ENTRY_KEYS = ('id', 'site', 'status') + CLOUD_DEVICE_KEYS + ('ssh_public_key',)
#: What a module that checks devices (fleet_status, table_checksum) cannot do without.
REQUIRED_ENTRY_KEYS = ('id', 'tunnel_mysql_port')

VAR_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
ADDRESS_RE = re.compile(r'^[A-Za-z0-9_.:%\[\]-]{1,255}$')
PUBLIC_KEY_RE = re.compile(r'^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|'
                           r'sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\r\n]*)?$')
_ID_MATCH = ID_RE.fullmatch
_SITE_MATCH = SITE_RE.fullmatch
_LABEL_MATCH = LABEL_KEY_RE.fullmatch
_VAR_MATCH = VAR_NAME_RE.fullmatch
_ADDRESS_MATCH = ADDRESS_RE.fullmatch


# --------------------------------------------------------------------------- field checks
# (check_vars, check_address and check_entry serve cloud host entries too)

def check_vars(value, where):
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


def check_entry(raw, index, kind, key, check_key, fields, field_set):
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


# --------------------------------------------------------------------------- registry entry

def normalize_device(raw, index=None):
    """Validate one registry entry; returns a dict with every DEVICE_FIELDS key."""
    fast = _normalize_device_fast(raw)
    if fast is not None:
        return fast
    dev_id, where = check_entry(raw, index, 'device', 'id', check_device_id, DEVICE_FIELDS, DEVICE_FIELD_SET)
    return {
        'id': dev_id,
        'site': check_site(raw.get('site'), where),
        'status': check_choice(raw.get('status'), STATUSES, 'status', where, 'active'),
        'address': check_address(raw.get('address'), where),
        'labels': check_labels(raw.get('labels'), where),
        'vars': check_vars(raw.get('vars'), where),
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


def device_diff_view(dev):
    """What a diff or a module result shows of a device: its compact form, {} when absent."""
    if dev is None:
        return {}
    return device_to_raw(dev)


# --------------------------------------------------------------------------- cloud device entry

def cloud_device_entry(dev, rec):
    """One item of edgefleet_cloud_devices from a normalized device and its allocation record."""
    entry = {'id': dev['id'], 'site': dev['site'] or '', 'status': dev['status']}
    for key in CLOUD_DEVICE_KEYS:
        entry[key] = rec[key]
    entry['ssh_public_key'] = dev['ssh_public_key'] or ''
    return entry


def device_records_error(devices):
    """Why these cloud device entries cannot be checked (an entry without id or
    tunnel_mysql_port), or None when every entry has both."""
    for index, device in enumerate(devices):
        missing = [key for key in REQUIRED_ENTRY_KEYS if device.get(key) in (None, '')]
        if missing:
            return ('devices[%d] has no %s (pass the allocation records, edgefleet_cloud_devices)'
                    % (index, ', '.join(missing)))
    return None
