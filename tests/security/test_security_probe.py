# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Security probe on the podman lab (issue 8).

Every refusal is checked next to a positive control that shows the same probe sees the thing
when it is allowed, so a probe that silently stopped working cannot pass:

- a device's tunnel key, used from the device: may forward its own two ports (control), and
  nothing else: not another device's ports, not an unallocated port, not a dynamic one; no local
  forward, no command, no shell, no agent or X11 forwarding (the admin key shows what a real
  session looks like through the same probes);
- the tunnel account takes no password (a password is sent to an unknown user: control);
- the replication password is not in the output of `ansible-playbook -v --check --diff site.yml`
  nor in any file other users may read on the lab hosts or in the workspace (a planted canary
  is found: control), and secrets.yml is 0600;
- replicas are read-only: a non-SUPER user with INSERT gets error 1290 there, while the same
  user and statement succeed on the device.

The whole module holds the lab lock (tests/runner/lab.py). The secret never appears in an
assertion message: only counts and paths are reported.
"""
import json
import os
import re
import secrets as random_tokens
import shlex
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.faults import harness
from tests.runner.lab import lab_lock
from tests.support.lab import ENV, ROOT, clouds, devices, hostvars, lab_host, replica_schema, sql
from tests.support.tunnel import (KNOWN_HOSTS, TUNNEL_KEY, TUNNEL_USER, Client, admin_client, cloud_of,
                                  device_client, devices_on, is_listening, read_banner, tunnel_ports, wait_closed,
                                  wait_listening)

pytestmark = pytest.mark.lab

DEVICES = devices()
CLOUDS = clouds()
SECRETS = os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "secrets.yml")
PROBE_TABLE = "edgefleet_security_probe"
PROBE_USER = "edgefleet_probe"
# Computed by the remote shell only if the command or shell really runs there.
COMMAND = "'echo CMD-$((6*7)); echo SOCK=${SSH_AUTH_SOCK:-none}; id'"
SHELL_INPUT = "echo SHELL-$((6*7))\nid\nexit\n"
WITH_AGENT_AND_DISPLAY = ("eval \"$(ssh-agent -s)\" >/dev/null && trap 'ssh-agent -k >/dev/null 2>&1' EXIT; "
                          "export DISPLAY=:99; ")
SCAN_ROOTS = ["/etc", "/var/lib/edgefleet", "/usr/local", "/root", "/var/lib/mysql", "/var/log", "/tmp"]


def ring():
    """(attacker, victim) pairs: every device against the next device on the same cloud host."""
    pairs = []
    for cloud in CLOUDS:
        names = devices_on(cloud)
        pairs += [(name, names[(i + 1) % len(names)]) for i, name in enumerate(names) if len(names) > 1]
    return pairs


def unallocated_port():
    """The first tunnel port after every allocated one (the next device would get it)."""
    return max(port for name in DEVICES for port in tunnel_ports(name).values()) + 1


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def lab():
    """The lab lock for the whole module, and a lab that is up and replicating (else fail)."""
    with lab_lock():
        assert len(DEVICES) >= 2, f"the probe needs two active devices on the lab, has {DEVICES}"
        assert ring(), "the probe needs two devices on one cloud host"
        problems = harness.wait_healthy(harness.fleet(), timeout=60, interval=2)
        assert not problems, "lab not healthy before the probe (make lab-up; ansible-playbook site.yml): %s" % problems
        for name in DEVICES:
            key = lab_host(name).file(TUNNEL_KEY)
            assert key.exists and key.mode == 0o600, f"{name}: no tunnel key at {TUNNEL_KEY}"
        yield
        problems = harness.wait_healthy(harness.fleet(), timeout=120, interval=2)
        assert not problems, "lab not healthy after the probe: %s" % problems


@pytest.fixture(scope="class")
def quiet_tunnels():
    """Stop every device's tunnel so all allocated ports are free on the cloud hosts: a forward
    then fails only if sshd refuses it, never because the port is taken."""
    ports = {name: tunnel_ports(name) for name in DEVICES}
    try:
        for name in DEVICES:
            lab_host(name).check_output("systemctl stop edgefleet-tunnel")
        for name in DEVICES:
            for port in ports[name].values():
                wait_closed(cloud_of(name), port)
        yield ports
    finally:
        for name in DEVICES:
            lab_host(name).run("systemctl start edgefleet-tunnel")
        for name in DEVICES:
            for port in ports[name].values():
                wait_listening(cloud_of(name), port, timeout=90)


@pytest.fixture(scope="module")
def password():
    """The replication password of the lab, as the playbooks resolve it."""
    with open(SECRETS, encoding="utf-8") as handle:
        match = re.search(r'^edgefleet_replication_password:\s*"?([^"\n]+)"?\s*$', handle.read(), re.M)
    assert match, f"no edgefleet_replication_password in {SECRETS}"
    value = match.group(1)
    assert len(value) >= 16, "the lab's replication password is too short to search for safely"
    resolved = [name for name in DEVICES + CLOUDS if hostvars(name).get("edgefleet_replication_password") == value]
    assert resolved == DEVICES + CLOUDS, "the inventory does not resolve the password of secrets.yml on every host"
    return value


def _since():
    return int(time.time()) - 1


def _server_log(cloud, since, text, timeout=10):
    """Lines of the cloud host's sshd journal since `since` that contain `text` (journald may
    lag a moment behind sshd)."""
    deadline = time.monotonic() + timeout
    while True:
        log = lab_host(cloud).check_output("journalctl -u ssh --since @%s --no-pager -o cat", str(since))
        lines = [line for line in log.splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def _key_options(output):
    """The options sshd applied to the key that authenticated, as it tells the client at -v."""
    match = re.search(r"Remote: \S+: key options: ([^\r\n]*)", output)
    assert match, "sshd did not report the key's options:\n" + output
    return set(match.group(1).split())


def _remote_forward(port, local=3306):
    return f"-R 127.0.0.1:{port}:127.0.0.1:{local}"


# --------------------------------------------------------------------------------------------
# 1. The device tunnel key: its own ports only
# --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("quiet_tunnels")
class TestForwardsOfTheTunnelKey:
    """Remote forwards requested with a device's own key, all allocated ports free."""

    @pytest.mark.parametrize("name", DEVICES)
    def test_own_ports_can_be_forwarded(self, name):
        """Positive control: the device's two forwards are granted and carry its MariaDB and
        sshd to the cloud host's loopback."""
        ports = tunnel_ports(name)
        cloud = cloud_of(name)
        forwards = f"{_remote_forward(ports['mysql'])} {_remote_forward(ports['ssh'], 22)}"
        client = device_client(name)
        with client.background(f"-v -N -o ExitOnForwardFailure=yes {forwards}",
                               ready=["All remote forwarding requests processed", "forwarding failed"]) as proc:
            output = proc.output()
            assert proc.alive(), "the device's own forwards were refused:\n" + output
            for port in ports.values():
                assert f"remote forward success for: listen 127.0.0.1:{port}" in output
                assert is_listening(cloud, port)
            greeting = read_banner(cloud, ports["mysql"])
            banner = read_banner(cloud, ports["ssh"], seconds=1)
        assert "MariaDB" in greeting
        assert banner.startswith("SSH-2.0-OpenSSH")
        for port in ports.values():
            wait_closed(cloud, port, timeout=30)

    @pytest.mark.parametrize("kind", ["mysql", "ssh"])
    @pytest.mark.parametrize("attacker,victim", ring(), ids=[f"{a}-takes-{v}" for a, v in ring()])
    def test_other_devices_ports_are_refused(self, attacker, victim, kind):
        port = tunnel_ports(victim)[kind]
        self._assert_refused(attacker, port)

    @pytest.mark.parametrize("which", ["unallocated", "high", "dynamic"])
    def test_other_ports_are_refused(self, which):
        port = {"unallocated": unallocated_port(), "high": 40999, "dynamic": 0}[which]
        self._assert_refused(DEVICES[0], port)

    @staticmethod
    def _assert_refused(name, port):
        cloud = cloud_of(name)
        cloud_name = hostvars(name)["edgefleet_cloud_host"]
        if port:
            assert not is_listening(cloud, port), f"port {port} is in use: the probe would prove nothing"
        since = _since()
        result = device_client(name).attempt(f"-v -N -o ExitOnForwardFailure=yes {_remote_forward(port)}")
        assert "Authenticated to" in result.stdout, "the tunnel key was not accepted:\n" + result.stdout
        assert result.rc == 255, result.stdout
        assert f"remote forward failure for: listen 127.0.0.1:{port}" in result.stdout
        assert "forwarding failed" in result.stdout
        if port:
            assert not is_listening(cloud, port)
        # The refusal is sshd's policy, not a failed bind.
        assert _server_log(cloud_name, since, f"remote forward to host 127.0.0.1 port {port}, but the request was denied")


