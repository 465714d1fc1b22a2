"""The real enrollment service for tests and benches: gunicorn + Flask from Debian's python3 on
loopback, TLS with a throwaway CA, a file or MySQL registry. Nothing is mocked.

    with EnrollmentService(tmp_path, registry="file") as svc:
        status, doc = svc.enroll({...})
"""
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_registry_spec
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry_ops

from tests.support.host_code import SYSTEM_PYTHON, install_host_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the enrollment role ships (roles/enrollment/vars/main.yml) and how gunicorn names it.
SERVICE_PACKAGE = "ansible_collections.edgefleet.mysql_backup.plugins.module_utils.enrollment_service"
SERVICE_MODULES = ["enrollment_service.app", "enrollment_service.worker", "enrollment_service.cli"]
APP = SERVICE_PACKAGE + ".app:create_app()"
WORKER_CLASS = SERVICE_PACKAGE + ".worker.TLSOnlyThreadWorker"


def install_service(directory):
    """The service's code laid out as the enrollment role ships it (host_code filters) below
    <directory>/lib, and the CLI's launcher <directory>/edgefleet-enroll: (lib dir, launcher)."""
    lib = os.path.join(str(directory), "lib")
    launcher = install_host_program(lib, "enrollment_service.cli", os.path.join(str(directory), "edgefleet-enroll"),
                                    SERVICE_MODULES)
    return lib, launcher


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ed25519_public():
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def rsa_public(bits):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def dsa_public():
    key = dsa.generate_private_key(key_size=1024).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def make_ca(directory):
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl(1)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=directory, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=edgefleet test enrollment CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(directory, "ext.cnf"), "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    os.chmod(os.path.join(directory, "server.key"), 0o600)
    return os.path.join(directory, "ca.crt")


CLOUD_HOST_KEY = ed25519_public()
MGMT_KEY = ed25519_public()


