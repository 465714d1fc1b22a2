# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replication role seeds devices onboarded with data (roles/replication/tasks/seed.yml),
against real MariaDB servers on loopback (no lab needed).

A "device" server holds rows written while its binlog was off, then gets binlog and GTID (as
device_mysql does), a second device has no schema yet, a third is unreachable. The role on
localhost (instance sockets linked into a private socket dir) must: seed the first (rows and
CHECKSUM TABLE equal, then replicate later writes), create the second's channel without a seed,
create no channel for the third; check mode reports the seed and changes nothing; a second run
changes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.live.support import ROOT, VENV_BIN, wait_for
from tests.support.mariadb import MariaDBServer, free_port, mariadb_server

pytestmark = pytest.mark.mariadb

PASSWORD = "Seed-repl-pw"
CHECK_PASSWORD = "Seed-check-pw"

PLAYBOOK = """---
- hosts: localhost
  gather_facts: false
  roles:
    - role: edgefleet.mysql_backup.replication
"""


def play(workdir, extravars, *extra):
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_PYTHON_INTERPRETER=os.path.join(VENV_BIN, "python"),
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_LOCALHOST_WARNING="false")
    path = os.path.join(workdir, "play.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(PLAYBOOK)
    with open(os.path.join(workdir, "vars.json"), "w", encoding="utf-8") as handle:
        json.dump(extravars, handle)
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", "@" + os.path.join(workdir, "vars.json"), path] + list(extra),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert PASSWORD not in out and CHECK_PASSWORD not in out, "a password leaked"
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost ")][-1]
    return out, int(recap.split("changed=")[1].split()[0])


def device_record(name, port):
    return {"id": name, "channel_name": name, "replica_instance": "r1", "tunnel_mysql_port": port,
            "replica_mode": "instance", "schema_prefix": ""}


def checksum(server, table):
    return server.execute("CHECKSUM TABLE %s" % table)[0][1]


def test_role_seeds_a_device_onboarded_with_data():
    workdir = tempfile.mkdtemp(prefix="edgefleet-seed-")
    device = MariaDBServer(os.path.join(workdir, "device"), free_port(), 501, [])
    os.makedirs(device.workdir)
    try:
        # written long before onboarding: binlog off, so in no binlog
        device.start()
        device.execute("CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(32))",
                       "INSERT INTO app.t SELECT seq, CONCAT('old-', seq) FROM mysql.seq_1_to_300",
                       "CREATE TABLE app.u (k VARCHAR(8) PRIMARY KEY) ENGINE=InnoDB",
                       "INSERT INTO app.u VALUES ('a'), ('b')")
        device.stop()
        # onboarding (device_mysql): binlog, GTID domain, replication and check accounts
        device.extra_options += ["--log-bin=binlog", "--binlog-format=ROW", "--gtid-domain-id=501"]
        device.start()
        device.execute("SET sql_log_bin=0",
                       "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
                       "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
                       "CREATE USER edgefleet_check@'127.0.0.1' IDENTIFIED BY '%s'" % CHECK_PASSWORD,
                       "GRANT SELECT, SHOW VIEW, TRIGGER ON app.* TO edgefleet_check@'127.0.0.1'")
        with mariadb_server(server_id=502) as empty, mariadb_server(server_id=900) as replica:
            empty.execute("SET sql_log_bin=0",
                          "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
                          "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'",
                          "CREATE USER edgefleet_check@'127.0.0.1' IDENTIFIED BY '%s'" % CHECK_PASSWORD,
                          "GRANT SELECT, SHOW VIEW, TRIGGER ON app.* TO edgefleet_check@'127.0.0.1'")
            # root on the replica by socket, as on a cloud host
            replica.execute("ALTER USER root@localhost IDENTIFIED VIA unix_socket")
            sockets = os.path.join(workdir, "sockets")
            os.makedirs(sockets)
            os.symlink(replica.socket, os.path.join(sockets, "edgefleet-r1.sock"))
            extravars = {
                "replication_instances": [{"name": "r1"}],
                "replication_devices": [device_record("dev1", device.port), device_record("dev2", empty.port),
                                        device_record("dev3", free_port())],
                "replication_socket_dir": sockets,
                "replication_source_user": "repl",
                "replication_source_password": PASSWORD,
                "replication_seed_check_password": CHECK_PASSWORD,
                "replication_seed_work_dir": os.path.join(workdir, "seed"),
                "replication_seed_probe_timeout": 2,
            }

            def replica_sql(*statements):
                out = subprocess.run(["mariadb", "--socket=" + replica.socket, "--user=root", "-N", "-B",
                                      "-e", ";".join(statements)], capture_output=True, text=True, check=True)
                return out.stdout

            out, changed = play(workdir, extravars, "--check")
            assert "Would seed dev1" in out, out
            assert "dev3" in out and "Would seed dev3" not in out and "Would seed dev2" not in out
            assert replica_sql("SHOW ALL SLAVES STATUS") == ""
            assert "app" not in replica_sql("SHOW DATABASES").split()

            out, changed = play(workdir, extravars)
            assert changed > 0
            assert "Seeding dev1" in out and "Seeding dev2" not in out, out
            channels = sorted(line.split("\t")[0] for line in replica_sql("SHOW ALL SLAVES STATUS").splitlines())
            assert channels == ["dev1", "dev2"], channels
            device.execute("INSERT INTO app.t SELECT seq, CONCAT('new-', seq) FROM mysql.seq_301_to_400",
                           "UPDATE app.u SET k = 'c' WHERE k = 'a'")
            pos = device.execute("SELECT @@gtid_binlog_pos")[0][0]
            wait_for(lambda: replica_sql("SELECT MASTER_GTID_WAIT('%s', 1)" % pos).strip() == "0",
                     timeout=60, what="the replica to reach %s" % pos)
            for table in ("app.t", "app.u"):
                row = replica_sql("CHECKSUM TABLE %s" % table).split()
                assert row[1] == str(checksum(device, table)), table
            assert replica_sql("SELECT COUNT(*) FROM app.t").strip() == "400"

            out, changed = play(workdir, extravars)
            assert changed == 0, out
            assert "Seeding" not in out
    finally:
        device.stop()
        shutil.rmtree(workdir, ignore_errors=True)
