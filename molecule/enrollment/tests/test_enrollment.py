"""The enrollment role on the lab's cloud host: the service answers /v1/health over TLS verified
against the CA the role made, refuses plain HTTP, binds only its configured address, runs
hardened as its own user, keeps private keys private, and enrolls a device with a CLI token."""
import http.client
import json
import socket
import ssl
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.lab import clouds, hostvars, lab_host

CLOUD = clouds()[0]
ADDRESS = hostvars(CLOUD)["ansible_host"]
PORT = 8443


@pytest.fixture(scope="module")
def host():
    return lab_host(CLOUD)


@pytest.fixture(scope="module")
def ca(host, tmp_path_factory):
    path = tmp_path_factory.mktemp("enroll-ca") / "ca.crt"
    path.write_text(host.file("/etc/edgefleet/enrollment/tls/ca.crt").content_string)
    return str(path)


def https(ca, method, path, body=None):
    ctx = ssl.create_default_context(cafile=ca)
    conn = http.client.HTTPSConnection(ADDRESS, PORT, context=ctx, timeout=20)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_health_over_verified_tls(ca):
    status, doc = https(ca, "GET", "/v1/health")
    assert status == 200 and doc["status"] == "ok" and doc["registry"] == "ok"


def test_untrusted_client_gets_no_answer():
    with socket.create_connection((ADDRESS, PORT), timeout=10) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(sock, server_hostname=ADDRESS)


def test_plain_http_is_refused():
    with socket.create_connection((ADDRESS, PORT), timeout=10) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 400 ") and b"plain_http" in data


def test_binds_only_the_configured_address(host):
    listeners = host.check_output("ss -ltnH 'sport = :%d'" % PORT)
    assert "%s:%d" % (ADDRESS, PORT) in listeners
    assert "0.0.0.0:%d" % PORT not in listeners and "*:%d" % PORT not in listeners


def test_service_runs_hardened_as_its_own_user(host):
    svc = host.service("edgefleet-enrollment")
    assert svc.is_running and svc.is_enabled
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show edgefleet-enrollment -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
        "-p ProtectHome -p CapabilityBoundingSet -p MemoryDenyWriteExecute").splitlines())
    assert props["User"] == "edgefleet-enroll"
    assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "strict"
    assert props["PrivateTmp"] == "yes" and props["ProtectHome"] == "yes"
    assert props["CapabilityBoundingSet"] == "" and props["MemoryDenyWriteExecute"] == "yes"
    assert host.user("edgefleet-enroll").shell == "/usr/sbin/nologin"
    assert "edgefleet-enroll" in host.check_output("ps -o user= -C gunicorn -C python3 | sort -u")


@pytest.mark.parametrize("path,owner,group,mode", [
    ("/etc/edgefleet/enrollment/tls/ca.key", "root", "root", 0o600),
    ("/etc/edgefleet/enrollment/tls/server.key", "root", "edgefleet-enroll", 0o640),
    ("/etc/edgefleet/enrollment/enrollment.json", "root", "edgefleet-enroll", 0o640),
    ("/etc/edgefleet/enrollment/tls/ca.crt", "root", "root", 0o644),
])
def test_private_files_are_not_world_readable(host, path, owner, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def _key():
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    return pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _body(token, device):
    return {"token": token, "device_id": device, "tunnel_public_key": _key(), "host_public_key": _key()}


def test_a_device_enrolls_with_a_cli_token(host, ca):
    out = "/var/lib/edgefleet-enrollment/molecule.token"
    host.check_output("edgefleet-enroll token create --max-uses 1 --expires 10m --output %s" % out)
    token = host.check_output("cat %s && rm -f %s" % (out, out)).strip()
    device = "mol%s" % uuid.uuid4().hex[:8]
    status, doc = https(ca, "POST", "/v1/enroll", _body(token, device))
    assert status == 201, doc
    assert doc["cloud_host"] == CLOUD and doc["cloud_address"] == ADDRESS
    assert 40000 <= doc["tunnel_mysql_port"] <= 40999
    registry = host.file("/var/lib/edgefleet-enrollment-lab/registry.yml").content_string
    assert device in registry and '"reach": "tunnel"' in registry
    assert token not in host.check_output("journalctl -u edgefleet-enrollment --no-pager -n 200")
    status, doc = https(ca, "POST", "/v1/enroll", _body(token, device + "x"))
    assert status == 401 and doc["error"] == "token_exhausted"


def test_token_playbook_create_list_revoke(ca, tmp_path):
    """playbooks/enroll_token.yml: the token lands only in a 0600 file on the controller."""
    import os
    import subprocess
    from tests.support.lab import ENV, INVENTORY, ROOT

    def play(*extra):
        proc = subprocess.run(["ansible-playbook", "-i", INVENTORY, os.path.join(ROOT, "playbooks", "enroll_token.yml"),
                               "-e", "enroll_token_host=%s" % CLOUD] + list(extra),
                              env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    out_file = tmp_path / "batch.token"
    created = play("-e", "enroll_token_output=%s" % out_file, "-e", "enroll_token_max_uses=2",
                   "-e", '{"enroll_token_sites": ["lab"], "enroll_token_labels": {"hw": "lab"}}')
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    token = out_file.read_text().strip()
    token_id = token.split(".")[1]
    assert token not in created and token_id in created
    device = "pb%s" % uuid.uuid4().hex[:8]
    status, doc = https(ca, "POST", "/v1/enroll", _body(token, device))
    assert status == 201 and doc["site"] == "lab", doc
    listing = play("-e", "enroll_token_action=list")
    assert token_id in listing and "1/2" in listing and token not in listing
    play("-e", "enroll_token_action=revoke", "-e", "enroll_token_id=%s" % token_id)
    status, doc = https(ca, "POST", "/v1/enroll", _body(token, device + "b"))
    assert status == 401 and doc["error"] == "token_revoked"
