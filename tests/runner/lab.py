"""Lab helpers for the rebalance / runner tests: the shared lab lock, scaling the lab to two
cloud hosts and back, fresh inventories after moves, SQL on lab hosts over pinned SSH."""
import contextlib
import fcntl
import json
import os
import re
import subprocess
import time

import yaml

from tests.runner.support import ROOT, environment, plain

LOCK = "/tmp/edgefleet-lab.lock"
INVENTORY = os.path.join(ROOT, "inventories", "lab", "lab.fleet.yml")
STATE = os.path.join(ROOT, "lab", ".state")


_HELD = {"depth": 0}
# The last command this module ran on the lab, when it was a site.yml that changed nothing on any
# host (cleared by every other command and when this process lets go of the lab lock).
_NOOP_SITE = {}


def inherited_lock_fd(path=None):
    """A descriptor of the lock file this process inherited, e.g. from `flock FILE pytest ...`
    (make lab-test): the parent then holds the lock already, and taking it again on a new
    descriptor would wait for ever."""
    path = path or LOCK
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(os.path.join("/proc/self/fd", name)) == path:
                return int(name)
        except OSError:
            continue
    return None


@contextlib.contextmanager
def lab_lock():
    """The lock every user of the shared lab holds (same file as `flock /tmp/edgefleet-lab.lock`).
    Re-entrant in one process, and a no-op when a parent (`flock ... pytest`) already holds it."""
    if _HELD["depth"] or inherited_lock_fd() is not None:
        _HELD["depth"] += 1
        try:
            yield
        finally:
            _HELD["depth"] -= 1
        return
    with open(LOCK, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD["depth"] += 1
        try:
            yield
        finally:
            _HELD["depth"] -= 1
            _NOOP_SITE.clear()
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(args, timeout=1800, check=True, env=None):
    """A command in the repository root with the project's Ansible environment (plus env)."""
    plain_site = list(args) == ["ansible-playbook", "site.yml"] and not env
    env = dict(os.environ, **environment(), **(env or {}))
    _NOOP_SITE.clear()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if plain_site and proc.returncode == 0 and (_HELD["depth"] or inherited_lock_fd() is not None):
        hosts = recap(proc.stdout)
        if hosts and not any(r["changed"] or r["failed"] or r["unreachable"] for r in hosts.values()):
            _NOOP_SITE["stdout"] = proc.stdout
    if check and proc.returncode:
        raise AssertionError("%s failed (rc=%d):\n%s\n%s"
                             % (" ".join(args), proc.returncode, proc.stdout[-8000:], proc.stderr[-3000:]))
    return proc


def proven_no_op():
    """True when the last lab command of this process was a site.yml that changed nothing on any
    host, and the lab lock has been held since: the lab is converged now, no need to run it again."""
    return bool(_NOOP_SITE)


def recap_changes(stdout):
    """{host: changed count} of the hosts a playbook run changed (its PLAY RECAP)."""
    return {host: r["changed"] for host, r in recap(stdout).items() if r["changed"]}


def changed_tasks(stdout):
    """["TASK name: changed line", ...] of a playbook run, to say what was not idempotent."""
    out, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]")[0]
        elif line.startswith("changed:"):
            out.append("%s: %s" % (task, line))
    return out


