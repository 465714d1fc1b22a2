# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change stream on the lab through real channels and faults (issue 20; docs/changestream.md,
"Lab test"). `make test-changestream`; marked `lab` and `slow`, so `make test` does not run it.

Holds the lab lock for the module. The fixture switches the change stream on for cloud01
(tests/lab/changestream_support.py: the Molecule scenario's converge playbook with an inventory of
its own, a fan-in table named for this run, a read-only consumer of the stream queue
`edgefleet.events`), and afterwards puts the lab back with the scenario's cleanup playbook and
checks that `site.yml` then changes nothing.

device01 (instance mode) and device02 (channel mode, the shared instance multi-01) each get a writer
thread (PyMySQL through an SSH forward to the device's MariaDB socket: numbered rows, inserts,
updates, multi-row updates and deletes, a model of the table the writer keeps, so the final state
is known) and one DDL each (ALTER TABLE ... ADD COLUMN, in the default database `app`: a
channel-mode replica rewrites only the default database). While they write:

1. the capture of multi-01 is SIGKILLed (`systemctl kill -s KILL`; systemd restarts it);
2. the broker is restarted (`systemctl restart rabbitmq-server`);
3. the fan-in is SIGKILLed while it holds delivered, unacknowledged messages (a burst of 1,500-row
   transactions on both devices keeps it busy; the kill waits until the queue shows unacked ones);
4. device01's tunnel is stopped, the device keeps writing, the tunnel is started again.

After each fault the test measures how long the fan-in took to apply everything the devices had
committed when the fault cleared. Then, writers stopped and caught up, it asserts: every device's
table is the writer's model; the central table equals the union of the devices' tables (ordered
rows and their sha256); the events of the table, consumed from `edgefleet.events` with the
read-only consumer (TLS verified against the role's CA), are per device in commit order, every
committed transaction has all of its row events (0 lost), duplicates are only the same event id
with the same content, replaying the events gives each device's table (so every before image is
the row as it was and every after image the row as it became), a sample of images equals what the
writer wrote, each DDL arrived once as a schema-change event; the fan-in dead-lettered nothing.

Why a consumer user of its own: it reads the stream as a downstream system would, with
read-only permissions on the one queue and TLS, so the test also shows that a least-privileged
consumer gets every event; the capture's login could publish and configure, which proves nothing
about what a consumer can do.

    scripts/lab-lock python -m pytest -s -m "lab and slow" tests/lab/test_changestream_lab.py