# --------------------------------------------------------------------------------------------
# 1d. No local forwarding
# --------------------------------------------------------------------------------------------

def _read_through_local_forward(client, target_port, local_port):
    """Open `-L local_port:127.0.0.1:target_port` with `client`, read what answers through it."""
    forward = f"-v -N -o ExitOnForwardFailure=yes -L 127.0.0.1:{local_port}:127.0.0.1:{target_port}"
    with client.background(forward, ready=["Entering interactive session", "Could not request local forwarding"]) as proc:
        assert proc.alive(), proc.output()
        got = read_banner(client.host, local_port)
        time.sleep(0.5)
        return got, proc.output()


LOCAL_TARGETS = {"other-device-mysql": ("mysql", "MariaDB"), "cloud-sshd": (22, "SSH-2.0-OpenSSH")}


def _target_port(name, target):
    port = LOCAL_TARGETS[target][0]
    victim = dict(ring())[name]
    return tunnel_ports(victim)["mysql"] if port == "mysql" else port


@pytest.mark.parametrize("target", sorted(LOCAL_TARGETS))
def test_local_forward_probe_sees_an_allowed_forward(target):
    """Positive control: the admin key's local forward to the same target carries its banner."""
    name = DEVICES[0]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
    got = _read_through_local_forward(admin_client(hostvars(name)["edgefleet_cloud_host"]),
                                      _target_port(name, target), local_port)[0]
    assert LOCAL_TARGETS[target][1] in got


