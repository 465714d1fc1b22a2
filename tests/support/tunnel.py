# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH probes of the device tunnels on the lab (molecule/device_tunnel, tests/security).

A Client is an ssh command line run on some host (a device with its own tunnel key, or the
controller with the lab's admin key) against one destination. Exit codes are captured inside the
shell that runs ssh: testinfra's own SSH transport would take the inner ssh's 255 for a broken
connection.
"""
import contextlib
import os
import shlex
import time

import testinfra

from tests.support.lab import ROOT, devices, hostvars, lab_host

TUNNEL_USER = "edgefleet-tunnel"
TUNNEL_KEY = "/etc/edgefleet/tunnel_ed25519"
KNOWN_HOSTS = "/etc/edgefleet/known_hosts"
LAB_STATE = os.path.join(ROOT, "lab", ".state")
SSH = ("ssh -i " + TUNNEL_KEY + " -o IdentitiesOnly=yes -o BatchMode=yes "
       "-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o ConnectTimeout=10 ")


def cloud_of(name):
    """testinfra host of the cloud host that carries a device's tunnel."""
    return lab_host(hostvars(name)["edgefleet_cloud_host"])


def devices_on(cloud):
    return [name for name in devices() if hostvars(name)["edgefleet_cloud_host"] == cloud]


def tunnel_ports(name):
    hv = hostvars(name)
    return {"mysql": int(hv["edgefleet_tunnel_mysql_port"]), "ssh": int(hv["edgefleet_tunnel_ssh_port"])}


class Attempt:
    """Outcome of one ssh attempt: its exit code and its merged stdout/stderr."""

    def __init__(self, output):
        body, code = output.rpartition("EXIT=")[::2]
        self.rc = int(code.strip() or 255)
        self.stdout = self.stderr = body


class Background:
    """An ssh client left running in the background on a host, its output in a temporary file."""

    def __init__(self, host, pid, log):
        self.host, self.pid, self.log = host, pid, log

    def alive(self):
        return self.host.run("kill -0 %s", str(self.pid)).rc == 0

    def output(self):
        return self.host.run("cat %s", self.log).stdout


class Client:
    """An ssh client command line (without the destination) run on a testinfra host."""

    def __init__(self, host, ssh, destination):
        self.host, self.ssh, self.destination = host, ssh, destination

    def command(self, args, remote="", before="", stdin=None, then="", timeout=20):
        """`before` runs first in the same shell; `remote` is the (shell-quoted) remote command;
        `stdin` is fed to ssh (else /dev/null); `then` runs after the exit code is printed."""
        feed = "printf %%s %s | " % shlex.quote(stdin) if stdin is not None else ""
        redirect = "" if stdin is not None else " </dev/null"
        remote = " " + remote if remote else ""
        return (f"{before}{feed}timeout {timeout} {self.ssh}{args} {self.destination}{remote} 2>&1{redirect}; "
                f"echo EXIT=$?{then}")

    def attempt(self, args, remote="", before="", stdin=None, then="", timeout=20):
        return Attempt(self.host.run(self.command(args, remote, before, stdin, then, timeout)).stdout)

    @contextlib.contextmanager
    def background(self, args, ready, timeout=20, lifetime=300):
        """Run `ssh ARGS DESTINATION` in the background until one of the `ready` strings is in
        its output or it exits; yield a Background; then end that process (by its pid) and
        remove its output file. `lifetime` bounds it even if this process dies first."""
        started = self.host.run(
            "log=$(mktemp /tmp/edgefleet-probe.XXXXXX) && "
            "{ nohup timeout %d %s%s %s </dev/null >\"$log\" 2>&1 & echo \"$! $log\"; }"
            % (lifetime, self.ssh, args, self.destination))
        assert started.rc == 0, started.stderr
        pid, log = started.stdout.split()
        proc = Background(self.host, int(pid), log)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not proc.alive() or any(mark in proc.output() for mark in ready):
                    break
                time.sleep(0.3)
            yield proc
        finally:
            self.host.run("kill %s 2>/dev/null; for i in $(seq 50); do kill -0 %s 2>/dev/null || break; "
                          "sleep 0.1; done; kill -9 %s 2>/dev/null; rm -f %s", pid, pid, pid, log)


def device_client(name, known_hosts=KNOWN_HOSTS):
    """The device's own tunnel key, on the device, against its cloud host's tunnel account."""
    hv = hostvars(name)
    return Client(lab_host(name), SSH.format(known_hosts=known_hosts),
                  f"{TUNNEL_USER}@{hv['edgefleet_cloud_address']}")


def admin_client(cloud, user="root"):
    """The lab's admin key, on the controller, against a cloud host (positive controls)."""
    ssh = ("ssh -F /dev/null -i {state}/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes "
           "-o UserKnownHostsFile={state}/known_hosts -o StrictHostKeyChecking=yes "
           "-o ConnectTimeout=10 ").format(state=LAB_STATE)
    return Client(testinfra.get_host("local://"), ssh, f"{user}@{hostvars(cloud)['ansible_host']}")


def ssh_from(name, args, known_hosts=KNOWN_HOSTS, then=""):
    """One ssh attempt on a device with its tunnel key; stdin is /dev/null."""
    return device_client(name, known_hosts).attempt(args, then=then)


def read_banner(host, port, seconds=3):
    """What a TCP service on the host's loopback says first (MariaDB's greeting, sshd's banner),
    printable characters only. Reads for `seconds`: a fixed byte count would wait for ever when
    the greeting is shorter (MariaDB 10.11's is about 108 bytes)."""
    return host.run("timeout %s bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s && timeout %s cat <&3' 2>/dev/null "
                    "| head -c 200 | tr -dc '[:print:]'", str(seconds + 2), str(port), str(seconds)).stdout


def is_listening(cloud, port):
    return cloud.socket(f"tcp://127.0.0.1:{port}").is_listening


def wait_listening(cloud, port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(cloud, port):
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"port {port} not listening on the cloud after {timeout}s")


def wait_closed(cloud, port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_listening(cloud, port):
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"port {port} still listening on the cloud after {timeout}s")
