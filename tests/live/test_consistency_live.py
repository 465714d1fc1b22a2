"""Consistency check against real MariaDB servers on loopback, through real Ansible
(edgefleet.mysql_backup.table_checksum): a healthy device reports nothing, a row changed directly
on the replica (sql_log_bin=0, root bypassing read_only) is found and named, in instance mode
and in channel mode (renamed schema), and a device written to during the check still compares
equal (both sides are compared at one GTID position, the device is not paused).
"""
import contextlib
import json
import os
import threading
import time

import pytest

from tests.live.support import ansible_module, channel_state, wait_for
from tests.support.mariadb import mariadb_server

pytestmark = pytest.mark.mariadb

REPL_PW = "c0nsist-repl"
CHECK_PW = "c0nsist-check"


def prepare_device(dev):
    dev.execute("SET sql_log_bin=0",
                f"CREATE USER repl@'127.0.0.1' IDENTIFIED BY '{REPL_PW}'",
                "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
                f"CREATE USER edgefleet_check@'127.0.0.1' IDENTIFIED BY '{CHECK_PW}'",
                "GRANT SELECT, SHOW VIEW, TRIGGER ON app.* TO edgefleet_check@'127.0.0.1'",
                "SET sql_log_bin=1",
                "CREATE DATABASE app",
                # DDL after USE with unqualified names: replicate_rewrite_db rewrites it
                "USE app",
                "CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT, "
                "price DECIMAL(10,2), note TEXT NULL, raw BLOB NULL, at DATETIME(6) NULL)",
                "INSERT INTO app.orders VALUES (1,'apple',3,1.50,NULL,NULL,'2024-01-01 10:00:00'),"
                "(2,'pear',1,0.99,'n\u00e4chste',x'00ff10',NULL),(3,'fig',7,12.00,'',x'',NOW(6))",
                "CREATE TABLE log (ts INT, msg VARCHAR(20))",
                "INSERT INTO app.log VALUES (1,'a'),(1,'a'),(2,'b')")


def start_channel(rep, name, dev):
    rep.execute(f"CHANGE MASTER '{name}' TO MASTER_HOST='127.0.0.1', MASTER_PORT={dev.port}, "
                f"MASTER_USER='repl', MASTER_PASSWORD='{REPL_PW}', MASTER_USE_GTID=slave_pos",
                f"START SLAVE '{name}'")


