# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File registry backend: parsing, atomic writes, locking, concurrent allocation runs."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry as R
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_registry_spec, resolve,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_allocation, update_device
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import LAB, write_fleet

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQXIftKBsmdNzE2DLNnRf3U4jn6rsC3i33UBQfl1zsC device01'


def write(path, text):
    with open(str(path), 'w') as handle:
        handle.write(text)


def make_fleet(tmp_path, registry_text, policy=''):
    spec, pol, _raw = resolve(str(write_fleet(tmp_path, registry_text, policy)))
    return R.open_registry(spec, pol['lock_timeout']), pol


def test_spec_paths_are_relative_to_the_config(tmp_path):
    reg, _pol = make_fleet(tmp_path, LAB)
    assert reg.path == str(tmp_path / 'registry.yml')
    assert reg.alloc_path == str(tmp_path / 'registry.alloc.yml')
    assert reg.lock_path == str(tmp_path / '.registry.yml.lock')
    with pytest.raises(FleetError, match='"database" is required'):
        normalize_registry_spec({'type': 'mysql'})
    with pytest.raises(FleetError, match='"type" must be "file" or "mysql"'):
        normalize_registry_spec({'type': 'etcd'})
    with pytest.raises(FleetError, match=r'unknown field\(s\) pth'):
        normalize_registry_spec({'type': 'file', 'pth': 'x'})


