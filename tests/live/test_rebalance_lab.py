# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebalance and drain on the podman lab with two cloud hosts (playbooks/rebalance.yml).

Runs on the grown lab it shares with tests/live/test_onboarding_lab.py (tests/runner/grown_lab.py,
holding the shared lab lock): from the onboarding's 3 devices + 1 cloud host (device03 allocated
on cloud01, in channel mode) the lab is grown to 5 devices + 2 cloud hosts and converged by one
site.yml (the allocation spreads the new devices by capacity: both to the empty cloud02); every
device gets rows in `app.rb`. Then

1. moves one device from cloud02 to cloud01 while it keeps writing rows: afterwards its new
   replica holds every row (count and CHECKSUM TABLE equal to the device's), its allocation has
   new ports on cloud01, its old ports rest in quarantine on cloud02, its old replica is stopped
   and set aside, and no other device's allocation, rows or channel changed;
2. (marked slow: make test-failover) drains cloud02 while its device writes: every device leaves
   it, with every row.

After the last module that uses the grown lab, cloud02 is drained if it still carries a device
(playbooks/rebalance.yml), the lab is scaled back to 2 devices + 1 cloud host, the replica leftovers
of the temporary devices are removed from cloud01, and site.yml must be a no-op again (the lab as
the other engineers left it).

    python -m pytest -m lab tests/live/test_rebalance_lab.py -s
"""

from __future__ import annotations

import pytest

from tests.runner import lab
from tests.runner.grown_lab import grown_lab, rebalance  # noqa: F401  pylint: disable=unused-import

pytestmark = pytest.mark.lab


def start_writer(device, count, tag):
    lab.shell(device, "nohup /usr/local/bin/edgefleet-test-writer %d 0.3 %s >/tmp/edgefleet-test-writer.log 2>&1 &"
              % (count, tag))


def writer_done(device):
    lab.wait_for(lambda: "done" in lab.shell(device, "cat /tmp/edgefleet-test-writer.done 2>/dev/null || true"),
                 timeout=300, what="the writer on %s" % device)
    assert lab.shell(device, "cat /tmp/edgefleet-test-writer.log") == "", "a write failed on %s" % device


def device_data(device):
    (count, pos), = lab.sql(device, "SELECT COUNT(*), @@gtid_binlog_pos FROM app.rb")
    (dummy, checksum), = lab.sql(device, "CHECKSUM TABLE app.rb")
    return int(count), pos, checksum


def replica_data(device, pos):
    rec = lab.allocations()["allocations"][device]
    sock = lab.replica_socket(rec["replica_instance"])
    (waited,), = lab.sql(rec["cloud_host"], "SELECT MASTER_GTID_WAIT('%s', 120)" % pos, sock)
    assert waited == "0", "%s's replica on %s did not reach %s" % (device, rec["cloud_host"], pos)
    table = "`%sapp`.rb" % (rec.get("schema_prefix") or "")  # channel mode: <prefix>app
    (count,), = lab.sql(rec["cloud_host"], "SELECT COUNT(*) FROM %s" % table, sock)
    (dummy, checksum), = lab.sql(rec["cloud_host"], "CHECKSUM TABLE %s" % table, sock)
    return int(count), checksum


def assert_replica_matches(device):
    count, pos, checksum = device_data(device)
    assert replica_data(device, pos) == (count, checksum), "%s: replica differs from the device" % device
    return count


def channel_health(device):
    rec = lab.allocations()["allocations"][device]
    rows = lab.sql(rec["cloud_host"], "SHOW ALL SLAVES STATUS", lab.replica_socket(rec["replica_instance"]))
    return rows


@pytest.fixture(scope="module")
def two_clouds(grown_lab):  # noqa: F811  pylint: disable=redefined-outer-name
    """The allocations from before cloud02 existed (sticky: they must not change)."""
    return grown_lab["before"]


def test_new_devices_are_spread_by_capacity(two_clouds):
    alloc = lab.allocations()["allocations"]
    per_host = {}
    for device, rec in alloc.items():
        per_host.setdefault(rec["cloud_host"], []).append(device)
    assert sorted(per_host) == ["cloud01", "cloud02"]
    # devices allocated before the second cloud host existed stay where they were (sticky) ...
    for device, rec in two_clouds.items():
        if device in alloc:
            assert alloc[device] == rec
    # ... and the new ones went to the emptier host: cloud02 carries both
    new = sorted(set(alloc) - set(two_clouds))
    assert len(new) == 2 and sorted(per_host["cloud02"]) == new, per_host
    assert sorted(per_host["cloud01"]) == sorted(two_clouds), per_host
    for device in alloc:
        assert_replica_matches(device)


def test_rebalance_one_device_keeps_rows_and_checksums(two_clouds):
    before = lab.allocations()
    moving = sorted(d for d, r in before["allocations"].items() if r["cloud_host"] == "cloud02")[0]
    others = {d: r for d, r in before["allocations"].items() if d != moving}
    other_counts = {d: assert_replica_matches(d) for d in others}
    pids = {c: lab.instance_pids(c) for c in ("cloud01", "cloud02")}

    start_writer(moving, 100, "rebalance")
    stats, out = rebalance(device_id=moving, target_host="cloud01")
    writer_done(moving)

    after = lab.allocations()
    old, new = before["allocations"][moving], after["allocations"][moving]
    assert new["cloud_host"] == "cloud01"
    assert (new["server_id"], new["gtid_domain_id"]) == (old["server_id"], old["gtid_domain_id"])
    quarantined = {(q["cloud_host"], q["port"]) for q in after["quarantine"] if q["owner"] == moving}
    assert {("cloud02", old["tunnel_mysql_port"]), ("cloud02", old["tunnel_ssh_port"]),
            ("cloud02", old["replica_port"])} <= quarantined
    count = assert_replica_matches(moving)
    assert count == 600, "rows lost or duplicated during the move: %d, expected 600" % count
    # the old replica is stopped and its data set aside (not deleted)
    assert moving not in lab.instance_pids("cloud02")
    assert lab.shell("cloud02", "ls /var/lib/edgefleet/replicas/.moved").strip().startswith(moving + "-")
    # nobody else moved, lost rows or stopped replicating
    for device, rec in others.items():
        assert after["allocations"][device] == rec, "%s's allocation changed" % device
        assert assert_replica_matches(device) == other_counts[device]
    restarted = [i for c in pids for i, p in pids[c].items()
                 if i != moving and lab.instance_pids(c).get(i) not in (p,)]
    print("\nrebalance %s cloud02 -> cloud01: recap %s; other replica instances restarted: %s"
          % (moving, dict(stats.get("changed", {})), restarted or "none"))
    # a repeated run changes nothing
    again, out = rebalance(device_id=moving, target_host="cloud01")
    assert not again.get("changed", {}).get("cloud01") and not again.get("changed", {}).get("cloud02")
    assert "nothing moved" in out


# Outside make test (CI time): make test-failover runs it with the failover, on the same kind of lab.
@pytest.mark.slow
def test_drain_moves_every_device_with_its_rows(two_clouds):
    before = lab.allocations()["allocations"]
    leaving = sorted(d for d, r in before.items() if r["cloud_host"] == "cloud02")
    assert leaving, "nothing left on cloud02 to drain"
    staying = {d: r for d, r in before.items() if d not in leaving}
    expected = {}
    for device in leaving:
        expected[device] = assert_replica_matches(device) + 80
        start_writer(device, 80, "drain")
    rebalance(drain_host="cloud02")
    for device in leaving:
        writer_done(device)
    after = lab.allocations()["allocations"]
    assert not [d for d, r in after.items() if r["cloud_host"] == "cloud02"]
    for device in leaving:
        assert after[device]["cloud_host"] == "cloud01"
        assert assert_replica_matches(device) == expected[device]
    for device, rec in staying.items():
        assert after[device] == rec
    with open(lab.INVENTORY.replace("lab.fleet.yml", "registry.yml"), encoding="utf-8") as handle:
        registry = handle.read()
    assert '"name": "cloud02"' in registry and '"drain": true' in registry
    # the fleet converges: site.yml after the drain changes nothing
    res = lab.run(["ansible-playbook", "site.yml"])
    changed = lab.recap_changes(res.stdout)
    assert not changed, changed
