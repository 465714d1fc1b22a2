#!/usr/bin/env python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application of a lab device during the fault suite (runs ON the device).

    writer.py RUN            (systemd: edgefleet-fault-writer@RUN.service)

Every tick (WRITER_RATE ticks per second, default 10) one transaction inserts row number `seq`
of this run into app.fault_writes and updates one earlier row of the run. Sequence numbers make
loss and duplicates countable: the writer appends to /var/lib/edgefleet-faults/RUN.log a line

    I <seq> <epoch>      insert acknowledged by COMMIT (the update in the same transaction too)
    U <seq> <epoch>      which earlier row that transaction updated
    F <epoch> <error>    a failed attempt (server down, restarting, ...): retried

An attempt whose outcome is unknown (the connection broke during COMMIT) is resolved on the next
connection by looking the sequence number up, so the writer itself never causes a duplicate.
After a restart (device reboot) it resumes after the highest sequence number it knows of.
Stops cleanly on SIGTERM. Standard library + PyMySQL (installed by the device_mysql role).
"""
import os
import random
import signal
import sys
import time

import pymysql

SOCKET = os.environ.get("WRITER_SOCKET", "/run/mysqld/mysqld.sock")
RATE = float(os.environ.get("WRITER_RATE", "10"))
LOG_DIR = os.environ.get("WRITER_LOG_DIR", "/var/lib/edgefleet-faults")

STOP = False


def on_term(*_):
    global STOP  # pylint: disable=global-statement
    STOP = True


def connect():
    return pymysql.connect(unix_socket=SOCKET, user="root", database="app", autocommit=False,
                           connect_timeout=3, read_timeout=10, write_timeout=10)


def known_state(log_path):
    acked, last = [], 0
    try:
        with open(log_path, encoding="ascii") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "I":
                    acked.append(int(parts[1]))
                    last = max(last, int(parts[1]))
    except FileNotFoundError:
        pass
    return acked, last


def main(run):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.makedirs(LOG_DIR, exist_ok=True)
    log_path = os.path.join(LOG_DIR, run + ".log")
    acked, last = known_state(log_path)
    log = open(log_path, "a", encoding="ascii", buffering=1)  # pylint: disable=consider-using-with
    conn = None
    seq = last + 1
    pending = None  # seq whose COMMIT outcome is unknown
    resumed = True  # a restart may have committed rows the log does not know of
    period = 1.0 / RATE
    next_tick = time.monotonic()
    while not STOP:
        try:
            if conn is None:
                conn = connect()
                with conn.cursor() as cur:
                    if resumed:
                        cur.execute("SELECT COALESCE(MAX(seq), 0) FROM fault_writes WHERE run = %s", (run,))
                        highest = int(cur.fetchone()[0])
                        for lost_ack in range(last + 1, highest + 1):
                            # committed before a crash of the writer, never logged: ack now
                            log.write("I %d %.6f recovered\n" % (lost_ack, time.time()))
                            acked.append(lost_ack)
                        seq = max(seq, highest + 1)
                        resumed = False
                    if pending is not None:
                        cur.execute("SELECT COUNT(*) FROM fault_writes WHERE run = %s AND seq = %s",
                                    (run, pending))
                        if int(cur.fetchone()[0]):
                            log.write("I %d %.6f resolved\n" % (pending, time.time()))
                            acked.append(pending)
                            seq = pending + 1
                        pending = None
                conn.commit()
            target = random.choice(acked[-500:]) if acked else None
            payload = "%040x" % random.getrandbits(160)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO fault_writes (run, seq, payload) VALUES (%s, %s, %s)",
                            (run, seq, payload))
                if target is not None:
                    cur.execute("UPDATE fault_writes SET updates = updates + 1, payload = %s "
                                "WHERE run = %s AND seq = %s", (payload[::-1], run, target))
            pending = seq
            conn.commit()
            pending = None
            now = time.time()
            log.write("I %d %.6f\n" % (seq, now))
            if target is not None:
                log.write("U %d %.6f\n" % (target, now))
            acked.append(seq)
            seq += 1
        except (pymysql.err.MySQLError, OSError) as exc:
            log.write("F %.6f %s\n" % (time.time(), str(exc).replace("\n", " ")[:200]))
            try:
                if conn is not None:
                    conn.close()
            except Exception:  # pylint: disable=broad-except
                pass
            conn = None
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()  # steady rate: never burst to catch up
    if conn is not None:
        conn.close()
    log.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
