# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault-suite harness: lab access, the device writers, catch-up, comparison and results.

Everything runs against the podman lab through `podman exec` (it still works while a device's
link is cut) while the suite holds the lab lock (tests/faults/conftest.py).
"""
import contextlib
import dataclasses
import json
import os
import re
import shlex
import subprocess
import time

from tests.support.lab import ENV, ROOT, devices, hostvars

HERE = os.path.dirname(os.path.abspath(__file__))
LOCK_PATH = "/tmp/edgefleet-lab.lock"
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
RESULTS_PATH = os.path.join(RESULTS_DIR, "faults.json")  # faults-changestream.json with the stream on (conftest)
PODMAN_ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "lab", ".state", "containers.conf"))

REMOTE_DIR = "/usr/local/lib/edgefleet-faults"
LOG_DIR = "/var/lib/edgefleet-faults"
WRITER_UNIT = "edgefleet-fault-writer@.service"
WRITER_RATE = float(os.environ.get("FAULTS_WRITER_RATE", "10"))
TABLE_DDL = (
    "CREATE DATABASE IF NOT EXISTS app; USE app; "
    "CREATE TABLE IF NOT EXISTS fault_writes ("
    " id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,"
    " run VARCHAR(64) NOT NULL,"
    " seq BIGINT NOT NULL,"
    " updates INT NOT NULL DEFAULT 0,"
    " payload CHAR(40) NOT NULL,"
    " written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
    " KEY run_seq (run, seq)) ENGINE=InnoDB")


class LabError(AssertionError):
    pass


# --------------------------------------------------------------------------------------------
# podman / shell / SQL
# --------------------------------------------------------------------------------------------

def podman(*args, check=True, timeout=300, stdin=None):
    proc = subprocess.run(["podman", *args], env=PODMAN_ENV, capture_output=True, text=True,
                          timeout=timeout, input=stdin, check=False)
    if check and proc.returncode:
        raise LabError(f"podman {' '.join(args[:3])}... failed ({proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def sh(container, script, check=True, timeout=300, stdin=None):
    args = ["exec"] + (["-i"] if stdin is not None else []) + [container, "bash", "-c", script]
    return podman(*args, check=check, timeout=timeout, stdin=stdin)


def sql(container, query, socket="/run/mysqld/mysqld.sock", check=True, timeout=120):
    """Rows (lists of strings) of a query run as root over a unix socket in a container."""
    proc = sh(container, f"mariadb --socket={shlex.quote(socket)} -N -B -e {shlex.quote(query)}",
              check=check, timeout=timeout)
    return [line.split("\t") for line in proc.stdout.splitlines()]


def container_running(name):
    proc = podman("inspect", "-f", "{{.State.Running}}", name, check=False)
    return proc.stdout.strip() == "true"


def wait_for(predicate, timeout, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (LabError, subprocess.SubprocessError) as exc:
            last_error = exc
        time.sleep(interval)
    raise LabError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else ""))


# --------------------------------------------------------------------------------------------
# The lab fleet
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    cloud: str
    mode: str
    instance: str
    channel: str
    schema: str          # the device's `app` schema on its replica
    tunnel_mysql_port: int
    tunnel_ssh_port: int

    @property
    def socket(self):
        return f"/run/mysqld/edgefleet-{self.instance}.sock"

    @classmethod
    def load(cls, name):
        hv = hostvars(name)
        mode = hv["edgefleet_replica_mode"]
        return cls(name=name, cloud=hv["edgefleet_cloud_host"], mode=mode,
                   instance=hv["edgefleet_replica_instance"], channel=hv["edgefleet_channel_name"],
                   schema=(hv["edgefleet_schema_prefix"] + "app") if mode == "channel" else "app",
                   tunnel_mysql_port=int(hv["edgefleet_tunnel_mysql_port"]),
                   tunnel_ssh_port=int(hv["edgefleet_tunnel_ssh_port"]))


def fleet():
    return [Device.load(name) for name in devices()]


def slave_status(cloud, socket):
    """SHOW ALL SLAVES STATUS of one replica instance: {connection name: {field: value}}."""
    out = sh(cloud, f"mariadb --socket={shlex.quote(socket)} -E -e 'SHOW ALL SLAVES STATUS'",
             check=False, timeout=60)
    if out.returncode:
        raise LabError(f"replica {socket} on {cloud} does not answer: {out.stderr.strip()}")
    rows, current = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("*****"):
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep and current is not None:
            current[key.strip()] = value.strip()
            if key.strip() == "Connection_name":
                rows[value.strip()] = current
    return rows


def channel_running(device):
    status = slave_status(device.cloud, device.socket).get(device.channel)
    return bool(status) and status["Slave_IO_Running"] == "Yes" and status["Slave_SQL_Running"] == "Yes"


def tunnel_active(device):
    return sh(device.name, "systemctl is-active edgefleet-tunnel", check=False).stdout.strip() == "active"


# --------------------------------------------------------------------------------------------
# Writers (the application of each device)
# --------------------------------------------------------------------------------------------

def unit_text(rate):
    return (
        "[Unit]\nDescription=edgefleet fault-suite writer %i\nAfter=mariadb.service\n\n"
        "[Service]\n"
        f"Environment=WRITER_RATE={rate}\n"
        f"ExecStart=/usr/bin/python3 {REMOTE_DIR}/writer.py %i\n"
        "Restart=always\nRestartSec=1\n\n[Install]\nWantedBy=multi-user.target\n")


def install_tools(lab_devices, clouds_):
    with open(os.path.join(HERE, "writer.py"), encoding="utf-8") as handle:
        writer = handle.read()
    with open(os.path.join(HERE, "probe.py"), encoding="utf-8") as handle:
        probe = handle.read()
    for device in lab_devices:
        sh(device.name, f"install -d -m 0755 {REMOTE_DIR} {LOG_DIR} && cat > {REMOTE_DIR}/writer.py",
           stdin=writer)
        sh(device.name, f"cat > /etc/systemd/system/{WRITER_UNIT} && systemctl daemon-reload",
           stdin=unit_text(WRITER_RATE))
        sql(device.name, TABLE_DDL)
    for cloud in clouds_:
        sh(cloud, f"install -d -m 0755 {REMOTE_DIR} && cat > {REMOTE_DIR}/probe.py", stdin=probe)


def remove_tools(lab_devices, clouds_, drop_table=True):
    for device in lab_devices:
        if not container_running(device.name):
            continue
        sh(device.name, "systemctl disable --now 'edgefleet-fault-writer@*.service' >/dev/null 2>&1; "
           f"rm -f /etc/systemd/system/{WRITER_UNIT}; rm -rf {REMOTE_DIR} {LOG_DIR}; "
           "systemctl daemon-reload; systemctl reset-failed 'edgefleet-fault-writer@*' 2>/dev/null; true",
           check=False)
        if drop_table:
            sql(device.name, "USE app; DROP TABLE IF EXISTS fault_writes", check=False)
    for cloud in clouds_:
        if container_running(cloud):
            sh(cloud, f"rm -rf {REMOTE_DIR}", check=False)


def start_writers(lab_devices, run):
    for device in lab_devices:
        sh(device.name, f"systemctl enable --now --quiet edgefleet-fault-writer@{run}.service")


def stop_writers(lab_devices, run):
    for device in lab_devices:
        if container_running(device.name):
            sh(device.name, f"systemctl disable --now --quiet edgefleet-fault-writer@{run}.service",
               check=False)


def writer_log(device, run):
    """(acked [(seq, epoch)], updates [(seq, epoch)], failures [(epoch, message)])."""
    out = sh(device.name, f"cat {LOG_DIR}/{run}.log 2>/dev/null || true").stdout
    acked, updates, failures = [], [], []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "I":
            acked.append((int(parts[1]), float(parts[2])))
        elif parts[0] == "U":
            updates.append((int(parts[1]), float(parts[2])))
        elif parts[0] == "F":
            failures.append((float(parts[1]), parts[2] if len(parts) > 2 else ""))
    return acked, updates, failures


def new_run(fault):
    return re.sub(r"[^a-z0-9_]", "_", fault.lower())[:40] + time.strftime("_%H%M%S")


# --------------------------------------------------------------------------------------------
# Replication: end-to-end probe, catch-up, comparison
# --------------------------------------------------------------------------------------------

def wait_rows(lab_devices, run, since, timeout):
    """Epoch at which each device's replica first held a row of `run` written at/after `since`
    (None: not within timeout). The probe runs on the cloud host itself (0.2 s resolution)."""
    by_cloud = {}
    for device in lab_devices:
        by_cloud.setdefault(device.cloud, []).append(device)
    seen = {}
    for cloud, members in by_cloud.items():
        wait_for(lambda c=cloud: container_running(c) and sh(c, "true", check=False).returncode == 0,
                 timeout, what=f"{cloud} to run")
        targets = [f"{d.socket}:{d.schema}:{run}" for d in members]
        argv = [f"{REMOTE_DIR}/probe.py", "%.6f" % since, str(timeout), *targets]
        out = sh(cloud, "python3 " + " ".join(shlex.quote(a) for a in argv), timeout=timeout + 60)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        for device, target in zip(members, targets):
            seen[device.name] = got[target]
    return seen


def gtid_binlog_pos(device):
    return sql(device.name, "SELECT @@gtid_binlog_pos")[0][0]


def catch_up(device, timeout=180):
    """Wait until the replica applied everything the device has binlogged; seconds taken."""
    pos = gtid_binlog_pos(device)
    started = time.monotonic()
    got = sql(device.cloud, f"SELECT MASTER_GTID_WAIT('{pos}', {int(timeout)})", socket=device.socket,
              timeout=timeout + 60)[0][0]
    if got != "0":
        status = slave_status(device.cloud, device.socket).get(device.channel, {})
        raise LabError(f"{device.name}: replica did not reach {pos} within {timeout}s: "
                       f"IO={status.get('Slave_IO_Running')} SQL={status.get('Slave_SQL_Running')} "
                       f"io_error={status.get('Last_IO_Error')!r} sql_error={status.get('Last_SQL_Error')!r}")
    return time.monotonic() - started


def _seq_counts(container, socket, schema, run):
    rows = sql(container, f"SELECT seq, COUNT(*) FROM `{schema}`.fault_writes WHERE run = '{run}' GROUP BY seq",
               socket=socket)
    return {int(seq): int(count) for seq, count in rows}


def _checksums(container, socket, schema, tables):
    if not tables:
        return {}
    rows = sql(container, "CHECKSUM TABLE " + ", ".join(f"`{schema}`.`{t}`" for t in tables) + " EXTENDED",
               socket=socket)
    return {name.split(".", 1)[1]: value for name, value in rows}


def compare(device, run):
    """Rows of `run` and every table's checksum: device vs its replica (writers stopped, caught up)."""
    acked, updates, failures = writer_log(device, run)
    on_device = _seq_counts(device.name, "/run/mysqld/mysqld.sock", "app", run)
    on_replica = _seq_counts(device.cloud, device.socket, device.schema, run)
    acked_seqs = {seq for seq, _time in acked}
    tables = [row[0] for row in sql(device.name, "SELECT table_name FROM information_schema.tables "
                                    "WHERE table_schema = 'app' AND table_type = 'BASE TABLE' ORDER BY 1")]
    device_sums = _checksums(device.name, "/run/mysqld/mysqld.sock", "app", tables)
    replica_sums = _checksums(device.cloud, device.socket, device.schema, tables)
    expected = acked_seqs | set(on_device)
    return {
        "device": device.name,
        "acked": len(acked_seqs),
        "updates_acked": len(updates),
        "failed_attempts": len(failures),
        "device_rows": sum(on_device.values()),
        "replica_rows": sum(on_replica.values()),
        "lost_on_device": sorted(acked_seqs - set(on_device))[:20],
        "lost": len(expected - set(on_replica)),
        "lost_sample": sorted(expected - set(on_replica))[:20],
        "extra_on_replica": len(set(on_replica) - expected),
        "duplicates": sum(n - 1 for n in on_replica.values() if n > 1)
        + sum(n - 1 for n in on_device.values() if n > 1),
        "tables": len(tables),
        "checksum_mismatch": sorted(t for t in tables if device_sums.get(t) != replica_sums.get(t)),
    }


