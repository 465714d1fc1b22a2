# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover of a lost cloud host on the podman lab (playbooks/failover.yml); `make test-failover`.

Not part of `make lab-test` (it lives outside the paths that target collects; about 14 minutes).
Holds the shared lab lock for the whole module: scales the lab to 4 devices + 2 cloud hosts
(device02 and device04 in channel mode, so cloud02 carries one instance-mode and one channel-mode
device), runs site.yml, then

1. every device of cloud02 keeps writing rows (a transient systemd unit in the device); one of
   them (device04, channel mode) loses its link first, so it is offline during the failover;
2. `podman rm -f cloud02`: the host is gone for good, with its replicas, tunnels and backups;
3. failover.yml -e failover_host=cloud02: the online device is re-homed on cloud01, its new replica
   seeded from the device through its new tunnel, replicating; the offline one is reported
   pending. The figure printed is the time from the host's loss to the end of the run, when the
   last online device was verified replicating again (caught up with its own GTID position);
4. the offline device's link comes back; failover.yml again finishes it; a third run and site.yml
   change nothing;
5. for every device of cloud02: every row written before and during the outage is on its new
   replica: 0 lost, 0 duplicated (count and distinct values), CHECKSUM TABLE equal. No other
   device's allocation changed; cloud02 is marked lost (drain, group lost_cloud).

Finally the lab goes back to 2 devices + 1 cloud host (lab/up.yml, leftovers of the temporary
devices removed from cloud01) and site.yml is a no-op again.

    scripts/lab-lock python -m pytest -s tests/failover       # what make test-failover runs
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.runner import lab
from tests.runner.grown_lab import writer_program
from tests.runner.support import Job

pytestmark = pytest.mark.lab

LOST = "cloud02"
ROWS = 300
DELAY = 0.3
PODMAN_ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(lab.ROOT, "lab", ".state", "containers.conf"))

WRITER = writer_program("fo")


def podman(*args, check=True):
    proc = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=300,
                          check=False)
    if check and proc.returncode:
        raise AssertionError("podman %s failed: %s" % (" ".join(args), proc.stderr))
    return proc.stdout


def pexec(container, script):
    """A shell command in a lab container through podman (works while its link is down)."""
    return podman("exec", container, "sh", "-c", script)


def failover(**extravars):
    job = Job("playbooks/failover.yml", lab.INVENTORY, extravars=dict(failover_host=LOST, **extravars)).run()
    try:
        assert job.status == "successful" and job.rc == 0, job.describe()
        return job.stats(), " ".join(job.stdout().split())  # YAML output folds long lines
    finally:
        job.cleanup()


def changed_hosts(stats):
    return {host: n for host, n in (stats.get("changed") or {}).items() if n}


def start_writer(device, tag):
    pexec(device, "systemd-run --quiet --unit edgefleet-test-writer --collect /usr/local/bin/edgefleet-test-writer "
                  "%d %s %s 2>/tmp/edgefleet-test-writer.log" % (ROWS, DELAY, tag))


def writer_done(device):
    lab.wait_for(lambda: "done" in pexec(device, "cat /tmp/edgefleet-test-writer.done 2>/dev/null || true"),
                 timeout=600, what="the writer on %s" % device)
    failed = pexec(device, "journalctl -q -u edgefleet-test-writer | grep -c 'failed' || true").strip()
    assert failed == "0", "a write failed on %s" % device


def device_data(device):
    (count, distinct, pos), = lab.sql(device, "SELECT COUNT(*), COUNT(DISTINCT v), @@gtid_binlog_pos FROM app.fo")
    (dummy, checksum), = lab.sql(device, "CHECKSUM TABLE app.fo")
    assert count == distinct, "%s: duplicate values on the device itself" % device
    return int(count), pos, checksum


def replica_data(device, pos):
    rec = lab.allocations()["allocations"][device]
    sock = lab.replica_socket(rec["replica_instance"])
    (waited,), = lab.sql(rec["cloud_host"], "SELECT MASTER_GTID_WAIT('%s', 120)" % pos, sock)
    assert waited == "0", "%s's replica on %s did not reach %s" % (device, rec["cloud_host"], pos)
    table = "`%sapp`.fo" % (rec.get("schema_prefix") or "")  # channel mode: <prefix>app
    (count, distinct), = lab.sql(rec["cloud_host"], "SELECT COUNT(*), COUNT(DISTINCT v) FROM %s" % table, sock)
    (dummy, checksum), = lab.sql(rec["cloud_host"], "CHECKSUM TABLE %s" % table, sock)
    return int(count), int(distinct), checksum


