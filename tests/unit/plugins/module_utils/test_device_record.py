# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device record has one home: its keys, meaning and checks, and every user takes them from it."""

from __future__ import annotations

import os
import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import device_record as D
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry as R
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def test_users_take_the_keys_from_device_record():
    assert A.RECORD_KEYS == D.ALLOCATION_KEYS
    assert R.DEVICE_FIELDS == D.DEVICE_FIELDS == tuple(D.REGISTRY_FIELDS)
    assert R.normalize_device is D.normalize_device
    assert fleet_status.device_records_error is D.device_records_error
    assert set(D.CLOUD_DEVICE_KEYS) < set(D.ALLOCATION_KEYS)
    assert all(D.ALLOCATION_KEYS_DOC[key] for key in D.ALLOCATION_KEYS)
    assert all(D.REGISTRY_FIELDS[key] for key in D.DEVICE_FIELDS)


def test_inventory_cloud_device_entries_have_exactly_the_entry_keys():
    devices = [R.normalize_device({'id': 'dev1', 'site': 'lab'}), R.normalize_device({'id': 'dev2'})]
    hosts = [R.normalize_cloud_host({'name': 'cloud01', 'address': '192.0.2.1'})]
    result = A.allocate(devices, hosts, normalize_policy({}), A.empty_state(), now=1800000000.0)
    inv = fleet_inventory.build(devices, hosts, result.state)
    entries = inv['hosts']['cloud01']['edgefleet_cloud_devices']
    assert [e['id'] for e in entries] == ['dev1', 'dev2']
    for entry in entries:
        assert tuple(entry) == D.CLOUD_DEVICE_ENTRY_KEYS
        rec = result.state['allocations'][entry['id']]
        assert entry == D.cloud_device_entry(devices[0] if entry['id'] == 'dev1' else devices[1], rec)
        for key in D.CLOUD_DEVICE_KEYS:  # each key once: on the device or in its entry only
            assert (inv['hosts'][entry['id']].get('edgefleet_' + key) == rec[key]) is (key in D.DEVICE_HOST_VAR_KEYS)
    assert entries[0]['site'] == 'lab' and entries[1]['site'] == '' and entries[0]['ssh_public_key'] == ''
    assert D.device_records_error(entries) is None


def test_device_records_error_names_the_entry_and_the_missing_keys():
    assert D.device_records_error([]) is None
    assert D.device_records_error([{'id': 'a', 'tunnel_mysql_port': 20000}, {'id': 'b'}]) == (
        'devices[1] has no tunnel_mysql_port (pass the allocation records, edgefleet_cloud_devices)')
    assert D.device_records_error([{'id': '', 'tunnel_mysql_port': None}]).startswith(
        'devices[0] has no id, tunnel_mysql_port')


def test_docs_describe_every_key():
    with open(os.path.join(ROOT, 'docs', 'inventory.md'), encoding='utf-8') as handle:
        text = handle.read()
    assert 'plugins/module_utils/device_record.py' in text
    section = text.split('## The device record', 1)[1].split('\n## ', 1)[0]
    for key in D.DEVICE_FIELDS + D.ALLOCATION_KEYS:
        assert re.search(r'\b%s\b' % key, section), key
    variables = text.split('## Device host variables', 1)[1].split('\n## ', 1)[0]
    for key in D.CLOUD_DEVICE_KEYS + ('replica_server_id', 'cloud_host'):
        assert 'edgefleet_' + key in variables, key
    cloud = text.split('## Cloud host variables', 1)[1].split('\n## ', 1)[0]
    for key in D.CLOUD_DEVICE_ENTRY_KEYS:
        assert re.search(r'\b%s\b' % key, cloud), key
