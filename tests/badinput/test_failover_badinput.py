"""Bad input of playbooks/failover.yml, run the way an operator runs it (ansible-playbook against a
throwaway fleet): an unknown host, a host whose sshd still answers, no surviving capacity, a
malformed host name. Each fails with a clear message naming the problem and changes nothing (the
registry and allocation files are byte for byte the same).

The "still answers" case answers with a real TCP listener on loopback that sends an SSH banner;
the "gone" cases point the host at a loopback port nothing listens on.
(unit: tests/unit/plugins/module_utils/test_failover.py)
"""
import os
import re
import socket
import threading

import pytest

from tests.badinput.support import ROOT, ansible_module, playbook, snapshot, write_fleet

PLAYBOOK = os.path.join(ROOT, "playbooks", "failover.yml")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ssh_banner():
    """A loopback listener that greets like sshd; yields its port."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 edgefleet-badinput\r\n")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        server.close()


def fleet(tmp_path, c1_port, c2=""):
    """dev1, dev2 allocated on c1 (reached on loopback at c1_port); c2 added afterwards."""
    registry = ("devices:\n  - {id: dev1}\n  - {id: dev2}\ncloud_hosts:\n"
                "  - {name: c1, address: 127.0.0.1, vars: {ansible_port: %d}}\n" % c1_port)
    config = write_fleet(tmp_path, registry)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc == 0, out
    (tmp_path / "registry.yml").write_text(registry + "  - {name: c2, address: 192.0.2.102%s}\n" % c2)
    return config


def failover(config, host, *extra):
    return playbook(PLAYBOOK, "-e", "failover_host=" + host, "-e", "edgefleet_fleet_config=" + str(config),
                    "-e", "rebalance_failover_probe_timeout=1", *extra, inventory=config)


@pytest.mark.parametrize("case, host, c2, message", [
    ("unknown_host", "c9", "", r"cloud host c9: not in the registry"),
    ("device_not_cloud_host", "dev1", "", r"cloud host dev1: not in the registry"),
    ("bad_name", "C1;reboot", "", r"Pass -e failover_host=<the cloud host that is gone for good>"),
    ("no_surviving_host", "c1", ", drain: true",
     r"no surviving capacity for the 2 device\(s\) of lost cloud host c1: no other cloud host takes devices"),
    ("not_enough_capacity", "c1", ", capacity: 1", r"no surviving capacity for the devices of lost cloud host c1"),
])
def test_failover_refused(tmp_path, case, host, c2, message):
    config = fleet(tmp_path, free_port(), c2)
    before = snapshot(tmp_path)
    rc, out = failover(config, host)
    assert rc != 0, out
    assert re.search(message, out), (case, out[-3000:])
    assert snapshot(tmp_path) == before


def test_failover_refuses_a_host_that_still_answers(tmp_path, ssh_banner):
    config = fleet(tmp_path, ssh_banner)
    before = snapshot(tmp_path)
    rc, out = failover(config, "c1")
    assert rc != 0, out
    assert re.search(r"cloud host c1 still answers SSH: it is not lost.*failover_force=true", out), out[-3000:]
    assert snapshot(tmp_path) == before
    # --check with force shows the plan and still writes nothing
    rc, out = failover(config, "c1", "-e", "failover_force=true", "--check")
    assert rc == 0, out[-3000:]
    assert "dev1: c1 -> c2" in out and "dev2: c1 -> c2" in out, out[-3000:]
    assert snapshot(tmp_path) == before
