# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The allocator's rules, example by example (invariants over random histories: *_properties)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_policy
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    normalize_cloud_host, normalize_device, normalize_registry,
)

DAY = 86400.0
T0 = 1800000000.0


def devs(*specs):
    out = []
    for spec in specs:
        if isinstance(spec, str):
            spec = {'id': spec}
        out.append(normalize_device(spec))
    return out


def hosts(*specs):
    return [normalize_cloud_host(s if isinstance(s, dict) else {'name': s}) for s in specs]


def run(devices, clouds, state=None, now=T0, policy=None, **kw):
    pol = normalize_policy(policy or {})
    return A.allocate(devices, clouds, pol, state or A.empty_state(), now=now, **kw)


def ports_by_host(state):
    out = {}
    for rec in state['allocations'].values():
        lst = out.setdefault(rec['cloud_host'], [])
        lst += [rec['tunnel_mysql_port'], rec['tunnel_ssh_port']]
        if rec['replica_mode'] == 'instance':
            lst.append(rec['replica_port'])
    for inst in state['instances'].values():
        out.setdefault(inst['cloud_host'], []).append(inst['port'])
    return out


def test_first_allocation_contract_fields():
    res = run(devs('device01', {'id': 'device02', 'replica_mode': 'channel'}), hosts('cloud01'))
    assert res.changed
    one = res.state['allocations']['device01']
    assert one == {
        'id': 'device01', 'cloud_host': 'cloud01', 'tunnel_mysql_port': 20000, 'tunnel_ssh_port': 20001,
        'server_id': 1000, 'gtid_domain_id': 1000, 'replica_mode': 'instance', 'replica_instance': 'device01',
        'replica_port': 30000, 'replica_datadir': '/var/lib/edgefleet/replicas/device01',
        'replica_server_id': 2000000000, 'channel_name': 'device01', 'schema_prefix': '',
        'allocated_at': A.iso(T0)}
    two = res.state['allocations']['device02']
    assert two['replica_mode'] == 'channel' and two['replica_instance'] == 'multi-01'
    assert two['channel_name'] == 'device02' and two['schema_prefix'] == 'device02_'
    assert two['replica_port'] == 30001 and two['replica_datadir'].endswith('/multi-01')
    assert [c['action'] for c in res.changes] == ['allocate', 'create_instance', 'allocate']


def test_second_run_is_a_noop():
    d, h = devs('a', 'b', 'c'), hosts('cloud01', 'cloud02')
    first = run(d, h)
    again = run(d, h, copy.deepcopy(first.state), now=T0 + 5)
    assert not again.changed and again.changes == []
    assert again.state['allocations'] == first.state['allocations']


def test_sticky_when_others_come_and_go():
    d = devs('a', 'b', 'c', 'd')
    h = hosts('cloud01', 'cloud02')
    first = run(d, h)
    before = copy.deepcopy(first.state['allocations'])
    d2 = devs('a', {'id': 'b', 'status': 'retired'}, {'id': 'c', 'status': 'disabled'}, 'd', 'e', 'f')
    second = run(d2, h, copy.deepcopy(first.state), now=T0 + 10)
    assert second.state['allocations']['a'] == before['a']
    assert second.state['allocations']['d'] == before['d']
    assert sorted(second.released) == ['b', 'c']
    assert sorted(second.alloc_add) == ['e', 'f']