@pytest.mark.parametrize("target", sorted(LOCAL_TARGETS))
@pytest.mark.parametrize("name", DEVICES)
def test_local_forward_is_refused(name, target):
    host = lab_host(name)
    local_port = 45001
    assert not host.socket(f"tcp://127.0.0.1:{local_port}").is_listening
    since = _since()
    got, output = _read_through_local_forward(device_client(name), _target_port(name, target), local_port)
    assert "Authenticated to" in output, output
    assert LOCAL_TARGETS[target][1] not in got
    assert "administratively prohibited" in output, output
    assert _server_log(hostvars(name)["edgefleet_cloud_host"], since, "refused local port forward")


# --------------------------------------------------------------------------------------------
# 1c, 1e. No command, no shell, no agent, no X11
# --------------------------------------------------------------------------------------------

def _session(client):
    """A session asking for a command, agent forwarding and trusted X11 (agent and display set)."""
    return client.attempt("-v -A -X -o ForwardX11Trusted=yes", remote=COMMAND, before=WITH_AGENT_AND_DISPLAY)


def _shell(client):
    return client.attempt("-v -tt", stdin=SHELL_INPUT)


def test_session_probes_see_a_real_session():
    """Positive control: with the admin key the same probes show the command's and the shell's
    output, a forwarded agent, and a key allowed agent and X11 forwarding."""
    client = admin_client(CLOUDS[0])
    session = _session(client)
    assert "CMD-42" in session.stdout and "uid=0(root)" in session.stdout, session.stdout
    assert "SOCK=/tmp/ssh-" in session.stdout, session.stdout
    assert "Requesting authentication agent forwarding" in session.stdout
    assert "Requesting X11 forwarding" in session.stdout
    assert {"agent-forwarding", "x11-forwarding", "pty"} <= _key_options(session.stdout)
    # The lab has no xauth: sshd gets past the key and config checks and stops there.
    assert "X11 forwarding disabled" not in session.stdout
    shell = _shell(client)
    assert "SHELL-42" in shell.stdout and "uid=0(root)" in shell.stdout, shell.stdout


@pytest.mark.parametrize("name", DEVICES)
def test_remote_command_gets_nothing(name):
    result = _session(device_client(name))
    assert "Authenticated to" in result.stdout, result.stdout
    assert "CMD-42" not in result.stdout
    assert "uid=" not in result.stdout
    assert "SOCK=/" not in result.stdout  # a forwarded agent's socket (ssh -v echoes the command itself)
    assert result.rc != 0


@pytest.mark.parametrize("name", DEVICES)
def test_shell_gets_nothing(name):
    result = _shell(device_client(name))
    assert "Authenticated to" in result.stdout, result.stdout
    assert "PTY allocation request failed" in result.stdout
    assert "SHELL-42" not in result.stdout
    assert "uid=" not in result.stdout
    assert result.rc != 0