"""
import collections
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time

import pymysql
import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.fanin import APPLIED_TABLE
from tests.faults import harness
from tests.lab.changestream_support import CLOUD, change_stream_on
from tests.runner import lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CENTRAL_SOCKET = "/run/edgefleet-changestream-central/mysqld.sock"
CENTRAL_DB = "edgefleet_fanin"
VENV_PYTHON = "/usr/local/lib/edgefleet-changestream/venv/bin/python"
CA = "/etc/rabbitmq/tls/ca.crt"
CONSUMER = "edgefleet-labtest"
STREAM_QUEUE = "edgefleet.events"
FANIN_UNIT = "edgefleet-changestream-fanin"
CAPTURE_UNIT = "edgefleet-changestream-capture@%s"
DEVICE_COLUMNS = "id INT NOT NULL PRIMARY KEY, name VARCHAR(32) NOT NULL, qty INT NOT NULL"
CENTRAL_COLUMNS = "id INT NOT NULL, name VARCHAR(32) NOT NULL, qty INT NOT NULL, note VARCHAR(32) NULL"
COLUMNS = ("id", "name", "qty", "note")
WRITE_PAUSE = 0.1          # seconds between a writer's transactions
BURST_ROWS = 1500          # rows of the burst transaction (fan-in kill)
BURST_BASE = 100000        # burst rows' ids start above this
OFFLINE_SECONDS = 20
CATCH_UP_TIMEOUT = 240

# Runs on cloud01 with the programs' virtualenv (pika): consume the stream queue as the read-only
# consumer over AMQPS verified against the role's CA, keep the events of the test's table and the
# DDL of `app`, one JSON line each, then a summary line. The password comes on stdin.
CONSUME = r'''
import json, ssl, sys
import pika
user, queue, table, ca = sys.argv[1:5]
password = sys.stdin.readline().strip()
context = ssl.create_default_context(cafile=ca)
params = pika.ConnectionParameters("127.0.0.1", 5671, "edgefleet", pika.PlainCredentials(user, password),
                                   ssl_options=pika.SSLOptions(context, "127.0.0.1"), connection_attempts=3,
                                   retry_delay=2, socket_timeout=10)
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.basic_qos(prefetch_count=2000)
total = kept = 0
for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
    if method is None:
        break
    total += 1
    key = method.routing_key
    if key.endswith(".app." + table) or (key.endswith(".app.__ddl") and table.encode() in body):
        kept += 1
        sys.stdout.write(json.dumps({"id": properties.message_id, "key": key, "event": json.loads(body)}) + "\n")
channel.cancel()
connection.close()
sys.stdout.write(json.dumps({"summary": {"total": total, "kept": kept}}) + "\n")
'''

# Kill the fan-in once the broker shows messages delivered to it and not yet acknowledged (a batch
# in flight); prints the count it saw.
KILL_FANIN_MID_BATCH = r'''
end=$((SECONDS + 120))
while [ $SECONDS -lt $end ]; do
  n=$(rabbitmqctl -q list_queues -p edgefleet name messages_unacknowledged 2>/dev/null \
      | awk '$1 == "edgefleet.fanin" {print $2}')
  case "$n" in ''|*[!0-9]*) n=0 ;; esac
  if [ "$n" -gt 0 ]; then
    systemctl kill -s KILL %s
    echo "killed $n"
    exit 0
  fi
done
echo "never saw unacknowledged messages"
exit 1
''' % FANIN_UNIT


# ------------------------------------------------------------------------------------------------
# Lab access (podman exec through the fault harness: works while a device's tunnel is down)
# ------------------------------------------------------------------------------------------------

def cloud_sh(script, **kwargs):
    return harness.sh(CLOUD, script, **kwargs).stdout


def central(query):
    return harness.sql(CLOUD, query, socket=CENTRAL_SOCKET)


def applied_positions():
    """{device: seq_no of the last event the fan-in applied} (the device's own GTID domain)."""
    return {device: int(seq) for device, seq in central("SELECT device_id, seq_no FROM %s.`%s`"
                                                        % (CENTRAL_DB, APPLIED_TABLE))}


def main_pid(unit):
    out = cloud_sh("systemctl show -p MainPID --value %s; systemctl is-active %s || true" % (unit, unit)).split()
    return int(out[0]), out[1]


def wait_restarted(unit, old_pid, timeout=90):
    """Seconds until systemd runs the unit again with another process."""
    started = time.monotonic()

    def again():
        pid, state = main_pid(unit)
        return state == "active" and pid not in (0, old_pid)
    harness.wait_for(again, timeout, what="%s to run again" % unit)
    return time.monotonic() - started


def fanin_counters(since_epoch):
    """Sum over the fan-in's processes since `since_epoch` of its last 'applied/duplicates/dead' line."""
    out = cloud_sh("journalctl -q -o short -u %s --since @%d --no-pager || true" % (FANIN_UNIT, int(since_epoch)))
    last = {}
    for match in re.finditer(r"\[(\d+)\]: changestream-fanin: applied (\d+), duplicates (\d+), dead-lettered (\d+)",
                             out):
        last[match.group(1)] = tuple(int(x) for x in match.group(2, 3, 4))
    totals = [sum(values[i] for values in last.values()) for i in range(3)]
    dead_lines = [line for line in out.splitlines() if "dead-lettered " in line and ": changestream-fanin: applied" not in line]
    return {"applied": totals[0], "duplicates": totals[1], "dead": totals[2], "processes": len(last),
            "dead_lines": dead_lines[:5]}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mysql_forward(device):
    """127.0.0.1:<port> on the controller -> the device's MariaDB socket, over SSH on the lab network
    (not through the device's tunnel, which fault 4 stops)."""
    address = lab.inventory_cache()["_meta"]["hostvars"][device]["ansible_host"]
    port = free_port()
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        ["ssh", "-F", "/dev/null", "-i", os.path.join(lab.STATE, "id_ed25519"), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + os.path.join(lab.STATE, "known_hosts"),
         "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
         "-N", "-L", "127.0.0.1:%d:/run/mysqld/mysqld.sock" % port, "root@" + address],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def ready():
            if proc.poll() is not None:
                raise AssertionError("ssh forward to %s exited: %s" % (device, proc.stderr.read().decode()))
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=3).close()
                return True
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] in (1045, 1698):  # refused: root by socket authentication
                    raise AssertionError("%s's MariaDB refused root through the SSH forward: %s" % (device, exc))
                return False
        lab.wait_for(ready, timeout=30, interval=0.5, what="the SSH forward to %s's MariaDB" % device)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------
