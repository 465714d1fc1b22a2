# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero-touch enrollment end to end on the podman lab (issue 14): nobody reaches the device first.

Holds the shared lab lock for the whole module. It starts, as processes (the CI host has no
systemd as PID 1), the same programs the systemd units run:

* the enrollment service (roles/enrollment: gunicorn + Flask, TLS-only worker) bound to the lab
  bridge address 10.231.0.1 with a certificate for that address signed by a throwaway CA, writing
  to the lab's own registry (inventories/lab/registry.yml, allocation next to it);
* the trigger `converge_trigger --loop` (what edgefleet-converge-new.timer runs) with a fleet
  config that reaches tunnel devices through their cloud host and pins their host keys from the
  registry.

enr01 (instance mode) and enr02 (channel mode) boot at the same time and are converged by the
trigger; then enr03 (instance mode) is converged by playbooks/converge_new.yml instead (what the
AWX schedule runs), run again by the test as soon as enr03's tunnel listens (at most 10 s
later). Per device: the CLI creates a token; a new container is CREATED (not started) on the lab
network, its root file system mounted on the host and the device_enroll role run into it
(device_enroll_root = the mount): program, unit, config, pinned CA and token, nothing else (no
controller key, no address in the registry). An iptables rule on the host drops controller ->
device tcp/22 and a direct ssh is shown to fail. Then the container starts and the test only
waits and polls (registry, trigger state, replica): the device enrolls, starts its tunnel, the
trigger converges it; a row is then written on the device through its own tunnel (the management
back-channel via the cloud host) and read on its cloud replica.
The test prints the time from container start to the row on the replica.

enr02's channel mode: the operator pre-registers the id with replica_mode=channel (and no keys)
before it boots and gives it a device-bound token; enrollment "claims" that entry.

Afterwards the device_tunnel role must change nothing on the enrolled devices (checked in the
trigger's own site.yml output and in a second site.yml limited to them). Cleanup restores the
registry, allocation and enrollment files from copies, removes containers, iptables rules and the
cloud-side leftovers (schema and GTID domain, instance datadir) and checks that site.yml is a
no-op again.

    flock /tmp/edgefleet-lab.lock python -m pytest -m lab tests/live/test_enrollment_lab.py -s
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from tests.runner import lab
from tests.runner.support import ROOT, environment, plain
from tests.support.enrollment import APP, SYSTEM_PYTHON, WORKER_CLASS, free_port, install_service

pytestmark = pytest.mark.lab

GATEWAY = "10.231.0.1"
NETWORK = "edgefleet-lab"
LAB_INV = os.path.join(ROOT, "inventories", "lab")
REGISTRY = os.path.join(LAB_INV, "registry.yml")
ALLOC = os.path.join(LAB_INV, "registry.alloc.yml")
ENROLL_STATE = os.path.join(LAB_INV, ".registry.yml.enroll.json")
TEST_FLEET = os.path.join(LAB_INV, "enroll-test.fleet.yml")
STATE = os.path.join(ROOT, "lab", ".state")
LAB_KEY = os.path.join(STATE, "id_ed25519")
LAB_KNOWN_HOSTS = os.path.join(STATE, "known_hosts")
PODMAN_ENV = dict(os.environ, CONTAINERS_CONF=os.path.join(STATE, "containers.conf"))
DEVICES = [  # id, address on the lab network, replica mode
    ("enr01", "10.231.0.231", "instance"),
    ("enr02", "10.231.0.232", "channel"),
]
# Converged by the AWX alternative (playbooks/converge_new.yml, what the AWX schedule runs) instead.
AWX_DEVICE = ("enr03", "10.231.0.233", "instance")
GOAL_SECONDS = 180
COMMENT = "edgefleet-enrollment-test"


def sh(args, check=True, env=None, timeout=600, input_text=None):
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, check=False,
                          input=input_text)
    if check and proc.returncode:
        raise AssertionError("%s failed (rc=%d): %s %s" % (" ".join(args), proc.returncode, proc.stdout[-3000:],
                                                           proc.stderr[-3000:]))
    return proc


