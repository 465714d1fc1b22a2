# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving devices between cloud hosts (rebalance one device, drain a host): allocation.move()."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_policy
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    normalize_cloud_host, normalize_device,
)

T0 = 1800000000.0
DAY = 86400.0


def devs(*specs):
    return [normalize_device(s if isinstance(s, dict) else {'id': s}) for s in specs]


def hosts(*specs):
    return [normalize_cloud_host(s if isinstance(s, dict) else {'name': s}) for s in specs]


def alloc(devices, clouds, policy=None, state=None, now=T0):
    return A.allocate(devices, clouds, normalize_policy(policy or {}), state or A.empty_state(), now=now)


def move(devices, clouds, state, ids, target=None, policy=None, now=T0 + 60):
    return A.move(devices, clouds, normalize_policy(policy or {}), state, ids, target=target, now=now)


def held_ports(state):
    """{(host, port): owner} over allocations, instances and quarantine; asserts no port twice."""
    out = {}

    def add(key, owner):
        assert key not in out, 'port %s held by %s and %s' % (key, out[key], owner)
        out[key] = owner
    for dev_id, rec in state['allocations'].items():
        add((rec['cloud_host'], rec['tunnel_mysql_port']), dev_id)
        add((rec['cloud_host'], rec['tunnel_ssh_port']), dev_id)
        if rec['replica_mode'] == 'instance':
            add((rec['cloud_host'], rec['replica_port']), dev_id)
    for key, inst in state['instances'].items():
        add((key[0], inst['port']), 'instance ' + key[1])
    for key, entry in state['quarantine'].items():
        add(key, 'quarantine ' + entry['owner'])
    return out


@pytest.fixture
def two_hosts():
    d = devs('a', 'b', 'c', 'd')
    h = hosts('cloud01', 'cloud02')
    return d, h, alloc(d, h).state


def test_capacity_spreads_devices_over_two_hosts(two_hosts):
    _d, _h, state = two_hosts
    per = {}
    for rec in state['allocations'].values():
        per.setdefault(rec['cloud_host'], []).append(rec['id'])
    assert {k: len(v) for k, v in per.items()} == {'cloud01': 2, 'cloud02': 2}


def test_move_one_device_to_a_chosen_host(two_hosts):
    d, h, state = two_hosts
    dev = sorted(k for k, v in state['allocations'].items() if v['cloud_host'] == 'cloud01')[0]
    before = copy.deepcopy(state)
    res = move(d, h, state, [dev], target='cloud02')
    assert res.changed
    new = res.state['allocations'][dev]
    old = before['allocations'][dev]
    assert new['cloud_host'] == 'cloud02'
    # identity kept, placement new
    for key in ('server_id', 'gtid_domain_id', 'replica_mode', 'replica_instance', 'channel_name', 'schema_prefix',
                'replica_datadir'):
        assert new[key] == old[key], key
    assert new['replica_server_id'] not in [r['replica_server_id'] for r in before['allocations'].values()]
    # old ports rest in quarantine on the old host, owned by the device
    for port in (old['tunnel_mysql_port'], old['tunnel_ssh_port'], old['replica_port']):
        assert res.state['quarantine'][('cloud01', port)]['owner'] == dev
    # nobody else moved
    for other, rec in before['allocations'].items():
        if other != dev:
            assert res.state['allocations'][other] == rec
    held_ports(res.state)
    assert [c['action'] for c in res.changes] == ['move']
    change = res.changes[0]
    assert change['from_host'] == 'cloud01' and change['to_host'] == 'cloud02'
    assert res.alloc_del == [dev] and list(res.alloc_add) == [dev] and res.released[dev] == old
    assert before == state, 'input state must not be modified (copy_state)'


def test_repeating_a_move_is_a_noop(two_hosts):
    d, h, state = two_hosts
    dev = sorted(k for k, v in state['allocations'].items() if v['cloud_host'] == 'cloud01')[0]
    first = move(d, h, state, [dev], target='cloud02')
    again = move(d, h, first.state, [dev], target='cloud02', now=T0 + 120)
    assert not again.changed and again.skipped == [dev]
    # and a normal allocation run afterwards changes nothing either
    assert not alloc(d, h, state=copy.deepcopy(first.state), now=T0 + 180).changed