# The devices' application: one writer thread per device
# ------------------------------------------------------------------------------------------------

class Writer(threading.Thread):
    """Numbered transactions on one device, and a model of the table they leave.

    Step i inserts row i; every 3rd step updates row i-2, every 5th deletes row i-4, every 11th
    updates rows i-30..i-20 in one statement. Special transactions (the DDL, a burst, deleting the
    even burst rows) run between steps when asked. Every DML transaction's GTID is kept with the
    number of row changes it made (what the stream must carry)."""

    def __init__(self, device, table, port):
        super().__init__(name="writer-%s" % device, daemon=True)
        self.device = device
        self.table = table
        self.port = port
        self.model = {}
        self.transactions = []      # [(gtid, row changes)] of DML transactions, commit order
        self.ddl_gtid = None
        self.samples = {}           # gtid -> [(op, before, after)] of some transactions
        self.requests = collections.deque()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors = []
        self.step = 0
        self.bursts = 0
        self.conn = None

    # --- what the stream is compared with
    def last(self):
        """(seq_no, gtid) of the last committed DML transaction."""
        with self.lock:
            gtid = self.transactions[-1][0] if self.transactions else None
        return (int(gtid.split("-")[2]) if gtid else 0), gtid

    def count(self):
        with self.lock:
            return len(self.transactions)

    def request(self, kind):
        done = threading.Event()
        self.requests.append((kind, done))
        return done

    # --- the thread
    def run(self):
        try:
            self.conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", database="app",
                                        autocommit=False, connect_timeout=10, read_timeout=60, write_timeout=60)
            while not self.stopping.is_set():
                if self.requests:
                    kind, done = self.requests.popleft()
                    getattr(self, "do_" + kind)()
                    done.set()
                else:
                    self.step += 1
                    self.do_step(self.step)
                time.sleep(WRITE_PAUSE)
        except Exception as exc:  # pylint: disable=broad-except
            self.errors.append("%s: %r" % (self.device, exc))
        finally:
            if self.conn is not None:
                self.conn.close()

    def has_note(self):
        return self.ddl_gtid is not None

    def row(self, ident, name, qty, note=None):
        row = {"id": ident, "name": name, "qty": qty}
        if self.has_note():
            row["note"] = note
        return row

    def commit(self, changes, sample=None):
        self.conn.commit()
        with self.conn.cursor() as cur:
            cur.execute("SELECT @@last_gtid")
            gtid = cur.fetchone()[0]
        with self.lock:
            self.transactions.append((gtid, changes))
            if sample:
                self.samples[gtid] = sample

    def do_step(self, i):
        changes = 0
        sample = []
        with self.conn.cursor() as cur:
            new = self.row(i, "r%d" % i, i, "n%d" % i)
            columns = sorted(new)
            statement = "INSERT INTO `%s` (%s) VALUES (%s)" % (
                self.table, ", ".join(columns), ", ".join(["%s"] * len(columns)))
            cur.execute(statement, [new[c] for c in columns])
            self.model[i] = new
            changes += 1
            if i % 3 == 0 and i - 2 in self.model:
                before = dict(self.model[i - 2])
                cur.execute("UPDATE `%s` SET qty = qty + 100, name = %%s WHERE id = %%s" % self.table,
                            ("u%d" % i, i - 2))
                self.model[i - 2].update(qty=before["qty"] + 100, name="u%d" % i)
                sample.append(("u", before, dict(self.model[i - 2])))
                changes += 1
            if i % 5 == 0 and i - 4 in self.model:
                before = self.model.pop(i - 4)
                cur.execute("DELETE FROM `%s` WHERE id = %%s" % self.table, (i - 4,))
                sample.append(("d", before, None))
                changes += 1
            if i % 11 == 0:
                hit = [k for k in self.model if i - 30 <= k <= i - 20]
                cur.execute("UPDATE `%s` SET qty = qty + 1 WHERE id BETWEEN %%s AND %%s" % self.table, (i - 30, i - 20))
                assert cur.rowcount == len(hit), (self.device, i, cur.rowcount, hit)
                for k in hit:
                    self.model[k]["qty"] += 1
                changes += len(hit)
        self.commit(changes, sample if i % 10 in (0, 3, 6) else None)

    def do_ddl(self):
        with self.conn.cursor() as cur:
            # Unqualified, in the default database app: channel mode rewrites only that.
            cur.execute("ALTER TABLE `%s` ADD COLUMN note VARCHAR(32) NULL" % self.table)
            cur.execute("SELECT @@last_gtid")
            gtid = cur.fetchone()[0]
        self.conn.commit()
        with self.lock:
            self.ddl_gtid = gtid
        for row in self.model.values():
            row["note"] = None

    def do_burst(self):
        self.bursts += 1
        base = BURST_BASE + 10000 * self.bursts
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO `%s` (id, name, qty, note) SELECT %d + seq, CONCAT('b', seq), seq, 'burst' "
                        "FROM seq_1_to_%d" % (self.table, base, BURST_ROWS))
        for k in range(1, BURST_ROWS + 1):
            self.model[base + k] = {"id": base + k, "name": "b%d" % k, "qty": k, "note": "burst"}
        self.commit(BURST_ROWS)

    def do_delete_even_burst(self):
        gone = [k for k in self.model if k > BURST_BASE and k % 2 == 0]
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM `%s` WHERE id > %d AND id %% 2 = 0" % (self.table, BURST_BASE))
            assert cur.rowcount == len(gone), (self.device, cur.rowcount, len(gone))
        for k in gone:
            del self.model[k]
        self.commit(len(gone))

    def stop(self):
        self.stopping.set()
        self.join(timeout=120)
        assert not self.is_alive(), "writer of %s did not stop" % self.device