def test_freed_ports_are_quarantined_then_reused():
    h = hosts({'name': 'cloud01', 'tunnel_ports': '20000-20003', 'replica_ports': '30000-30001'})
    first = run(devs('a', 'b'), h)
    a_ports = (first.state['allocations']['a']['tunnel_mysql_port'], first.state['allocations']['a']['tunnel_ssh_port'])
    second = run(devs({'id': 'a', 'status': 'retired'}, 'b'), h, copy.deepcopy(first.state), now=T0 + DAY)
    assert set(second.state['quarantine']) == {('cloud01', a_ports[0]), ('cloud01', a_ports[1]), ('cloud01', 30000)}
    with pytest.raises(FleetError, match='device c: no cloud host can take it'):
        run(devs({'id': 'a', 'status': 'retired'}, 'b', 'c'), h, copy.deepcopy(second.state), now=T0 + 3 * DAY)
    later = run(devs({'id': 'a', 'status': 'retired'}, 'b', 'c'), h, copy.deepcopy(second.state), now=T0 + 9 * DAY)
    c = later.state['allocations']['c']
    assert (c['tunnel_mysql_port'], c['tunnel_ssh_port']) == a_ports and c['replica_port'] == 30000
    assert {'action': 'unquarantine', 'cloud_host': 'cloud01', 'port': a_ports[0]} in later.changes


def test_ids_are_never_reused_and_survive_reactivation():
    first = run(devs('a', 'b'), hosts('cloud01'))
    ids_a = dict(first.state['ids']['a'])
    second = run(devs({'id': 'a', 'status': 'disabled'}, {'id': 'b', 'status': 'retired'}, 'c'), hosts('cloud01'),
                 copy.deepcopy(first.state), now=T0 + 1)
    assert second.state['allocations']['c']['server_id'] == 1002
    third = run(devs('a', {'id': 'b', 'status': 'retired'}, 'c', 'd'), hosts('cloud01'),
                copy.deepcopy(second.state), now=T0 + 2)
    assert third.state['allocations']['a']['server_id'] == ids_a['server_id']
    assert third.state['allocations']['a']['gtid_domain_id'] == ids_a['gtid_domain_id']
    assert third.state['allocations']['d']['server_id'] == 1003
    # the retired device's ports are still in quarantine: a's new ports are fresh ones
    assert third.state['allocations']['a']['tunnel_mysql_port'] not in (20000, 20001, 20002, 20003)


def test_capacity_drives_host_choice():
    h = hosts({'name': 'big', 'capacity': 30}, {'name': 'small', 'capacity': 10})
    res = run(devs(*['d%02d' % i for i in range(40)]), h)
    per = {}
    for rec in res.state['allocations'].values():
        per[rec['cloud_host']] = per.get(rec['cloud_host'], 0) + 1
    assert per == {'big': 30, 'small': 10}
    with pytest.raises(FleetError, match=r'device d40: no cloud host can take it: big: capacity 30 reached'):
        run(devs(*['d%02d' % i for i in range(41)]), h)


def test_drain_takes_no_new_devices_but_keeps_old():
    first = run(devs('a'), hosts('cloud01'))
    h = hosts({'name': 'cloud01', 'drain': True}, 'cloud02')
    second = run(devs('a', 'b'), h, copy.deepcopy(first.state), now=T0 + 1)
    assert second.state['allocations']['a']['cloud_host'] == 'cloud01'
    assert second.state['allocations']['b']['cloud_host'] == 'cloud02'


def test_channel_mode_fills_instances_up_to_n():
    pol = {'replica_mode': 'channel', 'channels_per_instance': 3}
    res = run(devs(*['d%d' % i for i in range(7)]), hosts('cloud01'), policy=pol)
    names = sorted(rec['replica_instance'] for rec in res.state['allocations'].values())
    assert names == ['multi-01'] * 3 + ['multi-02'] * 3 + ['multi-03']
    # a freed slot is reused by the next device; no new instance
    d = devs(*(['d%d' % i for i in range(7)] + ['d7']))
    d[1] = normalize_device({'id': 'd1', 'status': 'retired'})
    nxt = run(d, hosts('cloud01'), copy.deepcopy(res.state), now=T0 + 1, policy=pol)
    assert nxt.state['allocations']['d7']['replica_instance'] == 'multi-01'
    assert not nxt.inst_add
    inst = A.instances_by_host(nxt.state)['cloud01']
    assert [(i['name'], len(i['channels'])) for i in inst] == [('multi-01', 3), ('multi-02', 3), ('multi-03', 1)]


