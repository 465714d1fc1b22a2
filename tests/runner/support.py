"""Run this project's playbooks the way AWX / Automation Controller does: with ansible-runner.

AWX runs every job through ansible-runner (inside an execution environment): a private data
directory per job, the project checked out as the working directory, the inventory given as a
path (an inventory source "sourced from a project" is the fleet config file), extra variables
and environment passed in, and results read back from runner events. A sliced job template
runs N such jobs at once, each with a slice of the inventory's hosts (hosts[k::N]).
"""
import json
import os
import shutil
import tempfile

import ansible_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# ansible-runner finds ansible-playbook / ansible-inventory on this process's PATH.
if VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ.get("PATH", "")


def environment(**extra):
    """What an execution environment sets up: the project's collections and ansible.cfg."""
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
    }
    env.update(extra)
    return env


def awx_slice(hosts, slice_number, slice_count):
    """AWX job slicing: slice k of N gets every N-th host starting at k (1-based k)."""
    return sorted(hosts)[slice_number - 1::slice_count]


class Job:
    """One ansible-runner job (what AWX calls a job), run synchronously or in a thread."""

    def __init__(self, playbook, inventory, extravars=None, limit=None, envvars=None, cmdline=None, tags=None):
        self.private_data_dir = tempfile.mkdtemp(prefix="edgefleet-runner-")
        self.kwargs = dict(
            private_data_dir=self.private_data_dir,
            project_dir=ROOT,
            playbook=playbook,
            inventory=inventory,
            extravars=extravars or {},
            envvars=environment(**(envvars or {})),
            limit=",".join(limit) if isinstance(limit, (list, tuple)) else limit,
            cmdline=cmdline,
            tags=tags,
            quiet=True,
            json_mode=False,
            settings={"suppress_ansible_output": True, "job_timeout": 1800},
        )
        self.kwargs = {k: v for k, v in self.kwargs.items() if v is not None}
        self.runner = None
        self.thread = None

    def start(self):
        self.thread, self.runner = ansible_runner.run_async(**self.kwargs)
        return self

    def run(self):
        self.runner = ansible_runner.run(**self.kwargs)
        return self

    def wait(self):
        if self.thread is not None:
            self.thread.join()
        return self

    @property
    def status(self):
        return self.runner.status

    @property
    def rc(self):
        return self.runner.rc

    @property
    def events(self):
        return list(self.runner.events)

    def stdout(self):
        with open(os.path.join(self.private_data_dir, "artifacts", self.runner.config.ident, "stdout"),
                  encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stats(self):
        return self.runner.stats or {}

    def results(self, task_name=None, event="runner_on_ok"):
        """Results of finished tasks (optionally one task by name), with the host each ran on."""
        out = []
        for ev in self.events:
            if ev.get("event") != event:
                continue
            data = ev.get("event_data", {})
            if task_name is not None and data.get("task") != task_name:
                continue
            out.append(dict(data.get("res") or {}, _host=data.get("host"), _task=data.get("task")))
        return out

    def hosts_with_task_events(self):
        """Hosts that ran at least one task (ok, changed, failed, skipped or unreachable)."""
        seen = set()
        for ev in self.events:
            if ev.get("event", "").startswith("runner_on_") and ev.get("event") != "runner_on_start":
                host = ev.get("event_data", {}).get("host")
                if host:
                    seen.add(host)
        return seen

    def started_order(self, play=None):
        """(host, task) in the order tasks started, optionally for one play."""
        out = []
        for ev in self.events:
            if ev.get("event") == "runner_on_start":
                data = ev.get("event_data", {})
                if play is None or data.get("play") == play:
                    out.append((data.get("host"), data.get("task")))
        return out

    def task_window(self, task_name):
        """(start, end) datetimes of a task's first start and last result event."""
        import datetime
        start = end = None
        for ev in self.events:
            data = ev.get("event_data", {})
            if data.get("task") != task_name or "created" not in ev:
                continue
            stamp = datetime.datetime.fromisoformat(ev["created"])
            if ev.get("event") == "runner_on_start":
                start = stamp if start is None else min(start, stamp)
            elif ev.get("event", "").startswith("runner_on_"):
                end = stamp if end is None else max(end, stamp)
        return start, end

    def describe(self):
        return "status=%s rc=%s\n%s" % (self.status, self.rc, self.stdout()[-6000:])

    def cleanup(self):
        shutil.rmtree(self.private_data_dir, ignore_errors=True)


def plain(value):
    """Inventory strings arrive as {"__ansible_unsafe": ...} in ansible-core 2.19 JSON."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def inventory_list(inventory):
    """`ansible-inventory --list` through ansible-runner (what an AWX inventory update runs)."""
    out, err = ansible_runner.get_inventory(action="list", inventories=[inventory], response_format="json",
                                            envvars=environment(), quiet=True)
    if isinstance(out, str):
        out = json.loads(out)
    if not out:
        raise AssertionError("inventory update failed: %s" % err)
    return plain(out)
