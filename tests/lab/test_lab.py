"""Smoke test of the podman lab itself (lab/up.yml): real containers, real SSH.

Run after `make lab-up`:  python -m pytest -m lab tests/lab
Every check fails (never skips) when the lab is down or broken.
"""
import ipaddress
import os
import socket
import stat
import subprocess

import pytest
import testinfra
import yaml

pytestmark = pytest.mark.lab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "inventories", "lab", "hosts.yml")
REGISTRY = os.path.join(ROOT, "inventories", "lab", "registry.yml")
STATE = os.path.join(ROOT, "lab", ".state")
KEY = os.path.join(STATE, "id_ed25519")
KNOWN_HOSTS = os.path.join(STATE, "known_hosts")
SUBNET = ipaddress.ip_network("10.231.0.0/24")
CLOUD_SSH = ("10.231.0.201", 22)
ENV = dict(os.environ,
           ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"))


def _load(path):
    if not os.path.exists(path):
        pytest.fail(f"{os.path.relpath(path, ROOT)} is missing: the lab is not up (make lab-up)")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _lab():
    """{'devices': {name: ip}, 'cloud': {name: ip}, 'vars': {...}} from the generated inventory."""
    lab = _load(INVENTORY)["all"]["children"]["lab"]
    groups = {g: {h: v["ansible_host"] for h, v in (lab["children"][g].get("hosts") or {}).items()}
              for g in ("devices", "cloud")}
    return dict(groups, vars=lab["vars"])


def _hosts():
    if not os.path.exists(INVENTORY):
        return ["lab-not-up"]
    lab = _lab()
    return sorted(lab["devices"]) + sorted(lab["cloud"])


def _ip(name):
    lab = _lab()
    return {**lab["devices"], **lab["cloud"]}[name]


def _ssh(ip, known_hosts, command="true"):
    """Plain ssh (no ControlMaster reuse, so the host key is checked every time)."""
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", KEY, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
         f"root@{ip}", command],
        capture_output=True, text=True, timeout=60, check=False)


def _banner(ip, port=22):
    with socket.create_connection((ip, port), timeout=5) as s:
        return s.recv(64).decode(errors="replace")


def test_inventory_registry_and_secrets_are_consistent():
    lab = _lab()
    assert lab["devices"], "no devices in the lab inventory"
    assert lab["cloud"], "no cloud host in the lab inventory"
    for name, ip in {**lab["devices"], **lab["cloud"]}.items():
        assert ipaddress.ip_address(ip) in SUBNET, (name, ip)
    v = lab["vars"]
    assert v["ansible_user"] == "root"
    assert v["ansible_python_interpreter"] == "/usr/bin/python3"
    assert v["ansible_ssh_private_key_file"] == KEY
    assert f"UserKnownHostsFile={KNOWN_HOSTS}" in v["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in v["ansible_ssh_common_args"]

    registry = _load(REGISTRY)
    assert {d["id"]: d["address"] for d in registry["devices"]} == lab["devices"]
    assert all(d["site"] == "lab" and d["status"] == "active" and d["labels"] == {"lab": "true"}
               for d in registry["devices"])
    assert {c["name"]: c["address"] for c in registry["cloud_hosts"]} == lab["cloud"]

    pinned = {}
    with open(KNOWN_HOSTS, encoding="utf-8") as f:
        for line in f:
            ip, kind, key = line.split()
            assert kind == "ssh-ed25519" and key.startswith("AAAA")
            pinned[ip] = key
    assert sorted(pinned) == sorted({**lab["devices"], **lab["cloud"]}.values())

    assert stat.S_IMODE(os.stat(KEY).st_mode) == 0o600, "controller private key must be 0600"
    assert stat.S_IMODE(os.stat(STATE).st_mode) & 0o077 == 0, "lab/.state must not be group/world readable"


def test_ansible_ping_every_host_with_the_lab_inventory():
    res = subprocess.run(["ansible", "all", "-i", INVENTORY, "-m", "ansible.builtin.ping", "-o"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in _hosts():
        assert any(line.startswith(f"{name} | SUCCESS") and '"pong"' in line
                   for line in res.stdout.splitlines()), f"{name} did not answer ping:\n{res.stdout}"


@pytest.mark.parametrize("name", _hosts())
def test_pinned_host_key_is_enforced(name, tmp_path):
    ip = _ip(name)
    ok = _ssh(ip, KNOWN_HOSTS, "hostname")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == name
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    bad = _ssh(ip, str(empty))
    assert bad.returncode != 0 and "Host key verification failed" in bad.stderr, bad.stderr


@pytest.mark.parametrize("name", _hosts())
def test_systemd_sshd_and_mariadb(name):
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state
    assert host.check_output("cat /proc/1/comm") == "systemd"
    assert host.service("ssh").is_running
    for pkg in ("mariadb-server", "mariadb-client", "mariadb-backup", "autossh", "python3"):
        assert host.package(pkg).is_installed, pkg
    assert host.check_output("hostname") == name


@pytest.mark.parametrize("name", sorted(_lab()["devices"]) if os.path.exists(INVENTORY) else ["lab-not-up"])
def test_device_reaches_cloud_sshd(name):
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    ip, port = CLOUD_SSH
    probe = f"import socket; s = socket.create_connection(('{ip}', {port}), 5); print(s.recv(64).decode())"
    banner = host.check_output("python3 -c %s", probe)
    assert banner.startswith("SSH-2.0-"), banner


def test_host_reaches_every_container_sshd():
    for name in _hosts():
        assert _banner(_ip(name)).startswith("SSH-2.0-"), name
