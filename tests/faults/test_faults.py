"""Faults while every device writes: no row lost, none duplicated, replication back by itself.

Each test starts the writer on every device (tests/faults/writer.py: one insert with a sequence
number and one update per tick), injects one fault, measures the time from the fault being
cleared to the first row written after that moment arriving on the affected replicas, stops the
writers, waits for catch-up and compares every device with its replica: sequence numbers (lost,
duplicated, extra) and CHECKSUM TABLE of every table of the device's `app` schema.

Full form: `make test-faults`; short form (`-m "not slow"`): `make test-faults-short`.
"""
import shlex
import subprocess
import time

import pytest

from tests.faults import harness
from tests.faults.harness import LabError, podman, sh, sql
from tests.support.lab import hostvars

pytestmark = [pytest.mark.lab]

TUNNEL_GOAL = 30      # seconds from a cleared tunnel cut to replicating again
REPLICA_GOAL = 60     # seconds from a replica crash to replicating again
RESTART_BOUND = 180   # other faults: recorded, and must recover by themselves within this
MONITORING_CONFIG = "/etc/edgefleet/monitoring.json"


def exercise(lab, fault, affected, inject, goal=None, bound=RESTART_BOUND, mode=None, warmup=3.0,
             after=3.0):
    """Run writers on every device, inject a fault (inject() blocks until the fault is cleared
    and returns that moment as an epoch), measure recovery, compare everything, record a row."""
    run = harness.new_run(fault)
    result = {"fault": fault, "mode": mode or ",".join(sorted({d.mode for d in affected})), "goal": goal,
              "run": run, "affected": [d.name for d in affected]}
    harness.start_writers(lab.devices, run)
    try:
        warm = harness.wait_rows(lab.devices, run, since=time.time(), timeout=90)
        cold = sorted(name for name, seen in warm.items() if seen is None)
        if cold:
            raise LabError(f"{fault}: not replicating before the fault was injected: {cold}")
        time.sleep(warmup)
        t_fault = time.time()
        t_clear = inject()
        result["fault_seconds"] = round(t_clear - t_fault, 1)
        seen = harness.wait_rows(affected, run, since=t_clear, timeout=bound)
        result["recover_per_device"] = {name: (None if at is None else round(at - t_clear, 1))
                                        for name, at in seen.items()}
        back = [at for at in seen.values() if at is not None]
        result["recover_s"] = (max(back) - t_clear) if len(back) == len(seen) else None
        t_back = max(back) if back else time.time()
        time.sleep(after)
    finally:
        harness.stop_writers(lab.devices, run)
    writes = failed = 0
    for device in affected:
        ok, bad = harness.writes_between(device, run, t_fault, t_back)
        writes += ok
        failed += bad
    result["writes_during"] = writes
    result["failed_attempts_during"] = failed
    comparisons, errors = [], []
    for device in lab.devices:
        try:
            harness.catch_up(device)
        except LabError as exc:
            errors.append(str(exc))
        comparisons.append(harness.compare(device, run))
    result["devices"] = comparisons
    result["lost"] = sum(c["lost"] + len(c["lost_on_device"]) for c in comparisons)
    result["duplicates"] = sum(c["duplicates"] + c["extra_on_replica"] for c in comparisons)
    mismatched = [f"{c['device']}: {c['checksum_mismatch']}" for c in comparisons if c["checksum_mismatch"]]
    result["ok"] = (not errors and not mismatched and result["lost"] == 0 and result["duplicates"] == 0
                    and result["recover_s"] is not None and (goal is None or result["recover_s"] < goal))
    harness.record(result)
    print(f"\n{fault}: recovered in "
          f"{'never' if result['recover_s'] is None else '%.1fs' % result['recover_s']} "
          f"{result['recover_per_device']}; writes during fault {writes} (failed attempts {failed}); "
          f"lost {result['lost']}, duplicates {result['duplicates']}")
    assert not errors, errors
    assert result["lost"] == 0, [(c["device"], c["lost_sample"], c["lost_on_device"]) for c in comparisons]
    assert result["duplicates"] == 0, comparisons
    assert not mismatched, f"table checksums differ between device and replica: {mismatched}"
    assert result["recover_s"] is not None, f"{fault}: replication did not resume within {bound}s"
    if goal is not None:
        assert result["recover_s"] < goal, f"{fault}: {result['recover_s']:.1f}s to recover, goal < {goal}s"
    return result


