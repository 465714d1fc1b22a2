"""Consistency check and resync on the lab (playbooks/consistency.yml, playbooks/resync.yml).

Healthy devices report nothing; a row changed directly on one device's replica (sql_log_bin=0,
root bypassing read_only) is found and named, shows in the fleet status, and resync.yml re-seeds
the replica so the next check is clean. Everything is put back, even on failure.

    flock /tmp/edgefleet-lab.lock python -m pytest -m lab tests/live/test_consistency_lab.py
"""
import json
import pathlib
import subprocess
import time

import pytest

from tests.live.support import wait_for
from tests.support.lab import ENV, ROOT, devices, hostvars, lab_host, replica_schema, replica_socket, sql

pytestmark = pytest.mark.lab

DEVICES = devices()
PROBE = "edgefleet_consistency_probe"
PLAIN_ENV = dict(ENV, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")


def playbook(*args, timeout=600):
    started = time.time()
    proc = subprocess.run(["ansible-playbook", *args], env=PLAIN_ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return proc, time.time() - started


def on_replica(device, query):
    cloud = lab_host(hostvars(device)["edgefleet_cloud_host"])
    return sql(cloud, query, socket=replica_socket(device))


def result_file(device):
    cloud = lab_host(hostvars(device)["edgefleet_cloud_host"])
    return json.loads(cloud.file(f"/var/lib/edgefleet/consistency/{device}.json").content_string)


@pytest.fixture(scope="module")
def target():
    assert len(DEVICES) >= 2
    device = DEVICES[-1]
    # the probe table on every device, so that every device's check compares data (a fresh lab
    # has no tables of its own)
    for each in DEVICES:
        lab_host(each).check_output(
            "mariadb -e %s", f"CREATE DATABASE IF NOT EXISTS app; USE app; CREATE TABLE IF NOT EXISTS {PROBE} "
            "(id INT PRIMARY KEY, name VARCHAR(20), qty INT); "
            f"REPLACE INTO {PROBE} VALUES (1, 'one', 1), (2, 'two', 2), (3, 'three', 3)")
    for each in DEVICES:
        wait_for(lambda each=each: on_replica(each, f"SELECT COUNT(*) FROM `{replica_schema(each)}`.{PROBE}") == [["3"]],
                 60, f"probe rows on the replica of {each}")
    try:
        yield device
    finally:
        # put the replica row back (if resync did not), drop the probe, record a clean check
        schema = replica_schema(device)
        on_replica(device, f"SET SESSION sql_log_bin=0; UPDATE `{schema}`.{PROBE} SET qty = 2 WHERE id = 2")
        for each in DEVICES:
            lab_host(each).check_output("mariadb app -e %s", f"DROP TABLE IF EXISTS {PROBE}")
            wait_for(lambda each=each: on_replica(each, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                                        f"TABLE_SCHEMA='{replica_schema(each)}' AND TABLE_NAME='{PROBE}'")
                     == [["0"]], 60, f"probe dropped on the replica of {each}")
        proc, _output = playbook("playbooks/consistency.yml")
        assert proc.returncode == 0, "lab left inconsistent:\n" + proc.stdout[-3000:]


def test_healthy_fleet_reports_nothing(target):
    proc, took = playbook("playbooks/consistency.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "device(s) identical to their replicas" in proc.stdout
    for device in DEVICES:
        result = result_file(device)
        assert result["state"] == "ok" and result["differing_tables"] == [], result
        assert result["restarted"] is True and result["tables_checked"] >= 1
    print(f"consistency.yml on {len(DEVICES)} healthy devices: {took:.1f} s")


def test_row_changed_on_the_replica_is_found_then_resync_repairs_it(target, tmp_path):
    schema = replica_schema(target)
    on_replica(target, f"SET SESSION sql_log_bin=0; UPDATE `{schema}`.{PROBE} SET qty = 20 WHERE id = 2")
    proc, took = playbook("playbooks/consistency.yml")
    assert proc.returncode != 0, "the check must fail on a diverged replica"
    assert f"app.{PROBE} differs (3/3 rows; different: id=2)" in proc.stdout, proc.stdout[-3000:]
    assert f"not consistent: {target}" in proc.stdout
    for device in DEVICES:
        assert result_file(device)["state"] == ("diverged" if device == target else "ok")
    print(f"consistency.yml finding the changed row: {took:.1f} s")

    # the fleet status shows it too
    status, _output = playbook("playbooks/status.yml", "-e", f"status_dir={tmp_path}")
    assert status.returncode == 0, status.stdout[-2000:]
    report = json.loads((tmp_path / "status.json").read_text())
    record = [d for d in report["devices"] if d["device"] == target][0]
    assert record["state"] == "error" and record["consistency"]["state"] == "diverged"
    assert record["consistency"]["differing"] == [f"app.{PROBE}"]

    proc, took = playbook("playbooks/resync.yml", "-e", f"device_id={target}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "consistency: ok" in proc.stdout
    assert on_replica(target, f"SELECT qty FROM `{schema}`.{PROBE} WHERE id = 2") == [["2"]]
    assert result_file(target)["state"] == "ok"
    print(f"resync.yml of {target}: {took:.1f} s")

    # replication runs on after the re-seed
    lab_host(target).check_output("mariadb -e %s", f"INSERT INTO app.{PROBE} VALUES (4, 'four', 4)")
    wait_for(lambda: on_replica(target, f"SELECT COUNT(*) FROM `{schema}`.{PROBE} WHERE id = 4") == [["1"]],
             60, "row 4 replicated after the re-seed")


def repair_file(cloud, device):
    doc = cloud.file(f"/var/lib/edgefleet/repair/{device}.json")
    return json.loads(doc.content_string) if doc.exists else None


def test_auto_repair_only_for_opted_in_devices_and_rate_limited(target):
    """monitoring_auto_repair: the opted-in device's diverged replica is re-seeded by the cloud host
    itself right after the consistency check; a device not opted in stays as it is; when the hourly
    budget is spent, another diverged device waits, reported as deferred in the status and metrics."""
    other = DEVICES[0]
    cloud_name = hostvars(target)["edgefleet_cloud_host"]
    assert hostvars(other)["edgefleet_cloud_host"] == cloud_name
    cloud = lab_host(cloud_name)
    host_vars = pathlib.Path(ROOT, "inventories", "lab", "host_vars", f"{target}.yml")
    host_vars.parent.mkdir(exist_ok=True)
    host_vars.write_text("---\n# Written by tests/live/test_consistency_lab.py (removed at its end).\n"
                         "edgefleet_auto_repair: true\n")
    try:
        proc, took = playbook("playbooks/monitoring.yml", "-e", "monitoring_auto_repair_max_per_hour=1")
        assert proc.returncode == 0, proc.stdout[-3000:]
        config = json.loads(cloud.file("/etc/edgefleet/monitoring.json").content_string)
        assert {d["id"]: d["auto_repair"] for d in config["devices"]} == {target: True, other: False}
        assert cloud.service("edgefleet-repair.timer").is_running
        cloud.check_output("systemctl stop edgefleet-repair.service; rm -f /var/lib/edgefleet/repair/*.json")

        for device in (target, other):
            on_replica(device, f"SET SESSION sql_log_bin=0; UPDATE `{replica_schema(device)}`.{PROBE} "
                               "SET qty = 20 WHERE id = 2")
        started = time.time()
        cloud.check_output("systemctl start edgefleet-consistency.service")
        checked = time.time()
        wait_for(lambda: (repair_file(cloud, target) or {}).get("state") in ("repaired", "failed"), 240,
                 f"the automatic repair of {target}")
        repaired = time.time()
        doc = repair_file(cloud, target)
        assert doc["state"] == "repaired", doc
        assert "consistency check ok" in doc["detail"]
        assert on_replica(target, f"SELECT qty FROM `{replica_schema(target)}`.{PROBE} WHERE id = 2") == [["2"]]
        assert result_file(target)["state"] == "ok"
        print(f"auto repair of {target}: check {checked - started:.1f} s, re-seed + re-check "
              f"{repaired - checked:.1f} s after the check ended")
        # not opted in: found, reported, untouched
        assert repair_file(cloud, other) is None
        assert result_file(other)["state"] == "diverged"
        assert on_replica(other, f"SELECT qty FROM `{replica_schema(other)}`.{PROBE} WHERE id = 2") == [["20"]]
        # replication runs on after the re-seed
        lab_host(target).check_output("mariadb -e %s", f"INSERT INTO app.{PROBE} VALUES (5, 'five', 5)")
        wait_for(lambda: on_replica(target, f"SELECT COUNT(*) FROM `{replica_schema(target)}`.{PROBE} "
                                            "WHERE id = 5") == [["1"]], 60, "row 5 replicated after the repair")

        # A storm: the other device opted in too, but this host's hourly budget (1) is spent.
        wait_for(lambda: not cloud.service("edgefleet-repair.service").is_running, 120, "the repair run to end")
        cloud.check_output(
            "python3 -c %s", "import json; p='/etc/edgefleet/monitoring.json'; c=json.load(open(p)); "
            "[d.update(auto_repair=True) for d in c['devices']]; json.dump(c, open(p, 'w'))")
        out = cloud.check_output("edgefleet-monitor repair")
        assert f"{other}: deferred" in out and "rate limit" in out, out
        assert repair_file(cloud, other)["state"] == "deferred"
        report = json.loads(cloud.file("/var/www/edgefleet-status/status.json").content_string)
        record = [d for d in report["devices"] if d["device"] == other][0]
        assert any(p.startswith("automatic repair deferred: rate limit") for p in record["problems"]), record
        metrics = cloud.file("/var/lib/prometheus/node-exporter/edgefleet.prom").content_string
        assert any(line.startswith("edgefleet_auto_repair_deferred{device=\"%s\"" % other) and line.endswith(" 1")
                   for line in metrics.splitlines()), metrics
        assert on_replica(other, f"SELECT qty FROM `{replica_schema(other)}`.{PROBE} WHERE id = 2") == [["20"]]
    finally:
        host_vars.unlink(missing_ok=True)
        on_replica(other, f"SET SESSION sql_log_bin=0; UPDATE `{replica_schema(other)}`.{PROBE} SET qty = 2 WHERE id = 2")
        cloud.run("systemctl stop edgefleet-repair.timer edgefleet-repair.service; rm -f /var/lib/edgefleet/repair/*.json")
        proc, _took = playbook("playbooks/monitoring.yml")
        assert proc.returncode == 0, proc.stdout[-3000:]