# ------------------------------------------------------------------------------------------------
# The stream: catch-up, the events queue, the central table
# ------------------------------------------------------------------------------------------------

def wait_caught_up(writers, since=None, timeout=CATCH_UP_TIMEOUT):
    """Seconds (from `since`, default now) until the fan-in applied, for every device, the last
    transaction its writer had committed when called."""
    since = time.monotonic() if since is None else since
    markers = {w.device: w.last()[0] for w in writers}
    deadline = time.monotonic() + timeout
    while True:
        applied = applied_positions()
        if all(applied.get(device, 0) >= seq for device, seq in markers.items()):
            return time.monotonic() - since
        if time.monotonic() > deadline:
            journal = cloud_sh("journalctl -q -u %s -n 20 --no-pager" % FANIN_UNIT)
            raise AssertionError("the fan-in did not catch up within %d s: applied %s, wanted %s; fan-in: %s"
                                 % (timeout, applied, markers, journal))
        time.sleep(0.5)


def read_stream(table, password):
    """Events of the table (and its DDL) consumed from the stream queue by the read-only consumer."""
    harness.sh(CLOUD, "umask 077; cat > /tmp/edgefleet-changestream-labtest.py", stdin=CONSUME)
    out = harness.sh(CLOUD, "%s /tmp/edgefleet-changestream-labtest.py %s %s %s %s; rm -f /tmp/edgefleet-changestream-labtest.py"
                     % (VENV_PYTHON, CONSUMER, STREAM_QUEUE, table, CA), stdin=password + "\n", timeout=600).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines and "summary" in lines[-1], out[-2000:]
    return lines[:-1], lines[-1]["summary"]


def rows_of(container, query, socket_path):
    return [tuple(row) for row in harness.sql(container, query, socket=socket_path)]


def digest(rows):
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def model_rows(model):
    return [tuple("NULL" if model[k].get(c) is None else str(model[k].get(c)) for c in COLUMNS) for k in sorted(model)]


