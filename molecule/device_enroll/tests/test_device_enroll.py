"""device_enroll on the lab: what an image tree and a running device carry after the role, and
that the role contacts nobody and starts nothing (an enrolled device never runs the unit again)."""
import json
import os

import pytest

from tests.support.lab import ROOT, lab_host

IMAGE = "/var/tmp/edgefleet-factory-image"


@pytest.fixture(scope="module")
def host():
    return lab_host("device01")


def test_image_tree_carries_exactly_the_enrollment_artefacts(host):
    files = sorted(host.check_output("cd %s && find . -type f -o -type l | sort", IMAGE).split())
    assert files == ["./etc/edgefleet/enroll-ca.pem", "./etc/edgefleet/enroll.json", "./etc/edgefleet/enroll.token",
                     "./etc/systemd/system/edgefleet-enroll-refresh.service",
                     "./etc/systemd/system/edgefleet-enroll-refresh.timer",
                     "./etc/systemd/system/edgefleet-enroll.service",
                     "./etc/systemd/system/multi-user.target.wants/edgefleet-enroll.service",
                     "./etc/systemd/system/timers.target.wants/edgefleet-enroll-refresh.timer",
                     "./usr/local/lib/edgefleet/ansible_collections/edgefleet/mysql_backup/plugins/module_utils/"
                     "device_enroll.py",
                     "./usr/local/lib/edgefleet/ansible_collections/edgefleet/mysql_backup/plugins/module_utils/"
                     "placement_signature.py",
                     "./usr/local/lib/edgefleet/edgefleet-tunnel.service.j2", "./usr/local/sbin/edgefleet-device-enroll"]
    modes = {"etc": 0o755, "etc/edgefleet": 0o750, "etc/edgefleet/enroll.token": 0o600,
             "usr/local/sbin/edgefleet-device-enroll": 0o755, "etc/edgefleet/enroll-ca.pem": 0o644}
    for path, mode in modes.items():
        f = host.file("%s/%s" % (IMAGE, path))
        assert f.mode == mode and f.user == "root", path
    link = host.file(IMAGE + "/etc/systemd/system/multi-user.target.wants/edgefleet-enroll.service")
    assert link.is_symlink and link.linked_to == "/etc/systemd/system/edgefleet-enroll.service"
    # no key of any kind in the image: they are generated at first boot
    assert host.run("grep -rl 'PRIVATE KEY' %s", IMAGE).stdout == ""


def test_config_and_tunnel_template_match_the_device_tunnel_role(host):
    cfg = json.loads(host.file(IMAGE + "/etc/edgefleet/enroll.json").content_string)
    assert cfg["api_url"] == "https://192.0.2.1:8443" and cfg["site"] == "lab" and cfg["labels"] == {"hw": "lab"}
    assert cfg["tunnel"]["max_backoff"] == 10 and cfg["ansible_managed"] == "Ansible managed"
    with open(os.path.join(ROOT, "roles/device_tunnel/templates/edgefleet-tunnel.service.j2"), encoding="utf-8") as handle:
        assert host.file(IMAGE + "/usr/local/lib/edgefleet/edgefleet-tunnel.service.j2").content_string == handle.read()


def test_program_checks_the_image_without_contacting_anyone(host):
    # The image's launcher names the code's path on the device; run it against the image's own copy.
    launcher = host.file(IMAGE + "/usr/local/sbin/edgefleet-device-enroll").content_string
    assert launcher.startswith("#!/bin/sh\n") and 'sys.path.insert(0, "/usr/local/lib/edgefleet")' in launcher
    out = host.check_output("sed 's|\"/usr/local/lib/edgefleet\"|\"%s/usr/local/lib/edgefleet\"|' "
                            "%s/usr/local/sbin/edgefleet-device-enroll | sh -s -- --check --root %s", IMAGE, IMAGE, IMAGE)
    assert out == "ok: device device01 would enroll at https://192.0.2.1:8443"


