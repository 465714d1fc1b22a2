"""The change stream end to end, with real parts: a MariaDB binlog server standing for a channel-mode
replica (two devices, each its own GTID domain and rewritten schema dev<N>_app), a real
rabbitmq-server on loopback (tests/support/rabbitmq.py), a central MariaDB, and the capture and
fan-in programs as subprocesses, shipped as a role ships them (host_code).

One test, in phases (one broker start for all of them; `make live` runs tests/live with xdist):
refused credentials (nothing applied), inserts/updates/deletes of two devices, capture SIGKILLed
mid-stream and restarted, fan-in SIGKILLed mid-batch and restarted, a broker restart, one DDL, a
table the fan-in does not know and a poisoned message (both dead-lettered with the reason); then
the central table equals the union of the devices' tables (checksummed), and a tap queue bound
to every event shows each device's events in commit order with correct images, every committed
row change present (0 lost) and duplicates only as the same event id with the same content.
"""
import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.live.support import wait_for
from tests.support.host_code import install_host_code
from tests.support.mariadb import mariadb_server
from tests.support.rabbitmq import rabbitmq_broker

import pika  # requirements-dev.txt: a missing one fails here, it is never skipped
import pika.exceptions
import pymysqlreplication  # noqa: F401  pylint: disable=unused-import

pytestmark = pytest.mark.mariadb

DEVICES = [{"id": "dev1", "gtid_domain_id": 11, "server_id": 11, "schema_prefix": "dev1_"},
           {"id": "dev2", "gtid_domain_id": 12, "server_id": 12, "schema_prefix": "dev2_"}]
# joins the replica mid-test, before the capture's config lists it
JOINER = {"id": "dev3", "gtid_domain_id": 14, "server_id": 14, "schema_prefix": "dev3_"}
ALL_DEVICES = DEVICES + [JOINER]
PACKAGE = "ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream"
TAP = "test.tap"
_background_ids = itertools.count(1)


class Program:
    """capture or consumer as a subprocess: the shipped tree on sys.path, the venv's packages."""

    def __init__(self, lib, module, config_path, log_path):
        self.argv = [sys.executable, "-c",
                     "import sys; sys.path.insert(0, %r); from %s.%s import main; sys.exit(main())"
                     % (lib, PACKAGE, module), "--config", config_path]
        self.log_path = log_path
        self.process = None

    def start(self):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def run(self, timeout=30):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        return subprocess.run(self.argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


class Writer:
    """Writes as device N would reach the replica: its own GTID domain and server_id, its schema."""

    def __init__(self, server, device):
        self.conn = server.connect(autocommit=False)
        self.device = device
        self.schema = device["schema_prefix"] + "app"
        self.gtids = []
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION gtid_domain_id = %d" % device["gtid_domain_id"])
            cur.execute("SET SESSION server_id = %d" % device["server_id"])

    def tx(self, *statements):
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement.replace("APP.", self.schema + "."))
            self.conn.commit()
            cur.execute("SELECT @@last_gtid")
            self.gtids.append(cur.fetchone()[0])


