"""Throwaway MariaDB servers for tests: real mariadbd processes on 127.0.0.1, private datadirs.

Each server lives in its own temporary directory, listens only on loopback on a free port,
and is killed and removed when the context exits. Nothing touches the system MariaDB.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pymysql

MARIADBD_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_binary():
    for candidate in MARIADBD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mariadbd not found: apt-get install mariadb-server")


class MariaDBServer:
    """A running mariadbd; `connect()` gives a root pymysql connection."""

    def __init__(self, workdir, port, server_id, extra_options):
        self.workdir = workdir
        self.port = port
        self.server_id = server_id
        self.datadir = os.path.join(workdir, "data")
        self.socket = os.path.join(workdir, "mysqld.sock")
        self.log = os.path.join(workdir, "error.log")
        self.extra_options = list(extra_options)
        self.process = None

    @property
    def host(self):
        return "127.0.0.1"

    def _command(self):
        return [
            _server_binary(),
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={os.path.join(self.workdir, 'mysqld.pid')}",
            f"--log-error={self.log}",
            f"--server-id={self.server_id}",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=16M",
            "--performance-schema=OFF",
            "--skip-name-resolve",
            f"--tmpdir={self.workdir}",
        ] + self.extra_options

    def start(self, timeout=60):
        if not os.path.isdir(self.datadir):
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 f"--tmpdir={self.workdir}"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited early; see {self.log}:\n{self._log_tail()}")
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not answer within {timeout}s:\n{self._log_tail()}")

    def _log_tail(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-20:])
        except OSError:
            return ""

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def connect(self, user="root", password="", database=None, autocommit=True):
        return pymysql.connect(host=self.host, port=self.port, user=user, password=password,
                               database=database, autocommit=autocommit, connect_timeout=5)

    def execute(self, *statements):
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            rows = None
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall()
            return rows


@contextlib.contextmanager
def mariadb_server(server_id=1, binlog=True, extra_options=()):
    """Start a private mariadbd; yields a MariaDBServer. Binlog with GTID-friendly defaults."""
    workdir = tempfile.mkdtemp(prefix="edgefleet-mariadb-")
    options = list(extra_options)
    if binlog:
        options += ["--log-bin=binlog", "--binlog-format=ROW", f"--gtid-domain-id={server_id}"]
    server = MariaDBServer(workdir, free_port(), server_id, options)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