# --------------------------------------------------------------------------------------------
# 1. Tunnel cut
# --------------------------------------------------------------------------------------------

def test_tunnel_ssh_killed(lab):
    """SIGKILL the device's ssh (autossh's child): autossh starts a new one, the replica's IO
    thread reconnects."""
    device = lab.devices[0]

    def inject():
        pids = sh(device.name, "pgrep -x ssh || true").stdout.split()
        assert pids, f"{device.name}: no ssh process of the tunnel"
        sh(device.name, "pkill -KILL -x ssh")
        return time.time()

    exercise(lab, "tunnel: ssh killed", [device], inject, goal=TUNNEL_GOAL)


def link_cut(device, seconds):
    """Take the device's only link down for `seconds` (from inside: NET_ADMIN); a systemd timer
    in the device brings it back even if this process dies."""
    def inject():
        sh(device.name, f"systemd-run --quiet --unit edgefleet-fault-linkup --on-active={int(seconds) + 60} "
                        "/usr/sbin/ip link set eth0 up")
        try:
            sh(device.name, "ip link set eth0 down")
            time.sleep(seconds)
        finally:
            sh(device.name, "ip link set eth0 up; systemctl stop edgefleet-fault-linkup.timer 2>/dev/null; true")
        return time.time()
    return inject


def test_tunnel_link_cut_60s(lab):
    """The device's network is gone for 60 s (longer than the keep-alives on both sides)."""
    device = lab.devices[-1]
    exercise(lab, "tunnel: link down 60 s", [device], link_cut(device, 60), goal=TUNNEL_GOAL)


class SilentLoss:
    """The device's tunnel connection goes dark without a reset reaching either side (a NAT
    mapping changed, a mobile device switched networks): every packet of that one connection is
    dropped in the cloud host's network namespace, both ways, while the device can open new
    connections at once. The cloud's sshd keeps the old session (and its forwards) until its
    keep-alives give up; the device's new session must get its ports anyway."""

    def __init__(self, device):
        self.device = device
        self.rules = []
        self.cloud_pid = None

    def _netns(self, *args, check=True):
        if self.cloud_pid is None:
            self.cloud_pid = podman("inspect", "-f", "{{.State.Pid}}", self.device.cloud).stdout.strip()
        proc = subprocess.run(["nsenter", "-t", self.cloud_pid, "-n", "iptables", "-w", *args], capture_output=True,
                              text=True, check=False)
        if check and proc.returncode:
            raise LabError(f"iptables {' '.join(args)} in {self.device.cloud}: {proc.stderr.strip()}")
        return proc

    def inject(self):
        address = hostvars(self.device.name)["ansible_host"]
        rows = sh(self.device.cloud, f"ss -Htn state established '( sport = :22 and dst {address} )'").stdout
        ports = [line.split()[-1].rsplit(":", 1)[1] for line in rows.splitlines() if line.strip()]
        assert ports, f"{self.device.name}: no tunnel connection from {address} on {self.device.cloud}"
        for port in ports:
            for rule in (["INPUT", "-s", address, "-p", "tcp", "--sport", port, "--dport", "22", "-j", "DROP"],
                         ["OUTPUT", "-d", address, "-p", "tcp", "--dport", port, "--sport", "22", "-j", "DROP"]):
                self._netns("-I", *rule)
                self.rules.append(rule)
        return time.time()

    def clear(self):
        for rule in self.rules:
            self._netns("-D", *rule, check=False)
        self.rules = []


@pytest.mark.parametrize("mode", ["instance", "channel"])
def test_tunnel_silent_loss(lab, mode):
    """Silent link loss, the device back at once on a fresh connection: recovery is timed from the
    moment the old connection went dark (the new path works from that moment on)."""
    device = next((d for d in lab.devices if d.mode == mode), None)
    assert device is not None, f"no {mode}-mode device in the lab"
    loss = SilentLoss(device)
    try:
        exercise(lab, "tunnel: silent link loss, back on a new connection", [device], loss.inject,
                 goal=TUNNEL_GOAL, mode=mode)
    finally:
        loss.clear()


# --------------------------------------------------------------------------------------------
# 2. Replica crash
# --------------------------------------------------------------------------------------------

