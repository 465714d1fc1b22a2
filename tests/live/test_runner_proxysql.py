# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxysql role under ansible-runner against the stand-in admin interface
(molecule/proxysql/fake_admin.py: SQLite with ProxySQL 2.x admin tables behind the MySQL
protocol). A fleet of 40 channel-mode devices on two cloud hosts is allocated with the real
allocation module and read through the real fleet inventory plugin.

Checks: the first run writes every row in one connection with one LOAD and one SAVE per table;
a second run only reads; check mode reports a pending change and writes nothing; moving a
device (allocation move) rewrites only what changed. Not a live ProxySQL: see docs/proxysql.md.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.runner.support import ROOT, Job
from tests.support.mariadb import free_port

FAKE = os.path.join(ROOT, "molecule", "proxysql", "fake_admin.py")
PLAYBOOK = os.path.join("tests", "runner", "proxysql.yml")


@pytest.fixture
def endpoint(tmp_path):
    port = free_port()
    state = tmp_path / "fake"
    proc = subprocess.Popen([sys.executable, FAKE, "--dir", str(state), "--port", str(port), "--password", "pw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    inv = tmp_path / "inventory"
    inv.mkdir()
    lines = ["devices:"] + ["  - " + json.dumps({"id": "shop%02d" % i, "address": "192.0.2.%d" % i})
                            for i in range(1, 41)]
    lines += ["cloud_hosts:", '  - {"name": "pcloud1", "address": "10.0.0.10"}',
              '  - {"name": "pcloud2", "address": "10.0.0.11"}']
    (inv / "registry.yml").write_text("\n".join(lines) + "\n")
    (inv / "shops.fleet.yml").write_text("plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: registry.yml}\n"
                                         "reach: address\nallocation: {replica_mode: channel, channels_per_instance: 8}\n")
    (inv / "hosts.yml").write_text("proxysql:\n  hosts:\n    endpoint:\n      ansible_connection: local\n"
                                   "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yml").write_text(
        "edgefleet_fleet_config: %s\nproxysql_admin_port: %d\nproxysql_admin_password: pw\n"
        "edgefleet_databases: [app]\n" % (inv / "shops.fleet.yml", port))
    alloc = Job("playbooks/allocate.yml", str(inv)).run()
    assert alloc.status == "successful", alloc.describe()
    alloc.cleanup()
    yield inv, state
    proc.terminate()
    proc.wait(10)


def history(state):
    db = sqlite3.connect(str(state / "main.db"))
    return db.execute("SELECT conn, statement FROM history ORDER BY id").fetchall()


def role(inv, *cmdline, **extravars):
    job = Job(PLAYBOOK, str(inv), extravars=extravars, cmdline=" ".join(cmdline) or None).run()
    try:
        assert job.status == "successful", job.describe()
        return job.stats()
    finally:
        job.cleanup()


def writes(rows, conn=None):
    return [s for c, s in rows if (conn is None or c == conn) and not s.upper().startswith(("SELECT", "SET"))]


def test_role_applies_in_one_batch_and_converges(endpoint):
    inv, state = endpoint
    stats = role(inv)
    assert stats["changed"].get("endpoint") == 1
    first = history(state)
    written = writes(first)
    assert len({c for c, s in first if s in written}) == 1, "writes spread over several connections"
    assert [s for s in written if s.startswith(("LOAD", "SAVE"))] == [
        "LOAD MYSQL SERVERS TO RUNTIME", "SAVE MYSQL SERVERS TO DISK",
        "LOAD MYSQL QUERY RULES TO RUNTIME", "SAVE MYSQL QUERY RULES TO DISK"]
    db = sqlite3.connect(str(state / "main.db"))
    assert db.execute("SELECT COUNT(*) FROM runtime_mysql_servers").fetchone()[0] == 6  # 40 devices / 8 per instance
    assert db.execute("SELECT COUNT(*) FROM runtime_mysql_query_rules").fetchone()[0] == 40
    disk = sqlite3.connect(str(state / "disk.db"))
    assert disk.execute("SELECT COUNT(*) FROM mysql_query_rules").fetchone()[0] == 40

    again = role(inv)
    assert not again.get("changed", {}).get("endpoint")
    assert writes(history(state)[len(first):]) == [], "the second run wrote to the admin interface"


def test_check_mode_and_a_moved_device(endpoint):
    inv, state = endpoint
    role(inv)
    before = len(history(state))
    move = Job(os.path.join("tests", "runner", "move_one.yml"), str(inv), extravars={"move_device": "shop01"}).run()
    assert move.status == "successful", move.describe()
    move.cleanup()
    checked = role(inv, "--check")
    assert checked["changed"].get("endpoint") == 1, "check mode did not report the pending change"
    assert writes(history(state)[before:]) == [], "check mode wrote to the admin interface"
    role(inv)
    after = writes(history(state)[before:])
    loads = [s for s in after if s.startswith(("LOAD", "SAVE"))]
    db = sqlite3.connect(str(state / "main.db"))
    hostgroup = db.execute("SELECT destination_hostgroup FROM mysql_query_rules WHERE schemaname = 'shop01_app'"
                           ).fetchone()[0]
    server = db.execute("SELECT comment FROM mysql_servers WHERE hostgroup_id = ?", (hostgroup,)).fetchone()[0]
    with open(inv / "registry.alloc.yml", encoding="utf-8") as handle:
        rec = json.load(handle)["allocations"]["shop01"]
    assert server == "edgefleet:%s:%s" % (rec["cloud_host"], rec["replica_instance"])
    assert "LOAD MYSQL QUERY RULES TO RUNTIME" in loads and loads.count("LOAD MYSQL QUERY RULES TO RUNTIME") == 1
