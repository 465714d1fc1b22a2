"""Helpers shared by the live tests: run a module through real Ansible, wait for a condition,
read a replication channel."""
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def ansible_env():
    """Environment for `ansible`/`ansible-playbook` on localhost with this collection and JSON output."""
    return dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
                ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                ANSIBLE_PYTHON_INTERPRETER=os.path.join(VENV_BIN, "python"),
                ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_LOCALHOST_WARNING="false")


def ansible_module(module, args, timeout=300, secret=None):
    """Run edgefleet.mysql_backup.<module> with args on localhost through `ansible`; return
    (the task result, stdout + stderr). `secret` must not appear in the output."""
    env = ansible_env()
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,",
                           "-c", "local", "-m", "edgefleet.mysql_backup." + module,
                           "-a", json.dumps(args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout,
                          check=False)
    output = proc.stdout + proc.stderr
    if secret is not None:
        assert secret not in output, "secret leaked into the module output"
    data = json.loads(proc.stdout)
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"], output


def wait_for(predicate, timeout=30, what="condition", interval=0.2):
    """Poll predicate until it returns something true (returned); fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def channel_state(replica, name):
    """SHOW SLAVE '<name>' STATUS on a MariaDB replica, as a dict."""
    conn = replica.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SLAVE %s STATUS", (name,))
            cols = [c[0] for c in cur.description]
            return dict(zip(cols, cur.fetchone()))
    finally:
        conn.close()
