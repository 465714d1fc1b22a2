"""The grown lab that tests/live/test_onboarding_lab.py and tests/live/test_rebalance_lab.py share,
so that one pytest run grows, converges and puts back the lab once for both modules, instead of
each module growing the lab, converging it and scaling it back with two more site.yml runs (in
`make lab-test` that was about 350 s of set-up and teardown).

Set up by the first module of the run that uses it, holding the shared lab lock until the restore:

1. a site.yml on the 2 + 1 lab as it is: its changes are the baseline the onboarding's no-op
   checks ignore (another suite can leave a channel broken; that channel then changes on every
   run). That run is skipped when the last lab command of this pytest run was a site.yml that
   changed nothing on any host, with the lab lock held since (tests.runner.lab.proven_no_op(): in
   `make lab-test` the enrollment test's final check): the baseline is then empty, the strictest;
2. lab/up.yml to 3 devices + 1 cloud host (device03 in channel mode, next to the devices the
   registry already puts there) without converging; rows written into `app` on device03 while
   its MariaDB still has the Debian defaults (binlog off: that history is in no binlog);
   playbooks/allocate.yml places device03 on cloud01 (the only cloud host), so its seed is merged
   into the shared instance that carries device02's channel;
3. the allocations as they are (the rebalance test's "existing devices stay" check), lab/up.yml to
   5 devices + 2 cloud hosts (device04 and device05 in the allocation's default, instance mode),
   and one site.yml, timed with profile_tasks: it seeds device03 on cloud01, puts both new devices
   on the empty cloud02 (placement by capacity) and converges cloud02;
4. the rebalance test's writer program and `app.rb` (500 rows) on every device.

Restore (after the last module of this pytest run that uses the grown lab, or at the end of the
run when that module did not run): drain cloud02 with playbooks/rebalance.yml if it still carries
a device, scale back to 2 + 1 (site.yml prunes the temporary devices), remove their leftovers on
cloud01 (device03's schema on the shared instance and its GTID domain, the instance datadirs, the
moves' directories, their backups and backup status files), drop `app.rb` on device01/02, and check that site.yml is then a no-op on every
host (the lab as the other engineers left it).
"""
from __future__ import annotations

import contextlib
import re
import time

import pytest

from tests.runner import lab
from tests.runner.support import Job

ONBOARD = "device03"  # grown with data and no binlog: the onboarding test's device
TEMPORARY = ("device03", "device04", "device05")
# What device03 holds before site.yml first reaches it.
ONBOARD_DATA = [
    "CREATE DATABASE IF NOT EXISTS app",
    "CREATE TABLE app.orders (id INT AUTO_INCREMENT PRIMARY KEY, kiosk VARCHAR(16), amount DECIMAL(10,2), "
    "created DATETIME, KEY (kiosk))",
    "INSERT INTO app.orders (kiosk, amount, created) SELECT CONCAT('k', seq % 37), seq / 7, "
    "'2024-01-01' + INTERVAL seq MINUTE FROM mysql.seq_1_to_20000",
    "CREATE TABLE app.items (sku VARCHAR(16) PRIMARY KEY, name VARCHAR(64), stock INT)",
    "INSERT INTO app.items SELECT CONCAT('sku', seq), CONCAT('item ', seq), seq * 3 FROM mysql.seq_1_to_500",
    "CREATE TABLE app.notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB",
    "INSERT INTO app.notes SELECT seq, REPEAT(CONCAT('note ', seq, ' '), 20) FROM mysql.seq_1_to_300",
]
_WRITER_PROGRAM = r"""cat > /usr/local/bin/edgefleet-test-writer <<'EOF'
#!/bin/sh
# edgefleet-test-writer COUNT DELAY TAG: insert COUNT rows into app.{table}, one every DELAY seconds
rm -f /tmp/edgefleet-test-writer.done
i=1
while [ $i -le $1 ]; do
  mariadb app -e "INSERT INTO {table} (v) VALUES ('$3-$i')" || echo "insert $i failed" >&2
  i=$((i+1)); sleep $2
done
echo done > /tmp/edgefleet-test-writer.done
EOF
chmod 0755 /usr/local/bin/edgefleet-test-writer"""


def writer_program(table):
    """Shell that installs edgefleet-test-writer: COUNT rows into app.<table>, one every DELAY s
    (the rebalance and failover lab tests' writer)."""
    return _WRITER_PROGRAM.replace("{table}", table)


WRITER = writer_program("rb")

_STATE = {}


def assert_no_op(stdout, what, baseline=()):
    """No change, apart from changes the lab already showed before the test (baseline: another
    suite may have left a channel broken; then that channel's item changes on every run)."""
    extra = [t for t in lab.changed_tasks(stdout) if t not in baseline]
    assert not extra, "%s: %s" % (what, extra)


def seed_seconds(stdout):
    """Seconds of the seed tasks (profile_tasks summary) and their names."""
    total, names = 0.0, []
    for match in re.finditer(r"^edgefleet\.mysql_backup\.replication : (.+?) -+ (\d+\.\d+)s$", stdout, re.M):
        name = match.group(1).strip()
        if name.startswith(("Seed ", "Create the seed work directory", "Dump the device",
                            "Set the dump's GTID position")):
            total += float(match.group(2))
            names.append(name)
    return total, names


def rebalance(**extravars):
    """playbooks/rebalance.yml under ansible-runner (as AWX runs it); (stats, stdout)."""
    job = Job("playbooks/rebalance.yml", lab.INVENTORY, extravars=extravars).run()
    try:
        assert job.status == "successful" and job.rc == 0, job.describe()
        return job.stats(), job.stdout()
    finally:
        job.cleanup()


