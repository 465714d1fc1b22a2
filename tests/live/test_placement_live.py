"""POST /v1/placement against the real enrollment service (gunicorn + Flask over TLS on loopback),
with real ssh-keygen signatures made by the device's real tunnel key.

Accepted: a device that enrolled asks with a signature of its tunnel key and gets exactly its
enroll answer; after a failover of its cloud host in the registry it gets the new placement.
Refused, each with the registry files (devices, allocation, enrollment state) byte for byte
unchanged: unknown id, retired and disabled device, a wrong key, another device's signature, a
signature in another namespace or over another timestamp (one indistinguishable 403
not_authorized for all of these, nothing in the log naming the claimed id), a timestamp outside
+-300 s (403 clock_skew), malformed and oversize bodies (400/413), and the rate limits (per
source, per device; a stranger's refused requests never spend a device's allowance). The same
accept/refuse pair runs on a MySQL registry.
"""
import json
import os
import subprocess
import time

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import placement_signature, registry_ops
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_policy

from tests.support.enrollment import EnrollmentService, enroll_body, raw_socket

CLOUDS = (("cloud01", "20000-20999"), ("cloud02", "21000-21999"), ("cloud03", "22000-22999"))


def keypair(directory, name):
    path = os.path.join(str(directory), name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path], check=True)
    with open(path + ".pub") as handle:
        return path, " ".join(handle.read().split()[:2])


def signed(key, device_id, stamp=None, sign_as=None):
    stamp = int(time.time()) if stamp is None else stamp
    return {"device_id": device_id, "timestamp": stamp,
            "signature": placement_signature.sign(key, sign_as or device_id, stamp)}


def ask(svc, body, **kwargs):
    return svc.request("POST", "/v1/placement", body=body, **kwargs)


def set_placement_config(svc, **values):
    with open(svc.config_path) as handle:
        config = json.load(handle)
    config.update(values)
    with open(svc.config_path, "w") as handle:
        json.dump(config, handle)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """One service, file registry, two cloud hosts; kiosk1 and kiosk2 enrolled with real keys,
    kiosk3 enrolled and retired, kiosk4 enrolled and disabled."""
    work = tmp_path_factory.mktemp("placement")
    svc = EnrollmentService(work / "svc", clouds=CLOUDS)
    set_placement_config(svc, placement_rate_limit={"per_client_rate": 1000, "per_client_burst": 1000,
                                                    "per_device_rate": 1000, "per_device_burst": 1000})
    with svc:
        token = svc.token("--max-uses", "10")
        devices = {}
        for dev in ("kiosk1", "kiosk2", "kiosk3", "kiosk4"):
            key, pub = keypair(work, dev)
            status, answer = svc.enroll(enroll_body(token, dev, site="berlin", tunnel_key=pub))
            assert status == 201, answer
            devices[dev] = {"key": key, "pub": pub, "answer": answer}
        registry_ops.update_device(svc.registry(), "kiosk3", {"status": "retired"})
        registry_ops.update_device(svc.registry(), "kiosk4", {"status": "disabled"})
        stranger_key, _pub = keypair(work, "stranger")
        yield svc, devices, stranger_key


def unchanged(svc, before):
    assert svc.snapshot() == before, "the registry files changed"


def test_a_device_gets_its_enroll_answer(fleet):
    svc, devices, _stranger = fleet
    before = svc.snapshot()
    status, doc = ask(svc, signed(devices["kiosk1"]["key"], "kiosk1"))
    assert status == 200, doc
    assert doc == devices["kiosk1"]["answer"]
    assert svc.last_headers.get("Cache-Control") == "no-store"
    unchanged(svc, before)
    assert "placement device=kiosk1" in svc.server_log()


@pytest.mark.parametrize("case", ["unknown_id", "retired", "disabled", "wrong_key", "other_devices_signature",
                                  "other_namespace", "other_timestamp", "cloud_host_name"])
def test_refused_alike_and_nothing_written(fleet, tmp_path, case):
    svc, devices, stranger = fleet
    now = int(time.time())
    if case == "unknown_id":
        body = signed(stranger, "kiosk99")
    elif case in ("retired", "disabled"):
        dev = {"retired": "kiosk3", "disabled": "kiosk4"}[case]
        body = signed(devices[dev]["key"], dev)  # its own registered key: still refused
    elif case == "wrong_key":
        body = signed(stranger, "kiosk1")
    elif case == "other_devices_signature":
        body = dict(signed(devices["kiosk2"]["key"], "kiosk2"), device_id="kiosk1")
    elif case == "other_namespace":
        proc = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", devices["kiosk1"]["key"], "-n", "file"],
                              input=placement_signature.message("kiosk1", now), capture_output=True, check=True)
        body = {"device_id": "kiosk1", "timestamp": now, "signature": proc.stdout.decode()}
    elif case == "other_timestamp":
        body = dict(signed(devices["kiosk1"]["key"], "kiosk1", now - 10), timestamp=now)
    else:
        body = signed(stranger, "cloud01")
    before = svc.snapshot()
    status, doc = ask(svc, body)
    assert (status, doc) == (403, {"error": "not_authorized", "message": doc["message"]})
    assert "unknown device id, a device that is not active, or a signature" in doc["message"]
    unchanged(svc, before)