def check_events(messages, writers, device_tables, created):
    """Commit order, 0 lost, duplicates only as the same id and content, images by replay and sample."""
    first = {}
    order = {w.device: [] for w in writers}
    ddl = {w.device: [] for w in writers}
    duplicates = 0
    for message in messages:
        event, message_id = message["event"], message["id"]
        payload = event["payload"]
        source = payload["source"]
        assert message_id == "%s:%d" % (source["gtid"], source["row"]), message
        comparable = dict(payload, ts_ms=None)
        if message_id in first:
            assert first[message_id] == comparable, "event %s delivered twice with other content" % message_id
            duplicates += 1
            continue
        first[message_id] = comparable
        assert source["name"] in order, "an event of an unknown device: %s" % message
        assert source["db"] == "app", message
        if "ddl" in payload:
            ddl[source["name"]].append((message_id, payload))
        order[source["name"]].append((message_id, payload))
    report = {}
    for writer in writers:
        device = writer.device
        events = order[device]
        positions = [tuple(int(x) for x in mid.replace(":", "-").split("-")[2:]) for mid, unused in events]
        assert positions == sorted(positions), "events of %s out of commit order" % device
        # 0 lost: every committed DML transaction with all of its row changes, the DDL once.
        rows_by_gtid = collections.Counter(payload["source"]["gtid"] for unused, payload in events if "ddl" not in payload)
        missing = [(gtid, n, rows_by_gtid.get(gtid, 0)) for gtid, n in writer.transactions if rows_by_gtid.get(gtid, 0) != n]
        assert not missing, "%s: transactions whose row events are missing (gtid, made, in the stream): %s" % (
            device, missing[:10])
        unexpected = set(rows_by_gtid) - set(gtid for gtid, unused in writer.transactions)
        assert not unexpected, "%s: events of transactions the writer did not make: %s" % (device, sorted(unexpected)[:5])
        # The table's two DDL (the fixture's CREATE, the writer's ALTER), each once, in order.
        assert [payload["source"]["gtid"] for unused, payload in ddl[device]] == [created[device], writer.ddl_gtid], \
            (device, created[device], writer.ddl_gtid, ddl[device])
        assert "ADD COLUMN note" in ddl[device][1][1]["ddl"], ddl[device]
        # Images: replaying the events on an empty table gives the device's table; every before
        # image is the row as the previous events left it.
        table = {}
        for mid, payload in events:
            if "ddl" in payload:
                continue
            assert payload["source"]["table"] == writer.table, payload
            if payload["op"] in ("u", "d"):
                before = payload["before"]
                held = table.get(before["id"])
                assert held is not None and dict({"note": None}, **held) == dict({"note": None}, **before), \
                    "%s: wrong before image in %s: %s, the row was %s" % (device, mid, before, held)
                del table[before["id"]]
            if payload["op"] in ("c", "u"):
                table[payload["after"]["id"]] = payload["after"]
        replayed = [tuple("NULL" if table[k].get(c) is None else str(table[k].get(c)) for c in COLUMNS)
                    for k in sorted(table)]
        assert replayed == device_tables[device], "%s: replaying its events does not give its table" % device
        # A sample against what the writer wrote (values, not only consistency).
        checked = 0
        for gtid, changes in writer.samples.items():
            got = [(p["op"], p["before"], p["after"]) for unused, p in events if p["source"]["gtid"] == gtid and "ddl" not in p]
            for op, before, after in changes:
                want = (op, dict({"note": None}, **before), after and dict({"note": None}, **after))
                assert any((g[0], dict({"note": None}, **g[1]), g[2] and dict({"note": None}, **g[2])) == want
                           for g in got if g[1] is not None), "%s %s: no event %s in %s" % (device, gtid, want, got)
                checked += 1
        assert checked >= 10, "%s: only %d sampled images" % (device, checked)
        report[device] = {"events": len(events), "transactions": len(writer.transactions), "images_sampled": checked}
    return duplicates, report


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """The changestream role on cloud01 (a fan-in table for this run), the lab put back afterwards."""
    with lab.lab_lock():
        devices = harness.fleet()
        modes = sorted(d.mode for d in devices)
        assert len(devices) == 2 and modes == ["channel", "instance"], \
            "needs the default lab (2 devices, one per replica mode): %s" % [(d.name, d.mode) for d in devices]
        problems = harness.wait_healthy(devices, timeout=90)
        assert not problems, "the lab is not replicating before the test: %s" % problems
        work = tmp_path_factory.mktemp("changestream-lab")
        os.chmod(str(work), 0o700)
        table = "cs_lab_%s" % secrets.token_hex(3)
        consumer_password = secrets.token_hex(16)
        figures = {}
        tables = [{"source": "app." + table, "table": table, "columns": CENTRAL_COLUMNS, "primary_key": ["id"]}]
        # read-only on the stream queue (no queue of its own)
        consumers = [{"name": CONSUMER, "password": consumer_password}]
        with change_stream_on(work, tables, consumers, figures):
            try:
                created = {}
                for device in devices:
                    (gtid,), = harness.sql(device.name, "CREATE DATABASE IF NOT EXISTS app; USE app; CREATE TABLE `%s` (%s); "
                                           "SELECT @@last_gtid"
                                           % (table, DEVICE_COLUMNS))
                    created[device.name] = gtid
                yield {"devices": devices, "table": table, "consumer_password": consumer_password,
                       "figures": figures, "created": created}
            finally:
                harness.restore_lab(devices, sorted({d.cloud for d in devices}))
                for device in devices:
                    harness.sql(device.name, "USE app; DROP TABLE IF EXISTS `%s`" % table, check=False)
                    with contextlib.suppress(harness.LabError):
                        harness.catch_up(device, timeout=120)


