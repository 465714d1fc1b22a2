# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compact form of a cloud host's device and instance lists (``edgefleet_cloud_table``).

The fleet inventory plugin gives every cloud host one string, ``edgefleet_cloud_table``: a JSON
document with the host's cloud device entries and replica instances as column names plus rows.
``edgefleet_cloud_devices`` and ``edgefleet_cloud_instances`` are expanded from it where they are
used (the filters ``cloud_table_devices`` / ``cloud_table_instances``), so the inventory does not
carry 1,000 dicts per cloud host through Ansible's variable machinery and ``--list`` output: at
10,000 devices the two lists were 21 of the 44.8 MB of ``ansible-inventory --list``.

The expanded lists are exactly what the plugin produced before: one dict per active device with
the keys of ``device_record.CLOUD_DEVICE_ENTRY_KEYS``, sorted by id, and the instances of
``allocation.instances_by_host``, sorted by name.

Standard library only.
"""

from __future__ import annotations

import json

VERSION = 1
INSTANCE_KEYS = ('name', 'mode', 'port', 'datadir', 'server_id', 'channels')


def pack(devices, instances, device_keys):
    """One compact JSON string from a cloud host's device entries and instances."""
    device_keys = list(device_keys)
    doc = {
        'v': VERSION,
        'device_keys': device_keys,
        'devices': [[entry.get(key) for key in device_keys] for entry in devices],
        'instance_keys': list(INSTANCE_KEYS),
        'instances': [[inst.get(key) for key in INSTANCE_KEYS] for inst in instances],
    }
    return json.dumps(doc, separators=(',', ':'), sort_keys=True)


def _load(table):
    if table is None or table == '':
        return None
    if isinstance(table, dict):
        doc = table
    elif isinstance(table, str):
        try:
            doc = json.loads(table)
        except ValueError as exc:
            raise ValueError('edgefleet_cloud_table is not valid JSON: %s' % exc)
    else:
        raise ValueError('edgefleet_cloud_table must be a string, got %s' % type(table).__name__)
    if not isinstance(doc, dict) or doc.get('v') != VERSION:
        raise ValueError('edgefleet_cloud_table: unknown format (expected version %d)' % VERSION)
    return doc


def devices(table):
    """The cloud device entries (a list of dicts) of a packed table; [] for none."""
    doc = _load(table)
    if doc is None:
        return []
    keys = doc['device_keys']
    return [dict(zip(keys, row)) for row in doc['devices']]


def instances(table):
    """The replica instances (a list of dicts) of a packed table; [] for none."""
    doc = _load(table)
    if doc is None:
        return []
    keys = doc['instance_keys']
    out = []
    for row in doc['instances']:
        inst = dict(zip(keys, row))
        inst['channels'] = list(inst.get('channels') or [])
        out.append(inst)
    return out
