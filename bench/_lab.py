# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers of the benches that scale the podman lab (devicescale, density, throughput).

Commands run in the repository root with the project's Ansible environment; the lab lock is the
re-entrant one of tests/runner/lab.py; `scale_lab` grows the lab and converges it with site.yml,
`restore_lab` brings it back to 2 devices + 1 cloud host and reports whether site.yml is a no-op.
"""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.runner.lab import lab_lock  # noqa: E402 pylint: disable=wrong-import-position,unused-import

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LAB_CONFIG = os.path.join(ROOT, "inventories", "lab", "lab.fleet.yml")
LAB_ENV = os.path.join(ROOT, "lab", ".state", "env")
REPLICA_BASE = "/var/lib/edgefleet/replicas"


def base_env():
    """The project's toolchain: venv first on PATH, its collections and ansible.cfg."""
    return dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ["PATH"],
                ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
                ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def podman_env():
    """base_env plus what `. lab/.state/env` exports (CONTAINERS_CONF: podman fails without it)."""
    environ = base_env()
    with open(LAB_ENV, encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"^export (\w+)=(.*)$", line.strip())
            if match:
                environ[match.group(1)] = match.group(2).strip("'\"")
    return environ


def run(args, environ, check=True, stdin=None):
    """(seconds, stdout) of a command in the repository root; exits with its output on failure."""
    start = time.monotonic()
    proc = subprocess.run(args, env=environ, cwd=ROOT, capture_output=True, text=True, input=stdin, check=False)
    elapsed = time.monotonic() - start
    if check and proc.returncode:
        sys.exit(f"{' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def recap(stdout):
    """[ok, changed, unreachable, failed] summed over every host of a PLAY RECAP."""
    totals = [0, 0, 0, 0]
    for match in re.finditer(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", stdout, re.M):
        totals = [a + int(b) for a, b in zip(totals, match.groups())]
    return totals


def podman_exec(container, command, environ=None, check=True, stdin=None):
    """stdout of `podman exec [-i] CONTAINER sh -c COMMAND` (stdin: text fed to the command)."""
    args = ["podman", "exec"] + (["-i"] if stdin is not None else []) + [container, "sh", "-c", command]
    return run(args, environ or podman_env(), check=check, stdin=stdin)[1]


def clean_replicas(names, environ, check=True):
    """Remove the replica datadirs (and applied-config stamps) of these instance names on every
    cloud host unless the instance runs. A datadir left by an earlier, bigger lab would make a new
    device's replica (or a new shared channel instance) start from a stale GTID position."""
    if not names:
        return
    script = (f"cd {REPLICA_BASE} 2>/dev/null || exit 0; for d in {' '.join(sorted(names))}; do "
              "systemctl is-active --quiet mariadb@$d || rm -rf -- $d .applied/$d.config-sha256; done")
    run(["ansible", "-i", LAB_CONFIG, "cloud", "-m", "ansible.builtin.shell", "-a", script], environ, check=check)


def unreachable(stdout):
    """The hosts a PLAY RECAP reports unreachable or failed."""
    hosts = re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", stdout, re.M)
    return ", ".join(host for host, unreach, failed in hosts if int(unreach) or int(failed)) or "no host named"


def extra_devices(devices):
    """Lab device names beyond the standard two (device03 .. deviceNN)."""
    return ["device%02d" % index for index in range(3, devices + 1)]


def scale_lab(devices, environ, clouds=1, converge=True):
    """lab/up.yml to this size, connection variables, then (converge) site.yml.
    Returns (up s, site s, site output)."""
    clean_replicas(extra_devices(devices), environ)
    up = ["ansible-playbook", "lab/up.yml", "-e", f"lab_devices={devices}", "-e", f"lab_clouds={clouds}"]
    start = time.monotonic()
    proc = subprocess.run(up, env=environ, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        # Seen on the shared VM: a new container's address answers no ARP for a moment (the host's
        # neighbour entry of the removed container with that address is FAILED) and its SSH login
        # times out. up.yml is idempotent, so one more run finishes the job.
        print(f"  (lab/up.yml failed once, rc={proc.returncode}: {unreachable(proc.stdout)}; running it again)")
        time.sleep(10)
        run(up, environ)
    up_s = time.monotonic() - start
    run(["make", "--no-print-directory", "lab-vars"], environ)
    if not converge:
        return up_s, 0.0, ""
    site_s, site_out = run(["ansible-playbook", "site.yml"], environ)
    return up_s, site_s, site_out


def restore_lab(environ, stale=(), log=None):
    """Back to 2 devices + 1 cloud host: up.yml, lab-vars, site.yml, remove the datadirs of the
    instances in `stale` that no longer run, then site.yml again, which must be a no-op (when it
    is not, both site.yml outputs go to `log`, e.g. bench/results/<bench>-restore.log).
    Never raises (it runs in `finally`). Returns (seconds, changed of the last site.yml)."""
    start = time.monotonic()
    run(["ansible-playbook", "lab/up.yml", "-e", "lab_devices=2", "-e", "lab_clouds=1"], environ, check=False)
    run(["make", "--no-print-directory", "lab-vars"], environ, check=False)
    first_out = run(["ansible-playbook", "site.yml"], environ, check=False)[1]
    clean_replicas(stale, environ, check=False)
    check_out = run(["ansible-playbook", "site.yml", "--diff"], environ, check=False)[1]
    totals = recap(check_out)
    # None: site.yml did not get to a recap; a failed run is no no-op either
    changed = totals[1] if any(totals) and not totals[2] and not totals[3] else None
    if changed != 0 and log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w", encoding="utf-8") as handle:
            handle.write(first_out + "\n\n===== second site.yml =====\n\n" + check_out)
    return time.monotonic() - start, changed
