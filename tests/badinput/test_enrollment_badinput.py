"""Hostile and bad input to the enrollment service (issue 14): the real service (gunicorn + Flask
from Debian's python3, TLS with a throwaway CA) on loopback, against a file registry and a real
throwaway MariaDB registry. Every case must be answered with a 4xx JSON error whose code and
message name the problem, and the registry (devices, allocations, enrollment state) must be
byte-for-byte what it was before. The token must never appear in the server's log nor in `ps`.
"""
import os
import socket
import ssl
import subprocess
import time

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry_ops

from tests.support.enrollment import (EnrollmentService, dsa_public, ed25519_public, enroll_body, rsa_public)
from tests.support.mariadb import mariadb_server

pytestmark = [pytest.mark.mariadb, pytest.mark.filterwarnings("ignore:.*DSA")]

TOKENS = []  # every token the cases used: none may show up in a log or the process list


@pytest.fixture(scope="module", params=["file", "mysql"])
def svc(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("enroll-" + request.param)
    if request.param == "file":
        with EnrollmentService(workdir) as service:
            yield service
            log = service.server_log()
    else:
        with mariadb_server(server_id=301, binlog=False) as db:
            db.execute("CREATE DATABASE efenroll")
            spec = {"type": "mysql", "host": db.host, "port": db.port, "user": "root", "password": "",
                    "database": "efenroll"}
            with EnrollmentService(workdir, registry="mysql", mysql=spec) as service:
                yield service
                log = service.server_log()
    # whichever xdist worker ran which case: no secret used against this service is in its log
    leaked = [secret.split(".")[1] for secret in TOKENS if secret in log or secret.split(".")[-1] in log]
    assert not leaked, "token(s) %s leaked into the server log" % leaked


@pytest.fixture(scope="module")
def state(svc):
    """A registry with one enrolled device (enrolled01, its keys) and one retired device."""
    token = svc.token("--max-uses", "5", "--site", "berlin")
    TOKENS.append(token)
    body = enroll_body(token, "enrolled01", site="berlin")
    status, doc = svc.enroll(body)
    assert status == 201, doc
    registry_ops.update_device(svc.registry(), "gone01", {"status": "retired", "site": "berlin"})
    exhausted = svc.token("--max-uses", "1")
    TOKENS.append(exhausted)
    assert svc.enroll(enroll_body(exhausted, "usedup01"))[0] == 201
    return {"body": body, "token": token, "exhausted": exhausted}


def token(svc, *args):
    value = svc.token(*args)
    TOKENS.append(value)
    return value


def refused(svc, expect_status, expect_code, must_name, send):
    """Run `send()`; assert the 4xx, its code, that the message names the problem, nothing written."""
    before = svc.snapshot()
    status, doc = send()
    after = svc.snapshot()
    assert status == expect_status, (status, doc)
    assert isinstance(doc, dict) and doc.get("error") == expect_code, doc
    assert must_name.lower() in doc["message"].lower(), doc["message"]
    assert after == before, "the registry changed on a refused request"
    return doc


def test_malformed_json(svc, state):
    refused(svc, 400, "malformed_json", "not valid JSON", lambda: svc.enroll(None, raw=b'{"token": "x", '))


def test_deeply_nested_json(svc, state):
    refused(svc, 400, "malformed_json", "nested too deeply", lambda: svc.enroll(None, raw=b"[" * 10000))


def test_device_id_of_a_cloud_host(svc, state):
    refused(svc, 409, "id_taken", "cloud01 is the name of a cloud host",
            lambda: svc.enroll(enroll_body(state["token"], "cloud01", site="berlin")))


def test_body_not_an_object(svc, state):
    refused(svc, 400, "malformed_json", "JSON object", lambda: svc.enroll(None, raw=b'["token"]'))


def test_oversized_body(svc, state):
    body = dict(state["body"], labels={"pad": "x" * 100}, site="x" * 20000)
    refused(svc, 413, "body_too_large", "16384 bytes", lambda: svc.enroll(body))


def test_oversized_body_chunked(svc, state):
    """No Content-Length (chunked): the cap holds on what is actually read."""
    def send():
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", svc.port, context=svc.context(), timeout=30)
        try:
            conn.putrequest("POST", "/v1/enroll")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", "application/json")
            conn.endheaders()
            chunk = b"{" + b" " * 20000 + b"}"
            conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
            resp = conn.getresponse()
            import json
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()
    refused(svc, 413, "body_too_large", "larger than", send)


def test_missing_fields(svc, state):
    body = dict(state["body"])
    del body["tunnel_public_key"]
    del body["host_public_key"]
    refused(svc, 400, "missing_field", "tunnel_public_key, host_public_key", lambda: svc.enroll(body))


def test_unknown_field(svc, state):
    body = dict(state["body"], is_admin=True)
    refused(svc, 400, "unknown_field", "is_admin", lambda: svc.enroll(body))


@pytest.mark.parametrize("bad_id", ["Dev-1", "1device", "dev.1", "a" * 33, "cloud_x", "dev1; DROP TABLE x"])
def test_invalid_device_id(svc, state, bad_id):
    body = enroll_body(state["token"], bad_id, site="berlin")
    refused(svc, 400, "invalid_device_id", 'field "device_id"', lambda: svc.enroll(body))


@pytest.mark.parametrize("bad_site", ["Berlin", "ber lin", "../etc", "b" * 70])
def test_invalid_site(svc, state, bad_site):
    body = enroll_body(state["token"], "newdev", site=bad_site)
    refused(svc, 400, "invalid_site", 'field "site"', lambda: svc.enroll(body))


def test_invalid_labels(svc, state):
    body = enroll_body(state["token"], "newdev", site="berlin", labels={"bad key!": "x"})
    refused(svc, 400, "invalid_labels", 'field "labels"', lambda: svc.enroll(body))
    body = enroll_body(state["token"], "newdev", site="berlin", labels={"hw": "rpi4\nX-Injected: 1"})
    refused(svc, 400, "invalid_labels", 'labels.hw', lambda: svc.enroll(body))


def test_unknown_token(svc, state):
    forged = "efe1.%s.%s" % ("0" * 12, "A" * 43)
    TOKENS.append(forged)
    refused(svc, 401, "unknown_token", "unknown enrollment token",
            lambda: svc.enroll(enroll_body(forged, "newdev", site="berlin")))
    refused(svc, 401, "unknown_token", "unknown enrollment token",
            lambda: svc.enroll(enroll_body("not-even-a-token", "newdev", site="berlin")))


def test_token_with_a_wrong_secret(svc, state):
    """The right token id with another secret: refused like an unknown token."""
    prefix, tid, secret = state["token"].split(".")
    forged = "%s.%s.%s" % (prefix, tid, ("B" if secret[0] != "B" else "C") + secret[1:])
    TOKENS.append(forged)
    refused(svc, 401, "unknown_token", "unknown enrollment token",
            lambda: svc.enroll(enroll_body(forged, "newdev", site="berlin")))


def test_expired_token(svc, state):
    expired = token(svc, "--expires", "1s")
    time.sleep(1.2)
    refused(svc, 401, "token_expired", "expired", lambda: svc.enroll(enroll_body(expired, "newdev")))


def test_revoked_token(svc, state):
    revoked = token(svc)
    token_id = revoked.split(".")[1]
    svc.cli("token", "revoke", token_id)
    refused(svc, 401, "token_revoked", "revoked", lambda: svc.enroll(enroll_body(revoked, "newdev")))


def test_exhausted_token(svc, state):
    refused(svc, 401, "token_exhausted", "used 1 of 1", lambda: svc.enroll(enroll_body(state["exhausted"], "newdev")))


def test_token_for_another_site(svc, state):
    refused(svc, 403, "token_site_mismatch", "site hamburg",
            lambda: svc.enroll(enroll_body(state["token"], "newdev", site="hamburg")))


def test_token_bound_to_another_device(svc, state):
    bound = token(svc, "--device-id", "kiosk7")
    refused(svc, 403, "token_device_mismatch", 'field "device_id"',
            lambda: svc.enroll(enroll_body(bound, "kiosk8")))


def test_token_label_constraint(svc, state):
    batch = token(svc, "--label", "hw=rpi4", "--max-uses", "3")
    refused(svc, 403, "token_label_mismatch", "hw=rpi4",
            lambda: svc.enroll(enroll_body(batch, "newdev", labels={"hw": "x86"})))


def test_id_clash_with_a_different_key(svc, state):
    body = dict(state["body"], tunnel_public_key=ed25519_public())
    refused(svc, 409, "key_mismatch", "allow-rotation enrolled01", lambda: svc.enroll(body))


def test_retired_id(svc, state):
    refused(svc, 403, "device_retired", "gone01 is retired",
            lambda: svc.enroll(enroll_body(state["token"], "gone01", site="berlin")))


@pytest.mark.parametrize("bad_key", ["hello world", "ssh-ed25519 not-base64!!", "ssh-ed25519 AAAAC3NzaC1yc2E=",
                                     "-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519 AAAA\nssh-ed25519 AAAA"])
def test_not_a_public_key(svc, state, bad_key):
    body = enroll_body(state["token"], "newdev", site="berlin", tunnel_key=bad_key)
    refused(svc, 400, "invalid_public_key", "tunnel_public_key", lambda: svc.enroll(body))


def test_dsa_key(svc, state):
    body = enroll_body(state["token"], "newdev", site="berlin", host_key=dsa_public())
    refused(svc, 400, "weak_key", "DSA", lambda: svc.enroll(body))


def test_short_rsa_key(svc, state):
    body = enroll_body(state["token"], "newdev", site="berlin", tunnel_key=rsa_public(1024))
    refused(svc, 400, "weak_key", "1024 bits", lambda: svc.enroll(body))


def test_same_key_twice(svc, state):
    key = ed25519_public()
    body = enroll_body(state["token"], "newdev", site="berlin", tunnel_key=key, host_key=key)
    refused(svc, 400, "invalid_public_key", "same key", lambda: svc.enroll(body))


def test_plain_http_to_the_tls_port(svc, state):
    before = svc.snapshot()
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b'"error": "plain_http"' in data and b"HTTPS only" in data
    assert svc.snapshot() == before


def test_tls_is_verified_and_the_wrong_ca_is_refused(svc, state):
    """The client verifies the service; a client trusting another CA gets no answer at all."""
    ctx = ssl.create_default_context()  # system CAs only: the throwaway CA is not among them
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(sock, server_hostname="127.0.0.1")


def test_operator_listing_needs_its_credential(svc, state):
    status, doc = svc.request("GET", "/v1/devices")
    assert status == 401 and doc["error"] == "unauthorized" and "Bearer" in doc["message"]
    # an enrollment token is not an operator credential
    status, doc = svc.request("GET", "/v1/devices", headers={"Authorization": "Bearer " + state["token"]})
    assert status == 401
    cred_file = os.path.join(svc.dir, "operator.cred")
    svc.cli("operator", "create", "ops", "--output", cred_file)
    assert oct(os.stat(cred_file).st_mode & 0o777) == "0o600"
    with open(cred_file) as handle:
        credential = handle.read().strip()
    TOKENS.append(credential)
    status, doc = svc.request("GET", "/v1/devices", headers={"Authorization": "Bearer " + credential[:-1] + "x"})
    assert status == 401
    status, doc = svc.request("GET", "/v1/devices", headers={"Authorization": "Bearer " + credential})
    assert status == 200
    ids = [d["device_id"] for d in doc["devices"]]
    assert "enrolled01" in ids
    text = repr(doc)
    for secret in TOKENS:
        assert secret not in text
    assert "hash" not in text


def test_health_has_no_device_data(svc, state):
    status, doc = svc.request("GET", "/v1/health")
    assert status == 200 and doc["status"] == "ok"
    assert set(doc) == {"status", "registry", "api_version", "uptime_seconds"}


def test_unknown_path_and_method(svc, state):
    assert svc.request("GET", "/v1/enroll")[1]["error"] == "method_not_allowed"
    assert svc.request("GET", "/admin")[1]["error"] == "not_found"


def test_rate_limit(tmp_path):
    """Above the per-client limit: 429 with Retry-After, nothing written (own service: low limits)."""
    limits = {"per_client_rate": 0.01, "per_client_burst": 3, "global_rate": 100, "global_burst": 100}
    with EnrollmentService(tmp_path, rate_limit=limits) as service:
        tok = service.token("--max-uses", "10")
        TOKENS.append(tok)
        for i in range(3):
            assert service.enroll(enroll_body(tok, "burst%d" % i))[0] == 201
        doc = refused(service, 429, "rate_limited", "too many enrollment requests",
                      lambda: service.enroll(enroll_body(tok, "burst9")))
        assert "per-client" in doc["message"]
        assert int(service.last_headers["Retry-After"]) >= 1
        assert tok not in service.server_log()


def test_secrets_never_in_logs_or_process_list(svc, state):
    """Runs last in the module: every token and credential used above, against the captured log."""
    log = svc.server_log()
    assert "enrolled device=enrolled01" in log  # the log is really captured
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert "gunicorn" in ps
    for secret in TOKENS:
        assert secret not in log
        assert secret not in ps
        assert secret.split(".")[-1] not in log


def test_half_requests_hold_a_thread_only_until_the_deadline(tmp_path):
    """Slow clients (TLS done, half a request, then silence) on every worker thread: the service
    answers again once the worker's 10 s deadline frees the threads (stock gthread: never)."""
    with EnrollmentService(tmp_path, threads=2) as service:
        held = []
        try:
            for _i in range(2):
                sock = service.context().wrap_socket(socket.create_connection(("127.0.0.1", service.port), timeout=30),
                                                     server_hostname="127.0.0.1")
                sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n")
                held.append(sock)
            started = time.monotonic()
            status, doc = service.request("GET", "/v1/health", timeout=30)
            assert status == 200 and doc["status"] == "ok"
            assert time.monotonic() - started < 15
        finally:
            for sock in held:
                sock.close()
