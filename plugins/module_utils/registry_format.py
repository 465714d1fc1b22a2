# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's data: cloud host entries, a whole registry, and the text forms of the files.

* :func:`normalize_registry` checks a registry (devices via module_utils/device_record.py, cloud
  hosts here; duplicate ids and names are errors);
* :func:`dump_registry_text` / :func:`parse_registry_text`: the registry YAML file in its
  one-JSON-mapping-per-line form (and its fast reader);
* :func:`dump_state_text` / :func:`state_from_doc`: the allocation file.

Both backends use these (the MySQL backend checks what it reads with the same functions); no I/O.
"""

from __future__ import annotations

import json
import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, check_cloud_host_name,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    parse_port_ranges, parse_port_list, format_port_ranges, _as_int, _as_bool,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import (
    check_address, check_entry, check_vars, device_to_raw, normalize_device,
)

CLOUD_FIELDS = ('name', 'address', 'capacity', 'tunnel_ports', 'replica_ports', 'reserved_ports', 'drain', 'vars')
CLOUD_FIELD_SET = frozenset(CLOUD_FIELDS)
TOP_LEVEL_KEYS = frozenset(('devices', 'cloud_hosts', 'version'))
FORMAT_NAME = 'edgefleet.mysql_backup.allocations'


# --------------------------------------------------------------------------- cloud hosts and whole registries

def normalize_cloud_host(raw, index=None):
    name, where = check_entry(raw, index, 'cloud host', 'name', check_cloud_host_name, CLOUD_FIELDS, CLOUD_FIELD_SET)
    return {
        'name': name,
        'address': check_address(raw.get('address'), where),
        'capacity': _as_int(raw.get('capacity'), 'capacity', where, 0, allow_none=True),
        'tunnel_ports': parse_port_ranges(raw.get('tunnel_ports'), where + ' field "tunnel_ports"') or None,
        'replica_ports': parse_port_ranges(raw.get('replica_ports'), where + ' field "replica_ports"') or None,
        'reserved_ports': sorted(parse_port_list(raw.get('reserved_ports'), where + ' field "reserved_ports"')),
        'drain': _as_bool(raw.get('drain', False), 'drain', where),
        'vars': check_vars(raw.get('vars'), where),
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