@pytest.fixture(scope="module")
def run(stream):  # pylint: disable=redefined-outer-name
    """Both devices write while the four faults happen; then writers stop and the stream catches up."""
    devices = {d.mode: d for d in stream["devices"]}
    instance_device, channel_device = devices["instance"], devices["channel"]
    table = stream["table"]
    faults = []
    began = time.time()
    with contextlib.ExitStack() as stack:
        writers = []
        for device in (instance_device, channel_device):
            port = stack.enter_context(mysql_forward(device.name))
            writers.append(Writer(device.name, table, port))
        for writer in writers:
            writer.start()

        def check_writers():
            errors = [e for w in writers for e in w.errors]
            assert not errors, errors

        def do_all(kind):
            for done in [w.request(kind) for w in writers]:
                assert done.wait(120), "a writer did not do %s" % kind
            check_writers()

        try:
            lab.wait_for(lambda: all(w.count() >= 30 for w in writers), timeout=120, interval=1,
                         what="30 transactions per device")
            check_writers()
            faults.append({"fault": "stream start (capture reads the replicas' binlogs from the oldest)",
                           "catch_up_s": wait_caught_up(writers)})

            # 1. The channel-mode instance's capture SIGKILLed: systemd restarts it (RestartSec 5).
            unit = CAPTURE_UNIT % channel_device.instance
            pid, unused = main_pid(unit)
            cloud_sh("systemctl kill -s KILL %s" % unit)
            down = wait_restarted(unit, pid)
            faults.append({"fault": "capture %s SIGKILLed" % channel_device.instance, "down_s": down,
                           "catch_up_s": wait_caught_up(writers)})

            # One DDL on each device, then writes that use the new column.
            do_all("ddl")

            # 2. The broker restarted.
            started = time.monotonic()
            cloud_sh("systemctl restart rabbitmq-server", timeout=300)
            faults.append({"fault": "broker restarted", "down_s": time.monotonic() - started,
                           "catch_up_s": wait_caught_up(writers)})

            # 3. The fan-in SIGKILLed with a batch in flight: a burst keeps it busy.
            pid, unused = main_pid(FANIN_UNIT)
            killer = {}
            thread = threading.Thread(target=lambda: killer.update(
                out=harness.sh(CLOUD, KILL_FANIN_MID_BATCH, check=False, timeout=200).stdout))
            thread.start()
            for unused in range(3):  # another burst if the kill missed the first one's batches
                do_all("burst")
                thread.join(timeout=20)
                if not thread.is_alive():
                    break
            thread.join(timeout=200)
            assert killer.get("out", "").startswith("killed"), "the fan-in was not killed mid-batch: %s" % killer
            unacked = int(killer["out"].split()[1])
            down = wait_restarted(FANIN_UNIT, pid)
            faults.append({"fault": "fan-in SIGKILLed with %d messages unacknowledged" % unacked, "down_s": down,
                           "catch_up_s": wait_caught_up(writers)})

            # 4. device01 (instance mode) offline: its tunnel stopped, it keeps writing, back.
            offline = instance_device
            writer = writers[0]
            harness.sh(offline.name, "systemctl stop edgefleet-tunnel")
            at_stop, unused = writer.last()
            count_at_stop = writer.count()
            time.sleep(OFFLINE_SECONDS)
            written_offline = writer.count() - count_at_stop
            held = applied_positions().get(offline.name, 0)
            assert written_offline > 0, "no writes while %s was offline" % offline.name
            assert held <= at_stop, "%s's writes reached the fan-in while its tunnel was down (%d > %d)" % (
                offline.name, held, at_stop)
            harness.sh(offline.name, "systemctl start edgefleet-tunnel")
            faults.append({"fault": "%s offline %d s (%d transactions written meanwhile), tunnel back"
                           % (offline.name, OFFLINE_SECONDS, written_offline), "down_s": float(OFFLINE_SECONDS),
                           "catch_up_s": wait_caught_up(writers)})

            # The end: the even burst rows deleted, a few more steps, writers stopped, caught up.
            do_all("delete_even_burst")
            time.sleep(2)
        finally:
            for writer in writers:
                writer.stop()
        check_writers()
    final_catch_up = wait_caught_up(writers)
    return {"writers": writers, "faults": faults, "final_catch_up_s": final_catch_up, "began": began,
            "devices": stream["devices"], "table": table, "figures": stream["figures"],
            "consumer_password": stream["consumer_password"], "created": stream["created"]}


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def test_devices_hold_what_their_writers_wrote(run):  # pylint: disable=redefined-outer-name
    query = "SELECT id, name, qty, IFNULL(note, 'NULL') FROM app.`%s` ORDER BY id" % run["table"]
    for writer in run["writers"]:
        assert rows_of(writer.device, query, "/run/mysqld/mysqld.sock") == model_rows(writer.model), writer.device


