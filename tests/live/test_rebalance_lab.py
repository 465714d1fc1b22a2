# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebalance and drain on the podman lab with two cloud hosts (playbooks/rebalance.yml).

Holds the shared lab lock for the whole module: scales the lab to 4 devices + 2 cloud hosts,
runs site.yml (the allocation spreads the new devices by capacity), then

1. moves one device from cloud02 to cloud01 while it keeps writing rows: afterwards its new
   replica holds every row (count and CHECKSUM TABLE equal to the device's), its allocation has
   new ports on cloud01, its old ports rest in quarantine on cloud02, its old replica is stopped
   and set aside, and no other device's allocation, rows or channel changed;
2. drains cloud02 while its device writes: every device leaves it, with every row.

Finally it drains cloud02 if needed, scales back to 2 devices + 1 cloud host, runs `make
lab-vars` and site.yml, removes the replica datadirs of the temporary devices from cloud01,
and checks that site.yml is a no-op again (the lab as the other engineers left it).

    python -m pytest -m lab tests/live/test_rebalance_lab.py -s       # about 8 minutes
"""

from __future__ import annotations

import pytest

from tests.runner import lab
from tests.runner.support import Job

pytestmark = pytest.mark.lab

WRITER = r"""cat > /usr/local/bin/edgefleet-test-writer <<'EOF'
#!/bin/sh
# edgefleet-test-writer COUNT DELAY TAG: insert COUNT rows into app.rb, one every DELAY seconds
rm -f /tmp/edgefleet-test-writer.done
i=1
while [ $i -le $1 ]; do
  mariadb app -e "INSERT INTO rb (v) VALUES ('$3-$i')" || echo "insert $i failed" >&2
  i=$((i+1)); sleep $2
done
echo done > /tmp/edgefleet-test-writer.done
EOF
chmod 0755 /usr/local/bin/edgefleet-test-writer"""


def rebalance(**extravars):
    job = Job("playbooks/rebalance.yml", lab.INVENTORY, extravars=extravars).run()
    try:
        assert job.status == "successful" and job.rc == 0, job.describe()
        return job.stats(), job.stdout()
    finally:
        job.cleanup()


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
def two_clouds():
    with lab.lab_lock():
        before = lab.allocations()["allocations"]
        try:
            lab.scale(4, 2)
            lab.inventory_cache(refresh=True)
            for device in ("device01", "device02", "device03", "device04"):
                lab.shell(device, WRITER)
                lab.sql(device, "CREATE DATABASE IF NOT EXISTS app")
                lab.sql(device, "USE app; CREATE TABLE IF NOT EXISTS rb (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
                lab.sql(device, "INSERT INTO app.rb (v) SELECT CONCAT('base-', seq) FROM app.seq_1_to_500")
            yield before
        finally:
            restore_two_plus_one()


def restore_two_plus_one():
    """Drain cloud02 if it still carries devices, scale back to 2 + 1, converge, clean cloud01."""
    alloc = lab.allocations()["allocations"]
    if any(rec["cloud_host"] == "cloud02" for rec in alloc.values()):
        rebalance(drain_host="cloud02")
    lab.scale(2, 1)
    lab.inventory_cache(refresh=True)
    lab.shell("cloud01", "rm -rf /var/lib/edgefleet/replicas/device03 /var/lib/edgefleet/replicas/device04 "
                         "/var/lib/edgefleet/replicas/.moved /var/lib/edgefleet/replicas/.applied/device03.* "
                         "/var/lib/edgefleet/replicas/.applied/device04.* /var/lib/edgefleet/moves")
    for device in ("device01", "device02"):
        lab.sql(device, "USE app; DROP TABLE IF EXISTS rb")
    again = lab.run(["ansible-playbook", "site.yml"])
    changed = {h: r["changed"] for h, r in lab.recap(again.stdout).items() if r["changed"]}
    assert not changed, "site.yml is not a no-op after restoring the lab: %s" % changed


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
    # ... and the new ones went to the emptier host, so both carry two
    assert sorted(len(v) for v in per_host.values()) == [2, 2], per_host
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
    changed = {h: r["changed"] for h, r in lab.recap(res.stdout).items() if r["changed"]}
    assert not changed, changed
