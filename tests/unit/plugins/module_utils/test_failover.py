# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failing over a lost cloud host in the registry: registry_ops.run_failover (file backend) and the
inventory group of a lost host."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry as R
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import (
    lost_mark, run_allocation, run_failover,
)
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import write_fleet

T0 = 1800000000.0

REGISTRY = """devices:
  - {id: d1}
  - {id: d2, replica_mode: channel}
  - {id: d4, status: disabled}
%s
cloud_hosts:
  - {name: c1, address: 192.0.2.1%s}
  - {name: c2, address: 192.0.2.2%s}
"""


def fleet(tmp_path, c1='', c2='', d3=True):
    config = write_fleet(tmp_path, REGISTRY % ('  - {id: d3}' if d3 else '', c1, c2))
    spec, pol, _raw = resolve(str(config))
    return R.open_registry(spec, pol['lock_timeout']), pol


def files(tmp_path):
    out = {}
    for name in sorted(os.listdir(str(tmp_path))):
        path = os.path.join(str(tmp_path), name)
        if os.path.isfile(path) and not name.endswith('.lock'):
            with open(path, 'rb') as handle:
                out[name] = hashlib.sha256(handle.read()).hexdigest()
    return out


def placed(tmp_path):
    """Registry with d1, d2 on c1 and d3 on c2 (c2 added after the first allocation)."""
    reg, pol = fleet(tmp_path, c2=', drain: true', d3=False)
    run_allocation(reg, pol, now=T0)
    reg, pol = fleet(tmp_path)
    run_allocation(reg, pol, only=['d3'], now=T0)
    return reg, pol


def test_fixture_placement(tmp_path):
    reg, _pol = placed(tmp_path)
    alloc = reg.load_state()['allocations']
    assert {d: r['cloud_host'] for d, r in alloc.items()} == {'d1': 'c1', 'd2': 'c1', 'd3': 'c2'}


def test_failover_moves_every_active_device_and_marks_the_host(tmp_path):
    reg, pol = placed(tmp_path)
    before = reg.load_state()['allocations']
    result, mark, changed = run_failover(reg, pol, 'c1', now=T0 + 60)
    assert changed
    assert mark == {'at': '2027-01-15T08:01:00Z', 'devices': ['d1', 'd2']}
    after = reg.load_state()['allocations']
    for dev in ('d1', 'd2'):
        old, new = before[dev], after[dev]
        assert new['cloud_host'] == 'c2'
        assert (new['server_id'], new['gtid_domain_id'], new['replica_mode'], new['channel_name']) == \
            (old['server_id'], old['gtid_domain_id'], old['replica_mode'], old['channel_name'])
    assert after['d3'] == before['d3']
    host = reg.get_cloud_host('c1')
    assert host['drain'] is True and lost_mark(host) == mark
    assert sorted(c['device'] for c in result.changes if c['action'] == 'move') == ['d1', 'd2']


def test_failover_rerun_changes_nothing(tmp_path):
    reg, pol = placed(tmp_path)
    run_failover(reg, pol, 'c1', now=T0 + 60)
    snap = files(tmp_path)
    result, mark, changed = run_failover(reg, pol, 'c1', now=T0 + 120)
    assert not changed and not result.alloc_add
    assert mark['devices'] == ['d1', 'd2'] and mark['at'] == '2027-01-15T08:01:00Z'
    assert files(tmp_path) == snap


def test_check_mode_writes_nothing(tmp_path):
    reg, pol = placed(tmp_path)
    snap = files(tmp_path)
    result, mark, changed = run_failover(reg, pol, 'c1', check_mode=True, now=T0 + 60)
    assert changed and sorted(result.alloc_add) == ['d1', 'd2'] and mark['devices'] == ['d1', 'd2']
    assert files(tmp_path) == snap


@pytest.mark.parametrize('host, kwargs, message', [
    ('c9', {}, r'cloud host c9: not in the registry'),
    ('c1', {'alive': True}, r'cloud host c1 still answers SSH: it is not lost'),
])
def test_refusals_write_nothing(tmp_path, host, kwargs, message):
    reg, pol = placed(tmp_path)
    snap = files(tmp_path)
    with pytest.raises(FleetError, match=message):
        run_failover(reg, pol, host, **kwargs)
    assert files(tmp_path) == snap


def test_alive_host_forced(tmp_path):
    reg, pol = placed(tmp_path)
    _result, _mark, changed = run_failover(reg, pol, 'c1', alive=True, force=True, now=T0 + 60)
    assert changed and reg.get_cloud_host('c1')['drain']


def test_alive_but_already_lost_is_finished(tmp_path):
    reg, pol = placed(tmp_path)
    run_failover(reg, pol, 'c1', now=T0 + 60)
    _result, _mark, changed = run_failover(reg, pol, 'c1', alive=True, now=T0 + 120)
    assert not changed


def test_no_surviving_host(tmp_path):
    reg, pol = placed(tmp_path)
    reg2, pol2 = fleet(tmp_path, c2=', drain: true')
    snap = files(tmp_path)
    with pytest.raises(FleetError, match=r'no surviving capacity for the 2 device\(s\) of lost cloud host c1'):
        run_failover(reg2, pol2, 'c1')
    assert files(tmp_path) == snap


def test_not_enough_capacity(tmp_path):
    reg, pol = placed(tmp_path)
    reg2, pol2 = fleet(tmp_path, c2=', capacity: 2')
    snap = files(tmp_path)
    with pytest.raises(FleetError, match=r'no surviving capacity for the devices of lost cloud host c1'):
        run_failover(reg2, pol2, 'c1')
    assert files(tmp_path) == snap


def test_interrupted_after_the_mark_is_finished(tmp_path):
    """The mark is written first: a run that stopped before the allocation is finished by the next."""
    reg, pol = placed(tmp_path)
    with reg.transaction() as tx:
        host = tx.get_cloud_host('c1')
        tx.upsert_cloud_host(dict(host, drain=True, vars={'edgefleet_lost': {'at': 'x', 'devices': ['d1', 'd2']}}))
    result, mark, changed = run_failover(reg, pol, 'c1', alive=True, now=T0 + 60)
    assert changed and sorted(result.alloc_add) == ['d1', 'd2'] and mark == {'at': 'x', 'devices': ['d1', 'd2']}


def test_lost_host_leaves_the_cloud_group(tmp_path):
    reg, pol = placed(tmp_path)
    run_failover(reg, pol, 'c1', now=T0 + 60)
    devices, hosts = reg.load_registry()
    inv = fleet_inventory.build(devices, hosts, reg.load_state())
    assert inv['groups']['cloud'] == ['c2'] and inv['groups']['lost_cloud'] == ['c1']
    assert sorted(e['id'] for e in inv['hosts']['c2']['edgefleet_cloud_devices']) == ['d1', 'd2', 'd3']