def replica_has(rep, schema, count):
    rows = rep.execute(f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='{schema}'")
    return rows[0][0] == count


def channel_running(rep, name):
    row = channel_state(rep, name)
    return row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes"


def socket_dir(tmp_path, rep, instance):
    path = tmp_path / "run"
    path.mkdir(exist_ok=True)
    os.symlink(rep.socket, path / f"edgefleet-{instance}.sock")
    return str(path)


@contextlib.contextmanager
def device_replicated(device_id, replica_id):
    """A prepared device and a read-only replica whose channel dev1 has its schema (instance
    mode); yields (device, replica)."""
    with mariadb_server(server_id=device_id) as dev, \
            mariadb_server(server_id=replica_id, extra_options=["--read-only=ON"]) as rep:
        prepare_device(dev)
        start_channel(rep, "dev1", dev)
        wait_for(lambda: replica_has(rep, "app", 2), what="replica schema")
        yield dev, rep


def check(devices, sockets, results=None, **extra):
    args = {"devices": devices, "source_password": CHECK_PW, "socket_dir": sockets,
            "databases": ["app"]}
    if results:
        args["results_dir"] = results
    args.update(extra)
    return ansible_module("table_checksum", args, secret=CHECK_PW)


def test_instance_mode_healthy_then_diverged(tmp_path):
    with device_replicated(611, 691) as (dev, rep):
        device = {"id": "dev1", "tunnel_mysql_port": dev.port, "replica_instance": "dev1",
                  "channel_name": "dev1", "replica_mode": "instance", "schema_prefix": ""}
        sockets = socket_dir(tmp_path, rep, "dev1")
        results = tmp_path / "results"
        results.mkdir()

        healthy, output = check([device], sockets, str(results))
        assert healthy["summary"]["ok"] == 1, output
        result = healthy["devices"][0]
        assert result["state"] == "ok" and result["differing_tables"] == []
        assert result["tables_checked"] == 2 and result["restarted"] is True
        assert {t["status"] for t in result["tables"]} == {"same"}
        assert result["gtid_pos"].startswith("611-611-")
        assert channel_running(rep, "dev1")
        assert json.loads((results / "dev1.json").read_text())["state"] == "ok"

        # change rows directly on the replica: not binlogged, root bypasses read_only
        rep.execute("SET SESSION sql_log_bin=0", "UPDATE app.orders SET qty = 4 WHERE id = 1",
                    "DELETE FROM app.orders WHERE id = 3", "INSERT INTO app.log VALUES (1,'a')")
        dev.execute("INSERT INTO app.orders VALUES (4,'kiwi',2,0.5,NULL,NULL,NULL)")
        diverged, output = check([device], sockets, str(results))
        result = diverged["devices"][0]
        assert result["state"] == "diverged", output
        assert result["differing_tables"] == ["app.log", "app.orders"]
        tables = {t["table"]: t for t in result["tables"]}
        orders = tables["app.orders"]
        assert orders["device_rows"] == 4 and orders["replica_rows"] == 3
        assert orders["keys"]["different"] == ["id=1"]
        assert orders["keys"]["missing_on_replica"] == ["id=3"]
        assert tables["app.log"]["rows_located"] is False  # no primary key
        # replication keeps going after the check
        assert channel_running(rep, "dev1")
        dev.execute("INSERT INTO app.orders VALUES (5,'plum',1,1,NULL,NULL,NULL)")
        wait_for(lambda: rep.execute("SELECT COUNT(*) FROM app.orders WHERE id=5")[0][0] == 1,
                 what="row 5 on the replica")


def test_channel_mode_renamed_schema_and_writes_during_the_check(tmp_path):
    with mariadb_server(server_id=621) as dev1, mariadb_server(server_id=622) as dev2, \
            mariadb_server(server_id=692, extra_options=[
                "--read-only=ON", "--dev1.replicate-rewrite-db=app->dev1_app",
                "--dev2.replicate-rewrite-db=app->dev2_app"]) as rep:
        rep.execute("SET SESSION sql_log_bin=0", "CREATE DATABASE dev1_app", "CREATE DATABASE dev2_app")
        for dev in (dev1, dev2):
            prepare_device(dev)
        start_channel(rep, "dev1", dev1)
        start_channel(rep, "dev2", dev2)
        wait_for(lambda: replica_has(rep, "dev1_app", 2) and replica_has(rep, "dev2_app", 2),
                 what="renamed schemas")
        devices = [{"id": name, "tunnel_mysql_port": dev.port, "replica_instance": "shared",
                    "channel_name": name, "replica_mode": "channel", "schema_prefix": name + "_"}
                   for name, dev in (("dev1", dev1), ("dev2", dev2))]
        sockets = socket_dir(tmp_path, rep, "shared")

        stop = threading.Event()
        written = []

        def writer():
            conn = dev1.connect()
            try:
                next_id = 1000
                with conn.cursor() as cur:
                    while not stop.is_set():
                        cur.execute("INSERT INTO app.orders (id, item, qty, price) VALUES (%s, 'w', 1, 1)",
                                    (next_id,))
                        written.append(next_id)
                        next_id += 1
                        time.sleep(0.01)
            finally:
                conn.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.5)
            result, output = check(devices, sockets)
        finally:
            stop.set()
            thread.join()
        assert len(written) > 20
        assert [d["state"] for d in result["devices"]] == ["ok", "ok"], output
        first = result["devices"][0]
        assert first["tables"][0]["replica_table"].startswith("dev1_app.")
        assert first["paused_s"] is not None and first["paused_s"] < 30

        rep.execute("SET SESSION sql_log_bin=0", "UPDATE dev2_app.orders SET item='PEAR' WHERE id=2")
        result, output = check(devices, sockets)
        assert [d["state"] for d in result["devices"]] == ["ok", "diverged"], output
        table = [t for t in result["devices"][1]["tables"] if t["status"] != "same"][0]
        assert table["table"] == "app.orders" and table["replica_table"] == "dev2_app.orders"
        assert table["keys"]["different"] == ["id=2"]
        assert channel_running(rep, "dev1") and channel_running(rep, "dev2")


def test_unreachable_device_and_broken_channel_are_reported(tmp_path):
    with device_replicated(631, 693) as (dev, rep):
        sockets = socket_dir(tmp_path, rep, "dev1")
        device = {"id": "dev1", "tunnel_mysql_port": dev.port, "replica_instance": "dev1",
                  "channel_name": "dev1"}
        wrong_pw, output = check([device], sockets, source_password="wrong")
        assert wrong_pw["devices"][0]["state"] == "error"
        assert "not reachable through its tunnel" in wrong_pw["devices"][0]["error"], output
        assert channel_running(rep, "dev1")
        rep.execute("SET SESSION sql_log_bin=0", "INSERT INTO app.orders VALUES (9,'x',1,1,NULL,NULL,NULL)")
        dev.execute("INSERT INTO app.orders VALUES (9,'y',1,1,NULL,NULL,NULL)")
        wait_for(lambda: not channel_running(rep, "dev1"), what="error 1062")
        broken, output = check([device], sockets)
        assert broken["devices"][0]["state"] == "error"
        assert "stopped on SQL error 1062" in broken["devices"][0]["error"], output
