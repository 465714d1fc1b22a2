# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MySQL/MariaDB registry backend on a real throwaway MariaDB: schema, allocation runs,
quarantine, and concurrent allocation runs that must never share a port."""

from __future__ import annotations

import multiprocessing
import threading

import pymysql
import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry as R
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_allocation, update_device

pytestmark = pytest.mark.mariadb


def registry(spec, **kw):
    reg = R.open_registry(spec)
    for key, value in kw.items():
        setattr(reg, key, value)
    return reg


def add_clouds(spec, *hosts):
    reg = registry(spec)
    with reg.transaction() as tx:
        for host in hosts:
            tx.upsert_cloud_host(R.normalize_cloud_host(host))
    reg.close()


def add_devices(spec, ids, **fields):
    reg = registry(spec)
    for dev_id in ids:
        update_device(reg, dev_id, dict(fields))
    reg.close()


def port_rows(spec):
    conn = pymysql.connect(host=spec['host'], port=spec['port'], user='root', password='', database=spec['database'])
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT cloud_host, port, kind, owner FROM edgefleet_ports')
            return cur.fetchall()
    finally:
        conn.close()


def test_db_registry_allocates_releases_and_quarantines(registry_spec):
    add_clouds(registry_spec, {'name': 'cloud01', 'address': '10.0.0.1'}, {'name': 'cloud02', 'address': '10.0.0.2'})
    add_devices(registry_spec, ['dev1', 'dev2', 'dev3'], site='lab')
    update_device(registry(registry_spec), 'dev3', {'replica_mode': 'channel'})
    policy = normalize_policy({})
    reg = registry(registry_spec)
    result, allocations = run_allocation(reg, policy, now=1800000000.0)
    assert sorted(allocations) == ['dev1', 'dev2', 'dev3'] and result.changed
    assert allocations['dev3']['replica_instance'] == 'multi-01'
    # what the DB holds is what the engine returned
    with reg.transaction(write=False) as tx:
        assert tx.load_state()['allocations'] == allocations
    again = run_allocation(reg, policy, now=1800000001.0)[0]
    assert not again.changed
    # retire: ports move to quarantine rows, still unique in the ports table
    update_device(reg, 'dev1', {'status': 'retired'})
    gone, after = run_allocation(reg, policy, now=1800000002.0)
    assert gone.released.keys() == {'dev1'} and 'dev1' not in after
    rows = port_rows(registry_spec)
    assert sorted(r[2] for r in rows if r[3] == 'dev1') == ['quarantine'] * 3
    # inventory built from the DB registry
    with reg.transaction(write=False) as tx:
        devices, hosts = tx.load_registry()
        state = tx.load_state()
    inv = fleet_inventory.build(devices, hosts, state, {'reach': 'tunnel'})
    assert 'dev1' not in inv['hosts'] and inv['hosts']['dev2']['ansible_host'] == '127.0.0.1'
    reg.close()


def test_db_enforces_unique_ports_and_ids(registry_spec):
    add_clouds(registry_spec, {'name': 'cloud01'})
    add_devices(registry_spec, ['dev1'])
    run_allocation(registry(registry_spec), normalize_policy({}))
    conn = pymysql.connect(host=registry_spec['host'], port=registry_spec['port'], user='root', password='', database=registry_spec['database'])
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute("INSERT INTO edgefleet_ports (cloud_host, port, kind, owner) "
                            "VALUES ('cloud01', 20000, 'tunnel_ssh', 'intruder')")
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute("INSERT INTO edgefleet_device_ids VALUES ('intruder', 1000, 77)")
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute("INSERT INTO edgefleet_device_ids VALUES ('intruder', 77, 1000)")
    finally:
        conn.close()


def test_unreachable_db_is_a_clear_error(registry_spec):
    bad = dict(registry_spec, port=1, connect_timeout=2)
    with pytest.raises(FleetError, match='is unreachable'):
        run_allocation(registry(bad), normalize_policy({}))


def test_reader_without_tables_gets_a_hint(registry_spec):
    reg = registry(registry_spec)
    with pytest.raises(FleetError, match='has no edgefleet tables yet'):
        with reg.transaction(write=False) as tx:
            tx.load_registry()


def _run_slice(args):
    spec, ids, use_lock = args
    reg = registry(spec, use_lock=use_lock)
    try:
        result = run_allocation(reg, normalize_policy({}), only=ids, attempts=50)[0]
        return sorted(result.alloc_add), reg.conflicts
    finally:
        reg.close()


def _assert_disjoint_and_complete(spec, expected):
    reg = registry(spec)
    with reg.transaction(write=False) as tx:
        allocations = tx.load_state()['allocations']
    reg.close()
    assert sorted(allocations) == sorted(expected)
    seen = set()
    for rec in allocations.values():
        for port in (rec['tunnel_mysql_port'], rec['tunnel_ssh_port'], rec['replica_port']):
            assert (rec['cloud_host'], port) not in seen
            seen.add((rec['cloud_host'], port))
    assert len(set(r['server_id'] for r in allocations.values())) == len(allocations)
    assert len(set(r['gtid_domain_id'] for r in allocations.values())) == len(allocations)
    rows = port_rows(spec)
    assert len(rows) == len(set((r[0], r[1]) for r in rows)) == 3 * len(allocations)


@pytest.mark.parametrize('use_lock', [True, False], ids=['row-lock', 'unique-keys-only'])
def test_two_processes_started_together_never_share_a_port(registry_spec, use_lock):
    """Two allocation runs (AWX job slices) for disjoint new devices, started at the same time.

    With the row lock they serialize; without it (use_lock=False) the UNIQUE keys reject the
    loser's rows, its transaction rolls back and it retries against the winner's state.
    """
    add_clouds(registry_spec, {'name': 'cloud01'}, {'name': 'cloud02'})
    left = ['a%03d' % i for i in range(40)]
    right = ['b%03d' % i for i in range(40)]
    add_devices(registry_spec, left + right)
    ctx = multiprocessing.get_context('fork')
    with ctx.Pool(2) as pool:
        out = pool.map(_run_slice, [(registry_spec, left, use_lock), (registry_spec, right, use_lock)])
    assert [o[0] for o in out] == [left, right]
    _assert_disjoint_and_complete(registry_spec, left + right)
    print('use_lock=%s: conflicts rolled back and retried: %d' % (use_lock, sum(o[1] for o in out)))


def test_many_threads_self_register_and_allocate(registry_spec):
    add_clouds(registry_spec, {'name': 'cloud01'}, {'name': 'cloud02'}, {'name': 'cloud03'})
    groups = [['t%d_%02d' % (k, i) for i in range(10)] for k in range(6)]
    errors = []
    barrier = threading.Barrier(len(groups))

    def worker(ids):
        try:
            barrier.wait()
            reg = registry(registry_spec, use_lock=False)
            for dev_id in ids:  # devices register themselves concurrently ...
                update_device(reg, dev_id, {'site': 'fleet'})
            run_allocation(reg, normalize_policy({}), only=ids, attempts=100)  # ... and allocate
            reg.close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ids,)) for ids in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _assert_disjoint_and_complete(registry_spec, sum(groups, []))


def test_db_backend_implements_the_registry_interface(registry_spec):
    """The same interface checks as the file backend's unit test (one interface, two backends)."""
    from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.module_utils.test_registry import (
        check_backend_interface,
    )
    add_clouds(registry_spec, {'name': 'cloud01', 'address': '10.0.0.1'})
    reg = registry(registry_spec)
    assert isinstance(reg, R.RegistryBackend)
    check_backend_interface(reg, normalize_policy({}))
