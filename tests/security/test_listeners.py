# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a device can reach on its cloud host (issue 15, point 4).

Devices are untrusted: every listener on a cloud host binds to loopback or to an explicitly
configured admin address, and nothing but the SSH port the tunnels need is reachable from a device.

- From inside every lab device, a TCP connect to every port that listens on every cloud host
  (enumerated with `ss -Htln` on the cloud host at test time, so listeners added later by any role
  are covered), on every address of the cloud host, fails; only the SSH port is left out.
- Positive controls show the probe and the enumeration work: the same probe reaches the cloud
  host's SSH port, and a throwaway listener started on 0.0.0.0 inside the cloud host is
  enumerated, reached from every device and flagged by the bind check, then removed.
- On every cloud host, no TCP or UDP listener binds a non-loopback address unless it is in the
  explicit allow-list public_listeners(): sshd, the enrollment API on its configured
  enrollment_listen_address only (when the host has one; devices enroll over it, so it is also
  the one other port devices may reach), and EDGEFLEET_PUBLIC_LISTENERS="tcp/9100,..." for a
  lab that sets an admin address on purpose (EDGEFLEET_DEVICE_PORTS: ports devices may reach).

The whole module holds the lab lock (tests/runner/lab.py) and leaves the lab as it found it.
"""
import ipaddress
import json
import os
import random
import shlex
import time

import pytest

from tests.runner.lab import lab_lock
from tests.support.lab import clouds, devices, hostvars, lab_host

pytestmark = pytest.mark.lab

DEVICES = devices()
CLOUDS = clouds()
# The cloud host's SSH port: the one port devices need for their tunnels (device_tunnel_cloud_port).
SSH_PORT = 22


def _env_ports(name):
    """{(protocol, port)} from an environment variable such as "tcp/9100,tcp/8088"."""
    out = set()
    for item in filter(None, os.environ.get(name, "").split(",")):
        proto, port = item.strip().split("/")
        out.add((proto, int(port)))
    return out


# The enrollment role's gunicorn configuration on a cloud host: `bind = ["ADDRESS:PORT", ...]`.
ENROLLMENT_GUNICORN = "/etc/edgefleet/enrollment/gunicorn.conf.py"


def enrollment(cloud):
    """{(address, port)} the cloud host's enrollment API (roles/enrollment) is configured to bind:
    from the inventory (enrollment_listen_address, enrollment_port) or, when the role was applied
    with its own vars (molecule/enrollment), from its gunicorn configuration on the host. Devices
    enroll over it, so it binds that address and devices may reach it there."""
    hv = hostvars(cloud)
    found = set()
    if hv.get("enrollment_listen_address"):
        found.add((hv["enrollment_listen_address"], int(hv.get("enrollment_port", 8443))))
    out = lab_host(cloud).run("grep -h '^bind *=' %s", ENROLLMENT_GUNICORN).stdout
    for line in out.splitlines():
        for bind in json.loads(line.split("=", 1)[1]):
            address, port = bind.rsplit(":", 1)
            found.add((address.strip("[]"), int(port)))
    return found


def public_listeners(cloud):
    """The explicit allow-list of a cloud host: {(protocol, port): addresses it may bind, None: any}.
    sshd (tunnels, admin SSH) anywhere; the enrollment API on its own address only; and whatever
    EDGEFLEET_PUBLIC_LISTENERS names (a lab that sets an admin address on purpose)."""
    allowed = {("tcp", SSH_PORT): None}
    for address, port in enrollment(cloud):
        allowed.setdefault(("tcp", port), set()).add(address)
    allowed.update(dict.fromkeys(_env_ports("EDGEFLEET_PUBLIC_LISTENERS")))
    return allowed


def device_reachable(cloud):
    """Ports devices may connect to: SSH, the enrollment API, EDGEFLEET_DEVICE_PORTS."""
    return ({SSH_PORT} | {port for _proto, port in _env_ports("EDGEFLEET_DEVICE_PORTS")}
            | {port for _address, port in enrollment(cloud)})


CONNECT_TIMEOUT = 3

# Run with python3 on a device: connect to every (address, port) given as JSON in argv[1], all at
# once, and print {"address port": "open" | the error}.
PROBE = r"""
import json, socket, sys, threading
targets, out = json.loads(sys.argv[1]), {}
def probe(address, port):
    try:
        socket.create_connection((address, port), timeout=%d).close()
        out["%%s %%d" %% (address, port)] = "open"
    except OSError as exc:
        out["%%s %%d" %% (address, port)] = type(exc).__name__ + ": " + str(exc)