def recap(stdout):
    """{host: {ok, changed, unreachable, failed}} from a PLAY RECAP."""
    out = {}
    for match in re.finditer(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", stdout, re.M):
        out[match.group(1)] = dict(ok=int(match.group(2)), changed=int(match.group(3)),
                                   unreachable=int(match.group(4)), failed=int(match.group(5)))
    return out


def grow(devices, clouds, channel_mode_devices=None):
    """lab/up.yml to this size and the connection vars, without converging the fleet.
    channel_mode_devices: the lab_channel_mode_devices to write into the registry (it is rewritten
    only when the lab's hosts change); None keeps lab/vars.yml's list."""
    extra = ["-e", "lab_devices=%d" % devices, "-e", "lab_clouds=%d" % clouds]
    if channel_mode_devices is not None:
        extra += ["-e", json.dumps({"lab_channel_mode_devices": list(channel_mode_devices)})]
    run(["ansible-playbook", "lab/up.yml"] + extra)
    run(["make", "--no-print-directory", "lab-vars"])


def scale(devices, clouds, channel_mode_devices=None):
    """lab/up.yml to this size, connection vars, then site.yml (what the lab rules ask for)."""
    grow(devices, clouds, channel_mode_devices)
    return run(["ansible-playbook", "site.yml"])


def channel_mode_devices():
    """Devices the lab registry puts in channel mode now (keep them so when resizing)."""
    with open(os.path.join(ROOT, "inventories", "lab", "registry.yml"), encoding="utf-8") as handle:
        registry = yaml.safe_load(handle) or {}
    return [d["id"] for d in registry.get("devices") or [] if d.get("replica_mode") == "channel"]


def inventory():
    """A fresh `ansible-inventory --list` of the lab fleet (allocations change during moves)."""
    out = run(["ansible-inventory", "-i", INVENTORY, "--list"]).stdout
    return plain(json.loads(out))


def allocations():
    """{device: {cloud_host, tunnel ports, replica ...}} from the lab's allocation file."""
    with open(os.path.join(ROOT, "inventories", "lab", "registry.alloc.yml"), encoding="utf-8") as handle:
        return json.load(handle)


def shell(host, command, check=True, timeout=300):
    """A shell command on a lab host over SSH with the lab key and pinned host keys."""
    _NOOP_SITE.clear()
    inv = inventory_cache()
    address = inv["_meta"]["hostvars"][host]["ansible_host"]
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", os.path.join(STATE, "id_ed25519"), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + os.path.join(STATE, "known_hosts"),
         "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10", "root@" + address, command],
        capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode:
        raise AssertionError("%s: %s failed (rc=%d): %s" % (host, command, proc.returncode, proc.stderr))
    return proc.stdout


_INV = {}


def inventory_cache(refresh=False):
    if refresh or "inv" not in _INV:
        _INV["inv"] = inventory()
    return _INV["inv"]


def sql(host, query, socket="/run/mysqld/mysqld.sock"):
    out = shell(host, "mariadb --socket=%s -N -B -e %s" % (socket, _quote(query)))
    return [line.split("\t") for line in out.splitlines()]


def _quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def replica_socket(instance):
    return "/run/mysqld/edgefleet-%s.sock" % instance


def remove_replica_leftovers(cloud, device, record):
    """What pruning a device leaves on its cloud host: a channel-mode device's renamed schema and its
    GTID domain in the shared gtid_slave_pos (a new device reusing nothing would start from an empty
    binlog; all threads stop for a moment), or an instance-mode device's datadir."""
    if record["replica_mode"] == "channel":
        sock = replica_socket(record["replica_instance"])
        sql(cloud, "SET SESSION sql_log_bin=0; DROP DATABASE IF EXISTS `%sapp`" % record["schema_prefix"], sock)
        (pos,), = sql(cloud, "SELECT @@gtid_slave_pos", sock)
        kept = ",".join(p for p in pos.split(",") if p and not p.startswith("%s-" % record["gtid_domain_id"]))
        if kept != pos:
            sql(cloud, "STOP ALL SLAVES; SET GLOBAL gtid_slave_pos = '%s'; START ALL SLAVES" % kept, sock)
    else:
        shell(cloud, "rm -rf /var/lib/edgefleet/replicas/%s /var/lib/edgefleet/replicas/.applied/%s.*"
              % (device, device))


def instance_pids(cloud):
    """{instance: main pid} of the replica instances running on a cloud host."""
    out = shell(cloud, "for u in $(systemctl list-units --plain --no-legend --state=active 'mariadb@*' | cut -d' ' -f1); "
                       "do echo $u $(systemctl show -p ExecMainPID --value $u); done")
    pids = {}
    for line in out.splitlines():
        unit, pid = line.split()
        pids[unit[len("mariadb@"):-len(".service")]] = int(pid)
    return pids


def wait_for(predicate, timeout=120, interval=2, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(interval)