def test_move_without_target_picks_by_capacity_and_never_the_source():
    d = devs('a', 'b', 'c')
    h = hosts('cloud01', {'name': 'cloud02', 'capacity': 1}, {'name': 'cloud03', 'capacity': 10})
    state = alloc(d, h).state
    assert set(A.devices_on(state, d, 'cloud01')) == {'a', 'b', 'c'}
    res = move(d, h, state, ['a'])
    # cloud02 would be full (1/1) after taking it, cloud03 only 1/10
    assert res.state['allocations']['a']['cloud_host'] == 'cloud03'
    res = move(d, h, state, ['a', 'b', 'c'])
    assert sorted(r['cloud_host'] for r in res.state['allocations'].values()) == ['cloud03'] * 3  # 3/10 still beats 1/1


def test_drain_moves_every_active_device_and_keeps_others():
    d = devs('a', 'b', 'c', 'd', 'e', 'f')
    h = hosts('cloud01', 'cloud02', 'cloud03')
    state = alloc(d, h).state
    on1 = A.devices_on(state, d, 'cloud01')
    assert on1
    h2 = hosts({'name': 'cloud01', 'drain': True}, 'cloud02', 'cloud03')
    res = move(d, h2, state, on1)
    assert A.devices_on(res.state, d, 'cloud01') == []
    assert sorted(res.alloc_add) == on1
    for dev_id, rec in state['allocations'].items():
        if dev_id not in on1:
            assert res.state['allocations'][dev_id] == rec
    held_ports(res.state)
    # capacity: the two remaining hosts are filled evenly
    per = {}
    for rec in res.state['allocations'].values():
        per[rec['cloud_host']] = per.get(rec['cloud_host'], 0) + 1
    assert sorted(per.values()) == [3, 3]
    # a drained host then holds only quarantine; it can leave once that expires
    later = alloc(d, hosts('cloud02', 'cloud03'), state=copy.deepcopy(res.state), now=T0 + 30 * DAY)
    assert not any(k[0] == 'cloud01' for k in later.state['quarantine'])


def test_channel_mode_move_takes_a_slot_on_the_target():
    pol = {'replica_mode': 'channel', 'channels_per_instance': 2}
    d = devs('a', 'b', 'c')
    h = hosts('cloud01', 'cloud02')
    state = alloc(d, h, policy=pol).state
    src = state['allocations']['a']['cloud_host']
    dst = 'cloud02' if src == 'cloud01' else 'cloud01'
    res = move(d, h, state, ['a'], target=dst, policy=pol)
    new = res.state['allocations']['a']
    assert new['cloud_host'] == dst and new['replica_mode'] == 'channel'
    assert new['schema_prefix'] == 'a_' and new['channel_name'] == 'a'
    inst = A.instances_by_host(res.state)
    assert 'a' in [c for i in inst[dst] for c in i['channels']]
    assert 'a' not in [c for i in inst.get(src, []) for c in i['channels']]
    held_ports(res.state)


def test_move_keeps_the_allocated_mode_even_if_the_registry_changed():
    d = devs('a')
    h = hosts('cloud01', 'cloud02')
    state = alloc(d, h).state
    d2 = devs({'id': 'a', 'replica_mode': 'channel'})
    res = move(d2, h, state, ['a'], target='cloud02')
    assert res.state['allocations']['a']['replica_mode'] == 'instance'


def test_move_errors_write_nothing(two_hosts):
    d, h, state = two_hosts
    with pytest.raises(FleetError, match='device zz: not in the registry'):
        move(d, h, state, ['zz'])
    with pytest.raises(FleetError, match='cloud host nowhere: not in the registry'):
        move(d, h, state, ['a'], target='nowhere')
    with pytest.raises(FleetError, match='cloud host cloud02 drains'):
        move(d, hosts('cloud01', {'name': 'cloud02', 'drain': True}), state, ['a'], target='cloud02')
    retired = devs({'id': 'a', 'status': 'retired'}, 'b', 'c', 'd')
    with pytest.raises(FleetError, match='device a is retired'):
        move(retired, h, state, ['a'])
    new = devs('a', 'b', 'c', 'd', 'e')
    with pytest.raises(FleetError, match='device e has no allocation yet'):
        move(new, h, state, ['e'])
    only_one = hosts('cloud01')
    on1 = A.devices_on(state, d, 'cloud01')
    with pytest.raises(FleetError, match='cannot move .* away from cloud host cloud01: .*no cloud host can take it'):
        move(d, hosts('cloud01', {'name': 'cloud02', 'drain': True}), state, on1)
    del only_one


