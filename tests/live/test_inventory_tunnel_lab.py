# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet inventory's tunnel reach on the podman lab: Ansible reaches each device through its
own reverse tunnel on its cloud host (ansible_host 127.0.0.1, its tunnel SSH port, ProxyCommand
through the cloud host), its host key pinned under its id (HostKeyAlias=<id>).

The lab's own fleet config reaches devices by address; this test reads the same registry and
allocations through a second fleet config with `reach: tunnel` in a directory of its own (no
group_vars), its connection settings in `device_vars`. The device host keys are pinned in a
known_hosts written for the test (read over the lab's pinned management connection). With another
device's key under a device's id the connection is refused: pinning per device holds through the
tunnel.

    scripts/lab-lock python -m pytest -m lab tests/live/test_inventory_tunnel_lab.py
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.lab import ENV, ROOT, devices, lab_host

pytestmark = pytest.mark.lab

STATE = os.path.join(ROOT, "lab", ".state")
KEY = os.path.join(STATE, "id_ed25519")
REGISTRY = os.path.join(ROOT, "inventories", "lab", "registry.yml")
# No connection sharing: every command proves its own connection and host key check.
SSH_ENV = dict(ENV, ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPath=none",
               ANSIBLE_INVENTORY_ENABLED="edgefleet.mysql_backup.fleet", ANSIBLE_HOST_KEY_CHECKING="true")


def _config(tmp_path, known_hosts):
    config = tmp_path / "tunnel.fleet.yml"
    common = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes" % known_hosts
    jump = "-i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes" % (
        KEY, os.path.join(STATE, "known_hosts"))
    config.write_text(
        "plugin: edgefleet.mysql_backup.fleet\n"
        "registry: {type: file, path: %s}\n"
        "reach: tunnel\njump: proxycommand\ncloud_ssh_user: root\n"
        "ssh_common_args: %s\njump_ssh_args: %s\n"
        "device_vars: {ansible_user: root, ansible_ssh_private_key_file: %s, "
        "ansible_python_interpreter: /usr/bin/python3}\n" % (REGISTRY, json.dumps(common), json.dumps(jump), KEY))
    return str(config)


def _ansible(config, pattern, *args):
    return subprocess.run(["ansible", "-i", config, pattern, "-o", "-T", "20"] + list(args), env=SSH_ENV,
                          cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def host_keys():
    return dict((name, " ".join(lab_host(name).check_output("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]))
                for name in devices())


def test_devices_reached_through_their_tunnels(tmp_path, host_keys):
    known = tmp_path / "known_hosts"
    known.write_text("".join("%s %s\n" % (name, key) for name, key in sorted(host_keys.items())))
    config = _config(tmp_path, known)
    listing = json.loads(subprocess.run(["ansible-inventory", "-i", config, "--list"], env=SSH_ENV, cwd=ROOT,
                                        check=True, capture_output=True, text=True).stdout)
    hostvars = listing["_meta"]["hostvars"]
    for name in host_keys:
        hv = hostvars[name]
        # strings that cannot hold a template are trusted, so printed as plain strings
        assert hv["ansible_host"] == "127.0.0.1" and hv["edgefleet_reach"] == "tunnel"
        assert "HostKeyAlias=%s" % name in hv["ansible_ssh_common_args"]
        assert hv["edgefleet_cloud_address"]  # its cloud group's variable
    run = _ansible(config, ":".join(sorted(host_keys)), "-m", "ansible.builtin.command", "-a", "hostname")
    assert run.returncode == 0, run.stdout + run.stderr
    for name in host_keys:
        # the device that answered on <cloud>:127.0.0.1:<its tunnel port> is the device itself
        assert "%s | CHANGED | rc=0 | (stdout) %s" % (name, name) in run.stdout, run.stdout


def test_another_devices_key_under_an_id_is_refused(tmp_path, host_keys):
    names = sorted(host_keys)
    assert len(names) >= 2, "the lab has two devices"
    known = tmp_path / "known_hosts"
    known.write_text("%s %s\n" % (names[0], host_keys[names[1]]))  # device02's key under device01's id
    config = _config(tmp_path, known)
    run = _ansible(config, names[0], "-m", "ansible.builtin.ping")
    assert run.returncode != 0 and "UNREACHABLE" in run.stdout, run.stdout + run.stderr
    assert "host key" in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