def test_channels_per_instance_limit_is_validated():
    with pytest.raises(FleetError, match='channels_per_instance'):
        normalize_policy({'channels_per_instance': 257})
    normalize_policy({'channels_per_instance': 256})


def test_port_range_validation():
    with pytest.raises(FleetError, match='overlap'):
        normalize_policy({'tunnel_ports': ['20000-20100', '20050-20200']})
    with pytest.raises(FleetError, match='1024 <= low'):
        normalize_policy({'tunnel_ports': '100-2000'})
    with pytest.raises(FleetError, match='not "low-high"'):
        normalize_policy({'tunnel_ports': '20000-x'})
    with pytest.raises(FleetError, match=r'cloud host cloud01: field "tunnel_ports" range 30000-30100 overlaps'):
        run(devs('a'), hosts({'name': 'cloud01', 'tunnel_ports': '30000-30100'}))
    with pytest.raises(FleetError, match=r'cloud host cloud01: field "tunnel_ports" range 3000-4000 contains fleet-wide reserved port\(s\) 3306'):
        run(devs('a'), hosts({'name': 'cloud01', 'tunnel_ports': '3000-4000'}))
    with pytest.raises(FleetError, match='share address 10.0.0.1'):
        run(devs('a'), hosts({'name': 'c1', 'address': '10.0.0.1'}, {'name': 'c2', 'address': '10.0.0.1'}))
    run(devs('a'), hosts({'name': 'c1', 'address': '10.0.0.1'},
                         {'name': 'c2', 'address': '10.0.0.1', 'tunnel_ports': '21000-21999', 'replica_ports': '31000-31999'},
                         ), policy={'tunnel_ports': '20000-20999', 'replica_ports': '30000-30999'})


def test_reserved_and_listening_ports_are_skipped():
    with pytest.raises(FleetError, match='fleet-wide reserved'):
        run(devs('a'), hosts('cloud01'), policy={'reserved_ports': [20005]})
    h = hosts({'name': 'cloud01', 'reserved_ports': [20000, '20002-20003'], 'tunnel_ports': '20000-20099'})
    res = run(devs('a', 'b'), h)
    assert [res.state['allocations'][d]['tunnel_mysql_port'] for d in 'ab'] == [20001, 20005]
    h = hosts({'name': 'cloud01', 'tunnel_ports': '20000-20099'})
    res = run(devs('a', 'b'), h, listening={'cloud01': {20000, 20002, 30000}})
    used = ports_by_host(res.state)['cloud01']
    assert not set(used) & {20000, 20002, 30000}
    assert res.state['allocations']['a']['tunnel_mysql_port'] == 20001


def test_exhausted_range_names_device_and_field():
    h = hosts({'name': 'cloud01', 'tunnel_ports': '20000-20003'})
    with pytest.raises(FleetError) as err:
        run(devs('a', 'b', 'c'), h)
    assert 'device c' in str(err.value) and 'capacity 2 reached' in str(err.value)
    h = hosts({'name': 'cloud01', 'tunnel_ports': '20000-20099', 'replica_ports': '30000'})
    with pytest.raises(FleetError, match='device b: .*port range exhausted'):
        run(devs('a', 'b'), h)


def test_no_cloud_host():
    with pytest.raises(FleetError, match='no cloud host is registered'):
        run(devs('a'), [])
    assert not run(devs({'id': 'a', 'status': 'disabled'}), []).changed


def test_removed_cloud_host_with_live_devices_is_an_error():
    first = run(devs('a', 'b'), hosts('cloud01', 'cloud02'), policy={'capacity': 1})
    on2 = [k for k, v in first.state['allocations'].items() if v['cloud_host'] == 'cloud02']
    with pytest.raises(FleetError, match='cloud host cloud02 was removed from the registry but 1 device'):
        run(devs('a', 'b'), hosts('cloud01'), copy.deepcopy(first.state), policy={'capacity': 1})
    # retire it first: then the host may go
    d = [normalize_device({'id': i, 'status': 'retired' if i in on2 else 'active'}) for i in ('a', 'b')]
    ok = run(d, hosts('cloud01'), copy.deepcopy(first.state), policy={'capacity': 1})
    assert on2[0] in ok.released and not any(k[0] == 'cloud02' for k in ok.state['quarantine'])