def test_the_refusals_are_indistinguishable_and_the_log_names_no_claimed_id(fleet):
    svc, devices, stranger = fleet
    answers = set()
    for dev, key in (("kiosk98", stranger), ("kiosk3", devices["kiosk3"]["key"]), ("kiosk1", stranger)):
        status, doc = ask(svc, signed(key, dev))
        answers.add((status, json.dumps(doc, sort_keys=True)))
    assert len(answers) == 1
    log = svc.server_log()
    assert "kiosk98" not in log and "kiosk99" not in log
    assert "code=not_authorized status=403 path=/v1/placement" in log


@pytest.mark.parametrize("skew", [-305, 305, -3600, 10 ** 9])
def test_timestamp_outside_the_window(fleet, skew):
    svc, devices, _stranger = fleet
    before = svc.snapshot()
    status, doc = ask(svc, signed(devices["kiosk1"]["key"], "kiosk1", int(time.time()) + skew))
    assert status == 403 and doc["error"] == "clock_skew" and "at most 300 s" in doc["message"], doc
    unchanged(svc, before)


def test_timestamp_inside_the_window(fleet):
    svc, devices, _stranger = fleet
    for skew in (-290, 290):
        status, doc = ask(svc, signed(devices["kiosk2"]["key"], "kiosk2", int(time.time()) + skew))
        assert status == 200 and doc["device_id"] == "kiosk2", doc


@pytest.mark.parametrize("case,code", [
    ("not_json", "malformed_json"), ("list", "malformed_json"), ("empty", "empty_body"),
    ("unknown_field", "unknown_field"), ("missing_signature", "missing_field"), ("bad_id", "invalid_device_id"),
    ("bool_timestamp", "invalid_timestamp"), ("string_timestamp", "invalid_timestamp"),
    ("not_a_signature", "invalid_signature"), ("signature_not_sshsig", "invalid_signature"),
])
def test_malformed_bodies(fleet, case, code):
    svc, devices, _stranger = fleet
    good = signed(devices["kiosk1"]["key"], "kiosk1")
    raw = None
    body = dict(good)
    if case == "not_json":
        raw = b"{device_id: kiosk1"
    elif case == "list":
        raw = b"[1, 2]"
    elif case == "empty":
        raw = b""
    elif case == "unknown_field":
        body["token"] = "x"
    elif case == "missing_signature":
        del body["signature"]
    elif case == "bad_id":
        body["device_id"] = "Kiosk-1; DROP"
    elif case == "bool_timestamp":
        body["timestamp"] = True
    elif case == "string_timestamp":
        body["timestamp"] = str(body["timestamp"])
    elif case == "not_a_signature":
        body["signature"] = "ssh-ed25519 AAAA"
    else:
        body["signature"] = "-----BEGIN SSH SIGNATURE-----\nQUJDREVG\n-----END SSH SIGNATURE-----\n"
    before = svc.snapshot()
    status, doc = ask(svc, body, raw=raw)
    assert status == 400 and doc["error"] == code, (case, doc)
    unchanged(svc, before)


