"""Concurrent mixed enrollment load against the real service, and the checks of what it left in
the registry. Shared by tests/live/test_enrollment_live.py and bench/enrollment.

The mix: new devices (one request each), repeats (the same device and keys again, racing the
first request), contested ids (several clients, each with its own keys, racing for one id).
"""
import collections
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.enrollment import (
    HOST_KEY_VAR, key_material,
)

from tests.support.enrollment import ed25519_public, enroll_body


def plan(token, new=300, repeats=100, contested=40, competitors=3, seed=14):
    """A shuffled list of (kind, device id, body)."""
    rnd = random.Random(seed)
    reqs = []
    bodies = {}
    for i in range(new):
        dev = "dev%05d" % i
        bodies[dev] = enroll_body(token, dev, site="site%d" % (i % 5), labels={"batch": "b%d" % (i % 3)})
        reqs.append(("new", dev, bodies[dev]))
    for i in range(repeats):
        dev = "dev%05d" % rnd.randrange(new)
        reqs.append(("repeat", dev, bodies[dev]))
    for i in range(contested):
        dev = "race%04d" % i
        for _c in range(competitors):
            reqs.append(("contested", dev, enroll_body(token, dev, site="site0", tunnel_key=ed25519_public())))
    rnd.shuffle(reqs)
    return reqs


def run(svc, reqs, concurrency=16):
    """Send every request from `concurrency` threads (a new TLS connection per request)."""
    results = []
    lock = threading.Lock()

    def one(item):
        kind, dev, body = item
        started = time.monotonic()
        try:
            status, doc = svc.enroll(body, timeout=120)
        except Exception as exc:  # transport errors are results too: they must not happen
            status, doc = None, {"error": "transport", "message": repr(exc)}
        with lock:
            results.append({"kind": kind, "id": dev, "status": status, "doc": doc, "body": body,
                            "seconds": time.monotonic() - started})

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, reqs))
    return results, time.monotonic() - started


def verify(svc, results, preloaded=()):
    """Check responses and registry; return a dict of figures. Raises AssertionError on a violation.

    `preloaded`: ids registered before the load (not enrolled; they count for port/id uniqueness)."""
    preloaded = set(preloaded)
    problems = []
    by_id = collections.defaultdict(list)
    for res in results:
        by_id[res["id"]].append(res)
    statuses = collections.Counter(res["status"] for res in results)
    bad = [r for r in results if r["status"] not in (200, 201, 409)]
    if bad:
        problems.append("unexpected answers: %s" % [(r["id"], r["status"], r["doc"]) for r in bad[:5]])
    winners = {}
    for dev, items in by_id.items():
        created = [r for r in items if r["status"] == 201]
        if len(created) != 1:
            problems.append("%s: %d first enrollments (201), expected exactly 1" % (dev, len(created)))
            continue
        win = created[0]
        winners[dev] = win
        keys = (key_material(win["body"]["tunnel_public_key"]), key_material(win["body"]["host_public_key"]))
        for r in items:
            same = (key_material(r["body"]["tunnel_public_key"]), key_material(r["body"]["host_public_key"])) == keys
            if same and r["status"] not in (200, 201):
                problems.append("%s: a repeat with the winning keys got %s" % (dev, r["status"]))
            if same and r["status"] in (200, 201):
                for field in ("cloud_host", "tunnel_mysql_port", "tunnel_ssh_port", "server_id", "gtid_domain_id"):
                    if r["doc"][field] != win["doc"][field]:
                        problems.append("%s: repeat answered %s=%s, first %s"
                                        % (dev, field, r["doc"][field], win["doc"][field]))
            if not same and r["status"] != 409:
                problems.append("%s: a competitor with other keys got %s (expected 409)" % (dev, r["status"]))
            if not same and r["status"] == 409 and r["doc"].get("error") != "key_mismatch":
                problems.append("%s: competitor refused with %s" % (dev, r["doc"]))

    reg = svc.registry()
    with reg.transaction(write=False) as tx:
        devices, _hosts = tx.load_registry()
        state = tx.load_state()
    allocations = state["allocations"]
    ids = set(d["id"] for d in devices) - preloaded
    if ids != set(winners):
        problems.append("registry devices differ from the winners: extra %s, missing %s"
                        % (sorted(ids - set(winners))[:5], sorted(set(winners) - ids)[:5]))
    for dev in devices:
        win = winners.get(dev["id"])
        rec = allocations.get(dev["id"])
        if rec is None:
            problems.append("%s: in the registry without an allocation (half-written)" % dev["id"])
            continue
        if dev["id"] in preloaded:
            continue
        if not dev["ssh_public_key"] or not (dev["vars"] or {}).get(HOST_KEY_VAR):
            problems.append("%s: in the registry without its keys (half-written)" % dev["id"])
        if dev["reach"] != "tunnel" or dev["status"] != "active":
            problems.append("%s: reach %s status %s" % (dev["id"], dev["reach"], dev["status"]))
        if win is not None:
            if key_material(dev["ssh_public_key"]) != key_material(win["body"]["tunnel_public_key"]):
                problems.append("%s: the registry holds a loser's key" % dev["id"])
            for field in ("tunnel_mysql_port", "tunnel_ssh_port", "server_id", "gtid_domain_id"):
                if rec[field] != win["doc"][field]:
                    problems.append("%s: registry %s=%s, answer %s" % (dev["id"], field, rec[field], win["doc"][field]))
    extra_alloc = set(allocations) - ids - preloaded
    if extra_alloc:
        problems.append("allocations without a device: %s" % sorted(extra_alloc)[:5])
    ports = collections.Counter()
    for rec in allocations.values():
        ports[(rec["cloud_host"], rec["tunnel_mysql_port"])] += 1
        ports[(rec["cloud_host"], rec["tunnel_ssh_port"])] += 1
        if rec["replica_mode"] == "instance":
            ports[(rec["cloud_host"], rec["replica_port"])] += 1
    dup_ports = [p for p, n in ports.items() if n > 1]
    if dup_ports:
        problems.append("ports handed out twice: %s" % dup_ports[:5])
    for field in ("server_id", "gtid_domain_id"):
        values = [rec[field] for rec in allocations.values()]
        if len(values) != len(set(values)):
            problems.append("%s not unique" % field)
    rsids = [rec["replica_server_id"] for rec in allocations.values() if rec["replica_mode"] == "instance"]
    if len(rsids) != len(set(rsids)):
        problems.append("replica_server_id not unique")
    tokens = svc.cli("token", "list", "--json").stdout
    import json
    uses = sum(t["uses"] for t in json.loads(tokens))
    if uses != len(winners):
        problems.append("token uses %d != %d first enrollments (repeats must not consume, losers must not)"
                        % (uses, len(winners)))
    reg.close()
    assert not problems, "\n".join(problems[:20])
    return {"requests": len(results), "statuses": dict(statuses), "devices": len(ids),
            "contested_ids": len([d for d, items in by_id.items()
                                  if len(set(key_material(r["body"]["tunnel_public_key"]) for r in items)) > 1]),
            "ports": len(ports), "token_uses": uses}