def _grow(state):
    state["channel_devices"] = lab.channel_mode_devices()
    if lab.proven_no_op():
        print("\nthe lab is converged (the last site.yml of this run changed nothing on any host): "
              "no baseline run, the baseline is empty")
        baseline = []
    else:
        baseline = lab.changed_tasks(lab.run(["ansible-playbook", "site.yml"]).stdout)
    if baseline:
        print("\nthe lab is not converged before the test (ignored in the onboarding's no-op checks): %s" % baseline)
    state["baseline"] = baseline
    state["grown"] = True
    # no backup of an earlier device03..05 (a run that did not finish its restore): the onboarding
    # test waits for device03's first backup of this run
    lab.shell("cloud01", _backup_leftovers())
    channel_devices = state["channel_devices"] + [ONBOARD]
    lab.grow(3, 1, channel_devices)
    lab.inventory_cache(refresh=True)
    (log_bin,), = lab.sql(ONBOARD, "SELECT @@log_bin")
    assert log_bin == "0", "the fresh lab device should have no binlog yet"
    for statement in ONBOARD_DATA:
        lab.sql(ONBOARD, statement)
    lab.run(["ansible-playbook", "playbooks/allocate.yml"])
    state["before"] = lab.allocations()["allocations"]
    assert state["before"][ONBOARD]["cloud_host"] == "cloud01", state["before"][ONBOARD]
    lab.grow(5, 2, channel_devices)
    lab.inventory_cache(refresh=True)
    started = time.monotonic()
    started_wall = time.time()
    res = lab.run(["ansible-playbook", "site.yml"],
                  env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                       "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"})
    wall = time.monotonic() - started
    record = lab.allocations()["allocations"][ONBOARD]
    seconds, names = seed_seconds(res.stdout)
    print("\nonboarding %s (%s mode, %s) in the site.yml that also converged device04, device05 and cloud02: "
          "site.yml %.0f s, seed tasks %.1f s %s"
          % (ONBOARD, record["replica_mode"], record["replica_instance"], wall, seconds, names))
    state["onboarded"] = {"site": res.stdout, "record": record, "seed_seconds": seconds, "baseline": baseline,
                          "site_started": started_wall, "site_ended": started_wall + wall}
    for device in ["device%02d" % i for i in range(1, 6)]:
        lab.shell(device, WRITER)
        lab.sql(device, "CREATE DATABASE IF NOT EXISTS app")
        lab.sql(device, "USE app; CREATE TABLE IF NOT EXISTS rb (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
        lab.sql(device, "INSERT INTO app.rb (v) SELECT CONCAT('base-', seq) FROM app.seq_1_to_500")


def _backup_leftovers():
    """rm of the temporary devices' backups and backup status files on cloud01 (the backup role
    leaves the files of devices that left the host)."""
    return "rm -rf " + " ".join("/var/lib/edgefleet/backup/logical/%s /var/lib/edgefleet/backup/status/%s.json" % (d, d)
                                for d in TEMPORARY)


def _restore(state):
    alloc = lab.allocations()["allocations"]
    if state.get("grown") and any(rec["cloud_host"] == "cloud02" for rec in alloc.values()):
        stats, _out = rebalance(drain_host="cloud02")
        print("\ncloud02 drained while restoring the lab: recap %s" % dict(stats.get("changed", {})))
        alloc = lab.allocations()["allocations"]
    records = {d: rec for d, rec in alloc.items() if d in TEMPORARY}
    lab.scale(2, 1, state.get("channel_devices"))
    lab.inventory_cache(refresh=True)
    for device, record in records.items():
        if record["cloud_host"] == "cloud01" and record["replica_mode"] == "channel":
            lab.remove_replica_leftovers("cloud01", device, record)
    lab.shell("cloud01", "rm -rf " + " ".join(
        ["/var/lib/edgefleet/replicas/%s /var/lib/edgefleet/replicas/.applied/%s.*" % (d, d) for d in TEMPORARY]
        + ["/var/lib/edgefleet/replicas/.moved", "/var/lib/edgefleet/moves"]) + "; " + _backup_leftovers())
    for device in ("device01", "device02"):
        lab.sql(device, "USE app; DROP TABLE IF EXISTS rb")
    again = lab.run(["ansible-playbook", "site.yml"])
    changed = lab.recap_changes(again.stdout)
    assert not changed, "site.yml is not a no-op after restoring the lab: %s %s" % (changed, lab.changed_tasks(again.stdout))


def _release():
    """Restore the lab (once) and let go of the lab lock."""
    state = _STATE.pop("state", None)
    stack = _STATE.pop("stack", None)
    if state is None:
        return
    try:
        _restore(state)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def grown_lab(request):
    """The shared grown lab (see the module docstring): set up by the first module of this run that
    uses it, restored after the last one. A dict: before (the allocations from before cloud02
    existed), channel_devices, baseline, onboarded (the onboarding site.yml's output, device03's
    record, seed seconds, start and end of that run)."""
    if "state" not in _STATE:
        stack = contextlib.ExitStack()
        stack.enter_context(lab.lab_lock())
        _STATE["stack"], _STATE["state"] = stack, {}
        # a safety net for when the last module that uses the lab does not run (-x, interrupted)
        request.config.add_cleanup(_release)
        try:
            _grow(_STATE["state"])
        except BaseException:
            _release()
            raise
    yield _STATE["state"]
    items = request.session.items
    mine = [i for i, item in enumerate(items) if item.module is request.module]
    later = items[max(mine) + 1:] if mine else []
    if not any("grown_lab" in item.fixturenames for item in later):
        _release()