def checkpoint_text(conf):
    try:
        with open(conf["checkpoint"], encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def rows_checksum(conn, query):
    with conn.cursor() as cur:
        cur.execute(query)
        rows = [tuple(str(v) for v in row) for row in cur.fetchall()]
    return len(rows), hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def union_checksum(source):
    conn = source.connect()
    query = " UNION ALL ".join(
        "SELECT '%s', id, name, qty, note FROM %sapp.items" % (d["id"], d["schema_prefix"]) for d in ALL_DEVICES)
    try:
        return rows_checksum(conn, "SELECT * FROM (%s) u ORDER BY 1, 2" % query)
    finally:
        conn.close()


def central_checksum(central):
    conn = central.connect(database="fanin")
    try:
        return rows_checksum(conn, "SELECT device_id, id, name, qty, note FROM items ORDER BY device_id, id")
    finally:
        conn.close()


def drain(broker, queue):
    """Every message of a queue, in queue order: [(properties, body)]."""
    connection = pika.BlockingConnection(broker.parameters("admin", "admin-pw"))
    channel = connection.channel()
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        messages.append((properties, body))
    connection.close()
    return messages


def broker_queues(broker):
    """Names of the queues on the broker (a passive declare per expected name)."""
    connection = pika.BlockingConnection(broker.parameters("admin", "admin-pw"))
    found = []
    for name in ("edgefleet.fanin", "edgefleet.dead", TAP):
        channel = connection.channel()
        try:
            channel.queue_declare(name, passive=True)
            found.append(name)
        except pika.exceptions.ChannelClosedByBroker:
            pass
    connection.close()
    return found


def publish_raw(broker, routing_key, body, message_id):
    connection = pika.BlockingConnection(broker.parameters("admin", "admin-pw"))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("edgefleet.changes", routing_key, body,
                          pika.BasicProperties(delivery_mode=2, message_id=message_id), mandatory=True)
    connection.close()


def check_tap(messages, writers, source):
    """Commit order per device, correct images, 0 lost, duplicates only as the same event."""
    first = {}
    order = {d["id"]: [] for d in ALL_DEVICES}
    duplicates = 0
    gtids = {}
    for properties, body in messages:
        if properties.message_id == "poison-1":
            continue  # the test's own poisoned message, published to the exchange
        event = json.loads(body)
        source_info = event["payload"]["source"]
        assert properties.message_id == "%s:%d" % (source_info["gtid"], source_info["row"])
        comparable = dict(event["payload"], ts_ms=None)
        if properties.message_id in first:
            assert first[properties.message_id] == comparable, "a duplicate id with other content"
            duplicates += 1
            continue
        first[properties.message_id] = comparable
        gtids.setdefault(source_info["name"], set()).add(source_info["gtid"])
        if "ddl" in event["payload"]:
            continue
        order[source_info["name"]].append((properties.message_id, event))
    for writer in writers:
        device = writer.device["id"]
        positions = [tuple(int(x) for x in mid.replace(":", "-").split("-")[2:]) for mid, unused in order[device]]
        assert positions == sorted(positions), "events of %s out of commit order" % device
        # 0 lost: every committed transaction of the device that changed items is in the stream.
        seen = gtids.get(device, set())
        missing = [g for g in writer.gtids if g not in seen]
        assert not missing, "transactions of %s missing from the stream: %s" % (device, missing[:5])
        # Images: replaying the events on an empty table gives the device's table.
        model = {}
        for unused, event in order[device]:
            payload = event["payload"]
            if payload["source"]["table"] != "items":
                continue
            if payload["op"] in ("u", "d"):
                # A row written before the DDL has no note column in its images: None after it.
                assert dict({"note": None}, **model.get(payload["before"]["id"], {})) == \
                    dict({"note": None}, **payload["before"]), "wrong before image"
                del model[payload["before"]["id"]]
            if payload["op"] in ("c", "u"):
                model[payload["after"]["id"]] = payload["after"]
        conn = source.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, name, qty, note FROM %s.items ORDER BY id" % writer.schema)
                table = [dict(zip(("id", "name", "qty", "note"), row)) for row in cur.fetchall()]
        finally:
            conn.close()
        replayed = [dict({"note": None}, **model[key]) for key in sorted(model)]
        assert replayed == table, "replaying %s's events does not give its table" % device
    return duplicates


@contextlib.contextmanager
def background_writes(writers):
    """Small transactions on both devices in a thread until the block ends."""
    stop = threading.Event()
    errors = []

    def work():
        try:
            while not stop.is_set():
                for writer in writers:
                    n = next(_background_ids)
                    writer.tx("UPDATE APP.items SET qty = qty + 1 WHERE id = %d" % (n % 40 + 1),
                              "INSERT INTO APP.items (id, name, qty) VALUES (%d, 'bg', %d)" % (1000 + n, n))
                time.sleep(0.02)
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


def test_change_stream_end_to_end(tmp_path):
    started = time.monotonic()
    lib = install_host_code(tmp_path / "lib", ["changestream.capture", "changestream.consumer"])
    users = {"admin": "admin-pw", "capture": "capture-pw", "fanin": "fanin-pw"}
    with rabbitmq_broker(users, background=True) as broker, \
            mariadb_server(server_id=31, extra_options=["--binlog-row-metadata=FULL", "--binlog-row-image=FULL"]) \
            as source, \
            mariadb_server(server_id=32, binlog=False) as central:
        broker.wait()
        for device in ALL_DEVICES:
            source.execute("CREATE DATABASE %sapp" % device["schema_prefix"],
                           "CREATE TABLE %sapp.items (id INT PRIMARY KEY, name VARCHAR(32), qty INT)"
                           % device["schema_prefix"],
                           "CREATE TABLE %sapp.other (id INT PRIMARY KEY, v INT)" % device["schema_prefix"])
        central.execute("CREATE DATABASE fanin",
                        "CREATE TABLE fanin.items (device_id VARCHAR(64) NOT NULL, id INT NOT NULL, name VARCHAR(32),"
                        " qty INT, note VARCHAR(32), PRIMARY KEY (device_id, id))")
        broker_conf = {"host": "127.0.0.1", "port": broker.port}
        queues = [{"name": "edgefleet.fanin", "bindings": ["#"]}, {"name": TAP, "bindings": ["#"]}]
        capture_conf = {
            "replica": {"host": "127.0.0.1", "port": source.port, "user": "root", "password": ""},
            "reader_server_id": 9001, "databases": ["app"], "devices": DEVICES,
            "broker": dict(broker_conf, user="capture", password="capture-pw"), "queues": queues,
            "checkpoint": str(tmp_path / "capture.checkpoint"), "start_gtid_pos": "", "checkpoint_interval": 0.2}
        fanin_conf = {
            "central": {"host": "127.0.0.1", "port": central.port, "user": "root", "password": "",
                        "database": "fanin"},
            "broker": dict(broker_conf, user="fanin", password="fanin-pw"), "queues": queues,
            "queue": "edgefleet.fanin", "tables": {"app.items": "items"}, "batch": 20}
        paths = {}
        no_binlog_replica = dict(capture_conf["replica"], port=central.port)
        for name, conf in (("capture", capture_conf), ("fanin", fanin_conf),
                           ("capture-bad", dict(capture_conf, broker=dict(capture_conf["broker"], password="wrong"))),
                           ("fanin-bad", dict(fanin_conf, broker=dict(fanin_conf["broker"], password="wrong"))),
                           ("capture-nobinlog", dict(capture_conf, replica=no_binlog_replica))):
            paths[name] = str(tmp_path / ("%s.json" % name))
            with open(paths[name], "w", encoding="utf-8") as handle:
                json.dump(conf, handle)
        capture = Program(lib, "capture", paths["capture"], str(tmp_path / "capture.log"))
        fanin = Program(lib, "consumer", paths["fanin"], str(tmp_path / "fanin.log"))
        writers = [Writer(source, device) for device in DEVICES]

        # Refused credentials: a clear error, exit 2, nothing declared, published or applied.
        for name, module in (("capture-bad", "capture"), ("fanin-bad", "consumer")):
            result = Program(lib, module, paths[name], str(tmp_path / "bad.log")).run()
            assert result.returncode == 2, result.stdout + result.stderr
            assert "refused the credentials of %s" % ("capture" if module == "capture" else "fanin") in result.stderr
        # A server that cannot feed the stream (here: no binlog) is refused before anything else.
        result = Program(lib, "capture", paths["capture-nobinlog"], str(tmp_path / "bad.log")).run()
        assert result.returncode == 2 and "log_bin is OFF" in result.stderr, result.stderr
        assert not broker_queues(broker)
        with central.connect(database="fanin") as conn, conn.cursor() as cur:
            cur.execute("SHOW TABLES")
            assert [row[0] for row in cur.fetchall()] == ["items"]

        capture.start()
        fanin.start()
        try:
            # Inserts (multi-row transactions), updates, deletes on both devices.
            for writer in writers:
                for base in range(0, 40, 10):
                    writer.tx("INSERT INTO APP.items (id, name, qty) VALUES %s"
                              % ", ".join("(%d, 'n%d', %d)" % (i, i, i) for i in range(base + 1, base + 11)))
                writer.tx("UPDATE APP.items SET name = CONCAT(name, '-u') WHERE id <= 5")
                writer.tx("DELETE FROM APP.items WHERE id IN (7, 8)")
                writer.tx("UPDATE APP.items SET id = 100 WHERE id = 9")  # a key change
            # Capture SIGKILLed mid-stream, restarted: it resumes from its last checkpoint.
            with background_writes(writers):
                time.sleep(0.8)
                capture.kill()
                time.sleep(0.3)
                capture.start()
                time.sleep(0.8)
                # Fan-in SIGKILLed with a batch in flight, restarted: redelivered, duplicates skipped.
                fanin.kill()
                time.sleep(0.3)
                fanin.start()
                time.sleep(0.5)
            # The broker restarted under both: they reconnect; durable queues keep the messages.
            with background_writes(writers):
                time.sleep(0.3)
                broker.restart()
                time.sleep(0.5)
            # One DDL (the central table already has the column), then writes using it.
            writers[0].tx("ALTER TABLE APP.items ADD COLUMN note VARCHAR(32)")
            writers[1].tx("ALTER TABLE APP.items ADD COLUMN note VARCHAR(32)")
            for writer in writers:
                writer.tx("UPDATE APP.items SET note = 'after-ddl' WHERE id BETWEEN 10 AND 14")
            # A table the fan-in does not know, and a poisoned message: dead-lettered.
            writers[0].tx("INSERT INTO APP.other (id, v) VALUES (1, 1)")
            publish_raw(broker, "dev1.app.items", b"{not json", "poison-1")
            # A GTID domain no device record has (a stray writer on the replica): dead-lettered by the capture,
            # never checkpointed, and not read again after the restarts below (asked from its last transaction).
            # (The capture is streaming first: one written while it reconnects, after the broker restart
            # above, is history at its connect and is not read: start_position.)
            writers[0].tx("UPDATE APP.items SET qty = qty + 1 WHERE id = 3")
            wait_for(lambda: writers[0].gtids[-1] in checkpoint_text(capture_conf), timeout=30,
                     what="the capture streaming again")
            stray = Writer(source, {"id": "stray", "gtid_domain_id": 13, "server_id": 13, "schema_prefix": "dev1_"})
            stray.tx("INSERT INTO APP.other (id, v) VALUES (2, 2)")
            writers[0].tx("UPDATE APP.items SET qty = qty + 1 WHERE id = 1")
            wait_for(lambda: writers[0].gtids[-1] in checkpoint_text(capture_conf), timeout=20,
                     what="dev1's transaction after the stray one checkpointed")
            assert '"13-' not in checkpoint_text(capture_conf) and ",13-" not in checkpoint_text(capture_conf)

            # A device joins this replica while the capture does not list it yet (channel mode: the
            # replication play starts its channel before the change-stream play rewrites the capture's
            # config and restarts it). Its first transactions must reach the stream once it is listed.
            joiner = Writer(source, JOINER)
            joiner.tx("ALTER TABLE APP.items ADD COLUMN note VARCHAR(32)")
            for base in (0, 10):
                joiner.tx("INSERT INTO APP.items (id, name, qty) VALUES %s"
                          % ", ".join("(%d, 'j%d', %d)" % (i, i, i) for i in range(base + 1, base + 11)))
            joiner.tx("UPDATE APP.items SET note = 'joined' WHERE id <= 3")
            joiner.tx("DELETE FROM APP.items WHERE id = 4")
            writers[0].tx("UPDATE APP.items SET qty = qty + 1 WHERE id = 2")
            wait_for(lambda: writers[0].gtids[-1] in checkpoint_text(capture_conf), timeout=20,
                     what="the capture past dev3's first transactions")
            assert "14-14-" not in checkpoint_text(capture_conf)  # read past, not checkpointed
            assert capture.stop() == 0, capture.log()
            with open(paths["capture"], "w", encoding="utf-8") as handle:
                json.dump(dict(capture_conf, devices=ALL_DEVICES), handle)
            capture.start()
            writers.append(joiner)
            joiner.tx("INSERT INTO APP.items (id, name, qty) VALUES (30, 'listed', 30)")

            # dev2's GTID history restarts on the replica while the capture is down (seq 900, then 5:
            # as when a re-imaged device's replica is re-seeded). The restarted capture must not be
            # refused by the replica (error 1236) for every device. dev2's new transactions up to 900
            # are not streamed (docs/changestream.md, Limits): from here on only dev1 and dev3 write.
            restarted = Writer(source, DEVICES[1])
            restarted.tx("SET SESSION gtid_seq_no = 900", "INSERT INTO APP.other (id, v) VALUES (3, 3)")
            wait_for(lambda: "12-12-900" in checkpoint_text(capture_conf), timeout=20, what="12-12-900 checkpointed")
            capture.kill()
            restarted.tx("SET SESSION gtid_seq_no = 5", "INSERT INTO APP.other (id, v) VALUES (4, 4)")
            capture.start()
            for writer in writers:
                if writer.device["id"] != "dev2":
                    writer.tx("INSERT INTO APP.items (id, name, qty) VALUES (500, 'after-restart', 1)")

            want = union_checksum(source)
            wait_for(lambda: central_checksum(central) == want, timeout=40, what="the fan-in to equal the devices")
        finally:
            assert capture.stop() == 0, capture.log()
            assert fanin.stop() == 0, fanin.log()

        dead = drain(broker, "edgefleet.dead")
        reasons = sorted((p.message_id, p.headers["x-edgefleet-error"]) for p, unused in dead)
        assert [r[0] for r in reasons].count("poison-1") == 1, reasons
        assert "poisoned message: not JSON" in dict(reasons)["poison-1"]
        other = [r for r in reasons if "app.other is not fanned in" in r[1]]
        assert len(other) == 2, reasons  # dev1's, and dev2's 12-12-900 (its 12-12-5 is covered: the limit)
        stray = [r for r in reasons if "GTID domain 13 is no device" in r[1]]
        assert len(stray) == 1, reasons  # once, not again at each of the two restarts after it
        assert len(reasons) == 4, reasons
        log = capture.log()
        assert "GTID domain 12 (dev2): history restarted" in log, log
        assert "GTID domain 13: no device of this replica: asked from 13-13-1" in log, log
        duplicates = check_tap(drain(broker, TAP), writers, source)
        assert "resuming from" in capture.log() or "reading the replica binlog" in capture.log()
        print("changestream live: %d transactions, %d duplicate deliveries on the tap, %.1f s"
              % (sum(len(w.gtids) for w in writers), duplicates, time.monotonic() - started))