def writes_between(device, run, start, end):
    acked, _updates, failures = writer_log(device, run)
    return (sum(1 for _seq, t in acked if start <= t <= end),
            sum(1 for t, _error in failures if start <= t <= end))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

RESULTS = []


def record(result):
    RESULTS.append(result)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(RESULTS_PATH, "w", encoding="utf-8") as handle:
        json.dump(RESULTS, handle, indent=1)


def table(results):
    head = ("fault", "mode", "writes during fault", "rows lost", "duplicates", "seconds to recover", "goal", "ok")
    rows = [head]
    for r in results:
        rec = r.get("recover_s")
        rows.append((r["fault"], r.get("mode", ""), str(r.get("writes_during", "")), str(r.get("lost", "")),
                     str(r.get("duplicates", "")), "-" if rec is None else f"{rec:.1f}",
                     f"< {r['goal']}" if r.get("goal") else "", "yes" if r.get("ok") else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Putting the lab back
# --------------------------------------------------------------------------------------------

def restore_lab(lab_devices, clouds_, log=print):
    """Undo whatever a fault may have left behind; returns a list of what had to be repaired."""
    repaired = []
    for name in list(clouds_) + [d.name for d in lab_devices]:
        if not container_running(name):
            podman("start", name)
            repaired.append(f"started container {name}")
    for name in list(clouds_) + [d.name for d in lab_devices]:
        wait_for(lambda n=name: sh(n, "systemctl is-system-running --wait", check=False).stdout.strip()
                 in ("running", "degraded"), 180, what=f"{name} to boot")
    for device in lab_devices:
        out = sh(device.name,
                 "ip -br link show eth0 | grep -qw DOWN && { ip link set eth0 up; echo link-up; }; "
                 "systemctl stop 'edgefleet-fault-linkup*' 2>/dev/null; "
                 "for u in mariadb edgefleet-tunnel; do systemctl is-active --quiet $u || "
                 "{ systemctl start $u; echo started-$u; }; done; true", check=False)
        repaired += [f"{device.name}: {w}" for w in out.stdout.split()]
    for cloud in clouds_:
        out = sh(cloud, "for u in ssh $(systemctl list-units --plain --no-legend --all 'mariadb@*.service' "
                 "| awk '{print $1}'); do systemctl is-enabled --quiet $u 2>/dev/null || [ $u = ssh ] || continue; "
                 "systemctl is-active --quiet $u || { systemctl start $u; echo started-$u; }; done; true",
                 check=False)
        repaired += [f"{cloud}: {w}" for w in out.stdout.split()]
    for device in lab_devices:
        status = slave_status(device.cloud, device.socket).get(device.channel, {})
        stopped = "No" in (status.get("Slave_IO_Running"), status.get("Slave_SQL_Running"))
        if status and stopped and status.get("Last_SQL_Errno", "0") == "0" and status.get("Last_IO_Errno", "0") == "0":
            sql(device.cloud, f"START SLAVE '{device.channel}'", socket=device.socket, check=False)
            repaired.append(f"{device.name}: started channel")
        elif status and status.get("Last_IO_Errno") == "1236":
            reseed(device, log=log)
            repaired.append(f"{device.name}: re-seeded (binlogs purged)")
    if repaired:
        log("restore_lab: " + "; ".join(repaired))
    return repaired


def lab_healthy(lab_devices):
    problems = []
    for device in lab_devices:
        try:
            if not tunnel_active(device):
                problems.append(f"{device.name}: tunnel not active")
            if not channel_running(device):
                status = slave_status(device.cloud, device.socket).get(device.channel, {})
                problems.append(f"{device.name}: channel {device.channel} on {device.cloud} not running "
                                f"(IO={status.get('Slave_IO_Running')} SQL={status.get('Slave_SQL_Running')} "
                                f"{status.get('Last_IO_Error', '')} {status.get('Last_SQL_Error', '')})")
        except LabError as exc:
            problems.append(str(exc))
    return problems


def wait_healthy(lab_devices, timeout=120, interval=3):
    """Problems still left after waiting up to ``timeout`` seconds for lab_healthy() to pass."""
    deadline = time.monotonic() + timeout
    problems = lab_healthy(lab_devices)
    while problems and time.monotonic() < deadline:
        time.sleep(interval)
        problems = lab_healthy(lab_devices)
    return problems


def run_playbook(*args, timeout=1800):
    binary = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
    proc = subprocess.run([binary if os.access(binary, os.X_OK) else "ansible-playbook", *args], env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc


@contextlib.contextmanager
def timer():
    box = {}
    start = time.monotonic()
    try:
        yield box
    finally:
        box["seconds"] = time.monotonic() - start


# --------------------------------------------------------------------------------------------
# The lab lock: one per process, shared by tests/faults, tests/badinput and tests/security
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def lab_lock(log=print):
    """The shared lab lock (tests/runner/lab.py owns it: re-entrant, and aware of a lock held by a
    parent such as `flock ... pytest`)."""
    from tests.runner import lab as runner_lab  # pylint: disable=import-outside-toplevel
    log(f"taking the lab lock {LOCK_PATH}")
    with runner_lab.lab_lock():
        yield


def ansible_module(host, module, args, check=True, timeout=300):
    """Run one module through `ansible` (the real entry point) against a lab host; its result."""
    binary = os.path.join(ROOT, ".venv", "bin", "ansible")
    from tests.support.lab import INVENTORY  # pylint: disable=import-outside-toplevel
    proc = subprocess.run([binary if os.access(binary, os.X_OK) else "ansible", "-i", INVENTORY, host,
                           "-m", module, "-a", json.dumps(args), "-o"],
                          env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if " => " in ln or " | " in ln), "")
    if " => " not in line:
        raise LabError(f"ansible {module} on {host}: no result ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    result, _end = json.JSONDecoder().raw_decode(line.split(" => ", 1)[1])
    if check and (proc.returncode or result.get("failed")):
        raise LabError(f"ansible {module} on {host} failed: {result.get('msg')}")
    return result


def channel_info(device):
    """replication_info for the device's channel (health, diagnosis, errors)."""
    result = ansible_module(device.cloud, "edgefleet.mysql_backup.replication_info",
                            {"login_unix_socket": device.socket, "login_user": "root",
                             "channels": [device.channel]})
    return result["channels"][0]


def manual_reseed(device, log=print):
    """Last-resort re-seed used only to put the lab back (the product's way is
    playbooks/resync.yml): dump the device, replace its schema on the replica, set its GTID
    domains in gtid_slave_pos (merged with the other channels'), start the channels."""
    dump = sh(device.name, "mariadb-dump --single-transaction --gtid --master-data=2 --triggers "
                           "--skip-add-locks --databases app", timeout=600).stdout
    match = re.search(r"^-- SET GLOBAL gtid_slave_pos='([^']*)';$", dump, re.M)
    if not match or not dump.rstrip().splitlines()[-1].startswith("-- Dump completed"):
        raise LabError(f"{device.name}: incomplete dump for the re-seed")
    if device.schema != "app":
        dump = re.sub(r"^(CREATE DATABASE /\*!32312 IF NOT EXISTS\*/ )`app`", rf"\1`{device.schema}`", dump, flags=re.M)
        dump = re.sub(r"^USE `app`;$", f"USE `{device.schema}`;", dump, flags=re.M)
    seed = dict(part.split("-", 1) for part in match.group(1).split(",") if part)
    current = sql(device.cloud, "SELECT @@gtid_slave_pos", socket=device.socket)[0][0]
    merged = dict(part.split("-", 1) for part in current.split(",") if part)
    merged.update(seed)
    position = ",".join(f"{domain}-{rest}" for domain, rest in sorted(merged.items(), key=lambda kv: int(kv[0])))
    client = f"mariadb --socket={shlex.quote(device.socket)} --init-command='SET SESSION sql_log_bin=0'"
    sh(device.cloud, f"{client} -e 'STOP ALL SLAVES; DROP DATABASE IF EXISTS `{device.schema}`'")
    sh(device.cloud, client, stdin=dump, timeout=600)
    sh(device.cloud, f"{client} -e \"SET GLOBAL gtid_slave_pos='{position}'; START ALL SLAVES\"")
    log(f"manual re-seed of {device.name} at {match.group(1)}")


def reseed(device, log=print):
    """Re-seed through the product (playbooks/resync.yml), falling back to manual_reseed."""
    proc = run_playbook("playbooks/resync.yml", "-e", f"device_id={device.name}", "-e", "resync_verify=false")
    if proc.returncode == 0:
        log(f"re-seeded {device.name} with playbooks/resync.yml")
        return "resync.yml"
    log(f"playbooks/resync.yml failed for {device.name}; re-seeding by hand:\n{proc.stdout[-2000:]}")
    manual_reseed(device, log=log)
    return "manual"
