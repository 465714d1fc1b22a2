"""Fleet status against real MariaDB servers on loopback: the fleet_status module through real
Ansible, and the edgefleet-monitor collector (metrics, JSON, HTML) run as on a cloud host.

One replica server carries three devices as channels (channel mode), a fourth device's replica
instance does not exist:
  dev1  replicating, fresh verified backup            -> ok
  dev2  row on the replica collides (error 1062)       -> error
  dev3  nothing listens on its tunnel port             -> offline
  dev4  replica instance missing                       -> error
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status_render as fr

from tests.live.support import ansible_module, channel_state, wait_for
from tests.support.host_code import install_host_program
from tests.support.mariadb import free_port, mariadb_server

pytestmark = pytest.mark.mariadb

PASSWORD = "st4tus-repl-pw"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("status")
    sockets, backups, checks, out = (base / "run", base / "backup", base / "consistency",
                                     base / "out")
    for path in (sockets, backups, checks, out):
        path.mkdir()
    with mariadb_server(server_id=511) as dev1, mariadb_server(server_id=512) as dev2, \
            mariadb_server(server_id=590, extra_options=["--read-only=ON", "--log-slave-updates=ON"]) as rep:
        for dev in (dev1, dev2):
            dev.execute("SET sql_log_bin=0", f"CREATE USER repl@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
                        "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'", "SET sql_log_bin=1",
                        "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)")
        dead_port = free_port()
        for name, port in (("dev1", dev1.port), ("dev2", dev2.port), ("dev3", dead_port)):
            rep.execute(f"CHANGE MASTER '{name}' TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, "
                        f"MASTER_USER='repl', MASTER_PASSWORD='{PASSWORD}', MASTER_USE_GTID=slave_pos, "
                        "MASTER_CONNECT_RETRY=1", f"START SLAVE '{name}'")
        wait_for(lambda: rep.execute("SELECT COUNT(*) FROM information_schema.TABLES "
                                     "WHERE TABLE_SCHEMA='app'")[0][0] == 1, what="schema on replica")
        # Both devices' CREATE TABLE applied before the replica's own row goes in: a later one
        # (slave_ddl_exec_mode=IDEMPOTENT makes it CREATE OR REPLACE) would empty the table again,
        # and the device's insert would then not collide (seen once under make live's load).
        for dev in (dev1, dev2):
            done = dev.execute("SELECT @@gtid_binlog_pos")[0][0]
            wait_for(lambda: done in rep.execute("SELECT @@gtid_slave_pos")[0][0].split(","),
                     what="the replica at %s" % done)
        # break dev2: the replica already has the row the device is about to insert
        rep.execute("SET sql_log_bin=0", "INSERT INTO app.t VALUES (1, 99)")
        dev2.execute("INSERT INTO app.t VALUES (1, 1)")
        wait_for(lambda: channel_state(rep, "dev2")["Last_SQL_Errno"] == 1062, what="error 1062")
        dev1.execute("INSERT INTO app.t VALUES (10, 10)")
        os.symlink(rep.socket, sockets / "edgefleet-shared.sock")
        now = int(time.time())
        (backups / "dev1.json").write_text(json.dumps({
            "device": "dev1", "last_success_ts": now - 600, "last_success_file": "/b/dev1.xb",
            "last_size_bytes": 2048, "last_duration_s": 1.5, "last_attempt_ts": now - 600,
            "last_attempt_ok": True, "last_error": None, "last_verify_ts": now - 500,
            "last_verify_ok": True, "last_verify_detail": "restored", "backups_kept": 3}))
        devices = []
        for name, port, instance in (("dev1", dev1.port, "shared"), ("dev2", dev2.port, "shared"),
                                     ("dev3", dead_port, "shared"), ("dev4", free_port(), "ghost")):
            devices.append({"id": name, "site": "lab" if name != "dev4" else "far",
                            "status": "active", "tunnel_mysql_port": port,
                            "replica_instance": instance, "replica_mode": "channel",
                            "channel_name": name, "schema_prefix": ""})
        yield {"devices": devices, "instances": [{"name": "shared"}, {"name": "ghost"}],
               "sockets": str(sockets), "backups": str(backups), "checks": str(checks),
               "out": str(out), "replica": rep}


EXPECTED = {"dev1": "ok", "dev2": "error", "dev3": "offline", "dev4": "error"}


def test_module_reports_each_device_state(fleet):
    result, output = ansible_module("fleet_status", timeout=180, args={
        "devices": fleet["devices"], "instances": fleet["instances"], "cloud_host": "cloud-test",
        "socket_dir": fleet["sockets"], "backup_status_dir": fleet["backups"],
        "consistency_dir": fleet["checks"], "connect_timeout": 2})
    assert result.get("changed") is False, output
    states = {d["device"]: d["state"] for d in result["devices"]}
    assert states == EXPECTED
    assert [d["device"] for d in result["devices"]][:2] in (["dev2", "dev4"], ["dev4", "dev2"])
    by_id = {d["device"]: d for d in result["devices"]}
    assert by_id["dev2"]["replication"]["last_errno"] == 1062
    assert by_id["dev2"]["replication"]["sql_running"] == "No"
    assert by_id["dev3"]["tunnel"]["up"] is False
    assert by_id["dev3"]["replication"]["io_running"] == "Connecting"
    assert by_id["dev1"]["tunnel"]["up"] is True and by_id["dev1"]["backup"]["age_s"] >= 600
    assert "not reachable" in by_id["dev4"]["problems"][0]
    assert result["summary"]["total"] == 4 and result["summary"]["error"] == 2
    ghost = [i for i in result["hosts"][0]["instances"] if i["name"] == "ghost"][0]
    assert ghost["reachable"] is False


def test_collector_writes_metrics_json_and_page(fleet):
    out = fleet["out"]
    config = {"cloud_host": "cloud-test", "devices": fleet["devices"],
              "instances": fleet["instances"], "socket_dir": fleet["sockets"],
              "backup_status_dir": fleet["backups"], "consistency_dir": fleet["checks"],
              "connect_timeout": 2, "lag_threshold": 300, "backup_max_age": 93600,
              "outputs": {"metrics": out + "/edgefleet.prom", "json": out + "/status.json",
                          "html": out + "/index.html"}, "html_title": "test", "html_refresh": 0}
    with open(out + "/monitoring.json", "w") as handle:
        json.dump(config, handle)
    # As the monitoring role ships it: module_utils/monitor_cli.py and what it imports below a lib
    # dir, run by its launcher with the system python3 -I.
    monitor = install_host_program(os.path.join(out, "lib"), "monitor_cli", os.path.join(out, "edgefleet-monitor"))
    started = time.time()
    proc = subprocess.run([monitor, "--config", out + "/monitoring.json", "collect"], capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fleet: 4 devices | 2 error, 1 offline")
    assert time.time() - started < 10
    status = json.load(open(out + "/status.json"))
    assert {d["device"]: d["state"] for d in status["devices"]} == EXPECTED
    metrics = open(out + "/edgefleet.prom").read()
    assert 'edgefleet_tunnel_up{device="dev3",site="lab",cloud_host="cloud-test",replica="shared"} 0' in metrics
    assert 'edgefleet_replication_last_error_code{device="dev2",site="lab",cloud_host="cloud-test",replica="shared"} 1062' in metrics
    assert 'edgefleet_replica_instance_up{cloud_host="cloud-test",replica="ghost"} 0' in metrics
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, text=True,
                               capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    page = open(out + "/index.html").read()
    assert page.count("<tr data-device=") == 4
    table = subprocess.run([monitor, "--config", out + "/monitoring.json", "status"], capture_output=True,
                           text=True, check=True).stdout
    assert table.splitlines()[0].startswith("DEVICE")
    assert fr.summary_line(status["summary"]) == table.splitlines()[-1]