def test_central_table_equals_the_union_of_the_devices(run):  # pylint: disable=redefined-outer-name
    table = run["table"]
    union = []
    for writer in sorted(run["writers"], key=lambda w: w.device):
        union += [(writer.device,) + row for row in rows_of(
            writer.device, "SELECT id, name, qty, IFNULL(note, 'NULL') FROM app.`%s` ORDER BY id" % table,
            "/run/mysqld/mysqld.sock")]
    got = rows_of(CLOUD, "SELECT device_id, id, name, qty, IFNULL(note, 'NULL') FROM %s.`%s` ORDER BY device_id, id"
                  % (CENTRAL_DB, table), CENTRAL_SOCKET)
    assert len(got) == len(union), "central %d rows, devices %d" % (len(got), len(union))
    for mine, theirs in zip(got, union):
        assert mine == theirs, "central %s, device %s" % (mine, theirs)
    assert digest(got) == digest(union)
    run["figures"]["rows"] = len(union)
    run["figures"]["rows_sha256"] = digest(union)[:16]


def test_events_in_commit_order_none_lost_duplicates_same_id(run):  # pylint: disable=redefined-outer-name
    table = run["table"]
    device_tables = {w.device: rows_of(w.device, "SELECT id, name, qty, IFNULL(note, 'NULL') FROM app.`%s` ORDER BY id"
                                       % table, "/run/mysqld/mysqld.sock") for w in run["writers"]}
    messages, summary = read_stream(table, run["consumer_password"])
    duplicates, report = check_events(messages, run["writers"], device_tables, run["created"])
    distinct = len(set(m["id"] for m in messages))
    assert len(messages) - distinct == duplicates
    fanin = fanin_counters(run["began"] - 5)
    assert fanin["dead"] == 0 and not fanin["dead_lines"], "the fan-in dead-lettered events: %s" % fanin
    lines = ["", "changestream lab test (%s, %s):" % (", ".join("%s %s" % (d.name, d.mode) for d in run["devices"]),
                                                      table),
             "  converge %.0f s; stream queue: %d messages read, %d of the table (%d distinct event ids, %d duplicate "
             "deliveries, all the same id and content); fan-in: %d applied, %d skipped as duplicates, %d dead-lettered, "
             "%d processes" % (run["figures"]["converge_s"], summary["total"], len(messages), distinct, duplicates,
                               fanin["applied"], fanin["duplicates"], fanin["dead"], fanin["processes"])]
    for device, item in sorted(report.items()):
        lines.append("  %s: %d transactions, %d events in commit order, 0 lost, %d images checked against the writer"
                     % (device, item["transactions"], item["events"], item["images_sampled"]))
    for fault in run["faults"]:
        lines.append("  %-80s %s caught up %.1f s after it cleared" % (
            fault["fault"], "down %.1f s," % fault["down_s"] if "down_s" in fault else "", fault["catch_up_s"]))
    lines.append("  writers stopped: caught up %.1f s later; central table %s rows, equal to the devices' union"
                 % (run["final_catch_up_s"], run["figures"].get("rows", "?")))
    print("\n".join(lines))