class EnrollmentService:
    """Start the service (gunicorn, TLS worker) against a registry; stop and clean up on exit."""

    def __init__(self, workdir=None, registry="file", mysql=None, rate_limit=None, threads=8, workers=1,
                 clouds=(("cloud01", "20000-20999"),), mode="instance"):
        self.own_dir = workdir is None
        self.dir = str(workdir) if workdir else tempfile.mkdtemp(prefix="edgefleet-enroll-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "server.log")
        self.config_path = os.path.join(self.dir, "enrollment.json")
        self.process = None
        if registry == "file":
            reg_raw = {"type": "file", "path": os.path.join(self.dir, "registry.yml")}
            with open(reg_raw["path"], "w") as handle:
                handle.write("devices: []\ncloud_hosts: []\n")
        else:
            reg_raw = dict(mysql)
        self.registry_raw = reg_raw
        self.registry_spec = normalize_registry_spec(reg_raw, self.dir)
        self.policy_raw = {"replica_mode": mode, "tunnel_ports": "20000-29999", "quarantine_days": 7}
        reg = self.registry()
        for index, (name, ports) in enumerate(clouds):
            registry_ops.update_cloud_host(reg, name, {"address": "192.0.2.%d" % (10 + index),
                                                       "tunnel_ports": ports})
        reg.close()
        self.ca = make_ca(self.dir)
        config = {
            "registry": reg_raw, "allocation": self.policy_raw,
            "cloud_hosts": dict((name, {"address": "%s.example.net" % name, "ssh_port": 22,
                                        "host_keys": [CLOUD_HOST_KEY]}) for name, _ports in clouds),
            "tunnel_user": "edgefleet-tunnel", "management_public_keys": [MGMT_KEY],
            "rate_limit": rate_limit or {"per_client_rate": 1000, "per_client_burst": 1000,
                                         "global_rate": 10000, "global_burst": 10000},
        }
        with open(self.config_path, "w") as handle:
            json.dump(config, handle)
        self.lib, self.cli_path = install_service(self.dir)
        self.gunicorn_conf = os.path.join(self.dir, "gunicorn.conf.py")
        with open(self.gunicorn_conf, "w") as handle:
            handle.write(
                "bind = ['127.0.0.1:%d']\nworkers = %d\nthreads = %d\nkeepalive = 0\n"
                "worker_class = %r\n"
                "certfile = %r\nkeyfile = %r\naccesslog = '-'\nerrorlog = '-'\nloglevel = 'info'\n"
                "worker_connections = 1000\ntimeout = 60\n"
                % (self.port, workers, threads, WORKER_CLASS, os.path.join(self.dir, "server.crt"),
                   os.path.join(self.dir, "server.key")))

    def registry(self):
        return open_registry(self.registry_spec)

    def env(self):
        return dict(os.environ, PYTHONPATH=self.lib, EDGEFLEET_ENROLL_CONFIG=self.config_path,
                    PYTHONDONTWRITEBYTECODE="1")

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, "-m", "gunicorn", "-c", self.gunicorn_conf, APP],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the enrollment service exited:\n" + self.server_log())
            try:
                status, _doc = self.request("GET", "/v1/health")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the enrollment service did not answer within %ss:\n%s" % (timeout, self.server_log()))

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def server_log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx

    def request(self, method, path, body=None, headers=None, raw=None, timeout=30):
        """HTTPS request verified against the test CA; returns (status, parsed JSON or text)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(), timeout=timeout)
        try:
            payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": "application/json"}
            hdrs.update(headers or {})
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            self.last_headers = dict(resp.getheaders())
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data.decode("utf-8", "replace")
        finally:
            conn.close()

    def enroll(self, body, **kwargs):
        return self.request("POST", "/v1/enroll", body=body, **kwargs)

    def cli(self, *args, check=True, input_text=None):
        proc = subprocess.run([self.cli_path, "--config", self.config_path]
                              + list(args), capture_output=True, text=True, env=self.env(), input=input_text,
                              timeout=60, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("edgefleet-enroll %s failed (%d): %s"
                                 % (" ".join(args), proc.returncode, proc.stderr))
        return proc

    def token(self, *args):
        """Create a token with the CLI; returns the token string (read from a 0600 file)."""
        out = os.path.join(self.dir, "token.%d" % time.monotonic_ns())
        self.cli("token", "create", "--output", out, *args)
        with open(out) as handle:
            token = handle.read().strip()
        os.unlink(out)
        return token

    def snapshot(self):
        """Everything the registry holds (devices, allocation state, enrollment state) as text."""
        if self.registry_spec["type"] == "file":
            out = {}
            for name in sorted(os.listdir(self.dir)):
                if name.startswith(("registry", ".registry")) and not name.endswith(".lock"):
                    with open(os.path.join(self.dir, name)) as handle:
                        out[name] = handle.read()
            return out
        import pymysql
        spec = self.registry_spec
        conn = pymysql.connect(host=spec["host"], port=spec["port"], user=spec["user"], password=spec["password"],
                               database=spec["database"])
        try:
            out = {}
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES")
                for (table,) in cur.fetchall():
                    cur.execute("SELECT * FROM `%s` ORDER BY 1, 2" % table if table.endswith(("ports", "instances",
                                                                                              "enroll"))
                                else "SELECT * FROM `%s` ORDER BY 1" % table)
                    out[table] = [tuple(str(v) for v in row) for row in cur.fetchall()]
            return out
        finally:
            conn.close()


def enroll_body(token, device_id, site=None, labels=None, tunnel_key=None, host_key=None):
    body = {"token": token, "device_id": device_id,
            "tunnel_public_key": tunnel_key or ed25519_public(), "host_public_key": host_key or ed25519_public()}
    if site is not None:
        body["site"] = site
    if labels is not None:
        body["labels"] = labels
    return body


@contextlib.contextmanager
def raw_socket(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        yield sock