threads = [threading.Thread(target=probe, args=tuple(t)) for t in targets]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out, sort_keys=True))
""" % CONNECT_TIMEOUT

# A throwaway TCP server on 0.0.0.0:PORT (accepts and closes), run as a transient systemd unit.
THROWAWAY = ("import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "s.bind(('0.0.0.0', %d))\ns.listen(16)\nwhile True:\n    s.accept()[0].close()\n")


@pytest.fixture(scope="module", autouse=True)
def lab():
    with lab_lock():
        assert DEVICES, "the lab has no active devices"
        assert CLOUDS, "the lab has no cloud hosts"
        yield


def listeners(cloud):
    """[(protocol, address, port)] of every TCP and UDP socket listening on a cloud host now."""
    out = lab_host(cloud).check_output("ss -Htln; ss -Huln")
    found = []
    for line in out.splitlines():
        fields = line.split()
        # TCP lines start with the state (LISTEN), UDP ones with UNCONN: local address is field 3.
        local = fields[3]
        address, port = local.rsplit(":", 1)
        proto = "tcp" if fields[0] == "LISTEN" else "udp"
        found.append((proto, address.split("%")[0].strip("[]"), int(port)))
    assert any(port == SSH_PORT for _p, _a, port in found), f"ss on {cloud} does not show sshd:\n{out}"
    return sorted(set(found))


def is_loopback(address):
    if address == "*":
        return False
    return ipaddress.ip_address(address).is_loopback


def public(cloud, found):
    """The listeners of `found` that bind a non-loopback address and are not allowed to."""
    allowed = public_listeners(cloud)
    return [(proto, address, port) for proto, address, port in found
            if not is_loopback(address) and ((proto, port) not in allowed
                                             or (allowed[(proto, port)] is not None
                                                 and address not in allowed[(proto, port)]))]


def addresses(cloud):
    """Every address a device could try for a cloud host: its global addresses and its inventory one."""
    out = lab_host(cloud).check_output("ip -o addr show scope global")
    found = {line.split()[3].split("/")[0] for line in out.splitlines()}
    found.add(hostvars(cloud)["ansible_host"])
    return sorted(found)


def probe(device, targets):
    """{(address, port): "open" | error} of TCP connects from inside a device."""
    host = lab_host(device)
    cmd = "python3 -c %s %s" % (shlex.quote(PROBE), shlex.quote(json.dumps(sorted(targets))))
    result = json.loads(host.check_output(cmd))
    return {(key.rsplit(" ", 1)[0], int(key.rsplit(" ", 1)[1])): value for key, value in result.items()}


def tcp_ports(cloud):
    return sorted({port for proto, _address, port in listeners(cloud) if proto == "tcp"})


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("device", DEVICES)
def test_device_reaches_no_cloud_listener_but_ssh(device, cloud):
    ports = [port for port in tcp_ports(cloud) if port not in device_reachable(cloud)]
    assert ports, f"{cloud} listens on nothing but SSH: the probe would prove nothing"
    targets = [(address, port) for address in addresses(cloud) for port in ports]
    results = probe(device, targets)
    assert set(results) == set(targets)
    reached = sorted(f"{address}:{port}" for (address, port), value in results.items() if value == "open")
    assert not reached, f"{device} reaches {cloud} on {reached} (listening there: {listeners(cloud)})"


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("device", DEVICES)
def test_control_probe_reaches_ssh(device, cloud):
    results = probe(device, [(address, SSH_PORT) for address in addresses(cloud)])
    assert results and all(value == "open" for value in results.values()), results


@pytest.mark.parametrize("cloud", CLOUDS)
def test_only_allowed_listeners_bind_beyond_loopback(cloud):
    found = listeners(cloud)
    assert not public(cloud, found), (f"{cloud}: listeners on non-loopback addresses that are not in "
                                      f"the allow-list {public_listeners(cloud)}: {public(cloud, found)}")


@pytest.mark.parametrize("cloud", CLOUDS)
def test_control_throwaway_public_listener_is_enumerated_reached_and_flagged(cloud):
    host = lab_host(cloud)
    taken = {port for _proto, _address, port in listeners(cloud)}
    port = random.choice([p for p in range(39000, 39999) if p not in taken])
    unit = f"edgefleet-listener-probe-{port}"
    host.check_output("systemd-run --unit %s --collect python3 -c %s", unit, THROWAWAY % port)
    try:
        deadline = time.monotonic() + 20
        while ("tcp", "0.0.0.0", port) not in listeners(cloud):
            assert time.monotonic() < deadline, f"the throwaway listener on {cloud}:{port} never listened"
            time.sleep(0.5)
        assert ("tcp", "0.0.0.0", port) in public(cloud, listeners(cloud)), "the bind check misses a 0.0.0.0 listener"
        assert port in tcp_ports(cloud)
        for device in DEVICES:
            results = probe(device, [(address, port) for address in addresses(cloud)])
            assert all(value == "open" for value in results.values()), (device, results)
    finally:
        host.run("systemctl stop %s", unit)
    deadline = time.monotonic() + 20
    while port in tcp_ports(cloud):
        assert time.monotonic() < deadline, f"the throwaway listener on {cloud}:{port} is still there"
        time.sleep(0.5)
    assert host.run("systemctl is-active %s", unit).stdout.strip() != "active"
