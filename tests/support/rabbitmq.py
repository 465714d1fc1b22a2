"""A throwaway RabbitMQ broker for tests: a real rabbitmq-server on 127.0.0.1, private directories.

Debian 12's rabbitmq-server package starts a broker (and epmd) on every address from its postinst,
so this controller never installs it: scripts/bootstrap.sh installs the Erlang runtime from apt
and unpacks the .deb with `dpkg -x` into RABBITMQ_DIR (/var/cache/edgefleet/rabbitmq). Each broker
here gets its own base directory, node name, AMQP port, distribution port and epmd port, all bound
to 127.0.0.1, and is stopped (and its epmd killed) when the context exits.

    with rabbitmq_broker(users={"capture": "secret"}) as broker:   # loaded at boot (definitions)
        params = broker.parameters("capture", "secret")   # pika.ConnectionParameters
        broker.restart()                                   # same data, same ports
        broker.add_user("late", "pw")                      # rabbitmqctl: ~3 s per call (an Erlang VM)
"""
import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from tests.support.mariadb import free_port

RABBITMQ_DIR = os.environ.get("RABBITMQ_DIR", "/var/cache/edgefleet/rabbitmq")
# The scripts themselves (the .deb's /usr/sbin wrappers would switch to a rabbitmq user).
SBIN = os.path.join(RABBITMQ_DIR, "usr/lib/rabbitmq/bin")
EPMD_CANDIDATES = ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd")


class RabbitMQBroker:
    """A running broker; the guest account is kept off the network, `admin` is the test's own."""

    def __init__(self, workdir, users=None):
        self.workdir = workdir
        self.users = dict(users or {})
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = "edgefleet%d@localhost" % self.port
        self.process = None
        self.log = os.path.join(workdir, "server.out")

    def env(self):
        env = dict(os.environ)
        base = self.workdir
        env.update({
            "HOME": base,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # Erlang distribution (how rabbitmqctl reaches the node) on loopback too.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"
                                                   " -kernel inet_dist_listen_min %d -kernel inet_dist_listen_max %d"
                                                   % (self.dist_port, self.dist_port),
            "RABBITMQ_BASE": base,
            "RABBITMQ_CONF_ENV_FILE": os.path.join(base, "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": os.path.join(base, "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(base, "advanced.config"),
            "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(base, "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_PID_FILE": os.path.join(base, "rabbit.pid"),
            "RABBITMQ_LOGS": os.path.join(base, "log", "rabbit.log"),
            # The CLI tools reach the node over distribution on loopback, with this cookie.
            "RABBITMQ_ERLANG_COOKIE": "",
        })
        return env

    def _write_config(self):
        os.makedirs(os.path.join(self.workdir, "log"), exist_ok=True)
        with open(os.path.join(self.workdir, "rabbitmq-env.conf"), "w", encoding="utf-8") as handle:
            handle.write("")
        with open(os.path.join(self.workdir, "enabled_plugins"), "w", encoding="utf-8") as handle:
            handle.write("[].\n")
        with open(os.path.join(self.workdir, "rabbitmq.conf"), "w", encoding="utf-8") as handle:
            handle.write("listeners.tcp.1 = 127.0.0.1:%d\n" % self.port
                         + "loopback_users.guest = true\n"
                         + "log.console = false\n"
                         + "disk_free_limit.absolute = 50MB\n"
                         + "load_definitions = %s\n" % os.path.join(self.workdir, "definitions.json"))
        with open(os.path.join(self.workdir, "definitions.json"), "w", encoding="utf-8") as handle:
            json.dump(definitions(self.users), handle)
        cookie = os.path.join(self.workdir, ".erlang.cookie")
        if not os.path.exists(cookie):
            with open(cookie, "w", encoding="utf-8") as handle:
                handle.write("EDGEFLEETTESTCOOKIE%d" % self.port)
            os.chmod(cookie, 0o400)

    def start(self, timeout=60):
        if not os.access(os.path.join(SBIN, "rabbitmq-server"), os.X_OK):
            raise RuntimeError("rabbitmq-server not unpacked in %s: run scripts/bootstrap.sh" % RABBITMQ_DIR)
        self._write_config()
        env = self.env()
        del env["RABBITMQ_ERLANG_COOKIE"]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([os.path.join(SBIN, "rabbitmq-server")], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("rabbitmq-server exited %s:\n%s" % (self.process.returncode, self._log_tail()))
            if self._accepts() and self._ready():
                return self
            time.sleep(0.3)
        raise RuntimeError("rabbitmq-server did not start:\n" + self._log_tail())

    def _accepts(self):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def _ready(self):
        """An AMQP login of a user from the definitions works (or, without users, the port listens)."""
        if not self.users:
            return True
        import pika
        import pika.exceptions
        user, password = sorted(self.users.items())[0]
        try:
            pika.BlockingConnection(self.parameters(user, password)).close()
            return True
        except pika.exceptions.AMQPError:
            return False

    def _log_tail(self):
        with contextlib.suppress(OSError), open(self.log, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-3000:]
        return ""

    def ctl(self, *args, check=True, timeout=60):
        env = self.env()
        del env["RABBITMQ_ERLANG_COOKIE"]
        result = subprocess.run([os.path.join(SBIN, "rabbitmqctl"), "-n", self.node] + list(args), env=env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError("rabbitmqctl %s: %s%s" % (" ".join(args), result.stdout, result.stderr))
        return result

    def add_user(self, user, password, vhost="/"):
        self.ctl("add_user", user, password)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def parameters(self, user, password, **kwargs):
        import pika
        return pika.ConnectionParameters(host="127.0.0.1", port=self.port,
                                         credentials=pika.PlainCredentials(user, password),
                                         connection_attempts=1, **kwargs)

    def url(self, user, password):
        return "amqp://%s:%s@127.0.0.1:%d/%%2F" % (user, password, self.port)

    def stop(self):
        if self.process and self.process.poll() is None:
            # The script's TERM trap stops the Erlang VM gracefully (what `rabbitmqctl stop` does).
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None

    def restart(self):
        self.stop()
        return self.start()

    def kill_epmd(self):
        for epmd in EPMD_CANDIDATES:
            if os.access(epmd, os.X_OK):
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env(),
                               capture_output=True, timeout=10, check=False)
                return


def password_hash(password, salt=None):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def definitions(users):
    """A definitions file: the users, each with all permissions on the default vhost."""
    return {
        "vhosts": [{"name": "/"}],
        "users": [{"name": name, "password_hash": password_hash(password),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                  for name, password in sorted(users.items())],
        "permissions": [{"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                        for name in sorted(users)],
    }


@contextlib.contextmanager
def rabbitmq_broker(users=None, background=False):
    """Start a private broker on loopback with `users` ({name: password}, all permissions on /);
    yields a RabbitMQBroker, stops it and its epmd after. `background`: yield at once while the
    broker boots in a thread (start other servers meanwhile), then call `broker.wait()`."""
    workdir = tempfile.mkdtemp(prefix="edgefleet-rabbitmq-")
    broker = RabbitMQBroker(workdir, users)
    try:
        if background:
            errors = []

            def boot():
                try:
                    broker.start()
                except Exception as exc:  # pylint: disable=broad-except
                    errors.append(exc)

            thread = threading.Thread(target=boot)
            thread.start()

            def wait():
                thread.join()
                if errors:
                    raise errors[0]
                return broker

            broker.wait = wait
            try:
                yield broker
            finally:
                thread.join()
        else:
            yield broker.start()
    finally:
        try:
            broker.stop()
        finally:
            broker.kill_epmd()
            shutil.rmtree(workdir, ignore_errors=True)