def test_full_target_is_refused():
    d = devs('a', 'b')
    h = hosts({'name': 'cloud01', 'capacity': 1}, {'name': 'cloud02', 'capacity': 1})
    state = alloc(d, h).state
    with pytest.raises(FleetError, match='capacity 1 reached'):
        other = [x for x in ('cloud01', 'cloud02') if x != state['allocations']['a']['cloud_host']][0]
        move(d, h, state, ['a'], target=other)


def test_moved_ports_are_reused_only_after_quarantine():
    small = {'name': 'cloud01', 'tunnel_ports': '20000-20005', 'replica_ports': '30000-30002'}
    d = devs('a')
    state = alloc(d, hosts(small)).state
    assert state['allocations']['a']['tunnel_mysql_port'] == 20000
    h = hosts(small, {'name': 'cloud02', 'capacity': 1})
    moved = move(d, h, state, ['a'], target='cloud02').state
    soon = alloc(devs('a', 'b'), h, state=copy.deepcopy(moved), now=T0 + DAY).state
    b = soon['allocations']['b']
    assert b['cloud_host'] == 'cloud01' and (b['tunnel_mysql_port'], b['tunnel_ssh_port']) == (20002, 20003)
    later = alloc(devs('a', 'b', 'c'), h, state=copy.deepcopy(soon), now=T0 + 8 * DAY).state
    c = later['allocations']['c']
    assert (c['cloud_host'], c['tunnel_mysql_port'], c['tunnel_ssh_port']) == ('cloud01', 20000, 20001)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), n_hosts=st.integers(2, 4), mode=st.sampled_from(['instance', 'channel']),
       moves=st.lists(st.tuples(st.integers(0, 11), st.one_of(st.none(), st.integers(0, 3))), max_size=6),
       drain=st.one_of(st.none(), st.integers(0, 3)))
def test_moves_keep_every_invariant(n, n_hosts, mode, moves, drain):
    pol = {'replica_mode': mode, 'channels_per_instance': 3}
    d = devs(*['d%02d' % i for i in range(n)])
    names = ['cloud%02d' % i for i in range(n_hosts)]
    h = hosts(*names)
    state = alloc(d, h, policy=pol).state
    now = T0
    for index, target in moves:
        dev = 'd%02d' % (index % n)
        tgt = names[target % n_hosts] if target is not None else None
        before = copy.deepcopy(state)
        now += 60
        res = move(d, h, state, [dev], target=tgt, policy=pol, now=now)
        state = res.state
        held_ports(state)
        for other, rec in before['allocations'].items():
            if other != dev:
                assert state['allocations'][other] == rec
        rec = state['allocations'][dev]
        assert rec['server_id'] == before['allocations'][dev]['server_id']
        assert rec['gtid_domain_id'] == before['allocations'][dev]['gtid_domain_id']
        if tgt is not None:
            assert rec['cloud_host'] == tgt
        else:
            assert rec['cloud_host'] != before['allocations'][dev]['cloud_host']
    if drain is not None:
        source = names[drain % n_hosts]
        h2 = hosts(*[{'name': x, 'drain': x == source} for x in names])
        res = move(d, h2, state, A.devices_on(state, d, source), policy=pol, now=now + 60)
        assert A.devices_on(res.state, d, source) == []
        held_ports(res.state)
        state = res.state
    # replica server ids stay unique, the allocation is complete and a normal run is a no-op
    rsids = [r['replica_server_id'] for r in state['allocations'].values() if r['replica_mode'] == 'instance']
    rsids += [i['server_id'] for i in state['instances'].values()]
    assert len(rsids) == len(set(rsids))
    assert sorted(state['allocations']) == [x['id'] for x in d]
    hs = h if drain is None else hosts(*[{'name': x, 'drain': x == names[drain % n_hosts]} for x in names])
    assert not alloc(d, hs, policy=pol, state=copy.deepcopy(state), now=now + 120).changed
