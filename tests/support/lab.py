"""Helpers for tests that run against the podman lab through the fleet inventory."""
import functools
import json
import os
import subprocess

import testinfra

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "inventories", "lab", "lab.fleet.yml")
# The project's venv first, so ansible-inventory is found when pytest runs as .venv/bin/python.
ENV = dict(os.environ,
           PATH=os.pathsep.join([os.path.join(ROOT, ".venv", "bin"), os.environ.get("PATH", "")]),
           ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
           ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))


def _plain(value):
    """ansible-core 2.19 marks untrusted inventory strings as {"__ansible_unsafe": ...}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@functools.lru_cache(maxsize=1)
def inventory():
    """`ansible-inventory --list` of the lab fleet (hostvars and groups)."""
    out = subprocess.run(["ansible-inventory", "-i", INVENTORY, "--list"], env=ENV, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    data = _plain(json.loads(out))
    # A device's replica port, datadir, channel name, schema prefix and cloud address are kept
    # on its cloud host only (one copy); the tests read them as the device's variables.
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_inventory import device_entry_vars
    hostvars = data["_meta"]["hostvars"]
    for name in data.get("devices", {}).get("hosts", []):
        hostvars[name].update(device_entry_vars(name, hostvars))
    return data


def group(name):
    data = inventory()
    return sorted(data.get(name, {}).get("hosts", []))


def devices():
    """Active devices of the lab."""
    return sorted(set(group("devices")) & set(group("status_active")))


def clouds():
    return group("cloud")


def hostvars(name):
    return inventory()["_meta"]["hostvars"][name]


@functools.lru_cache(maxsize=None)
def lab_host(name):
    """testinfra host over SSH with the inventory's own key and pinned known_hosts."""
    hv = hostvars(name)
    return testinfra.get_host(
        f"ssh://{hv.get('ansible_user', 'root')}@{hv['ansible_host']}:{hv.get('ansible_port', 22)}",
        ssh_identity_file=hv["ansible_ssh_private_key_file"],
        ssh_extra_args=hv.get("ansible_ssh_common_args", ""),
        controlpersist=60,
    )


def sql(host, query, socket="/run/mysqld/mysqld.sock"):
    """Run a query as root over the unix socket; rows as lists of strings."""
    out = host.check_output("mariadb --socket=%s -N -B -e %s", socket, query)
    return [line.split("\t") for line in out.splitlines()]


def replica_socket(device):
    return f"/run/mysqld/edgefleet-{hostvars(device)['edgefleet_replica_instance']}.sock"


def replica_schema(device, database="app"):
    hv = hostvars(device)
    return hv["edgefleet_schema_prefix"] + database if hv["edgefleet_replica_mode"] == "channel" else database