def test_lab_registry_allocates_and_writes_atomically(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    result, allocations = run_allocation(reg, pol, now=1800000000.0)
    assert sorted(allocations) == ['device01', 'device02']
    with open(reg.alloc_path) as handle:
        text = handle.read()
    assert json.loads(text) == yaml.safe_load(text)  # JSON that is YAML too
    assert R.state_from_doc(json.loads(text), 'x') == result.state
    assert [p for p in os.listdir(str(tmp_path)) if p.endswith('.tmp')] == []
    again = run_allocation(reg, pol, now=1800000001.0)[0]
    assert not again.changed


def test_check_mode_writes_nothing(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    result, allocations = run_allocation(reg, pol, check_mode=True)
    assert result.changed and len(allocations) == 2
    assert not os.path.exists(reg.alloc_path) and not os.path.exists(reg.lock_path)


@pytest.mark.parametrize('text, message', [
    ('devices: [', 'is not valid YAML'),
    ('- a\n- b\n', 'must be a mapping'),
    ('devices: {a: 1}\n', '"devices" must be a list'),
    ('devices: []\nclouds: []\n', r'unknown top-level key\(s\) clouds'),
    ('devices:\n  - {id: a}\n  - {id: a}\n', r'device a: field "id" is duplicated'),
    ('devices:\n  - {id: Bad}\n', r'device #0: field "id" value \'Bad\''),
    ('devices:\n  - {id: a, site: "no spaces"}\n', r'device a: field "site"'),
])
def test_bad_registry_fails_and_writes_nothing(tmp_path, text, message):
    reg, pol = make_fleet(tmp_path, text)
    with pytest.raises(FleetError, match=message):
        run_allocation(reg, pol)
    assert not os.path.exists(reg.alloc_path)


def test_missing_registry_and_bad_alloc_file(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    os.unlink(reg.path)
    with pytest.raises(FleetError, match='does not exist'):
        run_allocation(reg, pol)
    write(tmp_path / 'registry.yml', LAB)
    write(tmp_path / 'registry.alloc.yml', '{"format": "something else"}')
    with pytest.raises(FleetError, match='not an edgefleet allocation file'):
        run_allocation(reg, pol)


def test_error_leaves_existing_allocations_untouched(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB, 'allocation: {tunnel_ports: 20000-20003}\n')
    run_allocation(reg, pol)
    with open(reg.alloc_path, 'rb') as handle:
        before = handle.read()
    write(tmp_path / 'registry.yml', LAB.replace('cloud_hosts:', '  - {id: device03}\ncloud_hosts:'))
    with pytest.raises(FleetError, match='device device03: no cloud host can take it'):
        run_allocation(reg, pol)
    with open(reg.alloc_path, 'rb') as handle:
        assert handle.read() == before


def test_update_device_create_update_retire(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    changed, before, after = update_device(reg, 'device03', {'site': 'berlin', 'address': '192.0.2.3'})
    assert changed and before == {} and after == {'id': 'device03', 'site': 'berlin', 'status': 'active',
                                                  'address': '192.0.2.3'}
    assert update_device(reg, 'device03', {'site': 'berlin'})[0] is False
    changed, before, after = update_device(reg, 'device01', {'ssh_public_key': KEY})
    assert changed and after['ssh_public_key'] == KEY and after['labels'] == {'lab': 'true'}
    changed, _b, after = update_device(reg, 'device03', {'address': '', 'status': 'retired'})
    assert changed and 'address' not in after and after['status'] == 'retired'
    with pytest.raises(FleetError, match='device nope: not in the registry'):
        update_device(reg, 'nope', {'status': 'retired'}, create=False)
    devices, hosts = reg.load_registry()
    assert [d['id'] for d in devices] == ['device01', 'device02', 'device03']
    assert hosts[0]['address'] == '10.231.0.201'
    with open(reg.path) as handle:
        text = handle.read()
    assert R.parse_registry_text(text) == yaml.safe_load(text)  # fast path taken and equal
    # check mode: nothing written
    with open(reg.path) as handle:
        snapshot = handle.read()
    assert update_device(reg, 'device04', {}, check_mode=True)[0] is True
    with open(reg.path) as handle:
        assert handle.read() == snapshot


def test_registry_module_creates_missing_file(tmp_path):
    write(tmp_path / 'f.fleet.yml', 'plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: new.yml}\n')
    spec, pol, _raw = resolve(str(tmp_path / 'f.fleet.yml'))
    reg = R.open_registry(spec)
    update_device(reg, 'first', {})
    assert reg.load_registry()[0][0]['id'] == 'first'


def test_lock_timeout(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    reg.lock_timeout = 0.2
    with R.file_lock(reg.lock_path):
        with pytest.raises(FleetError, match='timed out .* waiting for the registry lock'):
            run_allocation(reg, pol)


def _alloc_only(args):
    config, ids = args
    spec, pol, _raw = resolve(config)
    reg = R.open_registry(spec, pol['lock_timeout'])
    result = run_allocation(reg, pol, only=ids)[0]
    return sorted(result.alloc_add)


def _many_devices(n):
    lines = ['devices:'] + ['  - {"id": "dev%03d"}' % i for i in range(n)]
    lines += ['cloud_hosts:', '  - {"name": "cloud01"}', '  - {"name": "cloud02"}']
    return '\n'.join(lines) + '\n'


def _assert_no_shared_port(reg):
    state = reg.load_state()
    seen = set()
    for rec in state['allocations'].values():
        for port in (rec['tunnel_mysql_port'], rec['tunnel_ssh_port'], rec['replica_port']):
            key = (rec['cloud_host'], port)
            assert key not in seen
            seen.add(key)
    return state


def test_concurrent_runs_in_threads_never_share_a_port(tmp_path):
    reg, pol = make_fleet(tmp_path, _many_devices(80))
    config = str(tmp_path / 'lab.fleet.yml')
    slices = [['dev%03d' % i for i in range(k, 80, 4)] for k in range(4)]
    out = [None] * 4
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        out[i] = _alloc_only((config, slices[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sum(out, [])) == ['dev%03d' % i for i in range(80)]
    assert len(_assert_no_shared_port(reg)['allocations']) == 80


def test_concurrent_runs_in_processes_never_share_a_port(tmp_path):
    reg, pol = make_fleet(tmp_path, _many_devices(60))
    config = str(tmp_path / 'lab.fleet.yml')
    slices = [(config, ['dev%03d' % i for i in range(k, 60, 3)]) for k in range(3)]
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(3) as pool:
        out = pool.map(_alloc_only, slices)
    assert sorted(sum(out, [])) == ['dev%03d' % i for i in range(60)]
    assert len(_assert_no_shared_port(reg)['allocations']) == 60


scalars = st.one_of(st.text(max_size=12), st.integers(-10 ** 12, 10 ** 12), st.booleans(), st.none())
device_st = st.fixed_dictionaries(
    {'id': st.from_regex(r'\A[a-z][a-z0-9_]{0,10}\Z')},
    optional={'site': st.from_regex(r'\A[a-z0-9][a-z0-9_]{0,8}\Z'),
              'status': st.sampled_from(['active', 'disabled', 'retired']),
              'labels': st.dictionaries(st.from_regex(r'\A[a-z_][a-z0-9_]{0,6}\Z'), st.text(max_size=8), max_size=3),
              'vars': st.dictionaries(st.from_regex(r'\A[a-z_][a-z0-9_]{0,6}\Z'),
                                      st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=3)})


@settings(max_examples=200, deadline=None)
@given(st.lists(device_st, max_size=8))
def test_fast_registry_parser_agrees_with_yaml(raw_devices):
    devices = []
    seen = set()
    for raw in raw_devices:
        if raw['id'] in seen or raw['id'] in ('all', 'cloud', 'devices', 'ungrouped', 'localhost') or \
                raw['id'].startswith(('cloud_', 'site_', 'status_', 'mode_')):
            continue
        seen.add(raw['id'])
        devices.append(R.normalize_device(raw))
    text = R.dump_registry_text(devices, [R.normalize_cloud_host({'name': 'cloud01', 'tunnel_ports': '20000-20099'})])
    fast = R.parse_registry_text(text)
    assert fast is not None
    assert fast == yaml.safe_load(text)
    assert R.normalize_registry(fast['devices'], fast['cloud_hosts'], 'x')[0] == devices


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[]:,"\'- \n#abc01\\/eE.', max_size=60))
def test_fast_parser_never_disagrees_with_yaml(noise):
    text = 'devices:\n  - {"id": "a"}\n' + noise
    fast = R.parse_registry_text(text)
    if fast is None:
        return
    assert fast == yaml.safe_load(text)


def check_backend_interface(reg, policy):
    """The RegistryBackend methods behave the same on both backends (file here, MySQL in
    tests/live/test_allocation_db.py): get/upsert of devices and cloud hosts, delete, get_allocation."""
    dev = R.normalize_device({'id': 'iface1', 'site': 'lab', 'labels': {'hw': 'rpi4'}, 'vars': {'x': 1}})
    host = R.normalize_cloud_host({'name': 'ifcloud', 'address': '192.0.2.9', 'tunnel_ports': '21000-21099',
                                   'replica_ports': '31000-31099', 'reserved_ports': [21005]})
    spare = R.normalize_cloud_host({'name': 'ifspare'})
    with reg.transaction() as tx:
        assert tx.get_device('iface1') is None and tx.get_cloud_host('ifcloud') is None
        tx.upsert_cloud_host(host)
        tx.upsert_cloud_host(spare)
        tx.upsert_device(dev)
        assert tx.get_device('iface1', for_update=True) == dev
        assert tx.get_cloud_host('ifcloud') == host
    with reg.transaction(write=False) as tx:
        assert tx.get_device('iface1') == dev and tx.get_cloud_host('ifspare') == spare
        devices, hosts = tx.load_registry()
        assert dev in devices and host in hosts and spare in hosts
        assert tx.get_allocation('iface1') is None
    disabled = dict(dev, status='disabled', address='192.0.2.10')
    with reg.transaction() as tx:
        tx.upsert_device(disabled)
        tx.upsert_cloud_host(dict(host, capacity=5))
        tx.delete_cloud_host('ifspare')
    with reg.transaction(write=False) as tx:
        assert tx.get_device('iface1') == disabled
        assert tx.get_cloud_host('ifcloud')['capacity'] == 5
        assert tx.get_cloud_host('ifspare') is None
        devices, hosts = tx.load_registry()
        assert [d for d in devices if d['id'] == 'iface1'] == [disabled]
        assert 'ifspare' not in [h['name'] for h in hosts] and 'ifcloud' in [h['name'] for h in hosts]
    with reg.transaction() as tx:
        tx.upsert_device(dev)
    _result, allocations = run_allocation(reg, policy, only=['iface1'])
    with reg.transaction(write=False) as tx:
        rec = tx.get_allocation('iface1')
        assert rec == allocations['iface1'] == tx.load_state()['allocations']['iface1']
        assert rec['id'] == 'iface1' and rec['cloud_host'] in ('cloud01', 'ifcloud')
    reg.close()


def test_file_backend_implements_the_registry_interface(tmp_path):
    reg, pol = make_fleet(tmp_path, LAB)
    check_backend_interface(reg, pol)
    text = (tmp_path / 'registry.yml').read_text()
    assert R.parse_registry_text(text) == yaml.safe_load(text)  # written in the fast-path form
    assert [d['id'] for d in reg.load_registry()[0]] == ['device01', 'device02', 'iface1']
    assert isinstance(reg, R.RegistryBackend)


def test_file_backend_single_record_writes_need_the_lock(tmp_path):
    reg, _pol = make_fleet(tmp_path, LAB)
    with reg.transaction(write=False) as tx:
        with pytest.raises(FleetError, match='upsert_device outside a write transaction'):
            tx.upsert_device(R.normalize_device({'id': 'x1'}))
        with pytest.raises(FleetError, match='delete_cloud_host outside a write transaction'):
            tx.delete_cloud_host('cloud01')
    assert [d['id'] for d in reg.load_registry()[0]] == ['device01', 'device02']


def test_file_backend_missing_registry(tmp_path):
    write(tmp_path / 'f.fleet.yml', 'plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: new.yml}\n')
    spec, _pol, _raw = resolve(str(tmp_path / 'f.fleet.yml'))
    reg = R.open_registry(spec)
    with reg.transaction() as tx:
        with pytest.raises(FleetError, match='does not exist'):
            tx.get_device('first')
        assert tx.get_device('first', missing_ok=True) is None
        assert tx.get_cloud_host('cloud01') is None
        tx.upsert_cloud_host(R.normalize_cloud_host({'name': 'cloud01'}))
    assert reg.load_registry() == ([], [R.normalize_cloud_host({'name': 'cloud01'})])
    # a top-level version: survives single-record writes
    write(tmp_path / 'new.yml', 'version: 1\ndevices: []\ncloud_hosts: []\n')
    with reg.transaction() as tx:
        tx.upsert_device(R.normalize_device({'id': 'first'}))
    assert 'version: 1' in (tmp_path / 'new.yml').read_text()