def crash_replica(device):
    def inject():
        unit = f"mariadb@{device.instance}.service"
        pid = sh(device.cloud, f"systemctl show -p MainPID --value {unit}").stdout.strip()
        assert pid and pid != "0", f"{unit} has no main process"
        sh(device.cloud, f"kill -KILL {pid}")
        return time.time()
    return inject


@pytest.mark.parametrize("mode", ["instance", "channel"])
def test_replica_crash(lab, mode):
    """SIGKILL the replica mysqld of one device mid-stream (in channel mode: the shared mysqld of
    every device on it): systemd restarts it, crash recovery (relay_log_recovery, gtid_slave_pos
    in InnoDB) resumes every channel without loss or duplicates. The lab has both modes
    (lab/vars.yml lab_channel_mode_devices); a missing mode is a failure, not a skip."""
    device = next((d for d in lab.devices if d.mode == mode), None)
    assert device is not None, f"no {mode}-mode device in the lab (lab/vars.yml lab_channel_mode_devices)"
    affected = [d for d in lab.devices if d.cloud == device.cloud and d.instance == device.instance]
    exercise(lab, "replica crash (SIGKILL mysqld)", affected, crash_replica(device), goal=REPLICA_GOAL,
             mode=mode)
    restarts = sh(device.cloud, f"systemctl show -p NRestarts --value mariadb@{device.instance}").stdout.strip()
    assert int(restarts or 0) >= 1, "the replica came back, but not through systemd's Restart="


# --------------------------------------------------------------------------------------------
# 3. Device restart
# --------------------------------------------------------------------------------------------

def test_device_mysqld_restart(lab):
    """Restart the device's own mysqld while its application writes (writes fail for a moment)."""
    device = lab.devices[0]

    def inject():
        sh(device.name, "systemctl restart mariadb")
        return time.time()

    exercise(lab, "device mysqld restart", [device], inject)


@pytest.mark.slow
def test_device_reboot(lab):
    """Reboot the whole device container (podman restart): mysqld, tunnel and the application
    come back at boot by themselves."""
    device = lab.devices[-1]

    def inject():
        podman("restart", device.name)
        return time.time()

    exercise(lab, "device reboot (podman restart)", [device], inject)


# --------------------------------------------------------------------------------------------
# 4. Cloud restart
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cloud_restart(lab):
    """Restart the cloud container: every replica instance and the tunnel sshd go down at once."""
    cloud = lab.clouds[0]
    affected = [d for d in lab.devices if d.cloud == cloud]

    def inject():
        podman("restart", cloud)
        return time.time()

    exercise(lab, "cloud restart (podman restart)", affected, inject)
    for device in affected:
        assert sql(device.cloud, "SELECT @@read_only", socket=device.socket)[0][0] == "1"


# --------------------------------------------------------------------------------------------
# 5. Offline for longer than the binlog retention
# --------------------------------------------------------------------------------------------