def test_oversize_bodies(fleet):
    svc, devices, _stranger = fleet
    before = svc.snapshot()
    big = dict(signed(devices["kiosk1"]["key"], "kiosk1"), pad="x" * 5000)
    status, doc = ask(svc, big)
    assert status == 413 and doc["error"] == "body_too_large" and "4096" in doc["message"]
    # chunked: no Content-Length, the cap applies to what is read
    with raw_socket(svc.port) as sock:
        tls = svc.context().wrap_socket(sock, server_hostname="127.0.0.1")
        chunk = b"x" * 6000
        tls.sendall(b"POST /v1/placement HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        reply = b""
        while True:
            data = tls.recv(4096)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply
    unchanged(svc, before)


def test_failover_of_its_cloud_host_is_what_the_device_learns(fleet):
    """The scenario this endpoint exists for: the registry re-homes the device; it asks and learns."""
    svc, devices, _stranger = fleet
    old = devices["kiosk1"]["answer"]
    lost = old["cloud_host"]
    registry_ops.run_failover(svc.registry(), normalize_policy(svc.policy_raw), lost, force=True)
    before = svc.snapshot()
    status, doc = ask(svc, signed(devices["kiosk1"]["key"], "kiosk1"))
    assert status == 200, doc
    assert doc["cloud_host"] != lost and doc["cloud_address"] == "%s.example.net" % doc["cloud_host"]
    assert (doc["tunnel_mysql_port"], doc["tunnel_ssh_port"]) != (old["tunnel_mysql_port"], old["tunnel_ssh_port"])
    assert (doc["server_id"], doc["gtid_domain_id"]) == (old["server_id"], old["gtid_domain_id"])  # sticky ids
    unchanged(svc, before)


def test_rate_limits_per_source_and_per_device(tmp_path):
    with EnrollmentService(tmp_path, clouds=CLOUDS) as svc:
        token = svc.token("--max-uses", "2")
        keys = {}
        for dev in ("kiosk1", "kiosk2"):
            keys[dev], pub = keypair(tmp_path, dev)
            assert svc.enroll(enroll_body(token, dev, tunnel_key=pub))[0] == 201
        stranger, _pub = keypair(tmp_path, "stranger")
        svc.stop()
        set_placement_config(svc, placement_rate_limit={"per_client_rate": 0.001, "per_client_burst": 12,
                                                        "per_device_rate": 0.001, "per_device_burst": 2})
        svc.start()
        # a stranger's refused requests for kiosk1 spend only the source's allowance, not kiosk1's
        for dummy in range(6):
            assert ask(svc, signed(stranger, "kiosk1"))[0] == 403
        assert ask(svc, signed(keys["kiosk1"], "kiosk1"))[0] == 200
        assert ask(svc, signed(keys["kiosk1"], "kiosk1"))[0] == 200
        status, doc = ask(svc, signed(keys["kiosk1"], "kiosk1"))
        assert status == 429 and "per-device" in doc["message"] and int(svc.last_headers["Retry-After"]) >= 1
        assert ask(svc, signed(keys["kiosk2"], "kiosk2"))[0] == 200  # another device is not affected
        for dummy in range(2):
            ask(svc, signed(keys["kiosk2"], "kiosk2"))
        status, doc = ask(svc, signed(keys["kiosk2"], "kiosk2"))
        assert status == 429 and "per-client" in doc["message"], doc


@pytest.mark.mariadb
def test_mysql_registry(tmp_path, registry_spec):
    mysql = dict((k, registry_spec[k]) for k in ("type", "host", "port", "user", "password", "database"))
    with EnrollmentService(tmp_path, registry="mysql", mysql=mysql, clouds=CLOUDS) as svc:
        token = svc.token()
        key, pub = keypair(tmp_path, "kiosk1")
        status, answer = svc.enroll(enroll_body(token, "kiosk1", tunnel_key=pub))
        assert status == 201
        before = svc.snapshot()
        assert ask(svc, signed(key, "kiosk1")) == (200, answer)
        status, doc = ask(svc, {"device_id": "kiosk1", "timestamp": int(time.time()),
                                "signature": placement_signature.sign(keypair(tmp_path, "x")[0], "kiosk1",
                                                                      int(time.time()))})
        assert (status, doc["error"]) == (403, "not_authorized")
        assert svc.snapshot() == before


# --------------------------------------------------------------------------- the device program

def device_tree(tmp_path, svc, dev_id):
    """A device's /etc/edgefleet, /etc/ssh, systemd dir and state dir below tmp_path, configured
    for the real service; the tunnel template is the device_tunnel role's own file."""
    import shutil
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    etc, ssh, units, state = (tmp_path / "etc", tmp_path / "ssh", tmp_path / "systemd", tmp_path / "state")
    for directory in (etc, ssh, units, state, tmp_path / "root"):
        directory.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "ssh_host_ed25519_key")],
                   check=True)
    shutil.copy(os.path.join(root, "roles/device_tunnel/templates/edgefleet-tunnel.service.j2"),
                str(tmp_path / "tunnel.j2"))
    token = etc / "enroll.token"
    token.write_text(svc.token("--device-id", dev_id) + "\n")
    token.chmod(0o600)
    cfg = {"api_url": "https://127.0.0.1:%d" % svc.port, "ca_cert": svc.ca, "token_file": str(token),
           "device_id": dev_id, "site": "berlin", "config_dir": str(etc), "ssh_dir": str(ssh),
           "systemd_dir": str(units), "state_dir": str(state),
           "root_authorized_keys": str(tmp_path / "root" / "authorized_keys"), "start_tunnel": False,
           "retry_initial": 0.01, "retry_max": 0.05, "timeout": 5, "tunnel": {"template": str(tmp_path / "tunnel.j2")}}
    path = tmp_path / "enroll.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def files_of(tmp_path):
    """Every file the refresh may write: path -> (inode, mtime_ns, text)."""
    out = {}
    for sub in ("etc", "systemd"):
        for name in sorted(os.listdir(str(tmp_path / sub))):
            path = tmp_path / sub / name
            info = path.stat()
            out[str(path)] = (info.st_ino, info.st_mtime_ns, path.read_text())
    return out


