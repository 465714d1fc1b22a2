"""Enrollment under concurrency against a real MariaDB registry (a smaller bench/enrollment):
60 enrollments from 12 concurrent HTTPS clients, mixed new devices, repeats and id races.
Exactly one winner per id, repeats answered with the same allocation, unique ports and ids,
nothing half-written, token uses counted once per device. The file registry gets the same mix."""
import pytest

from tests.support.enrollment import EnrollmentService
from tests.support.enrollment_load import plan, run, verify

pytestmark = pytest.mark.mariadb


def test_concurrent_enrollments_mysql_registry(tmp_path, registry_spec):
    mysql = dict((k, registry_spec[k]) for k in ("type", "host", "port", "user", "password", "database"))
    with EnrollmentService(tmp_path, registry="mysql", mysql=mysql, threads=8) as svc:
        token = svc.token("--max-uses", "1000")
        reqs = plan(token, new=30, repeats=12, contested=6, competitors=3)
        assert len(reqs) == 60
        results, _seconds = run(svc, reqs, concurrency=12)
        figures = verify(svc, results)
        assert figures["devices"] == 36 and figures["statuses"].get(409) == 12
        assert token not in svc.server_log()


def test_concurrent_enrollments_file_registry(tmp_path):
    with EnrollmentService(tmp_path, registry="file", threads=8, mode="channel") as svc:
        token = svc.token("--max-uses", "1000")
        reqs = plan(token, new=20, repeats=8, contested=4, competitors=3)
        results, _seconds = run(svc, reqs, concurrency=8)
        figures = verify(svc, results)
        assert figures["devices"] == 24


def test_reenroll_rotation_and_retirement(tmp_path):
    """Sticky re-enrollment, one-shot key rotation allowed by an operator, retired id refused."""
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry_ops
    from tests.support.enrollment import enroll_body, ed25519_public
    with EnrollmentService(tmp_path) as svc:
        token = svc.token("--max-uses", "3", "--device-id", "kiosk1")
        body = enroll_body(token, "kiosk1", site="berlin")
        status, first = svc.enroll(body)
        assert status == 201
        status, again = svc.enroll(body)
        assert status == 200 and again == first
        rotated = dict(body, tunnel_public_key=ed25519_public(), host_public_key=ed25519_public())
        assert svc.enroll(rotated)[0] == 409
        svc.cli("device", "allow-rotation", "kiosk1")
        status, after = svc.enroll(rotated)
        assert status == 200
        assert (after["tunnel_mysql_port"], after["server_id"]) == (first["tunnel_mysql_port"], first["server_id"])
        assert svc.enroll(dict(body, tunnel_public_key=ed25519_public()))[0] == 409  # the allowance was one-shot
        kh = svc.cli("known-hosts").stdout
        assert kh == "kiosk1 %s\n" % " ".join(rotated["host_public_key"].split()[:2])
        listing = svc.cli("token", "list", "--json").stdout
        assert '"uses": 2' in listing
        registry_ops.update_device(svc.registry(), "kiosk1", {"status": "retired"})
        status, doc = svc.enroll(rotated)
        assert status == 403 and doc["error"] == "device_retired"


def test_enrolled_device_shows_in_the_fleet_inventory(tmp_path):
    """The fleet inventory plugin shows an enrolled device at once: reached through its tunnel with
    HostKeyAlias=<id>, and the host key it sent is a host var and a known_hosts line."""
    import json
    import os
    import subprocess
    from tests.live.support import ansible_env
    from tests.support.enrollment import enroll_body
    with EnrollmentService(tmp_path) as svc:
        token = svc.token()
        body = enroll_body(token, "kiosk9", site="berlin")
        status, doc = svc.enroll(body)
        assert status == 201
        fleet = os.path.join(svc.dir, "enroll.fleet.yml")
        with open(fleet, "w") as handle:
            handle.write("plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: registry.yml}\n")
        out = subprocess.run([os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), ".venv",
                                           "bin", "ansible-inventory"), "-i", fleet, "--host", "kiosk9"],
                             env=ansible_env(), capture_output=True, text=True, check=True).stdout
        hv = json.loads(out)
        assert hv["edgefleet_reach"] == "tunnel" and hv["ansible_host"] == "127.0.0.1"
        assert hv["ansible_port"] == doc["tunnel_ssh_port"]
        assert "HostKeyAlias=kiosk9" in hv["ansible_ssh_common_args"]
        host_key = " ".join(body["host_public_key"].split()[:2])
        assert str(hv["edgefleet_host_public_key"]).endswith(host_key.split()[1])
        assert svc.cli("known-hosts").stdout == "kiosk9 %s\n" % host_key


def test_fresh_mysql_registry_operator_listing(tmp_path, registry_spec):
    """Before any token exists (no enrollment table yet) the listing still answers 401, not 503."""
    mysql = dict((k, registry_spec[k]) for k in ("type", "host", "port", "user", "password", "database"))
    with EnrollmentService(tmp_path, registry="mysql", mysql=mysql) as svc:
        status, doc = svc.request("GET", "/v1/devices", headers={"Authorization": "Bearer efo1.ops." + "A" * 43})
        assert status == 401 and doc["error"] == "unauthorized"
