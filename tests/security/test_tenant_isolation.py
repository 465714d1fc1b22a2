# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-tenant probe (issue 15.1): root on a device attacks its replica instance through its
own binlog.

Channel mode: the attacker's events may change only its own renamed schemas on the shared
instance. A neighbour schema (`<other>_app`, with rows, created on the shared instance without
binlogging) and the instance's accounts are compared before and after the attacker, as root on
its device, writes every kind of event it can send into the replication stream: qualified and
unqualified DML and DDL naming the neighbour's prefixed schema, DROP DATABASE, CREATE DATABASE,
multi-table row changes, statement-format changes, accounts and grants. The attacker's own
channel keeps running and its own rows still arrive (positive control: the probe reads the right
instance and replication works), and the neighbour is untouched.

Instance mode: the device cannot create accounts or grants on its own replica instance (the
cloud host's server), while its own schema still replicates.

Known limit, documented in docs/security.md: statement-format multi-table statements that name
the device's own table first, and triggers or stored functions firing in statement format, are
not confined by MariaDB's replication filters; MariaDB has no per-channel privilege check.
"""
import shlex
import time

import pytest

from tests.faults.harness import sh, sql
from tests.runner.lab import lab_lock
from tests.support.lab import devices, hostvars

pytestmark = pytest.mark.lab

NEIGHBOUR = "zzneighbour_app"      # another device's renamed schema on the shared instance
ATTACKER_USER = "edgefleet_evil"
RUN = "%x" % int(time.time())


def _by_mode(mode):
    names = [d for d in devices() if hostvars(d)["edgefleet_replica_mode"] == mode]
    if not names:
        pytest.fail(f"the lab has no {mode}-mode device (make lab-site gives device02 channel mode)")
    return names[0]


def _replica(device):
    hv = hostvars(device)
    return hv["edgefleet_cloud_host"], f"/run/mysqld/edgefleet-{hv['edgefleet_replica_instance']}.sock"


def _snapshot(cloud, socket):
    """What a hostile channel must not change: the neighbour's rows, accounts, schemas."""
    rows = sql(cloud, f"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', id, v))), 0) FROM {NEIGHBOUR}.t",
               socket=socket)
    accounts = sql(cloud, "SELECT CONCAT(user, '@', host, ' ', priv) FROM mysql.global_priv ORDER BY 1",
                   socket=socket)
    schemas = sql(cloud, "SHOW DATABASES", socket=socket)
    return {"neighbour": rows, "accounts": accounts, "schemas": sorted(r[0] for r in schemas)}


def _channel(cloud, socket, name):
    status = sh(cloud, f"mariadb --socket={socket} -e \"SHOW SLAVE '{name}' STATUS\\G\"").stdout
    fields = {}
    for line in status.splitlines():
        if ":" in line and not line.startswith("*"):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def _wait_row(cloud, socket, schema, marker, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(cloud, f"SELECT COUNT(*) FROM {schema}.isolation_probe WHERE marker = '{marker}'",
                   socket=socket, check=False)
        if rows and rows[0][0] == "1":
            return True
        time.sleep(0.5)
    return False


# Every statement runs on the device as root, binlogged (ROW unless it says otherwise).
HOSTILE = [
    # the neighbour's schema exists on the device too, so the statements succeed and are binlogged
    f"CREATE DATABASE IF NOT EXISTS {NEIGHBOUR}",
    f"CREATE TABLE IF NOT EXISTS {NEIGHBOUR}.t (id INT PRIMARY KEY, v INT)",
    # qualified DML, row format
    f"INSERT INTO {NEIGHBOUR}.t VALUES (1001, 1), (1002, 2)",
    f"UPDATE {NEIGHBOUR}.t SET v = v + 100",
    f"DELETE FROM {NEIGHBOUR}.t WHERE id = 1",
    # unqualified DML and DDL under the neighbour's default database
    f"USE {NEIGHBOUR}; INSERT INTO t VALUES (2001, 3); CREATE TABLE planted (x INT); "
    "ALTER TABLE t ADD COLUMN planted INT; ALTER TABLE t DROP COLUMN planted",
    # qualified DDL from the device's own default database
    f"USE app; CREATE TABLE {NEIGHBOUR}.planted2 (x INT); TRUNCATE TABLE {NEIGHBOUR}.t",
    # statement format, single table
    f"SET SESSION binlog_format = STATEMENT; UPDATE {NEIGHBOUR}.t SET v = -1",
    f"SET SESSION binlog_format = STATEMENT; USE {NEIGHBOUR}; DELETE FROM t",
    # multi-table change in row format (each table's rows are filtered on their own)
    f"USE app; UPDATE isolation_probe a JOIN {NEIGHBOUR}.t b SET a.n = a.n + 1, b.v = 777",
    # accounts, grants, the mysql schema
    f"CREATE USER IF NOT EXISTS {ATTACKER_USER}@'%' IDENTIFIED BY 'x'",
    f"GRANT ALL ON *.* TO {ATTACKER_USER}@'%' WITH GRANT OPTION",
    f"ALTER USER {ATTACKER_USER}@'%' IDENTIFIED BY 'y'",
    "CREATE TABLE IF NOT EXISTS mysql.edgefleet_planted (x INT)",
    # new schemas, and dropping the neighbour's
    "CREATE DATABASE IF NOT EXISTS edgefleet_planted_db",
    f"DROP DATABASE {NEIGHBOUR}",
]


def _device_sql(device, statements):
    for statement in statements:
        proc = sh(device, f"mariadb -e {shlex.quote(statement)}", check=False)
        assert proc.returncode == 0, f"{device}: {statement!r} failed on the device: {proc.stderr}"


def _cleanup_device(device):
    sh(device, "mariadb -e " + shlex.quote(
        f"SET sql_log_bin = 0; DROP DATABASE IF EXISTS {NEIGHBOUR}; DROP TABLE IF EXISTS app.isolation_probe; DROP DATABASE IF EXISTS edgefleet_planted_db; "
        f"DROP USER IF EXISTS {ATTACKER_USER}@'%'; DROP TABLE IF EXISTS mysql.edgefleet_planted"), check=False)


def test_channel_mode_device_changes_only_its_own_schemas():
    attacker = _by_mode("channel")
    cloud, socket = _replica(attacker)
    own = hostvars(attacker)["edgefleet_schema_prefix"] + "app"
    with lab_lock():
        sql(cloud, f"SET sql_log_bin = 0; CREATE DATABASE IF NOT EXISTS {NEIGHBOUR}; "
                   f"CREATE TABLE IF NOT EXISTS {NEIGHBOUR}.t (id INT PRIMARY KEY, v INT); "
                   f"REPLACE INTO {NEIGHBOUR}.t VALUES (1, 10), (2, 20), (3, 30)", socket=socket)
        try:
            _device_sql(attacker, ["CREATE DATABASE IF NOT EXISTS app",
                                   "USE app; CREATE TABLE IF NOT EXISTS isolation_probe "
                                   "(marker VARCHAR(40) PRIMARY KEY, n INT NOT NULL DEFAULT 0)",
                                   "INSERT INTO app.isolation_probe (marker) VALUES ('before-%s')" % RUN])
            assert _wait_row(cloud, socket, own, "before-" + RUN), \
                f"control: {attacker}'s own row did not reach {own} on {cloud}"
            before = _snapshot(cloud, socket)
            _device_sql(attacker, HOSTILE)
            _device_sql(attacker, ["INSERT INTO app.isolation_probe (marker) VALUES ('after-%s')" % RUN])
            # the own row written after every hostile event arrived: everything before it was applied
            assert _wait_row(cloud, socket, own, "after-" + RUN), \
                f"{attacker}'s channel stopped applying its own rows after the hostile events"
            after = _snapshot(cloud, socket)
            status = _channel(cloud, socket, hostvars(attacker)["edgefleet_channel_name"])
        finally:
            _cleanup_device(attacker)
            sql(cloud, f"SET sql_log_bin = 0; DROP DATABASE IF EXISTS {NEIGHBOUR}; "
                       f"DROP TABLE IF EXISTS {own}.isolation_probe", socket=socket, check=False)
    assert after["neighbour"] == before["neighbour"], "the neighbour's rows changed"
    assert after["accounts"] == before["accounts"], "accounts or grants changed on the shared instance"
    assert after["schemas"] == before["schemas"], f"schemas changed: {before['schemas']} -> {after['schemas']}"
    assert status.get("Slave_SQL_Running") == "Yes" and status.get("Last_SQL_Errno") == "0", status
    assert own.replace("_", "\\_") + ".%" in status.get("Replicate_Wild_Do_Table", ""), status


def test_instance_mode_device_cannot_create_accounts_on_its_replica():
    attacker = _by_mode("instance")
    cloud, socket = _replica(attacker)
    with lab_lock():
        try:
            _device_sql(attacker, ["CREATE DATABASE IF NOT EXISTS app",
                                   "USE app; CREATE TABLE IF NOT EXISTS isolation_probe "
                                   "(marker VARCHAR(40) PRIMARY KEY, n INT NOT NULL DEFAULT 0)",
                                   "INSERT INTO app.isolation_probe (marker) VALUES ('before-%s')" % RUN])
            assert _wait_row(cloud, socket, "app", "before-" + RUN), f"control: {attacker}'s row did not arrive"
            before = sql(cloud, "SELECT CONCAT(user, '@', host, ' ', priv) FROM mysql.global_priv ORDER BY 1",
                         socket=socket)
            _device_sql(attacker, [
                f"CREATE USER IF NOT EXISTS {ATTACKER_USER}@'%' IDENTIFIED BY 'x'",
                f"GRANT ALL ON *.* TO {ATTACKER_USER}@'%' WITH GRANT OPTION",
                "CREATE TABLE IF NOT EXISTS mysql.edgefleet_planted (x INT)",
                "INSERT INTO app.isolation_probe (marker) VALUES ('after-%s')" % RUN])
            assert _wait_row(cloud, socket, "app", "after-" + RUN), f"{attacker}'s own rows stopped arriving"
            after = sql(cloud, "SELECT CONCAT(user, '@', host, ' ', priv) FROM mysql.global_priv ORDER BY 1",
                        socket=socket)
            planted = sql(cloud, "SELECT COUNT(*) FROM information_schema.tables "
                                 "WHERE table_schema = 'mysql' AND table_name = 'edgefleet_planted'", socket=socket)
        finally:
            _cleanup_device(attacker)
            sql(cloud, "SET sql_log_bin = 0; DROP TABLE IF EXISTS app.isolation_probe", socket=socket, check=False)
    assert after == before, "the device created or changed accounts on its replica instance"
    assert planted == [["0"]], "the device created a table in the replica's mysql schema"