def test_device_gone_from_registry_is_released_with_warning():
    first = run(devs('a', 'b'), hosts('cloud01'))
    res = run(devs('a'), hosts('cloud01'), copy.deepcopy(first.state), now=T0 + 1)
    assert res.released.keys() == {'b'} and 'no longer in the registry' in res.warnings[0]


def test_only_limits_the_run():
    first = run(devs('a', 'b'), hosts('cloud01'))
    d = devs({'id': 'a', 'status': 'retired'}, 'b', 'c', 'd')
    res = run(d, hosts('cloud01'), copy.deepcopy(first.state), only={'c'})
    assert list(res.alloc_add) == ['c'] and not res.alloc_del
    assert 'a' in res.state['allocations']


def test_mode_change_is_sticky_with_warning():
    first = run(devs('a'), hosts('cloud01'))
    res = run(devs({'id': 'a', 'replica_mode': 'channel'}), hosts('cloud01'), copy.deepcopy(first.state))
    assert not res.changed and 'sticky' in res.warnings[0]


def test_disabled_kept_when_free_disabled_false():
    first = run(devs('a'), hosts('cloud01'))
    res = run(devs({'id': 'a', 'status': 'disabled'}), hosts('cloud01'), copy.deepcopy(first.state),
              policy={'free_disabled': False})
    assert not res.changed


def test_corrupt_state_is_detected():
    first = run(devs('a', 'b'), hosts('cloud01'))
    bad = copy.deepcopy(first.state)
    bad['allocations']['b']['tunnel_mysql_port'] = bad['allocations']['a']['tunnel_ssh_port']
    with pytest.raises(FleetError, match='port 20001 on cloud host cloud01 is held by both a and b'):
        run(devs('a', 'b'), hosts('cloud01'), bad)


def test_input_state_untouched_when_copying():
    first = run(devs('a'), hosts('cloud01'))
    snapshot = copy.deepcopy(first.state)
    run(devs('a', 'b'), hosts('cloud01'), first.state)
    assert first.state == snapshot


def test_registry_errors_name_device_and_field():
    with pytest.raises(FleetError, match=r'device a: field "id" is duplicated \(entries #0 and #2\)'):
        normalize_registry([{'id': 'a'}, {'id': 'b'}, {'id': 'a'}], [], 'r.yml')
    with pytest.raises(FleetError, match=r'device #1: field "id" value \'B\' is not allowed'):
        normalize_registry([{'id': 'a'}, {'id': 'B'}], [], 'r.yml')
    with pytest.raises(FleetError, match=r'device a: unknown field\(s\) staus'):
        normalize_registry([{'id': 'a', 'staus': 'retired'}], [], 'r.yml')
    with pytest.raises(FleetError, match=r'device a: field "status" value \'gone\''):
        normalize_registry([{'id': 'a', 'status': 'gone'}], [], 'r.yml')
    with pytest.raises(FleetError, match=r'cloud host c: field "name" is duplicated'):
        normalize_registry([], [{'name': 'c'}, {'name': 'c'}], 'r.yml')
    with pytest.raises(FleetError, match=r'cloud host a: field "name" is also a device id'):
        normalize_registry([{'id': 'a'}], [{'name': 'a'}], 'r.yml')
    with pytest.raises(FleetError, match=r'cloud host c: field "capacity" must be an integer'):
        normalize_registry([], [{'name': 'c', 'capacity': 'lots'}], 'r.yml')
    with pytest.raises(FleetError, match=r'device a: field "ssh_public_key"'):
        normalize_registry([{'id': 'a', 'ssh_public_key': 'not a key'}], [], 'r.yml')
    with pytest.raises(FleetError, match=r'device a: field "address"'):
        normalize_registry([{'id': 'a', 'address': 'x y'}], [], 'r.yml')
