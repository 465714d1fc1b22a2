"""proxysql scenario: what reached the stand-in admin interface (its SQLite files)."""
import json
import os
import sqlite3

FAKE = os.environ.get("EDGEFLEET_FAKE_PROXYSQL_DIR") or os.path.join(
    os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "fake-proxysql")
BACKENDS = {"pcloud1": "10.0.0.10", "pcloud2": "10.0.0.11"}
DATABASES = ["app", "audit"]


def db(name="main.db"):
    return sqlite3.connect(os.path.join(FAKE, name))


def allocation():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory", "proxysql-registry.alloc.yml")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def expected_servers():
    alloc = allocation()
    out = set()
    for rec in alloc["allocations"].values():
        if rec["replica_mode"] == "instance":
            out.add((1000 + rec["replica_server_id"] - 2000000000, BACKENDS[rec["cloud_host"]], rec["replica_port"]))
    for inst in alloc["instances"]:
        out.add((1000 + inst["server_id"] - 2000000000, BACKENDS[inst["cloud_host"]], inst["port"]))
    return out


def test_one_backend_per_replica_instance_in_its_own_hostgroup():
    rows = set(db().execute("SELECT hostgroup_id, hostname, port FROM mysql_servers "
                            "WHERE comment LIKE 'edgefleet:%'").fetchall())
    assert rows == expected_servers()
    assert len({r[0] for r in rows}) == len(rows)


def test_every_device_schema_routes_to_its_instance():
    alloc = allocation()["allocations"]
    hostgroup = {}
    for rec in alloc.values():
        hostgroup[rec["id"]] = 1000 + rec["replica_server_id"] - 2000000000
    rules = db().execute("SELECT schemaname, destination_hostgroup, apply, active, match_digest FROM mysql_query_rules "
                         "WHERE comment LIKE 'edgefleet:%'").fetchall()
    by_schema = {r[0]: r[1] for r in rules if r[0] is not None}
    want = {}
    for dev, rec in alloc.items():
        for database in DATABASES:
            want[rec["schema_prefix"] + database] = hostgroup[dev]
    assert by_schema == want
    assert all(r[2] == 1 and r[3] == 1 for r in rules)
    qualified = [r for r in rules if r[4]]
    assert len(qualified) == len(want), "route_qualified: one regex rule per schema"


def test_runtime_and_disk_match_memory():
    main = db()
    for table in ("mysql_servers", "mysql_query_rules"):
        memory = sorted(main.execute("SELECT * FROM %s" % table).fetchall())
        assert memory == sorted(main.execute("SELECT * FROM runtime_%s" % table).fetchall())
        assert memory == sorted(db("disk.db").execute("SELECT * FROM %s" % table).fetchall())


def test_one_batch_with_one_load_and_save_per_table():
    history = db().execute("SELECT conn, statement FROM history WHERE error IS NULL ORDER BY id").fetchall()
    writes = [(c, s) for c, s in history if not s.upper().startswith(("SELECT", "SET"))]
    assert writes, "nothing was written"
    assert len({c for c, _s in writes}) == 1, "writes were spread over several connections"
    loads = [s for _c, s in writes if s.upper().startswith(("LOAD", "SAVE"))]
    assert loads == ["LOAD MYSQL SERVERS TO RUNTIME", "SAVE MYSQL SERVERS TO DISK",
                     "LOAD MYSQL QUERY RULES TO RUNTIME", "SAVE MYSQL QUERY RULES TO DISK"]
    # the idempotence run read, found everything in place and wrote nothing
    last_conn = history[-1][0]
    assert last_conn != writes[0][0]
    assert all(s.upper().startswith(("SELECT", "SET")) for c, s in history if c == last_conn)