@pytest.mark.parametrize("name", DEVICES)
def test_agent_and_x11_are_not_granted(name):
    result = _session(device_client(name))
    output = result.stdout
    assert "Authenticated to" in output, output
    # The client did ask for both ...
    assert "Requesting authentication agent forwarding" in output
    assert "Requesting X11 forwarding" in output
    # ... the key that authenticated may do neither (sshd reports its options) ...
    options = _key_options(output)
    assert "port-forwarding" in options and "permitlisten" in options
    assert not options & {"agent-forwarding", "x11-forwarding", "pty", "user-rc"}, options
    assert "X11 forwarding disabled by key options" in output
    assert "X11 forwarding request failed" in output
    # ... and the account's sshd settings refuse them too (second layer).
    hv = hostvars(name)
    effective = cloud_of(name).check_output(
        "sshd -T -C user=%s,host=%s,addr=%s,laddr=%s,lport=22", TUNNEL_USER, name,
        str(hv["edgefleet_address"]), str(hv["edgefleet_cloud_address"]))
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["allowagentforwarding"] == "no"
    assert settings["x11forwarding"] == "no"
    assert settings["permittty"] == "no"


# --------------------------------------------------------------------------------------------
# 2. No password login on the tunnel account
# --------------------------------------------------------------------------------------------

ASKPASS = ("d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && "
           "printf '#!/bin/sh\\necho ASKPASS-CALLED >&2\\necho not-the-password\\n' >\"$d/askpass\" && "
           "chmod 700 \"$d/askpass\" && export SSH_ASKPASS=\"$d/askpass\" SSH_ASKPASS_REQUIRE=force DISPLAY=:99; ")


def _password_attempt(name, user):
    ssh = ("ssh -v -F /dev/null -o BatchMode=no -o PubkeyAuthentication=no "
           "-o PreferredAuthentications=password,keyboard-interactive -o NumberOfPasswordPrompts=1 "
           f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes -o ConnectTimeout=10 ")
    client = Client(lab_host(name), ssh, f"{user}@{hostvars(name)['edgefleet_cloud_address']}")
    result = client.attempt("", remote="true", before=ASKPASS)
    offered = re.findall(r"Authentications that can continue: (\S+)", result.stdout)
    assert offered, "no authentication exchange:\n" + result.stdout
    return result, set(offered[-1].split(","))


def test_password_probe_sends_a_password_when_offered():
    """Positive control: for an unknown user sshd offers passwords and the probe sends one."""
    result, offered = _password_attempt(DEVICES[0], "edgefleet-probe-nobody")
    assert "password" in offered
    assert "ASKPASS-CALLED" in result.stdout
    assert result.rc == 255


@pytest.mark.parametrize("name", DEVICES)
def test_tunnel_account_refuses_password_login(name):
    result, offered = _password_attempt(name, TUNNEL_USER)
    assert offered == {"publickey"}, offered
    assert "ASKPASS-CALLED" not in result.stdout
    assert "Permission denied (publickey)" in result.stdout
    assert result.rc == 255


@pytest.mark.parametrize("cloud", CLOUDS)
def test_tunnel_account_password_is_locked(cloud):
    host = lab_host(cloud)
    entry = host.check_output("getent shadow %s", TUNNEL_USER).split(":")
    assert entry[1] in ("*", "!", "!*") or entry[1].startswith("!"), "tunnel account has a usable password"
    assert host.user(TUNNEL_USER).shell == "/usr/sbin/nologin"


# --------------------------------------------------------------------------------------------
# 3. The replication password does not leak
# --------------------------------------------------------------------------------------------

def test_secrets_file_is_0600():
    mode = stat.S_IMODE(os.stat(SECRETS).st_mode)
    assert mode == 0o600, f"{SECRETS} has mode {oct(mode)}"


def test_playbook_output_does_not_show_the_password(password):
    proc = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-v", "--check", "--diff",
                           "site.yml"], cwd=ROOT, env=dict(ENV, ANSIBLE_NOCOLOR="1"), capture_output=True,
                          text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    leaks = output.count(password)
    safe = output.replace(password, "<PASSWORD>")
    assert proc.returncode == 0, safe[-6000:]
    # The tasks that take the secret did run in this check.
    blocks = output.split("\nTASK [")
    for task in ("Create the replication user without writing it to the binlog",
                 "Configure and start replication of every device on each instance"):
        ran = [block for block in blocks if task + "] " in block and re.search(r"^(ok|changed): \[", block, re.M)]
        assert ran, f"task did not run in the check: {task}"
    assert leaks == 0, f"the replication password appears {leaks} times in the playbook output"


