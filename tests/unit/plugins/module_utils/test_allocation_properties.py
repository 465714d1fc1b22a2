# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests: allocator invariants over random histories of adds, disables, retires,
re-activations, cloud host changes and time passing."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_policy
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import normalize_cloud_host, normalize_device

DAY = 86400.0

ops = st.lists(st.one_of(
    st.tuples(st.just('add'), st.integers(1, 6), st.sampled_from([None, 'instance', 'channel'])),
    st.tuples(st.just('disable'), st.integers(0, 10 ** 6)),
    st.tuples(st.just('retire'), st.integers(0, 10 ** 6)),
    st.tuples(st.just('activate'), st.integers(0, 10 ** 6)),
    st.tuples(st.just('wait'), st.floats(0, 10)),
    st.tuples(st.just('add_host'), st.integers(1, 20)),
    st.tuples(st.just('drain'), st.integers(0, 10 ** 6)),
), min_size=1, max_size=25)

policies = st.fixed_dictionaries({
    'replica_mode': st.sampled_from(['instance', 'channel']),
    'channels_per_instance': st.integers(1, 4),
    'quarantine_days': st.sampled_from([0, 1, 3]),
    'free_disabled': st.booleans(),
    'tunnel_ports': st.sampled_from(['20000-20011', ['20000-20005', '20100-20109'], '20000-20399']),
    'replica_ports': st.sampled_from(['30000-30007', '30000-30199']),
})


def check_invariants(state, before, devices, clouds, policy, quarantined_before, now):
    cloud_by_name = dict((h['name'], h) for h in clouds)
    allocations = state['allocations']
    # no duplicate port per cloud host, over everything that holds one
    for name in cloud_by_name:
        held = []
        for rec in allocations.values():
            if rec['cloud_host'] == name:
                held += [rec['tunnel_mysql_port'], rec['tunnel_ssh_port']]
                if rec['replica_mode'] == 'instance':
                    held.append(rec['replica_port'])
        held += [i['port'] for k, i in state['instances'].items() if k[0] == name]
        held += [k[1] for k in state['quarantine'] if k[0] == name]
        assert len(held) == len(set(held)), 'duplicate port on %s' % name
        reserved = policy['reserved_ports']
        assert not set(held) & reserved
    # fleet-wide unique ids (also against retired devices' ids) and replica server ids
    sids = [p['server_id'] for p in state['ids'].values()]
    dids = [p['gtid_domain_id'] for p in state['ids'].values()]
    assert len(sids) == len(set(sids)) and len(dids) == len(set(dids))
    rsids = set()
    for rec in allocations.values():
        assert state['ids'][rec['id']] == {'server_id': rec['server_id'], 'gtid_domain_id': rec['gtid_domain_id']}
        if rec['replica_mode'] == 'instance':
            assert rec['replica_server_id'] not in rsids
            rsids.add(rec['replica_server_id'])
    for inst in state['instances'].values():
        assert inst['server_id'] not in rsids
        rsids.add(inst['server_id'])
    assert not rsids & set(sids)
    # sticky: a device that keeps its allocation keeps it unchanged
    by_id = dict((d['id'], d) for d in devices)
    for dev_id, rec in before.items():
        if dev_id in allocations:
            assert allocations[dev_id] == rec
    # every active device is allocated; released ones are not
    for dev in devices:
        if dev['status'] == 'active':
            assert dev['id'] in allocations
        elif dev['status'] == 'retired' or policy['free_disabled']:
            assert dev['id'] not in allocations
    # capacity and channels per instance
    counts = {}
    channels = {}
    for rec in allocations.values():
        counts[rec['cloud_host']] = counts.get(rec['cloud_host'], 0) + 1
        if rec['replica_mode'] == 'channel':
            key = (rec['cloud_host'], rec['replica_instance'])
            channels[key] = channels.get(key, 0) + 1
            assert key in state['instances']
    for name, count in counts.items():
        host = cloud_by_name[name]
        cap = host['capacity'] if host['capacity'] is not None else policy['capacity']
        tunnel = host['tunnel_ports'] or policy['tunnel_ports']
        limit = sum(hi - lo + 1 for lo, hi in tunnel) // 2
        assert count <= (limit if cap is None else min(cap, limit))
    assert all(n <= policy['channels_per_instance'] for n in channels.values())
    # a port still in quarantine is never handed to a new allocation
    for dev_id, rec in allocations.items():
        if dev_id in before:
            continue
        for port in (rec['tunnel_mysql_port'], rec['tunnel_ssh_port']):
            released = quarantined_before.get((rec['cloud_host'], port))
            if released is not None:
                assert released + policy['quarantine_days'] * DAY <= now
        assert by_id[dev_id]['status'] == 'active'


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_raw=policies, history=ops, capacities=st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=1, max_size=3))
def test_invariants_hold_over_random_histories(policy_raw, history, capacities):
    policy = normalize_policy(policy_raw)
    clouds = [normalize_cloud_host({'name': 'c%d' % i, 'capacity': cap}) for i, cap in enumerate(capacities)]
    devices = []
    state = A.empty_state()
    now = 1800000000.0
    serial = 0
    for op in history:
        kind = op[0]
        if kind == 'add':
            for _index in range(op[1]):
                devices.append(normalize_device({'id': 'd%03d' % serial, 'replica_mode': op[2]}))
                serial += 1
        elif kind in ('disable', 'retire', 'activate') and devices:
            idx = op[1] % len(devices)
            status = {'disable': 'disabled', 'retire': 'retired', 'activate': 'active'}[kind]
            if devices[idx]['status'] != 'retired' or status == 'retired':
                devices[idx] = dict(devices[idx], status=status)
        elif kind == 'wait':
            now += op[1] * DAY
            continue
        elif kind == 'add_host':
            clouds.append(normalize_cloud_host({'name': 'c%d' % len(clouds), 'capacity': op[1]}))
        elif kind == 'drain':
            idx = op[1] % len(clouds)
            clouds[idx] = dict(clouds[idx], drain=True)
        before = copy.deepcopy(state['allocations'])
        quarantined = dict((k, A.parse_iso(v['released_at'])) for k, v in state['quarantine'].items())
        snapshot = copy.deepcopy(state)
        try:
            result = A.allocate(devices, clouds, policy, state, now=now)
        except FleetError as exc:
            assert 'no cloud host can take it' in str(exc) or 'space exhausted' in str(exc)
            assert state == snapshot  # nothing changed on error
            # undo the op that could not be satisfied: drop devices that are still unallocated
            devices = [d for d in devices if d['id'] in state['allocations'] or d['status'] != 'active']
            continue
        state = result.state
        check_invariants(state, before, devices, clouds, policy, quarantined, now)
        # a second run right away allocates and releases nothing (with quarantine_days 0 it may
        # only let just-freed ports out of quarantine); a third one changes nothing at all
        again = A.allocate(devices, clouds, policy, state, now=now)
        assert not again.alloc_add and not again.alloc_del and not again.ids_add and not again.inst_add
        assert not A.allocate(devices, clouds, policy, again.state, now=now).changed
