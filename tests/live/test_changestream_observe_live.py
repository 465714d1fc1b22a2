"""The change stream seen by edgefleet-monitor, with real parts: a MariaDB binlog server standing for
a channel-mode replica (two devices = two GTID domains), a real rabbitmq-server on loopback, a
central MariaDB, capture and fan-in as subprocesses, and edgefleet-monitor run through its
launcher as a host runs it (/usr/bin/python3 -I with Debian's python3-pika and python3-pymysql).

Phases: without the stream's config files the monitor's output has no stream part; fan-in stopped:
the fan-in queue's backlog equals the events captured (cross-checked with rabbitmqctl) and the
devices' streams are stalled (messages, no consumer); capture stopped while dev1 writes: dev1 is
transactions behind with its lag growing, dev2 is not; both running: everything drains, backlog 0,
streams current; a poisoned message: one dead letter in the metrics. A second queue bound to every
event (the stream other systems read, unconsumed here) is reported with role "other".
"""
import json
import os
import subprocess
import time

import pika
import pytest

from tests.live.support import wait_for
from tests.live.test_changestream_live import DEVICES, Program, Writer
from tests.support.host_code import install_host_code, install_host_program
from tests.support.mariadb import free_port, mariadb_server
from tests.support.rabbitmq import rabbitmq_broker

pytestmark = pytest.mark.mariadb