SCANNER = r'''
import json, os, stat, sys
spec = json.load(sys.stdin)
needles = {key: value.encode() for key, value in spec["needles"].items()}
skip = set(spec.get("skip", []))
overlap = max(len(value) for value in needles.values())

def reachable(path):
    parent = os.path.dirname(path)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        if parent in ("/", ""):
            return True
        parent = os.path.dirname(parent)

hits = []
for root in spec["roots"]:
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
        for name in files:
            path = os.path.join(top, name)
            try:
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    continue
                found, tail = set(), b""
                with open(path, "rb") as handle:
                    while True:
                        block = handle.read(1 << 20)
                        if not block:
                            break
                        chunk = tail + block
                        found.update(key for key, value in needles.items() if value in chunk)
                        tail = chunk[-overlap:]
            except OSError:
                continue
            for key in sorted(found):
                hits.append({"needle": key, "path": path, "mode": oct(stat.S_IMODE(info.st_mode)),
                             "other_readable": bool(info.st_mode & stat.S_IROTH),
                             "reachable": bool(info.st_mode & stat.S_IROTH) and reachable(path)})
json.dump(hits, sys.stdout)
'''


def _scan_host(name, spec):
    proc = harness.sh(name, "python3 -c " + shlex.quote(SCANNER), stdin=json.dumps(spec), timeout=600)
    return json.loads(proc.stdout)


