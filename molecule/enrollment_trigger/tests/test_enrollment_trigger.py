"""enrollment_trigger on cloud01: the command and the units systemd would run."""
import shlex

import pytest

from tests.support.lab import lab_host

UNITS = ["edgefleet-converge-new.service", "edgefleet-converge-new.timer", "edgefleet-converge-new.path"]


@pytest.fixture(scope="module")
def host():
    return lab_host("cloud01")


def test_units_are_valid_for_systemd(host):
    for unit in UNITS:
        assert host.file("/etc/systemd/system/" + unit).mode == 0o644
    # the command does not exist there as a python module; verify checks unit syntax and references
    out = host.run("systemd-analyze verify %s", " ".join("/etc/systemd/system/" + u for u in UNITS))
    assert out.rc == 0, out.stderr
    timer = host.file("/etc/systemd/system/edgefleet-converge-new.timer").content_string
    assert "OnUnitInactiveSec=20" in timer
    path = host.file("/etc/systemd/system/edgefleet-converge-new.path").content_string
    assert "PathChanged=/srv/edgefleet-molecule/inventories/lab/registry.yml" in path


def test_command_runs_the_collection_trigger_with_the_settings(host):
    cmd = host.file("/usr/local/sbin/edgefleet-converge-new")
    assert cmd.mode == 0o755
    assert host.run("sh -n /usr/local/sbin/edgefleet-converge-new").rc == 0
    text = cmd.content_string
    words = shlex.split(text.split("exec ", 1)[1].replace("\\\n", " "))
    assert words[:3] == ["/srv/edgefleet-molecule/.venv/bin/python", "-m",
                         "ansible_collections.edgefleet.mysql_backup.plugins.module_utils.converge_trigger"]
    assert "--known-hosts" in words and "/etc/edgefleet/known_hosts_devices" in words
    assert "--extra-arg=/etc/edgefleet/vault pass" in words and words[-1] == "$@"
    assert host.file("/var/lib/edgefleet-trigger").mode == 0o700


def test_timer_left_stopped_when_disabled(host):
    assert not host.service("edgefleet-converge-new.timer").is_enabled
    assert not host.service("edgefleet-converge-new.timer").is_running