def assert_replica_matches(device):
    count, pos, checksum = device_data(device)
    r_count, r_distinct, r_checksum = replica_data(device, pos)
    assert (r_count, r_distinct, r_checksum) == (count, count, checksum), \
        "%s: replica %s rows (%s distinct, checksum %s), device %s rows (checksum %s)" % (
            device, r_count, r_distinct, r_checksum, count, checksum)
    return count


# With a second cloud host, Prometheus on cloud01 (site.yml's alerting step) must reach cloud02's
# node_exporter, which listens on loopback by default: cloud02 exposes it on its lab address while
# it exists (the file is removed again before the lab goes back to one cloud host).
CLOUD02_VARS = os.path.join(lab.ROOT, "inventories", "lab", "host_vars", "cloud02.yml")


def expose_cloud02_metrics():
    if os.path.exists(CLOUD02_VARS):
        return False
    os.makedirs(os.path.dirname(CLOUD02_VARS), exist_ok=True)
    with open(CLOUD02_VARS, "w", encoding="utf-8") as handle:
        handle.write("---\n# Written by tests/failover/test_failover_lab.py while the lab has two cloud hosts.\n"
                     "monitoring_node_exporter_listen_address: 10.231.0.202:9100\n")
    return True


@pytest.fixture(scope="module")
def two_clouds():
    with lab.lab_lock():
        before = lab.allocations()["allocations"]
        wrote_vars = expose_cloud02_metrics()
        try:
            lab.scale(4, 2, channel_mode_devices=["device02", "device04"])
            lab.inventory_cache(refresh=True)
            for device in ("device01", "device02", "device03", "device04"):
                lab.shell(device, WRITER)
                lab.sql(device, "CREATE DATABASE IF NOT EXISTS app")
                lab.sql(device, "USE app; CREATE TABLE IF NOT EXISTS fo (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
                lab.sql(device, "INSERT INTO app.fo (v) SELECT CONCAT('base-', seq) FROM app.seq_1_to_500")
            yield before
        finally:
            if wrote_vars:
                os.unlink(CLOUD02_VARS)
            restore_two_plus_one()


def restore_two_plus_one():
    """Back to 2 devices + 1 cloud host: lab/up.yml (the registry is rewritten without cloud02 and
    the temporary devices, whose containers are removed), site.yml, leftovers of the temporary
    devices removed from cloud01, and site.yml a no-op again."""
    alloc = lab.allocations()["allocations"]
    running = podman("ps", "--format", "{{.Names}}").split()
    for device in ("device03", "device04"):
        if device in running:
            pexec(device, "systemctl stop edgefleet-test-writer 2>/dev/null; ip link set eth0 up; "
                          "systemctl stop edgefleet-test-linkup.timer 2>/dev/null; true")
    lab.scale(2, 1)
    lab.inventory_cache(refresh=True)
    for device in ("device03", "device04"):
        rec = alloc.get(device)
        if rec and rec["cloud_host"] == "cloud01":
            lab.remove_replica_leftovers("cloud01", device, rec)
    lab.shell("cloud01", "rm -rf /var/lib/edgefleet/replicas/.moved /var/lib/edgefleet/seed")
    for device in ("device01", "device02"):
        lab.sql(device, "USE app; DROP TABLE IF EXISTS fo")
    again = lab.run(["ansible-playbook", "site.yml"])
    changed = lab.recap_changes(again.stdout)
    assert not changed, "site.yml is not a no-op after restoring the lab: %s" % changed


def test_failover_of_a_lost_cloud_host(two_clouds):
    before = lab.allocations()["allocations"]
    leaving = sorted(d for d, r in before.items() if r["cloud_host"] == LOST)
    staying = {d: r for d, r in before.items() if d not in leaving}
    assert len(leaving) == 2, "expected two devices on %s: %s" % (LOST, before)
    offline = next((d for d in leaving if before[d]["replica_mode"] == "channel"), leaving[-1])
    online = [d for d in leaving if d != offline]
    for device in before:
        assert_replica_matches(device)
    staying_counts = {d: assert_replica_matches(d) for d in staying}

    # refused while cloud02 still answers; --check (forced) prints the plan; neither changes anything
    refused = lab.run(["ansible-playbook", "playbooks/failover.yml", "-e", "failover_host=" + LOST], check=False)
    assert refused.returncode != 0 and "cloud host %s still answers SSH" % LOST in " ".join(refused.stdout.split()), \
        refused.stdout[-3000:]
    check = lab.run(["ansible-playbook", "playbooks/failover.yml", "--check", "-e", "failover_host=" + LOST,
                     "-e", "failover_force=true"])
    planned = " ".join(check.stdout.split())
    for device in leaving:
        assert "%s: %s -> cloud01" % (device, LOST) in planned, check.stdout[-4000:]
    assert lab.allocations()["allocations"] == before

    # the devices of cloud02 keep writing; one loses its link first (a timer in the device brings
    # it back if this test dies)
    for device in leaving:
        start_writer(device, "failover")
    pexec(offline, "systemd-run --quiet --unit edgefleet-test-linkup --on-active=900 /usr/sbin/ip link set eth0 up")
    pexec(offline, "ip link set eth0 down")
    time.sleep(3)

    lost_at = time.monotonic()
    podman("rm", "-f", LOST)
    stats, out = failover()
    elapsed = time.monotonic() - lost_at
    rows_during = {d: int(pexec(d, "mariadb -N -B -e 'SELECT COUNT(*) FROM app.fo'").strip()) - 500 for d in leaving}

    after = lab.allocations()["allocations"]
    for device in leaving:
        old, new = before[device], after[device]
        assert new["cloud_host"] == "cloud01"
        assert (new["server_id"], new["gtid_domain_id"], new["replica_mode"]) == \
            (old["server_id"], old["gtid_domain_id"], old["replica_mode"])
        assert new["tunnel_mysql_port"] != old["tunnel_mysql_port"] or new["cloud_host"] != old["cloud_host"]
    for device, rec in staying.items():
        assert after[device] == rec, "%s's allocation changed" % device
    assert "%s: %s -> cloud01" % (online[0], LOST) in out and "replicating, caught up" in out, out[-4000:]
    assert "%s: %s -> cloud01" % (offline, LOST) in out and "PENDING: offline" in out, out[-4000:]
    assert "Backups of %s before its loss" % LOST in out
    inv = lab.inventory()
    assert LOST not in inv["cloud"]["hosts"] and LOST in inv["lost_cloud"]["hosts"]

    for device in online:
        writer_done(device)
        assert assert_replica_matches(device) == 500 + ROWS

    # the offline device comes back: the next failover.yml run finishes it
    pexec(offline, "ip link set eth0 up; systemctl stop edgefleet-test-linkup.timer 2>/dev/null; true")
    back_at = time.monotonic()
    stats2, out2 = failover()
    finish = time.monotonic() - back_at
    assert "%s: %s -> cloud01" % (offline, LOST) in out2 and "PENDING" not in out2, out2[-4000:]
    writer_done(offline)
    assert assert_replica_matches(offline) == 500 + ROWS
    for device in online:
        assert assert_replica_matches(device) == 500 + ROWS
    for device, count in staying_counts.items():
        assert assert_replica_matches(device) == count

    # re-runs change nothing: failover.yml and site.yml (the lost host is no longer targeted)
    stats3, out3 = failover()
    assert not changed_hosts(stats3), "failover.yml re-run changed %s" % changed_hosts(stats3)
    res = lab.run(["ansible-playbook", "site.yml"])
    recap = lab.recap(res.stdout)
    assert LOST not in recap, "site.yml still targets the lost host"
    site_changed = lab.recap_changes(res.stdout)
    if site_changed:
        print("\nsite.yml after the failover changed: %s" % lab.changed_tasks(res.stdout))

    print("\nfailover of %s (%s online, %s offline): %.1f s from the host's loss (podman rm -f) to the last "
          "online device verified replicating on cloud01; rows written on the devices during the outage: %s; "
          "offline device finished %.1f s after its link came back (failover.yml re-run); "
          "0 lost, 0 duplicated, CHECKSUM TABLE equal; failover.yml re-run changed=0; first site.yml after it "
          "changed: %s" % (LOST, ", ".join(online), offline, elapsed, rows_during, finish, site_changed or "nothing"))
    assert elapsed < 300, "failover took %.1f s (goal < 300 s)" % elapsed
