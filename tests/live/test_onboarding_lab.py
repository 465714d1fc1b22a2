# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Onboarding a device that already holds data (the replication role seeds it) on the podman lab.

Holds the shared lab lock for the whole module: grows the lab from 2 devices + 1 cloud host to
3 + 1 (device03 in channel mode, next to the devices the registry already puts there) without
converging, writes rows into `app` on device03 while its MariaDB still has the Debian defaults
(binlog off: that history is in no binlog), runs site.yml, then writes, updates and deletes rows
(old ones too) and checks that the replica holds every row with CHECKSUM TABLE equal to the
device's for every table; a second site.yml changes nothing.

Finally it scales back to 2 + 1, removes device03's leftovers on cloud01 (its schema on the shared
instance and its GTID domain in gtid_slave_pos, or its instance datadir) and checks that site.yml
is a no-op again (the lab as the other engineers left it).

    python -m pytest -m lab tests/live/test_onboarding_lab.py -s
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.runner import lab

pytestmark = pytest.mark.lab

DEVICE = "device03"
TABLES = ("orders", "items", "notes")
BEFORE = [
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
# Writes to rows that exist only in the seed: without it the replica's SQL thread stops on them.
AFTER = [
    "INSERT INTO app.orders (kiosk, amount, created) SELECT CONCAT('k', seq % 37), seq, NOW() FROM mysql.seq_1_to_200",
    "UPDATE app.items SET stock = stock - 1 WHERE sku IN ('sku1', 'sku250', 'sku500')",
    "DELETE FROM app.notes WHERE id <= 10",
    "INSERT INTO app.notes VALUES (1001, 'after onboarding')",
]


def changed_tasks(stdout):
    """["TASK name: changed line", ...] of a playbook run, to say what was not idempotent."""
    out, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]")[0]
        elif line.startswith("changed:"):
            out.append("%s: %s" % (task, line))
    return out


def assert_no_op(stdout, what, baseline=()):
    """No change, apart from changes the lab already showed before the test (baseline: another
    suite may have left a channel broken; then that channel's item changes on every run)."""
    extra = [t for t in changed_tasks(stdout) if t not in baseline]
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


@pytest.fixture(scope="module")
def onboarded():
    with lab.lab_lock():
        channel_devices = lab.channel_mode_devices()
        record = None
        baseline = changed_tasks(lab.run(["ansible-playbook", "site.yml"]).stdout)
        if baseline:
            print("\nthe lab is not converged before the test (ignored in the no-op checks): %s" % baseline)
        try:
            lab.grow(3, 1, channel_devices + [DEVICE])
            lab.inventory_cache(refresh=True)
            (log_bin,), = lab.sql(DEVICE, "SELECT @@log_bin")
            assert log_bin == "0", "the fresh lab device should have no binlog yet"
            for statement in BEFORE:
                lab.sql(DEVICE, statement)
            started = time.monotonic()
            started_wall = time.time()
            res = lab.run(["ansible-playbook", "site.yml"],
                          env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                               "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"})
            wall = time.monotonic() - started
            record = lab.allocations()["allocations"][DEVICE]
            seconds, names = seed_seconds(res.stdout)
            print("\nonboarding %s (%s mode, %s): site.yml %.0f s, seed tasks %.1f s %s"
                  % (DEVICE, record["replica_mode"], record["replica_instance"], wall, seconds, names))
            yield {"site": res.stdout, "record": record, "seed_seconds": seconds, "baseline": baseline,
                   "site_started": started_wall, "site_ended": started_wall + wall}
        finally:
            restore_two_plus_one(channel_devices, record, baseline)


def restore_two_plus_one(channel_devices, record, baseline):
    """Scale back to 2 + 1 (prunes device03's channel), remove its leftovers on cloud01, converge."""
    lab.scale(2, 1, channel_devices)
    lab.inventory_cache(refresh=True)
    if record is None:
        record = {"replica_mode": "instance", "replica_instance": DEVICE, "schema_prefix": "",
                  "gtid_domain_id": None}
    lab.remove_replica_leftovers("cloud01", DEVICE, record)
    again = lab.run(["ansible-playbook", "site.yml"])
    assert_no_op(again.stdout, "site.yml is not a no-op after restoring the lab", baseline)


def replica_schema(record):
    return "%sapp" % (record["schema_prefix"] if record["replica_mode"] == "channel" else "")


def test_device_with_data_is_seeded_and_replicates(onboarded):
    record, site = onboarded["record"], onboarded["site"]
    assert "Seeding %s" % DEVICE in site, "the onboarding run did not seed %s" % DEVICE
    assert "Seeding device01" not in site and "Seeding device02" not in site
    for statement in AFTER:
        lab.sql(DEVICE, statement)
    (pos,), = lab.sql(DEVICE, "SELECT @@gtid_binlog_pos")
    sock = lab.replica_socket(record["replica_instance"])
    (waited,), = lab.sql("cloud01", "SELECT MASTER_GTID_WAIT('%s', 120)" % pos, sock)
    assert waited == "0", "the replica did not reach %s: %s" % (pos, lab.sql("cloud01", "SHOW ALL SLAVES STATUS", sock))
    schema = replica_schema(record)
    for table in TABLES:
        (count,), = lab.sql(DEVICE, "SELECT COUNT(*) FROM app.%s" % table)
        (dummy, checksum), = lab.sql(DEVICE, "CHECKSUM TABLE app.%s" % table)
        (r_count,), = lab.sql("cloud01", "SELECT COUNT(*) FROM `%s`.%s" % (schema, table), sock)
        (dummy, r_checksum), = lab.sql("cloud01", "CHECKSUM TABLE `%s`.%s" % (schema, table), sock)
        assert (r_count, r_checksum) == (count, checksum), "%s differs on the replica" % table
    (orders,), = lab.sql("cloud01", "SELECT COUNT(*) FROM `%s`.orders" % schema, sock)
    assert orders == "20200"


def test_second_site_run_changes_nothing(onboarded):
    res = lab.run(["ansible-playbook", "site.yml"])
    assert "Seeding" not in res.stdout
    assert_no_op(res.stdout, "the second site.yml changed something", onboarded["baseline"])
    record = onboarded["record"]
    status = lab.sql("cloud01", "SHOW SLAVE '%s' STATUS" % record["channel_name"],
                     lab.replica_socket(record["replica_instance"]))
    # Slave_IO_Running, Slave_SQL_Running
    assert status and status[0][10:12] == ["Yes", "Yes"], "%s's channel is not running: %s" % (DEVICE, status)


def test_first_verified_backup_soon_after_seeding(onboarded):
    """The backup role starts edgefleet-backup-first when the device list changes: the new device
    is backed up and verified within minutes, not at the next nightly run."""
    status_file = "/var/lib/edgefleet/backup/status/%s.json" % DEVICE

    def verified():
        text = lab.shell("cloud01", "cat %s 2>/dev/null || true" % status_file)
        status = json.loads(text) if text.strip() else {}
        return status if status.get("last_verify_ok") is not None else None
    status = lab.wait_for(verified, timeout=420, interval=3, what="the first verified backup of %s" % DEVICE)
    assert status["last_verify_ok"] is True and status["last_success_ts"], status
    print("\nfirst verified backup of %s: %.0f s after site.yml started (seeding is part of that run, "
          "site.yml took %.0f s), %.0f s after it ended"
          % (DEVICE, status["last_verify_ts"] - onboarded["site_started"],
             onboarded["site_ended"] - onboarded["site_started"],
             status["last_verify_ts"] - onboarded["site_ended"]))