def _scan_workspace(spec):
    proc = subprocess.run([sys.executable, "-c", SCANNER], input=json.dumps(spec), capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(proc.stdout)


def _offenders(hits):
    return [f"{hit['path']} ({hit['mode']}{', readable by any user' if hit['reachable'] else ''})"
            for hit in hits if hit["needle"] == "password" and hit["other_readable"]]


@pytest.mark.parametrize("name", DEVICES + CLOUDS)
def test_no_copy_of_the_password_readable_by_others_on_lab_hosts(name, password):
    canary = "edgefleet-canary-" + random_tokens.token_hex(12)
    canary_path = f"/usr/local/share/edgefleet-security-canary-{random_tokens.token_hex(4)}"
    host = lab_host(name)
    host.check_output("mkdir -p /usr/local/share && printf '%%s\\n' %s > %s && chmod 0644 %s",
                      canary, canary_path, canary_path)
    try:
        hits = _scan_host(name, {"needles": {"password": password, "canary": canary}, "roots": SCAN_ROOTS})
    finally:
        host.run("rm -f %s", canary_path)
    # Positive controls: the planted world-readable canary is found; on a cloud host the password
    # itself is found where replication must keep it (the replica's master info, mode 0660).
    assert [(hit["path"], hit["other_readable"]) for hit in hits if hit["needle"] == "canary"] == [(canary_path, True)]
    if name in CLOUDS:
        stored = [hit["path"] for hit in hits if hit["needle"] == "password"]
        assert any(path.startswith("/var/lib/edgefleet/") for path in stored), "scan did not find the replicas' copies"
    offenders = _offenders(hits)
    assert not offenders, f"{name}: files others may read contain the replication password: {offenders}"


def test_no_copy_of_the_password_readable_by_others_in_the_workspace(password):
    canary = "edgefleet-canary-" + random_tokens.token_hex(12)
    os.makedirs(os.path.join(ROOT, "tests", "output"), exist_ok=True)
    canary_path = os.path.join(ROOT, "tests", "output", f"security-canary-{random_tokens.token_hex(4)}")
    with open(canary_path, "w", encoding="utf-8") as handle:
        handle.write(canary + "\n")
    os.chmod(canary_path, 0o644)
    try:
        hits = _scan_workspace({"needles": {"password": password, "canary": canary}, "roots": [ROOT],
                                "skip": [os.path.join(ROOT, ".venv")]})
    finally:
        os.unlink(canary_path)
    assert [(hit["path"], hit["other_readable"]) for hit in hits if hit["needle"] == "canary"] == [(canary_path, True)]
    # secrets.yml itself holds it (0600): the scan sees the password where it is.
    assert SECRETS in [hit["path"] for hit in hits if hit["needle"] == "password"]
    offenders = _offenders(hits)
    assert not offenders, f"workspace files others may read contain the replication password: {offenders}"


# --------------------------------------------------------------------------------------------
# 4. Replicas refuse writes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DEVICES)
def test_replica_is_read_only(name):
    socket_path = harness.Device.load(name).socket
    assert sql(cloud_of(name), "SELECT @@global.read_only", socket=socket_path) == [["1"]]


def _as_probe_user(host, query, password, socket_path):
    return host.run("mariadb --socket=%s -u %s --password=%s -N -B -e %s", socket_path, PROBE_USER, password, query)


def _wait_rows(cloud, socket_path, table, expected, timeout=120):
    def rows():
        out = cloud.run("mariadb --socket=%s -N -B -e %s", socket_path, f"SELECT COUNT(*) FROM {table}")
        return out.rc == 0 and out.stdout.strip() == str(expected)
    harness.wait_for(rows, timeout=timeout, what=f"{expected} rows in {table} on the replica")


def _wait_table_gone(cloud, socket_path, schema, timeout=120):
    query = f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='{schema}' AND table_name='{PROBE_TABLE}'"
    harness.wait_for(lambda: sql(cloud, query, socket=socket_path) == [["0"]], timeout=timeout,
                     what=f"{PROBE_TABLE} dropped on the replica")


@pytest.mark.parametrize("name", DEVICES)
def test_replica_refuses_writes_of_a_non_super_user(name):
    device, cloud = lab_host(name), cloud_of(name)
    replica_socket = harness.Device.load(name).socket
    schema = replica_schema(name)
    user_password = random_tokens.token_hex(12)
    drop_user = f"SET SESSION sql_log_bin=0; DROP USER IF EXISTS '{PROBE_USER}'@'localhost'"
    create_user = (f"SET SESSION sql_log_bin=0; CREATE USER '{PROBE_USER}'@'localhost' IDENTIFIED BY '{user_password}'; "
                   "GRANT SELECT, INSERT ON {db}.* TO '" + PROBE_USER + "'@'localhost'")
    insert = "INSERT INTO {db}." + PROBE_TABLE + " VALUES (2, 'written by the probe user')"
    had_app = sql(device, "SHOW DATABASES LIKE 'app'") == [["app"]]
    try:
        # A table that exists on the device and, through replication, on its replica.
        sql(device, f"CREATE DATABASE IF NOT EXISTS app; USE app; DROP TABLE IF EXISTS {PROBE_TABLE}; CREATE TABLE {PROBE_TABLE} "
                    "(id INT PRIMARY KEY, note VARCHAR(64)); "
                    f"INSERT INTO app.{PROBE_TABLE} VALUES (1, 'written on the device')")
        _wait_rows(cloud, replica_socket, f"{schema}.{PROBE_TABLE}", 1)
        sql(cloud, create_user.format(db=schema), socket=replica_socket)
        grant_rows = sql(cloud, f"SHOW GRANTS FOR '{PROBE_USER}'@'localhost'", socket=replica_socket)
        grants = " ".join(row[0] for row in grant_rows)
        assert "INSERT" in grants and "SUPER" not in grants and "READ_ONLY ADMIN" not in grants, grants

        readable = _as_probe_user(cloud, f"SELECT COUNT(*) FROM {schema}.{PROBE_TABLE}", user_password, replica_socket)
        assert readable.rc == 0 and readable.stdout.strip() == "1", readable.stderr
        refused = _as_probe_user(cloud, insert.format(db=schema), user_password, replica_socket)
        assert refused.rc != 0
        assert "ERROR 1290" in refused.stderr and "read-only" in refused.stderr, refused.stderr

        # Positive control: the same user and statement on the (writable) device succeed, and the
        # row reaches the replica the only way it should: by replication.
        sql(device, create_user.format(db="app"))
        written = _as_probe_user(device, insert.format(db="app"), user_password, "/run/mysqld/mysqld.sock")
        assert written.rc == 0, written.stderr
        _wait_rows(cloud, replica_socket, f"{schema}.{PROBE_TABLE}", 2)
    finally:
        device.run("mariadb -N -B -e %s", drop_user)
        cloud.run("mariadb --socket=%s -N -B -e %s", replica_socket, drop_user)
        device.run("mariadb -N -B app -e %s", f"DROP TABLE IF EXISTS {PROBE_TABLE}")
        if not had_app:
            device.run("mariadb -N -B -e %s", "DROP DATABASE IF EXISTS app")
    _wait_table_gone(cloud, replica_socket, schema)
    assert sql(cloud, f"SELECT COUNT(*) FROM mysql.user WHERE user='{PROBE_USER}'", socket=replica_socket) == [["0"]]
