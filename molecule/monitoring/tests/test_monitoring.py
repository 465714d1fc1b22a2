"""monitoring on the lab: with one device's tunnel stopped and the other device's replication
broken on purpose, the terminal table, the JSON, the HTML page (served by nginx, rendered in
headless Chromium) and the Prometheus metrics (scraped from node_exporter) show exactly those two
devices in the right state. Both are restored afterwards, even when a test fails.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.browser.chromium import chromium_binary, dump_dom, parse_status_page, screenshot
from tests.live.support import wait_for
from tests.support.lab import ENV, ROOT, clouds, devices, hostvars, lab_host, sql

DEVICES = devices()
OUTPUT = os.path.join(ROOT, "tests", "output", "monitoring")
PROBE_TABLE = "edgefleet_monitoring_probe"
NGINX = "http://127.0.0.1:8088"
NODE_EXPORTER = "http://127.0.0.1:9100/metrics"


def replica_sql(device, query):
    hv = hostvars(device)
    return sql(lab_host(hv["edgefleet_cloud_host"]), query,
               socket=f"/run/mysqld/edgefleet-{hv['edgefleet_replica_instance']}.sock")


def channel(device):
    hv = hostvars(device)
    cloud = lab_host(hv["edgefleet_cloud_host"])
    out = cloud.check_output("mariadb --socket=/run/mysqld/edgefleet-%s.sock -e %s",
                             hv["edgefleet_replica_instance"],
                             f"SHOW SLAVE '{hv['edgefleet_channel_name']}' STATUS\\G")
    fields = dict(re.findall(r"^\s*(\w+): ?(.*)$", out, re.M))
    return fields


def tunnel_listening(device):
    hv = hostvars(device)
    cloud = lab_host(hv["edgefleet_cloud_host"])
    return cloud.run("ss -Hltn 'sport = :%s'", str(hv["edgefleet_tunnel_mysql_port"])).stdout.strip() != ""


def healthy(device):
    state = channel(device)
    return (tunnel_listening(device) and state.get("Slave_IO_Running") == "Yes"
            and state.get("Slave_SQL_Running") == "Yes")


def restore(offline, broken):
    """Put both devices back: tunnel started, conflicting replica row removed, channel started."""
    errors = []
    try:
        lab_host(offline).run("systemctl start edgefleet-tunnel.service")
    except Exception as exc:  # pragma: no cover - reported below
        errors.append(f"start tunnel: {exc}")
    hv = hostvars(broken)
    schema = "app" if hv["edgefleet_replica_mode"] != "channel" else hv["edgefleet_schema_prefix"] + "app"
    try:
        replica_sql(broken, f"SET SESSION sql_log_bin=0; DELETE FROM `{schema}`.{PROBE_TABLE} WHERE id = 1")
    except Exception as exc:  # the table may not exist if the break failed early
        errors.append(f"delete probe row: {exc}")
    try:
        replica_sql(broken, f"START SLAVE '{hv['edgefleet_channel_name']}'")
    except Exception as exc:
        errors.append(f"start channel: {exc}")
    for device in (offline, broken):
        try:
            wait_for(lambda d=device: healthy(d), 90, f"{device} healthy again")
        except AssertionError as exc:
            errors.append(str(exc))
    try:
        lab_host(broken).check_output("mariadb app -e %s", f"DROP TABLE IF EXISTS {PROBE_TABLE}")
    except Exception as exc:
        errors.append(f"drop probe table: {exc}")
    if errors:
        raise AssertionError("restoring the lab failed: " + "; ".join(errors))


def pick_pair():
    """Two devices on the same cloud host (the page and metrics of one host show both)."""
    for cloud in clouds():
        ours = [d for d in DEVICES if hostvars(d)["edgefleet_cloud_host"] == cloud]
        if len(ours) >= 2:
            return cloud, ours[0], ours[1]
    raise AssertionError("the lab needs a cloud host with two devices")


@pytest.fixture(scope="module")
def broken_fleet():
    cloud, offline, broken = pick_pair()
    for device in (offline, broken):
        wait_for(lambda d=device: healthy(d), 60, f"{device} healthy before the test")
    try:
        # 1. stop one device's tunnel: its ports stop listening on the cloud host
        lab_host(offline).check_output("systemctl stop edgefleet-tunnel.service")
        wait_for(lambda: not tunnel_listening(offline), 30, f"{offline} tunnel port closed")
        # 2. break the other device's replication: the replica already has the row the device
        #    inserts next (written there with sql_log_bin=0, root bypasses read_only) -> 1062
        device = lab_host(broken)
        device.check_output("mariadb -e %s",
                            f"CREATE DATABASE IF NOT EXISTS app; USE app; CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INT PRIMARY KEY, v VARCHAR(20))")
        hv = hostvars(broken)
        schema = "app" if hv["edgefleet_replica_mode"] != "channel" else hv["edgefleet_schema_prefix"] + "app"
        wait_for(lambda: replica_sql(broken, "SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                             f"TABLE_SCHEMA='{schema}' AND TABLE_NAME='{PROBE_TABLE}'")[0][0] == "1",
                 60, "probe table on the replica")
        replica_sql(broken, f"SET SESSION sql_log_bin=0; INSERT INTO `{schema}`.{PROBE_TABLE} VALUES (1, 'replica')")
        device.check_output("mariadb -e %s", f"INSERT INTO app.{PROBE_TABLE} VALUES (1, 'device')")
        wait_for(lambda: channel(broken).get("Last_SQL_Errno") == "1062", 60, "error 1062 on the replica")
        # the device side of the offline one: its channel is retrying
        wait_for(lambda: channel(offline).get("Slave_IO_Running") == "Connecting", 60,
                 f"{offline} channel connecting")
        # fresh collection on every cloud host (the timer would do it within a minute)
        for cloud in clouds():
            lab_host(cloud).check_output("systemctl start edgefleet-status.service")
        yield {"offline": offline, "broken": broken, "cloud": cloud,
               "cloud_devices": sorted(d for d in DEVICES if hostvars(d)["edgefleet_cloud_host"] == cloud)}
    finally:
        restore(offline, broken)


def expected_states(fleet):
    return {fleet["offline"]: "offline", fleet["broken"]: "error"}


def check_states(fleet, states):
    """The two devices broken on purpose are in their state; no other device is broken."""
    assert {name: states.get(name) for name in expected_states(fleet)} == expected_states(fleet)
    others = {name: state for name, state in states.items() if name not in expected_states(fleet)}
    assert not [name for name, state in others.items() if state in ("error", "offline", "stopped")], others


def run_status_playbook(tmp_path, *extra):
    out_dir = tmp_path / "status"
    proc = subprocess.run(["ansible-playbook", "playbooks/status.yml", "-e", f"status_dir={out_dir}",
                           *extra], env=dict(ENV, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    return proc, out_dir


@pytest.fixture(scope="module")
def status_run(broken_fleet, tmp_path_factory):
    proc, out_dir = run_status_playbook(tmp_path_factory.mktemp("status"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    os.makedirs(OUTPUT, exist_ok=True)
    for name in ("status.txt", "status.json", "index.html"):
        shutil.copy(out_dir / name, os.path.join(OUTPUT, "playbook-" + name))
    return proc, out_dir


def test_terminal_table(broken_fleet, status_run):
    proc, out_dir = status_run
    table = (out_dir / "status.txt").read_text().rstrip("\n").split("\n")
    rows = {line.split()[0]: line for line in table[1:] if line and not line.startswith("fleet:")}
    assert set(rows) == set(DEVICES)
    offline, broken = broken_fleet["offline"], broken_fleet["broken"]
    # worst first: the broken replication, then the offline device
    assert table[1].split()[0] == broken and table[2].split()[0] == offline
    assert rows[broken].split()[3:7] == ["ERROR", "up", "Yes", "No"]
    assert "E1062" in rows[broken]
    assert rows[offline].split()[3:6] == ["OFFLINE", "DOWN", "Connecting"]
    assert table[-1].startswith(f"fleet: {len(DEVICES)} devices | 1 error, 1 offline, 0 stopped,")
    assert f"tunnels up {len(DEVICES) - 1}/{len(DEVICES)}" in table[-1]
    # the same table is printed by the playbook
    assert rows[broken] in proc.stdout and table[-1] in proc.stdout


def test_json(broken_fleet, status_run):
    out_dir = status_run[1]
    report = json.loads((out_dir / "status.json").read_text())
    check_states(broken_fleet, {d["device"]: d["state"] for d in report["devices"]})
    by_id = {d["device"]: d for d in report["devices"]}
    broken = by_id[broken_fleet["broken"]]
    assert broken["replication"]["last_sql_errno"] == 1062 and broken["tunnel"]["up"] is True
    offline = by_id[broken_fleet["offline"]]
    assert offline["tunnel"]["up"] is False and offline["replication"]["io_running"] == "Connecting"
    assert report["summary"]["error"] == 1 and report["summary"]["offline"] == 1
    assert report["summary"]["total"] == len(DEVICES)


def fetch_from_cloud(cloud, url):
    return lab_host(cloud).check_output("curl -fsS %s", url)


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed")
def test_html_page_served_by_nginx_in_chromium(broken_fleet):
    os.makedirs(OUTPUT, exist_ok=True)
    page_path = os.path.join(OUTPUT, "index.html")
    with open(page_path, "w", encoding="utf-8") as handle:
        handle.write(fetch_from_cloud(broken_fleet["cloud"], NGINX + "/"))
    url = "file://" + page_path
    page = parse_status_page(dump_dom(url))
    assert page["ready"]
    # one row per device of this cloud host, the right states and counts
    assert sorted(r["device"] for r in page["rows"]) == broken_fleet["cloud_devices"]
    check_states(broken_fleet, {r["device"]: r["state"] for r in page["rows"]})
    total = len(broken_fleet["cloud_devices"])
    assert page["counters"]["total"] == total and page["shown"] == total
    assert page["counters"]["error"] == 1 and page["counters"]["offline"] == 1
    assert page["counters"]["stopped"] == 0
    assert sum(v for k, v in page["counters"].items() if k != "total") == total
    errors_only = parse_status_page(dump_dom(url + "#state=error"))
    assert [r["device"] for r in errors_only["rows"] if not r["hidden"]] == [broken_fleet["broken"]]
    png = screenshot(url, os.path.join(OUTPUT, "status.png"), width=1400, height=520)
    assert os.path.getsize(png) > 10000
    served_json = json.loads(fetch_from_cloud(broken_fleet["cloud"], NGINX + "/status.json"))
    check_states(broken_fleet, {d["device"]: d["state"] for d in served_json["devices"]})


def metric(text, name, device):
    match = re.search(r'^%s\{[^}]*device="%s"[^}]*\} (\S+)$' % (name, re.escape(device)), text, re.M)
    assert match, f"{name} for {device} not scraped"
    return float(match.group(1))


def test_metrics_scraped_from_node_exporter(broken_fleet):
    text = fetch_from_cloud(broken_fleet["cloud"], NODE_EXPORTER)
    offline, broken = broken_fleet["offline"], broken_fleet["broken"]
    assert metric(text, "edgefleet_tunnel_up", offline) == 0
    assert metric(text, "edgefleet_tunnel_up", broken) == 1
    assert metric(text, "edgefleet_replication_running", broken) == 0
    assert metric(text, "edgefleet_replication_sql_running", broken) == 0
    assert metric(text, "edgefleet_replication_last_error_code", broken) == 1062
    assert metric(text, "edgefleet_replication_running", offline) == 1  # retrying, not broken
    assert metric(text, "edgefleet_replication_io_running", offline) == 0
    assert metric(text, "edgefleet_backup_last_success_timestamp_seconds", offline) >= 0
    states = dict((m.group(1), m.group(2)) for m in re.finditer(
        r'^edgefleet_device_state\{[^}]*device="([^"]+)"[^}]*state="([a-z]+)"[^}]*\} 1$', text, re.M))
    assert sorted(states) == broken_fleet["cloud_devices"]
    check_states(broken_fleet, states)
    assert 'node_textfile_scrape_error{file="edgefleet.prom"} 0' in text or \
        "node_textfile_scrape_error 0" in text