def test_enrolled_device_gets_no_token_and_never_runs_the_unit(host):
    assert host.file("/etc/edgefleet/device.yml").exists
    assert not host.file("/etc/edgefleet/enroll.token").exists
    assert host.service("edgefleet-enroll").is_enabled
    host.run("systemctl start edgefleet-enroll")
    show = host.check_output("systemctl show -p ConditionResult -p ActiveState -p NRestarts edgefleet-enroll")
    assert "ConditionResult=no" in show and "ActiveState=inactive" in show, show
    assert "enrolling" not in host.run("journalctl -u edgefleet-enroll --no-pager").stdout
    verify = host.run("systemd-analyze verify /etc/systemd/system/edgefleet-enroll.service")
    assert verify.rc == 0, verify.stderr


def test_the_tunnel_is_untouched(host):
    assert host.service("edgefleet-tunnel").is_running


def _refresh(host):
    """One run of the refresh service by hand; returns its journal lines of this run."""
    journal = "journalctl -u edgefleet-enroll-refresh --no-pager -o cat"
    seen = len(host.check_output(journal).splitlines())
    host.run("systemctl start edgefleet-enroll-refresh.service")
    return "\n".join(host.check_output(journal).splitlines()[seen:])


def test_refresh_timer_is_enabled_and_its_units_are_valid(host):
    assert host.service("edgefleet-enroll-refresh.timer").is_enabled
    assert host.service("edgefleet-enroll-refresh.timer").is_running
    for unit in ("edgefleet-enroll-refresh.service", "edgefleet-enroll-refresh.timer"):
        verify = host.run("systemd-analyze verify /etc/systemd/system/%s", unit)
        assert verify.rc == 0, verify.stderr
    show = host.check_output("systemctl show -p TimersMonotonic -p RandomizedDelayUSec edgefleet-enroll-refresh.timer")
    assert "OnUnitActiveUSec=10min" in show and "RandomizedDelayUSec=2min" in show, show
    timer = host.file(IMAGE + "/etc/systemd/system/timers.target.wants/edgefleet-enroll-refresh.timer")
    assert timer.is_symlink and timer.linked_to == "/etc/systemd/system/edgefleet-enroll-refresh.timer"


def test_refresh_asks_only_when_the_real_tunnel_reconnected(host):
    """On device01's real autossh tunnel: a steady tunnel is not asked about (twice); after its ssh
    process is killed (autossh or systemd brings it back) the next run asks (the API here is a
    closed port, so the ask fails as a temporary error) and changes no tunnel file."""
    host.run("systemctl stop edgefleet-enroll-refresh.timer")
    try:
        host.run("rm -f /var/lib/edgefleet/placement-refresh.json")
        files = host.check_output("md5sum /etc/edgefleet/known_hosts /etc/systemd/system/edgefleet-tunnel.service "
                                  "/etc/edgefleet/device.yml")
        assert "placement not asked: first check: the tunnel is up" in _refresh(host)
        assert "placement not asked: the tunnel is up and has not reconnected since the last check" in _refresh(host)
        main_pid = host.check_output("systemctl show -p MainPID --value edgefleet-tunnel")
        host.check_output("pkill -TERM -P %s -x ssh", main_pid)
        host.run("for i in $(seq 1 60); do pgrep -P $(systemctl show -p MainPID --value edgefleet-tunnel) -x ssh "
                 "&& break; sleep 0.5; done")
        out = _refresh(host)
        assert "asking https://127.0.0.1:9 for the placement of device01: the tunnel" in out, out
        assert "placement not refreshed: cannot reach https://127.0.0.1:9" in out, out
        assert host.check_output("md5sum /etc/edgefleet/known_hosts /etc/systemd/system/edgefleet-tunnel.service "
                                 "/etc/edgefleet/device.yml") == files
    finally:
        host.run("systemctl reset-failed edgefleet-enroll-refresh.service")
        host.run("systemctl start edgefleet-enroll-refresh.timer")
    # the tunnel is back by itself
    host.run("for i in $(seq 1 60); do systemctl is-active -q edgefleet-tunnel && "
             "pgrep -P $(systemctl show -p MainPID --value edgefleet-tunnel) -x ssh && break; sleep 0.5; done")
    assert host.service("edgefleet-tunnel").is_running