def monitor(launcher, config_path, *args):
    result = subprocess.run([launcher, "--config", config_path] + list(args), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status(launcher, config_path):
    return json.loads(monitor(launcher, config_path, "status", "--json"))


def metric(text, name, **labels):
    """The value of the one sample of `name` whose labels include `labels`."""
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % item in line for item in labels.items()):
            found.append(float(line.rsplit(" ", 1)[1]))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_monitor_sees_backlog_lag_and_dead_letters(tmp_path):
    started = time.monotonic()
    lib = install_host_code(tmp_path / "lib", ["changestream.capture", "changestream.consumer"])
    launcher = install_host_program(tmp_path / "monitor-lib", "monitor_cli", tmp_path / "edgefleet-monitor")
    users = {"admin": "admin-pw", "capture": "capture-pw", "fanin": "fanin-pw"}
    etc = tmp_path / "etc" / "changestream"  # /etc/edgefleet/changestream on a host
    etc.mkdir(parents=True)
    with rabbitmq_broker(users, background=True) as broker, \
            mariadb_server(server_id=31, extra_options=["--binlog-row-metadata=FULL"]) as source, \
            mariadb_server(server_id=32, binlog=False) as central:
        # The monitor's own config, as the monitoring role writes it (replica instance unreachable here).
        metrics_path = tmp_path / "edgefleet.prom"
        monitoring = {
            "cloud_host": "cloud01", "instances": [{"name": "r1"}], "socket_dir": str(tmp_path),
            "backup_status_dir": str(tmp_path / "b"), "consistency_dir": str(tmp_path / "c"),
            "repair_dir": str(tmp_path / "r"), "connect_timeout": 2, "outputs": {"metrics": str(metrics_path)},
            "changestream_configs": str(etc / "*.json"), "stream_lag_threshold": 2,
            "devices": [dict(id=d["id"], site="lab", status="active", tunnel_mysql_port=free_port(),
                             tunnel_ssh_port=free_port(), replica_instance="r1", replica_mode="channel",
                             channel_name=d["id"], schema_prefix=d["schema_prefix"]) for d in DEVICES]}
        config_path = str(tmp_path / "monitoring.json")
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(monitoring, handle)
        # Stream not configured on this host: no stream part, no error.
        plain = status(launcher, config_path)
        assert "changestream" not in plain and all("stream" not in r for r in plain["devices"])
        assert "STREAM" not in monitor(launcher, config_path, "status").splitlines()[0]

        broker.wait()
        for device in DEVICES:
            source.execute("CREATE DATABASE %sapp" % device["schema_prefix"],
                           "CREATE TABLE %sapp.items (id INT PRIMARY KEY, name VARCHAR(32), qty INT)"
                           % device["schema_prefix"])
        central.execute("CREATE DATABASE fanin",
                        "CREATE TABLE fanin.items (device_id VARCHAR(64) NOT NULL, id INT NOT NULL, name VARCHAR(32),"
                        " qty INT, PRIMARY KEY (device_id, id))")
        broker_conf = {"host": "127.0.0.1", "port": broker.port}
        # edgefleet.events: every event, for other systems (nobody consumes it here).
        queues = [{"name": "edgefleet.fanin", "bindings": ["#"]}, {"name": "edgefleet.events", "bindings": ["#"]}]
        checkpoint = str(tmp_path / "capture.checkpoint")
        configs = {
            "capture": {"replica": {"host": "127.0.0.1", "port": source.port, "user": "root", "password": ""},
                        "reader_server_id": 9001, "databases": ["app"], "devices": DEVICES,
                        "broker": dict(broker_conf, user="capture", password="capture-pw"), "queues": queues,
                        "checkpoint": checkpoint, "start_gtid_pos": "", "checkpoint_interval": 0.2},
            "fanin": {"central": {"host": "127.0.0.1", "port": central.port, "user": "root", "password": "",
                                  "database": "fanin"},
                      "broker": dict(broker_conf, user="fanin", password="fanin-pw"), "queues": queues,
                      "queue": "edgefleet.fanin", "tables": {"app.items": "items"}, "batch": 20}}
        # The paths the monitor reads (docs/changestream.md "Files on the host"), here below tmp_path.
        for name, conf in (("capture-r1", configs["capture"]), ("fanin", configs["fanin"])):
            with open(etc / ("%s.json" % name), "w", encoding="utf-8") as handle:
                json.dump(conf, handle)
        capture = Program(lib, "capture", str(etc / "capture-r1.json"), str(tmp_path / "capture.log"))
        fanin = Program(lib, "consumer", str(etc / "fanin.json"), str(tmp_path / "fanin.log"))
        writers = [Writer(source, device) for device in DEVICES]

        def write(writer, first, count):
            for n in range(first, first + count):
                writer.tx("INSERT INTO APP.items (id, name, qty) VALUES (%d, 'n', %d)" % (n, n))

        def captured(seqs):
            if not os.path.exists(checkpoint):
                return False
            with open(checkpoint, encoding="utf-8") as handle:
                return set(seqs) <= set(json.load(handle)["gtid_pos"].split(","))

        try:
            # 1. The fan-in is stopped: what the capture confirmed waits in the queue, nobody consumes.
            capture.start()
            for writer in writers:
                write(writer, 1, 30)
            wait_for(lambda: captured([w.gtids[-1] for w in writers]), timeout=30, what="the capture")
            report = status(launcher, config_path)
            fanin_view = report["changestream"]["fanins"][0]
            assert fanin_view["queues"]["fanin"] == {"messages": 60, "consumers": 0}, fanin_view
            assert fanin_view["queues"]["dead"] == {"messages": 0, "consumers": 0}, fanin_view
            assert fanin_view["queues"]["other:edgefleet.events"] == {"messages": 60, "consumers": 0}, fanin_view
            for record in report["devices"]:
                assert record["stream"]["state"] == "stalled" and record["stream"]["behind"] == 0, record
                assert "60 messages in edgefleet.fanin and no fan-in consuming" in record["problems"][-1]
            # What rabbitmqctl says (the other way to read it: an Erlang VM per call, the cookie).
            ctl_started = time.monotonic()
            listed = broker.ctl("list_queues", "-q", "name", "messages_ready", "consumers").stdout
            ctl_s = time.monotonic() - ctl_started
            assert "edgefleet.fanin\t60\t0" in listed, listed
            monitor(launcher, config_path, "collect")
            text = metrics_path.read_text()
            assert metric(text, "edgefleet_changestream_queue_messages", role="fanin") == 60
            assert metric(text, "edgefleet_changestream_device_current", device="dev1") == 0

            # 2. The capture stopped while dev1 writes: dev1 behind, its lag growing; dev2 not behind.
            assert capture.stop() == 0, capture.log()
            write(writers[0], 31, 5)
            time.sleep(2.5)
            report = status(launcher, config_path)
            streams = dict((r["device"], r["stream"]) for r in report["devices"])
            assert streams["dev1"]["behind"] == 5 and streams["dev1"]["lag_s"] > 2, streams
            assert streams["dev2"]["behind"] == 0 and streams["dev2"]["lag_s"] == 0, streams
            table = monitor(launcher, config_path, "status")
            row = [line for line in table.splitlines() if line.startswith("dev1 ")][0]
            assert "STALLED 5" in row and "STREAM" in table.splitlines()[0], table

            # 3. Both running: the queue drains, the capture catches up, the streams are current.
            capture.start()
            fanin.start()
            wait_for(lambda: central.execute("SELECT COUNT(*) FROM fanin.items")[0][0] == 65, timeout=40,
                     what="the fan-in to apply 65 rows")

            def drained():
                report = status(launcher, config_path)
                queue = report["changestream"]["fanins"][0]["queues"]["fanin"]
                states = [r["stream"]["state"] for r in report["devices"]]
                return report if queue == {"messages": 0, "consumers": 1} and states == ["current"] * 2 else None

            report = wait_for(drained, timeout=30, what="backlog 0 and both streams current")
            streams = dict((r["device"], r["stream"]) for r in report["devices"])
            assert streams["dev1"]["behind"] == 0 and streams["dev1"]["applied_seq"] == int(writers[0].gtids[-1].split("-")[2])
            assert streams["dev2"]["applied_ts"] > time.time() - 120
            assert report["summary"]["stream_current"] == 2

            # 4. A poisoned message: dead-lettered by the fan-in, counted.
            connection = pika.BlockingConnection(broker.parameters("admin", "admin-pw"))
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish("edgefleet.changes", "dev1.app.items", b"{not json",
                                  pika.BasicProperties(delivery_mode=2, message_id="poison-1"), mandatory=True)
            connection.close()

            def dead_counted():
                monitor(launcher, config_path, "collect")
                text = metrics_path.read_text()
                return text if metric(text, "edgefleet_changestream_dead_letter_messages") == 1 else None

            text = wait_for(dead_counted, timeout=30, what="one dead letter in the metrics")
            assert metric(text, "edgefleet_changestream_queue_messages", role="fanin") == 0
            assert metric(text, "edgefleet_changestream_queue_consumers", role="fanin") == 1
            assert metric(text, "edgefleet_changestream_queue_messages", role="other", queue="edgefleet.events") == 66
            assert metric(text, "edgefleet_changestream_capture_behind_transactions", device="dev1") == 0
            assert metric(text, "edgefleet_changestream_broker_up") == 1
            assert metric(text, "edgefleet_changestream_central_up") == 1
            assert metric(text, "edgefleet_changestream_capture_read_ok") == 1
            subprocess.run(["promtool", "check", "metrics"], input=text, text=True, check=True, capture_output=True)
        finally:
            assert capture.stop() == 0, capture.log()
            assert fanin.stop() == 0, fanin.log()
        print("changestream observe live: rabbitmqctl list_queues %.1f s; %.1f s in all"
              % (ctl_s, time.monotonic() - started))
