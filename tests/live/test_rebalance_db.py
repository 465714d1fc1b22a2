# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving devices (rebalance, drain) with the MySQL registry backend on a real throwaway MariaDB:
the UNIQUE keys of the ports/allocations tables must accept a move (delete, quarantine, insert in
one transaction), and what the DB holds afterwards is what the engine computed."""

from __future__ import annotations

import pymysql
import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry as R
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import (
    run_allocation, update_cloud_host, update_device,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_move

pytestmark = pytest.mark.mariadb
T0 = 1800000000.0


def rows(spec, sql):
    conn = pymysql.connect(host=spec['host'], port=spec['port'], user='root', password='', database=spec['database'])
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize('mode', ['instance', 'channel'])
def test_move_and_drain_persist_in_the_db(registry_spec, mode):
    reg = R.open_registry(registry_spec)
    for name, address in (('cloud01', '10.0.0.1'), ('cloud02', '10.0.0.2')):
        update_cloud_host(reg, name, {'address': address})
    for index in range(6):
        update_device(reg, 'dev%d' % index, {'replica_mode': mode})
    policy = normalize_policy({'channels_per_instance': 2})
    _res, first = run_allocation(reg, policy, now=T0)
    on1 = sorted(d for d, r in first.items() if r['cloud_host'] == 'cloud01')
    assert on1 and len(on1) < 6

    # one device: check mode writes nothing, the real run persists exactly the engine's state
    dev = on1[0]
    plan, dummy = run_move(reg, policy, move_ids=[dev], move_to='cloud02', check_mode=True, now=T0 + 60)
    assert plan.changed
    with reg.transaction(write=False) as tx:
        assert tx.load_state()['allocations'] == first
    res, after = run_move(reg, policy, move_ids=[dev], move_to='cloud02', now=T0 + 60)
    assert after[dev]['cloud_host'] == 'cloud02'
    with reg.transaction(write=False) as tx:
        assert tx.load_state()['allocations'] == after
    quarantined = rows(registry_spec, "SELECT cloud_host, owner FROM edgefleet_ports WHERE kind = 'quarantine'")
    assert set(quarantined) == {('cloud01', dev)}
    assert not run_move(reg, policy, move_ids=[dev], move_to='cloud02', now=T0 + 61)[0].changed

    # drain cloud01: every active device leaves it, the others keep their rows
    update_cloud_host(reg, 'cloud01', {'drain': True})
    res, drained = run_move(reg, policy, move_from='cloud01', now=T0 + 120)
    assert sorted(res.alloc_add) == on1[1:]
    assert not [d for d, r in drained.items() if r['cloud_host'] == 'cloud01']
    for dev_id, rec in after.items():
        if dev_id not in on1:
            assert drained[dev_id] == rec
    held = rows(registry_spec, "SELECT cloud_host, port FROM edgefleet_ports")
    assert len(held) == len(set(held))
    live = rows(registry_spec, "SELECT cloud_host FROM edgefleet_ports WHERE kind <> 'quarantine' "
                               "AND cloud_host = 'cloud01' AND kind <> 'instance'")
    assert live == ()
    # a normal allocation afterwards is a no-op
    assert not run_allocation(reg, policy, now=T0 + 180)[0].changed
    reg.close()