def test_offline_past_binlog_retention_needs_reseed(lab):
    """While the device's tunnel is down its binlogs are purged (retention shrunk to "now"). When
    it comes back the replica must report it needs a re-seed (replication_info health=error with
    a re-seed diagnosis), never skip the gap. The cloud host's automatic repair (opted in for this
    device: edgefleet-monitor repair, what edgefleet-repair.timer runs) then re-seeds it with the
    writers still running; afterwards nothing is lost or duplicated. (playbooks/resync.yml, the
    operator's way, is exercised by tests/live/test_consistency_lab.py and by restore_lab.)"""
    device = lab.devices[-1]
    run = harness.new_run("binlog purged")
    result = {"fault": "offline past binlog retention (purged)", "mode": device.mode, "goal": None,
              "run": run, "affected": [device.name]}
    harness.start_writers(lab.devices, run)
    tunnel_stopped = opted_in = False
    config = ""
    try:
        warm = harness.wait_rows(lab.devices, run, since=time.time(), timeout=90)
        assert all(warm.values()), f"not replicating before the fault: {warm}"
        t_fault = time.time()
        sh(device.name, "systemctl stop edgefleet-tunnel")
        tunnel_stopped = True
        harness.wait_for(lambda: harness.slave_status(device.cloud, device.socket)[device.channel]
                         ["Slave_IO_Running"] != "Yes", 60, what="the replica to notice the device is gone")
        time.sleep(5)  # the device keeps writing while offline
        before = sql(device.name, "SHOW BINARY LOGS")
        sql(device.name, "FLUSH BINARY LOGS")

        def purged():
            # A dump thread of the vanished replica can linger until the device's net timeout and
            # keeps its log "in use" (PURGE then skips it): end it, as that timeout would.
            for (thread,) in sql(device.name, "SELECT ID FROM information_schema.PROCESSLIST "
                                              "WHERE COMMAND LIKE 'Binlog Dump%'"):
                sql(device.name, f"KILL {int(thread)}", check=False)  # may have ended by itself
            newest = sql(device.name, "SHOW BINARY LOGS")[-1][0]
            sql(device.name, f"PURGE BINARY LOGS TO '{newest}'")
            logs = sql(device.name, "SHOW BINARY LOGS")
            return logs if len(logs) == 1 and logs[0][0] not in [row[0] for row in before] else None
        after = harness.wait_for(purged, 60, interval=2, what="the device's old binlogs to be purged")
        assert after, before
        time.sleep(3)
        sh(device.name, "systemctl start edgefleet-tunnel")
        tunnel_stopped = False
        t_back = time.time()

        def reported():
            info = harness.channel_info(device)
            return info if info["health"] == "error" else None
        info = harness.wait_for(reported, 120, interval=3, what="replication_info to report the purged binlogs")
        result["detected_s"] = round(time.time() - t_back, 1)
        result["diagnosis"] = info["diagnosis"]
        assert "re-seed" in info["diagnosis"] and "1236" in info["diagnosis"], info
        # Not silently skipped: the replica holds no row written after the gap.
        on_replica = sorted(int(r[0]) for r in sql(device.cloud, f"SELECT seq FROM `{device.schema}`.fault_writes "
                                                   f"WHERE run = '{run}'", socket=device.socket))
        assert on_replica == list(range(1, len(on_replica) + 1)), "the replica skipped rows"
        assert not harness.channel_running(device)

        config = sh(device.cloud, f"cat {MONITORING_CONFIG}").stdout
        opted_in = True
        sh(device.cloud, "python3 -c " + shlex.quote(
            f"import json; p = '{MONITORING_CONFIG}'; c = json.load(open(p)); "
            f"[d.update(auto_repair=d['id'] == '{device.name}') for d in c['devices']]; json.dump(c, open(p, 'w'))"))
        t_seed = time.time()
        proc = sh(device.cloud, "edgefleet-monitor repair", check=False)
        result["reseed_s"] = round(time.time() - t_seed, 1)
        assert proc.returncode == 0 and f"{device.name}: repaired" in proc.stdout, proc.stdout + proc.stderr
        seen = harness.wait_rows([device], run, since=time.time(), timeout=120)
        assert seen[device.name], "not replicating after the re-seed"
        result["recover_s"] = seen[device.name] - t_back
        time.sleep(3)
    finally:
        if tunnel_stopped:
            sh(device.name, "systemctl start edgefleet-tunnel", check=False)
        if opted_in:  # the role's configuration back as it was, no repair record left
            sh(device.cloud, f"cat > {MONITORING_CONFIG}; rm -f /var/lib/edgefleet/repair/*.json",
               stdin=config, check=False)
        harness.stop_writers(lab.devices, run)
    result["writes_during"] = harness.writes_between(device, run, t_fault, t_back)[0]
    comparisons = []
    for each in lab.devices:
        harness.catch_up(each)
        comparisons.append(harness.compare(each, run))
    result["devices"] = comparisons
    result["lost"] = sum(c["lost"] + len(c["lost_on_device"]) for c in comparisons)
    result["duplicates"] = sum(c["duplicates"] + c["extra_on_replica"] for c in comparisons)
    result["ok"] = result["lost"] == 0 and result["duplicates"] == 0 and not any(c["checksum_mismatch"] for c in comparisons)
    harness.record(result)
    print(f"\npurged binlogs: reported in {result['detected_s']}s ({result['diagnosis'][:120]}...); "
          f"re-seeded by the automatic repair in {result['reseed_s']}s; lost {result['lost']}, duplicates {result['duplicates']}")
    assert result["ok"], comparisons