def podman(*args, check=True):
    return sh(["podman"] + list(args), check=check, env=PODMAN_ENV)


def read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def restore(path, data):
    if data is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    tmp = path + ".enroll-test-restore"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644)
    os.rename(tmp, path)


def registry_devices():
    with open(REGISTRY, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle) or {}
    return dict((d["id"], d) for d in doc.get("devices") or [])


def allocations():
    with open(ALLOC, encoding="utf-8") as handle:
        return json.load(handle)["allocations"]


def cloud_host_key():
    with open(LAB_KNOWN_HOSTS, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("10.231.0.201 "):
                return " ".join(line.split()[1:3])
    raise AssertionError("cloud01's host key is not pinned in %s" % LAB_KNOWN_HOSTS)


def make_pki(directory):
    """A CA and a server certificate for the lab gateway address (what devices dial)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=directory, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=edgefleet lab enrollment CA", "-keyout", "ca.key", "-out", "ca.crt")
    with open(os.path.join(directory, "ext.cnf"), "w") as handle:
        handle.write("subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n" % GATEWAY)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=%s" % GATEWAY,
        "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")
    os.chmod(os.path.join(directory, "server.key"), 0o600)


class Lab:
    """Everything the test starts or changes, so cleanup can undo exactly that."""

    def __init__(self, work):
        self.work = work
        self.procs = {}
        self.containers = []
        self.rules = []
        self.port = free_port()
        self.saved = dict((p, read(p)) for p in (REGISTRY, ALLOC, ENROLL_STATE))
        self.known_hosts = os.path.join(work, "devices_known_hosts")
        self.trigger_state = os.path.join(work, "trigger")
        self.config = os.path.join(work, "enrollment.json")

    # ------------------------------------------------------------------ service and trigger
    def start_service(self):
        make_pki(self.work)
        with open(LAB_KEY + ".pub", encoding="utf-8") as handle:
            mgmt = handle.read().strip()
        config = {"registry": {"type": "file", "path": REGISTRY}, "allocation": {},
                  "cloud_hosts": {"cloud01": {"address": "10.231.0.201", "ssh_port": 22,
                                              "host_keys": [cloud_host_key()]}},
                  "tunnel_user": "edgefleet-tunnel", "management_public_keys": [mgmt]}
        with open(self.config, "w") as handle:
            json.dump(config, handle)
        conf = os.path.join(self.work, "gunicorn.conf.py")
        with open(conf, "w") as handle:
            handle.write("bind = ['%s:%d']\nworkers = 1\nthreads = 4\nkeepalive = 0\n"
                         "worker_class = %r\n"
                         "certfile = %r\nkeyfile = %r\naccesslog = '-'\nerrorlog = '-'\nloglevel = 'info'\n"
                         "timeout = 60\n" % (GATEWAY, self.port, WORKER_CLASS, os.path.join(self.work, "server.crt"),
                                             os.path.join(self.work, "server.key")))
        # The service's code as the enrollment role ships it, the CLI through its launcher.
        self.lib, self.cli_path = install_service(self.work)
        self.spawn("service", [SYSTEM_PYTHON, "-m", "gunicorn", "-c", conf, APP],
                   self.service_env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            proc = sh(["curl", "-sS", "--max-time", "3", "--cacert", os.path.join(self.work, "ca.crt"),
                       "https://%s:%d/v1/health" % (GATEWAY, self.port)], check=False)
            if proc.returncode == 0 and proc.stdout.strip().startswith("{"):
                return
            time.sleep(0.3)
        raise AssertionError("the enrollment service did not answer:\n" + self.log("service"))

    def service_env(self):
        return dict(os.environ, PYTHONPATH=self.lib, EDGEFLEET_ENROLL_CONFIG=self.config, PYTHONDONTWRITEBYTECODE="1")

    def cli(self, *args):
        return sh([self.cli_path, "--config", self.config] + list(args),
                  env=self.service_env()).stdout

    def start_trigger(self):
        # The fleet config the trigger (like a production controller) converges with: tunnel devices
        # are reached through their cloud host (ProxyCommand with the lab key and the lab's pinned
        # cloud host key) and their own host keys are pinned by HostKeyAlias=<device id> in the
        # known_hosts the trigger writes from the registry. In inventories/lab so group_vars apply.
        jump = ("-i %s -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes"
                % (LAB_KEY, LAB_KNOWN_HOSTS))
        with open(TEST_FLEET, "w") as handle:
            yaml.safe_dump({"plugin": "edgefleet.mysql_backup.fleet", "registry": {"type": "file", "path": "registry.yml"},
                            "reach": "address", "jump": "proxycommand", "cloud_ssh_user": "root",
                            "jump_ssh_args": jump,
                            "ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % self.known_hosts},
                           handle)
        env = dict(os.environ, **environment(PYTHONPATH=os.path.join(ROOT, "collections")))
        self.spawn("trigger", [sys.executable, "-m",
                               "ansible_collections.edgefleet.mysql_backup.plugins.module_utils.converge_trigger",
                               "--project-dir", ROOT, "--inventory", TEST_FLEET, "--state-dir", self.trigger_state,
                               "--known-hosts", self.known_hosts, "--loop", "3", "--tunnel-wait", "60",
                               "--max-devices", "5", "--retry-failed-after", "20"], env)

    def spawn(self, name, argv, env):
        log = open(os.path.join(self.work, name + ".log"), "ab")
        self.procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                             start_new_session=True), log)

    def stop(self, name):
        proc, log = self.procs.pop(name, (None, None))
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()

    def log(self, name):
        return (read(os.path.join(self.work, name + ".log")) or b"").decode("utf-8", "replace")

    def trigger_converged(self):
        doc = read(os.path.join(self.trigger_state, "state.json"))
        return set(json.loads(doc)["converged"]) if doc else set()

    # ------------------------------------------------------------------ a device
    def new_device(self, name, ip, token):
        """Create the container, install the enrollment artefacts with the device_enroll role into
        its root file system (mounted on the host), block controller -> device SSH. Not started."""
        image = podman("inspect", "--format", "{{.ImageName}}", "device01").stdout.strip()
        podman("rm", "--force", "--ignore", name)
        podman("create", "--name", name, "--hostname", name, "--network", NETWORK, "--ip", ip,
               "--label", "edgefleet.lab=1", "--label", "edgefleet.lab.group=enrollment-test",
               "--cap-add=NET_ADMIN", image)
        self.containers.append(name)
        mount = podman("mount", name).stdout.strip()
        try:
            with open(os.path.join(self.work, "ca.crt"), encoding="utf-8") as handle:
                ca = handle.read()
            varfile = os.path.join(self.work, "factory-%s.json" % name)
            fd = os.open(varfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump({"device_enroll_root": mount, "device_enroll_api_url": "https://%s:%d" % (GATEWAY, self.port),
                           "device_enroll_ca_cert": ca, "device_enroll_token": token, "device_enroll_site": "lab",
                           "device_enroll_labels": {"lab": "true"}, "device_enroll_retry_initial": 1,
                           "device_enroll_retry_max": 10}, handle)
            play = os.path.join(self.work, "factory.yml")
            with open(play, "w") as handle:
                handle.write("- name: Factory image\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
                             "  vars:\n    ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
                             "  roles:\n    - role: edgefleet.mysql_backup.device_enroll\n")
            res = lab.run(["ansible-playbook", "-i", "localhost,", play, "-e", "@" + varfile])
            os.unlink(varfile)
            assert token not in res.stdout + res.stderr, "the token appeared in the role's output"
            artefacts = sorted(os.path.relpath(os.path.join(d, f), mount) for d, _s, files in os.walk(
                os.path.join(mount, "etc", "edgefleet")) for f in files)
            assert artefacts == ["etc/edgefleet/enroll-ca.pem", "etc/edgefleet/enroll.json", "etc/edgefleet/enroll.token"]
            assert os.stat(os.path.join(mount, "etc/edgefleet/enroll.token")).st_mode & 0o777 == 0o600
            assert not os.path.exists(os.path.join(mount, "root/.ssh/authorized_keys")), "the image carries a login key"
        finally:
            podman("umount", name)
        rule = ["OUTPUT", "-d", ip + "/32", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", COMMENT,
                "-j", "DROP"]
        sh(["iptables", "-I"] + rule)
        self.rules.append(rule)

    def direct_ssh_fails(self, ip):
        proc = sh(["ssh", "-F", "/dev/null", "-i", LAB_KEY, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", "ConnectTimeout=3", "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                   "root@" + ip, "true"], check=False)
        return proc.returncode != 0 and "timed out" in proc.stderr

    def device_sql(self, name, query):
        """SQL on the device through its tunnel: ProxyCommand via cloud01, host key pinned by alias."""
        port = allocations()[name]["tunnel_ssh_port"]
        proxy = ("ssh -W %%h:%%p -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=%s "
                 "-o StrictHostKeyChecking=yes root@10.231.0.201" % (LAB_KEY, LAB_KNOWN_HOSTS))
        proc = sh(["ssh", "-F", "/dev/null", "-i", LAB_KEY, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", "ProxyCommand=" + proxy, "-o", "HostKeyAlias=" + name,
                   "-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "StrictHostKeyChecking=yes",
                   "-p", str(port), "root@127.0.0.1", "mariadb", "-N", "-B"], input_text=query)
        return proc.stdout

    def journal(self, name, unit):
        return podman("exec", name, "journalctl", "-b", "-u", unit, "--no-pager", "-o", "cat", check=False).stdout

    # ------------------------------------------------------------------ cleanup
    def cleanup(self):
        errors = []
        for name in list(self.procs):
            self.stop(name)
        for name in self.containers:
            podman("rm", "--force", "--time", "5", name, check=False)
        for rule in self.rules:
            if sh(["iptables", "-D"] + rule, check=False).returncode:
                errors.append("iptables rule %s not removed" % rule)
        if os.path.exists(TEST_FLEET):
            os.unlink(TEST_FLEET)
        # the registry, allocation and enrollment state as they were before the test
        with open(os.path.join(LAB_INV, ".registry.yml.lock"), "a") as handle:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX)
            for path, data in self.saved.items():
                restore(path, data)
        return errors


@pytest.fixture(scope="module")
def enrolled():
    work = tempfile.mkdtemp(prefix="edgefleet-enroll-lab-")
    results = {"devices": {}, "work": work}
    with lab.lab_lock():
        state = Lab(work)
        records = {}
        try:
            state.start_service()
            state.start_trigger()
            # both devices boot at the same time (the trigger may take them in one batch)
            for name, ip, mode in DEVICES:
                prepare_device(state, name, ip, mode)
            records.update(run_devices(state, DEVICES, results))
            for name, _ip, _mode in DEVICES:
                print(render(results["devices"][name]))
            results["trigger_log"] = state.log("trigger")
            print("\ntrigger log (what the timer's journal would show):\n" + results["trigger_log"])
            results["service_log"] = state.log("service")
            results["lab"] = state
            results["run_logs"] = run_logs(state.trigger_state)
            state.stop("trigger")
            name, ip, mode = AWX_DEVICE
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                # enr03's factory steps (token, created container, artefacts, SSH block; instance mode:
                # nothing in the registry) touch nothing the next run reads: done meanwhile
                awx_prepared = pool.submit(prepare_device, state, name, ip, mode)
                # the device_tunnel role and the rest of site.yml, once more, on the enrolled devices
                ids = [dev for dev, _ip, _mode in DEVICES]
                res = lab.run(["ansible-playbook", "-i", TEST_FLEET, "site.yml", "--limit", ",".join(ids + ["cloud01", "localhost"])])
                results["second_run"] = res.stdout
                awx_prepared.result()
            # the AWX alternative: the scheduled playbook instead of the trigger
            records.update(run_devices(state, [AWX_DEVICE], results, converge=awx_schedule(state, results)))
            print(render(results["devices"][name]))
            state.stop("service")
            results["service_log"] = state.log("service")
            yield results
        finally:
            errors = state.cleanup()
            try:
                restore_cloud(records)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            assert not errors, errors


def awx_schedule(state, results):
    """What the AWX schedule does (every 2 min in awx/controller.yml): run
    playbooks/converge_new.yml until a run converged the device. Here the next run comes at the
    latest 10 s after the last one, and as soon as the device's tunnel listens on its cloud host
    (what the next run needs once the last one authorized its key). Returns the poll predicate."""
    runs = results.setdefault("awx_runs", [])

    def tunnel_listens(name):
        record = allocations().get(name)
        return bool(record) and bool(lab.shell(record["cloud_host"], "ss -Hltn 'sport = :%d'"
                                               % record["tunnel_ssh_port"], check=False).strip())

    def converged(name):
        res = lab.run(["ansible-playbook", "-i", TEST_FLEET, "playbooks/converge_new.yml",
                       "-e", "converge_new_known_hosts=%s" % state.known_hosts])
        runs.append(res.stdout)
        recap = lab.recap(res.stdout).get(name)
        if recap and recap["ok"] > 0 and not recap["failed"] and not recap["unreachable"]:
            return True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not tunnel_listens(name):
            time.sleep(1)
        return False
    return converged


def prepare_device(state, name, ip, mode):
    """Token, (channel mode: pre-registration), factory artefacts into a created container, the
    SSH block. Nothing is started."""
    scope = ["--site", "lab", "--expires", "1h"]
    if mode == "channel":
        # per-device setting chosen by the operator before the device boots: pre-register the id
        # (no keys, no address); enrollment claims this entry. Its token is bound to the id.
        lab.run(["ansible", "localhost", "-i", TEST_FLEET, "-m", "edgefleet.mysql_backup.registry", "-a",
                 "config=%s id=%s site=lab status=active reach=tunnel replica_mode=channel"
                 % (os.path.join(LAB_INV, "lab.fleet.yml"), name)])
        scope += ["--device-id", name]
    else:
        scope += ["--max-uses", "1"]     # a batch token could carry more uses
    token_file = os.path.join(state.work, "token")
    state.cli("token", "create", "--output", token_file, *scope)
    with open(token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    os.unlink(token_file)
    state.new_device(name, ip, token)
    assert state.direct_ssh_fails(ip), "the controller reaches %s:22 directly" % ip
    before = registry_devices().get(name)
    assert before is None or not before.get("address"), "the registry has an address for %s" % name


def run_devices(state, specs, results, converge=None, timeout=420):
    """Start the prepared containers together, then only read, for all of them at once: enrolled
    (registry), listed by ansible-inventory, converged (the trigger's state file, or the converge
    predicate), then write a row on each through its tunnel and wait for it on its replica.
    Returns {name: allocation record}."""
    started, marks, rows, records = {}, {}, {}, {}
    for name, _ip, _mode in specs:
        started[name] = time.monotonic()
        podman("start", name)
        marks[name] = {}
    converge = converge or (lambda name: name in state.trigger_converged())
    deadline = time.monotonic() + timeout
    while any("row on replica" not in marks[name] for name in marks):
        if time.monotonic() > deadline:
            name = next(n for n in marks if "row on replica" not in marks[n])
            raise AssertionError(
                "%s: timed out (%s)\n--- device journal:\n%s\n--- trigger:\n%s\n--- service:\n%s"
                % (name, marks[name], state.journal(name, "edgefleet-enroll"), state.log("trigger")[-6000:],
                   state.log("service")[-3000:]))
        for name, m in marks.items():
            def mark(what, name=name, m=m):
                m[what] = time.monotonic() - started[name]
            if "enrolled" not in m:
                if (registry_devices().get(name) or {}).get("ssh_public_key"):
                    mark("enrolled")
                    # read-only: the lab's own inventory shows the device at once, through its tunnel
                    inv = os.path.join(LAB_INV, "lab.fleet.yml")
                    graph = lab.run(["ansible-inventory", "-i", inv, "--graph"]).stdout
                    hostvars = json.loads(lab.run(["ansible-inventory", "-i", inv, "--host", name]).stdout)
                    mark("in inventory")
                    results.setdefault("inventory", {})[name] = (graph, hostvars)
            elif "converged" not in m:
                if converge(name):
                    mark("converged")
                    records[name] = allocations()[name]
                    # the row: written on the device through its own tunnel, read on its replica
                    rows[name] = "%s-%d" % (name, time.time_ns())
                    state.device_sql(name, "CREATE DATABASE IF NOT EXISTS app; USE app; CREATE TABLE IF NOT EXISTS "
                                           "enroll_proof (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) UNIQUE); "
                                           "INSERT INTO enroll_proof (token) VALUES ('%s');" % rows[name])
                    mark("row written")
            elif "row on replica" not in m:
                record = records[name]
                schema = record["schema_prefix"] + "app" if record["replica_mode"] == "channel" else "app"
                out = lab.shell("cloud01", "mariadb --socket=%s -N -B -e \"SELECT COUNT(*) FROM \\`%s\\`.enroll_proof "
                                           "WHERE token='%s'\" 2>/dev/null || true"
                                % (lab.replica_socket(record["replica_instance"]), schema, rows[name]))
                if out.strip() == "1":
                    mark("row on replica")
        time.sleep(1)
    for name, ip, _mode in specs:
        record = records[name]
        results["devices"][name] = {
            "name": name, "mode": record["replica_mode"], "instance": record["replica_instance"],
            "marks": marks[name], "record": record, "journal": state.journal(name, "edgefleet-enroll"),
            "device_files": podman("exec", name, "sh", "-c", "ls /etc/edgefleet; stat -c '%a %n' /etc/edgefleet/*; "
                                   "systemctl is-enabled edgefleet-tunnel edgefleet-enroll; "
                                   "systemctl is-active edgefleet-tunnel", check=False).stdout,
            "direct_ssh_blocked": state.direct_ssh_fails(ip)}
    return records


def render(dev):
    m = dev["marks"]
    return ("\n%s (%s mode, replica %s): container start -> enrolled %.0f s -> converged by %s %.0f s -> "
            "row written through the tunnel %.0f s -> row on the replica %.0f s (goal < %d s); %s"
            % (dev["name"], dev["mode"], dev["instance"], m["enrolled"],
               "the AWX playbook" if dev["name"] == AWX_DEVICE[0] else "the trigger", m["converged"],
               m["row written"], m["row on replica"], GOAL_SECONDS,
               ("the only commands between the container start and the row write were the runs of "
                "playbooks/converge_new.yml that the AWX schedule makes; otherwise the test only read"
                if dev["name"] == AWX_DEVICE[0] else
                "nobody ran a command between the container start and the row write: the test only read")
               + " the registry file, ansible-inventory (device listed at %.0f s), the trigger's state file and "
               "the replica" % m["in inventory"]))


def restore_cloud(records):
    """The enrolled devices are gone from the registry: site.yml prunes their cloud-side config;
    then their data leftovers go, and a second site.yml must be a no-op."""
    lab.inventory_cache(refresh=True)
    lab.run(["ansible-playbook", "site.yml"])
    for name, record in records.items():
        lab.remove_replica_leftovers("cloud01", name, record)
    # The lab is shared: another engineer's uncommitted role change can make one run change
    # something that has nothing to do with this test; a change that persists is a leftover.
    for attempt in range(2):
        again = lab.run(["ansible-playbook", "site.yml"])
        changed = ["%s: %s" % (task, host) for host in ("cloud01", "device01", "device02")
                   for task in changed_on(again.stdout, host)]
        if not changed:
            return
        print("\nsite.yml after the enrollment test, run %d, changed: %s" % (attempt + 1, changed))
    raise AssertionError("site.yml is not a no-op after the enrollment test: %s" % changed)


def changed_on(stdout, host):
    out, task = [], None
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]")[0]
        elif line.startswith("changed: [%s]" % host) or line.startswith("changed: [%s ->" % host):
            out.append(task)
    return out


# ---------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", [d[0] for d in DEVICES + [AWX_DEVICE]])
def test_device_enrolled_by_itself_and_its_row_reached_the_replica(enrolled, name):
    dev = enrolled["devices"][name]
    marks = dev["marks"]
    print(render(dev))
    assert marks["row on replica"] < 600
    assert "enrolled as %s" % name in dev["journal"], dev["journal"]
    # the token was deleted, keys were generated on the device, tunnel running and enabled
    files = dev["device_files"]
    assert "enroll.token" not in files and "600 /etc/edgefleet/tunnel_ed25519" in files, files
    assert files.split()[-3:] == ["enabled", "enabled", "active"], files
    assert dev["direct_ssh_blocked"], "controller -> device SSH was not blocked until the end"


@pytest.mark.parametrize("name", [d[0] for d in DEVICES + [AWX_DEVICE]])
def test_inventory_shows_the_enrolled_device_through_its_tunnel(enrolled, name):
    graph, hostvars = enrolled["inventory"][name]
    groups = re.findall(r"^\s*\|--@(\S+):$", graph, re.M)
    assert "status_active" in groups and "cloud_cloud01" in groups
    assert re.search(r"\|--%s$" % name, graph, re.M), graph
    hv = plain(hostvars)
    assert hv["edgefleet_reach"] == "tunnel"
    assert hv["ansible_host"] == "127.0.0.1"
    assert hv["ansible_port"] == enrolled["devices"][name]["record"]["tunnel_ssh_port"]
    assert "HostKeyAlias=%s" % name in hv["ansible_ssh_common_args"]


def test_awx_playbook_converged_an_enrolled_device(enrolled):
    """playbooks/converge_new.yml (the AWX schedule's job) converges the new device within two
    runs: the first authorizes its key on the gateway, the next one converges it; the device plays
    ran on it alone (not on device01/02)."""
    name = AWX_DEVICE[0]
    dev = enrolled["devices"][name]
    runs = enrolled["awx_runs"]
    print("\n%s: converged by run %d of playbooks/converge_new.yml" % (name, len(runs)))
    assert 1 <= len(runs) <= 3 and dev["marks"]["row on replica"] < 600
    assert "new devices online: %s" % name in runs[-1]
    for other in ("device01", "device02", "enr01", "enr02"):
        assert other not in lab.recap(runs[-1])


def test_channel_mode_device_went_to_a_shared_instance(enrolled):
    assert enrolled["devices"]["enr01"]["record"]["replica_mode"] == "instance"
    record = enrolled["devices"]["enr02"]["record"]
    assert record["replica_mode"] == "channel" and record["replica_instance"] != "enr02"


def test_device_tunnel_role_changes_nothing_on_enrolled_devices(enrolled):
    """The files the first-boot program wrote are the role's, byte for byte: neither the trigger's
    first site.yml on the device nor a second one changes a device_tunnel task there."""
    trigger_log = enrolled["lab"].log("trigger")
    for name, _ip, _mode in DEVICES:
        assert "converged" in trigger_log
        second = changed_on(enrolled["second_run"], name)
        assert not second, "second site.yml changed on %s: %s" % (name, second)
    recap = lab.recap(enrolled["second_run"])
    for name, _ip, _mode in DEVICES:
        assert recap[name]["changed"] == 0 and recap[name]["failed"] == 0, recap


def test_first_converge_did_not_rewrite_the_tunnel(enrolled):
    """In the trigger's own site.yml run (the first converge of the device) no device_tunnel task
    changed anything on the device: unit, known_hosts, device.yml and key were already right."""
    for name, _ip, _mode in DEVICES:
        assert re.search(r"converged \d+ of \d+ in \d+ s: .*%s" % name, enrolled["trigger_log"]), enrolled["trigger_log"]
        runs = [text for text in enrolled["run_logs"] if re.search(r"^%s\s+: ok=" % name, text, re.M)]
        assert runs, "no trigger run converged %s" % name
        for text in runs:
            tunnel = [task for task in changed_on(text, name) if "device_tunnel" in task]
            assert not tunnel, "device_tunnel changed on %s in the trigger's run: %s" % (name, tunnel)


def run_logs(state_dir):
    runs = os.path.join(state_dir, "runs")
    out = []
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        out.append(read(os.path.join(runs, name)).decode("utf-8", "replace"))
    return out


def test_no_token_in_logs_or_registry(enrolled):
    for text in (enrolled["trigger_log"], enrolled["service_log"], read(REGISTRY).decode()):
        assert "efe1." not in text