def test_device_refresh_rewrites_only_a_changed_placement(fleet, tmp_path, capsys):
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import device_enroll
    svc, _devices, _stranger = fleet
    path = device_tree(tmp_path, svc, "kiosk5")
    assert device_enroll.main(["--config", path]) == 0  # first boot: enrolls with its generated key
    first = json.loads((tmp_path / "etc" / "enrollment.json").read_text())
    before, registry_before = files_of(tmp_path), svc.snapshot()

    # the same placement: nothing is rewritten (same inode, same mtime), the registry is unchanged
    assert device_enroll.main(["--config", path, "--refresh", "--force"]) == 0
    assert files_of(tmp_path) == before and svc.snapshot() == registry_before
    assert "placement unchanged: %s" % first["cloud_host"] in capsys.readouterr().err

    # without --force, and with the tunnel not managed here (start_tunnel off), nobody is asked
    state_path = tmp_path / "state" / "placement-refresh.json"
    asked_at = json.loads(state_path.read_text())["last_ok_at"]
    assert device_enroll.main(["--config", path, "--refresh"]) == 0
    assert "placement not asked" in capsys.readouterr().err
    assert json.loads(state_path.read_text())["last_ok_at"] == asked_at

    # its cloud host fails over in the registry: the device learns the new placement by itself
    registry_ops.run_failover(svc.registry(), normalize_policy(svc.policy_raw), first["cloud_host"], force=True)
    assert device_enroll.main(["--config", path, "--refresh", "--force"]) == 0
    after = files_of(tmp_path)
    record = json.loads((tmp_path / "etc" / "enrollment.json").read_text())
    assert record["cloud_host"] != first["cloud_host"] and record["server_id"] == first["server_id"]
    unit = after[str(tmp_path / "systemd" / "edgefleet-tunnel.service")][2]
    assert "-R 127.0.0.1:%d:127.0.0.1:3306" % record["tunnel_mysql_port"] in unit
    assert "edgefleet-tunnel@%s.example.net" % record["cloud_host"] in unit
    assert "to %s\n" % record["cloud_host"] in unit
    known_hosts = after[str(tmp_path / "etc" / "known_hosts")][2]
    assert known_hosts.splitlines()[1].startswith("%s.example.net ssh-ed25519 " % record["cloud_host"])
    rewritten = sorted(p for p in after if after[p][:2] != before[p][:2])
    assert rewritten == sorted(str(tmp_path / p) for p in ("etc/enrollment.json", "etc/known_hosts",
                                                           "systemd/edgefleet-tunnel.service"))
    assert after[str(tmp_path / "etc" / "device.yml")] == before[str(tmp_path / "etc" / "device.yml")]
    assert "placement changed: now %s" % record["cloud_host"] in capsys.readouterr().err
    state = json.loads((tmp_path / "state" / "placement-refresh.json").read_text())
    assert state["last_ok_at"] > 0

    # and once more: equal again, nothing rewritten
    assert device_enroll.main(["--config", path, "--refresh", "--force"]) == 0
    assert files_of(tmp_path) == after


def test_device_refresh_refused_key_is_reported_and_changes_nothing(fleet, tmp_path, capsys):
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import device_enroll
    svc, _devices, _stranger = fleet
    path = device_tree(tmp_path, svc, "kiosk6")
    assert device_enroll.main(["--config", path]) == 0
    # another key in the device's place (a copied image, a stolen device's files elsewhere)
    key = tmp_path / "etc" / "tunnel_ed25519"
    key.unlink()
    (tmp_path / "etc" / "tunnel_ed25519.pub").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    before = files_of(tmp_path)
    assert device_enroll.main(["--config", path, "--refresh", "--force"]) == device_enroll.EX_PERMANENT
    assert "HTTP 403 not_authorized" in capsys.readouterr().err
    assert files_of(tmp_path) == before
