"""device_tunnel on the lab: both forwards up, each device confined to its own ports."""
import re
import time

import pytest

from tests.support.lab import devices, hostvars, lab_host
from tests.support.tunnel import cloud_of, read_banner, ssh_from, wait_listening

DEVICES = devices()


@pytest.mark.parametrize("name", DEVICES)
def test_tunnel_service_and_identity(name):
    host = lab_host(name)
    assert host.service("edgefleet-tunnel").is_running
    assert host.service("edgefleet-tunnel").is_enabled
    key = host.file("/etc/edgefleet/tunnel_ed25519")
    assert key.mode == 0o600 and key.user == "root"
    assert f"id: {name}" in host.file("/etc/edgefleet/device.yml").content_string


@pytest.mark.parametrize("name", DEVICES)
def test_both_forwards_listen_on_cloud_loopback(name):
    hv = hostvars(name)
    cloud = cloud_of(name)
    for port in (hv["edgefleet_tunnel_mysql_port"], hv["edgefleet_tunnel_ssh_port"]):
        wait_listening(cloud, port)
        assert not cloud.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize("name", DEVICES)
def test_device_mysql_answers_at_its_cloud_port(name):
    hv = hostvars(name)
    cloud = cloud_of(name)
    port = hv["edgefleet_tunnel_mysql_port"]
    wait_listening(cloud, port)
    # The MySQL handshake names the server; no credentials needed to see who answers.
    greeting = read_banner(cloud, port)
    assert "MariaDB" in greeting


@pytest.mark.parametrize("name", DEVICES)
def test_ssh_back_channel_reaches_the_device(name):
    hv = hostvars(name)
    cloud = cloud_of(name)
    banner = cloud.check_output(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s; head -c 40 <&3'", str(hv["edgefleet_tunnel_ssh_port"]))
    assert banner.startswith("SSH-2.0-OpenSSH")


def test_device_cannot_listen_on_another_devices_port():
    attacker, victim = DEVICES[0], DEVICES[1]
    victim_port = hostvars(victim)["edgefleet_tunnel_mysql_port"]
    victim_host = lab_host(victim)
    victim_host.check_output("systemctl stop edgefleet-tunnel")
    try:
        cloud = cloud_of(victim)
        deadline = time.monotonic() + 40
        while cloud.socket(f"tcp://127.0.0.1:{victim_port}").is_listening and time.monotonic() < deadline:
            time.sleep(0.5)
        result = ssh_from(attacker, f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:{victim_port}:127.0.0.1:3306")
        assert result.rc != 0
        assert "forwarding failed" in result.stderr
        assert not cloud.socket(f"tcp://127.0.0.1:{victim_port}").is_listening
    finally:
        victim_host.check_output("systemctl start edgefleet-tunnel")
    wait_listening(cloud_of(victim), victim_port)


@pytest.mark.parametrize("port", [1, 3306, 40999])
def test_device_cannot_listen_outside_its_ports(port):
    result = ssh_from(DEVICES[0], f"-N -o ExitOnForwardFailure=yes -R 127.0.0.1:{port}:127.0.0.1:3306")
    assert result.rc != 0
    assert "forwarding failed" in result.stderr


def test_device_cannot_run_a_command():
    result = ssh_from(DEVICES[0], "id")
    assert "uid=" not in result.stdout
    assert result.rc != 0


def test_device_cannot_get_a_shell():
    result = ssh_from(DEVICES[0], "-tt")
    assert "uid=" not in result.stdout
    assert "$" not in result.stdout and "#" not in result.stdout
    assert result.rc != 0


def test_device_cannot_open_local_forwards():
    host = lab_host(DEVICES[0])
    ssh_from(DEVICES[0], "-f -N -L 127.0.0.1:45001:127.0.0.1:22")
    try:
        probe = host.run("sleep 1; timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/45001; head -c 20 <&3'")
    finally:
        host.run("pkill -f 127.0.0.1:45001:")
    assert "SSH-2.0" not in probe.stdout


def test_device_refuses_a_wrong_cloud_host_key():
    host = lab_host(DEVICES[0])
    hv = hostvars(DEVICES[0])
    host.check_output("ssh-keygen -q -t ed25519 -N '' -f /tmp/wrong_host_key <<< y >/dev/null 2>&1 || true")
    host.check_output("echo \"%s $(cut -d' ' -f1,2 /tmp/wrong_host_key.pub)\" > /tmp/wrong_known_hosts",
                      str(hv["edgefleet_cloud_address"]))
    result = ssh_from(DEVICES[0], "-N -R 127.0.0.1:40998:127.0.0.1:3306", known_hosts="/tmp/wrong_known_hosts")
    host.run("rm -f /tmp/wrong_host_key /tmp/wrong_host_key.pub /tmp/wrong_known_hosts")
    assert result.rc != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr or "verification failed" in result.stderr


def test_killed_ssh_is_healed():
    name = DEVICES[0]
    hv = hostvars(name)
    host = lab_host(name)
    cloud = cloud_of(name)
    port = hv["edgefleet_tunnel_mysql_port"]
    wait_listening(cloud, port)
    old_id = listener_id(cloud, port)
    assert old_id, f"nothing listens on {cloud}:{port}"
    host.check_output("pkill -TERM -x ssh")
    killed = time.monotonic()
    healed = wait_new_listener(cloud, port, old_id, timeout=60)
    print(f"tunnel of {name} back {healed - killed:.1f}s after its ssh was killed")
    assert healed - killed < 30


def listener_id(cloud, port):
    """The listening socket's inode: a new tunnel session makes a new socket. (Its owner's pid is
    not shown to a container root without CAP_SYS_PTRACE, as in the lab.)"""
    out = cloud.check_output("ss -Hltne 'sport = :%s' || true", str(port))
    match = re.search(r"ino:(\d+)", out)
    return match and match.group(1)


def wait_new_listener(cloud, port, old_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = listener_id(cloud, port)
        if current and current != old_id:
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"no new tunnel listener on port {port} within {timeout}s")


def test_link_cut_for_30s_is_healed():
    """Cut the device's link for 30 s from inside; the tunnel must come back by itself, as a new
    session (the cloud may keep the stale listener until its keep-alives expire)."""
    name = DEVICES[-1]
    hv = hostvars(name)
    cloud = cloud_of(name)
    port = hv["edgefleet_tunnel_mysql_port"]
    wait_listening(cloud, port)
    old_id = listener_id(cloud, port)
    assert old_id
    lab_host(name).run("nohup sh -c 'ip link set eth0 down; sleep 30; ip link set eth0 up' >/dev/null 2>&1 &")
    restored = time.monotonic() + 30
    time.sleep(31)
    healed = wait_new_listener(cloud, port, old_id, timeout=120)
    print(f"tunnel of {name} back {healed - restored:.1f}s after its link was restored")
    assert healed - restored < 90
