# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad-input catalogue helpers: real entry points (ansible-playbook, ansible, ansible-inventory)
against throwaway fleet directories, and snapshots proving nothing was changed."""
import hashlib
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def env(**extra):
    base = dict(os.environ,
                PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
                ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
                ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                ANSIBLE_PYTHON_INTERPRETER=os.path.join(VENV_BIN, "python"),
                ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_NOCOLOR="1",
                ANSIBLE_DEPRECATION_WARNINGS="false")
    base.update({key: str(value) for key, value in extra.items()})
    return base


def run(args, timeout=300, **extra_env):
    """Run a command from the repository root; (returncode, stdout + stderr)."""
    proc = subprocess.run(args, cwd=ROOT, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def ansible_inventory(config):
    return run([os.path.join(VENV_BIN, "ansible-inventory"), "-i", str(config), "--list"],
               ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true", ANSIBLE_INVENTORY_ENABLED="edgefleet.mysql_backup.fleet")


def ansible_module(module, args, *extra, inventory="localhost,"):
    return run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", inventory, "-c", "local",
                "-m", module, "-a", json.dumps(args), *extra])


def playbook(path, *extra, inventory=None):
    args = [os.path.join(VENV_BIN, "ansible-playbook"), path, *extra]
    if inventory:
        args += ["-i", str(inventory)]
    return run(args)


def snapshot(directory):
    """Content hash of every file under a directory (lock files excluded): equal = unchanged."""
    state = {}
    for base, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".lock"):
                continue
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                state[os.path.relpath(path, directory)] = hashlib.sha256(handle.read()).hexdigest()
    return state


def write_fleet(directory, registry, policy=None, alloc=None, extra_config=""):
    """A fleet config (`t.fleet.yml`), its registry and optionally an allocation file."""
    lines = ["plugin: edgefleet.mysql_backup.fleet", "registry: {type: file, path: registry.yml}",
             "reach: address"]
    if policy:
        lines.append("allocation: " + json.dumps(policy))
    config = directory / "t.fleet.yml"
    config.write_text("\n".join(lines) + "\n" + extra_config)
    (directory / "registry.yml").write_text(registry)
    if alloc is not None:
        (directory / "registry.alloc.yml").write_text(alloc)
    return config
