# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Onboarding a device that already holds data (the replication role seeds it) on the podman lab.

Runs on the grown lab it shares with tests/live/test_rebalance_lab.py (tests/runner/grown_lab.py,
holding the shared lab lock): the lab is grown from 2 devices + 1 cloud host to 3 + 1 (device03 in
channel mode, next to the devices the registry already puts there) without converging, rows are
written into `app` on device03 while its MariaDB still has the Debian defaults (binlog off: that
history is in no binlog) and device03 is allocated on cloud01; then the lab grows to 5 + 2 for the
rebalance test and one site.yml converges it. Here: that run seeded device03 (and no device already
replicating), then rows are written, updated and deleted (old ones too) and the replica must hold
every row with CHECKSUM TABLE equal to the device's for every table; a second site.yml changes
nothing; the device's first backup is verified soon after.

After the last module that uses the grown lab it is scaled back to 2 + 1, device03's leftovers on
cloud01 are removed (its schema on the shared instance and its GTID domain) and site.yml must be a
no-op again (the lab as the other engineers left it).

    python -m pytest -m lab tests/live/test_onboarding_lab.py -s
"""

from __future__ import annotations

import json

import pytest

from tests.runner import lab
from tests.runner.grown_lab import ONBOARD, assert_no_op, grown_lab  # noqa: F401  pylint: disable=unused-import

pytestmark = pytest.mark.lab

DEVICE = ONBOARD
TABLES = ("orders", "items", "notes")
# Writes to rows that exist only in the seed: without it the replica's SQL thread stops on them.
AFTER = [
    "INSERT INTO app.orders (kiosk, amount, created) SELECT CONCAT('k', seq % 37), seq, NOW() FROM mysql.seq_1_to_200",
    "UPDATE app.items SET stock = stock - 1 WHERE sku IN ('sku1', 'sku250', 'sku500')",
    "DELETE FROM app.notes WHERE id <= 10",
    "INSERT INTO app.notes VALUES (1001, 'after onboarding')",
]


@pytest.fixture(scope="module")
def onboarded(grown_lab):  # noqa: F811  pylint: disable=redefined-outer-name
    """The onboarding site.yml's output, device03's record, the baseline and the run's times."""
    return grown_lab["onboarded"]


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
    is backed up and verified within minutes, not at the next nightly run (a verify of this run:
    not one left by an earlier device03)."""
    status_file = "/var/lib/edgefleet/backup/status/%s.json" % DEVICE

    def verified():
        text = lab.shell("cloud01", "cat %s 2>/dev/null || true" % status_file)
        status = json.loads(text) if text.strip() else {}
        if (status.get("last_verify_ts") or 0) < onboarded["site_started"]:
            return None
        return status if status.get("last_verify_ok") is not None else None
    status = lab.wait_for(verified, timeout=420, interval=3, what="the first verified backup of %s" % DEVICE)
    assert status["last_verify_ok"] is True and status["last_success_ts"], status
    print("\nfirst verified backup of %s: %.0f s after site.yml started (seeding is part of that run, "
          "site.yml took %.0f s), %.0f s after it ended"
          % (DEVICE, status["last_verify_ts"] - onboarded["site_started"],
             onboarded["site_ended"] - onboarded["site_started"],
             status["last_verify_ts"] - onboarded["site_ended"]))
