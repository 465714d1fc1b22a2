"""monitoring role on the lab: what it installs on the cloud hosts, and check mode."""
import json
import re
import subprocess

import pytest

from tests.support.lab import ENV, ROOT, clouds, devices, lab_host

CLOUDS = clouds()


@pytest.mark.parametrize("name", CLOUDS)
def test_timers_and_services(name):
    host = lab_host(name)
    for unit in ("edgefleet-status.timer", "edgefleet-consistency.timer", "nginx.service",
                 "prometheus-node-exporter.service"):
        assert host.service(unit).is_enabled, unit
        assert host.service(unit).is_running, unit
    last = host.check_output("systemctl show -p Result --value edgefleet-status.service")
    assert last == "success"


@pytest.mark.parametrize("name", CLOUDS)
def test_collector_config_lists_every_device_once(name):
    host = lab_host(name)
    config = json.loads(host.file("/etc/edgefleet/monitoring.json").content_string)
    ours = sorted(d for d in devices())
    assert sorted(d["id"] for d in config["devices"]) == ours
    assert host.file("/etc/edgefleet/monitoring-check.secret").mode == 0o600
    assert host.file("/var/lib/prometheus/node-exporter/edgefleet.prom").exists


@pytest.mark.parametrize("name", CLOUDS)
def test_page_is_served_locally_with_a_strict_policy(name):
    host = lab_host(name)
    headers = host.check_output("curl -fsSI http://127.0.0.1:8088/")
    assert re.search(r"^Content-Security-Policy: default-src 'none'", headers, re.M | re.I)
    assert host.run("curl -fsS http://127.0.0.1:8088/monitoring.json").rc != 0  # nothing else served
    listening = host.check_output("ss -Hltn 'sport = :8088'")
    assert "127.0.0.1:8088" in listening and "0.0.0.0:8088" not in listening


def test_monitoring_playbook_check_mode_changes_nothing():
    proc = subprocess.run(["ansible-playbook", "playbooks/monitoring.yml", "--check", "--diff"],
                          env=dict(ENV, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"), cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    assert recap and all(changed == "0" for _host, changed in recap), proc.stdout[-2000:]
