"""Bad-input catalogue: every case goes through a real entry point (ansible-inventory, the
allocation module run by `ansible`, ansible-playbook, the replication modules against real
MariaDB servers) and must fail with a clear message naming what is wrong, changing nothing.

The pure logic behind many of these cases is unit-tested by its owners (referenced per case);
here the same inputs arrive the way an operator or AWX would send them.
"""
import json
import os
import re

import pytest

from tests.badinput.support import VENV_BIN, ansible_inventory, ansible_module, run, snapshot, write_fleet

CLOUD = "cloud_hosts:\n  - {name: c1, address: 192.0.2.100}\n"


def devices(*entries):
    return "devices:\n" + "".join(f"  - {entry}\n" for entry in entries)


# --------------------------------------------------------------------------------------------
# Registry input: read by the inventory plugin, written by the allocation module.
# (unit: tests/unit/plugins/module_utils/test_registry.py::test_bad_registry_fails_and_writes_nothing,
#  test_identifiers.py::test_bad_ids, inventory/test_fleet.py::test_bad_registry_is_a_parse_error)
# --------------------------------------------------------------------------------------------

REGISTRY_CASES = {
    "malformed_yaml": ("devices: [ {id: dev1\n" + CLOUD, r"registry file .*registry\.yml is not valid YAML"),
    "not_a_mapping": ("- just\n- a list\n", r"registry|mapping|devices"),
    "unknown_field_typo": (devices("{id: dev1, staus: retired}") + CLOUD, r"device dev1: unknown field\(s\) staus"),
    "duplicate_device_id": (devices("{id: dev1}", "{id: dev1}") + CLOUD, r"device dev1: field \"id\" is duplicated"),
    "uppercase_and_dash_id": (devices("{id: Dev-1}") + CLOUD, r"field \"id\" value 'Dev-1' is not allowed"),
    "path_traversal_id": (devices("{id: ../etc}") + CLOUD, r"field \"id\" value '\.\./etc' is not allowed"),
    "shell_metachar_id": (devices("{id: 'dev1;reboot'}") + CLOUD, r"field \"id\" value 'dev1;reboot' is not allowed"),
    "too_long_id": (devices("{id: " + "d" * 33 + "}") + CLOUD, r"is not allowed.*at most 32"),
    "reserved_group_id": (devices("{id: all}") + CLOUD, r"value 'all' is reserved"),
    "reserved_prefix_id": (devices("{id: cloud_x}") + CLOUD, r"value 'cloud_x' is reserved"),
    "device_named_like_cloud": (devices("{id: c1}") + CLOUD, r"cloud host c1: field \"name\" is also a device id"),
    "bad_status": (devices("{id: dev1, status: gone}") + CLOUD, r"device dev1: field \"status\" value 'gone' must be one of"),
    "bad_replica_mode": (devices("{id: dev1, replica_mode: mirror}") + CLOUD,
                         r"device dev1: field \"replica_mode\" value 'mirror' must be one of instance, channel"),
    "bad_cloud_name": (devices("{id: dev1}") + "cloud_hosts:\n  - {name: C-1, address: 192.0.2.100}\n",
                       r"\"name\" value 'C-1'"),
}


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_registry_through_inventory(tmp_path, case):
    registry, message = REGISTRY_CASES[case]
    config = write_fleet(tmp_path, registry)
    before = snapshot(tmp_path)
    rc, out = ansible_inventory(config)
    assert rc != 0, out
    assert re.search(message, out), out
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_registry_through_allocation(tmp_path, case):
    registry, message = REGISTRY_CASES[case]
    config = write_fleet(tmp_path, registry)
    before = snapshot(tmp_path)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc != 0, out
    assert re.search(message, out), out
    assert snapshot(tmp_path) == before, "a failed allocation wrote files"


def test_missing_registry_file(tmp_path):
    config = write_fleet(tmp_path, "")
    (tmp_path / "registry.yml").unlink()
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc != 0 and re.search(r"registry.*registry\.yml", out), out
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["t.fleet.yml"]


def test_corrupt_allocation_file_is_not_overwritten(tmp_path):
    """(unit: test_registry.py::test_missing_registry_and_bad_alloc_file)"""
    config = write_fleet(tmp_path, devices("{id: dev1}") + CLOUD, alloc='{"format": "edgefleet.mysql_bac')
    before = snapshot(tmp_path)
    for rc, out in (ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)}),
                    ansible_inventory(config)):
        assert rc != 0 and re.search(r"registry\.alloc\.yml", out), out
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# Allocation policy and capacity
# (unit: test_allocation.py::test_port_range_validation, test_exhausted_range_names_device_and_field,
#  test_no_cloud_host, test_removed_cloud_host_with_live_devices_is_an_error,
#  test_channels_per_instance_limit_is_validated)
# --------------------------------------------------------------------------------------------

THREE = devices("{id: dev1}", "{id: dev2}", "{id: dev3}")

POLICY_CASES = {
    # half the tunnel ports bound the capacity, so 4 tunnel ports take 2 devices
    "exhausted_tunnel_ports": (THREE + CLOUD, {"tunnel_ports": "20000-20003"}, r"device dev3: no cloud host can take it: c1"),
    "exhausted_replica_ports": (THREE + CLOUD, {"replica_ports": "30000-30001"}, r"dev3.*replica_ports|replica_ports.*dev3"),
    "overlapping_tunnel_and_replica_ports": (THREE + CLOUD, {"tunnel_ports": "20000-20100", "replica_ports": "20050-20200"},
                                             r"overlap"),
    "range_below_1024": (THREE + CLOUD, {"tunnel_ports": "80-90"}, r"1024"),
    "range_above_65535": (THREE + CLOUD, {"replica_ports": "65000-70000"}, r"65535"),
    "reversed_range": (THREE + CLOUD, {"tunnel_ports": "21000-20000"}, r"21000-20000|range"),
    "fleet_reserved_port_inside_range": (THREE + CLOUD, {"tunnel_ports": "20000-20100", "reserved_ports": [20010]},
                                         r"20010"),
    "two_clouds_one_address_overlapping": (
        THREE + "cloud_hosts:\n  - {name: c1, address: 192.0.2.100}\n  - {name: c2, address: 192.0.2.100}\n",
        {}, r"c1.*c2|c2.*c1"),
    "channels_per_instance_over_256": (THREE + CLOUD, {"replica_mode": "channel", "channels_per_instance": 300},
                                       r"channels_per_instance"),
    "capacity_exhausted": (THREE + CLOUD, {"capacity": 2}, r"device dev3: no cloud host can take it: c1: capacity 2"),
    "no_cloud_host": (THREE, {}, r"cloud host"),
    "unknown_policy_key": (THREE + CLOUD, {"tunel_ports": "20000-20100"}, r"tunel_ports"),
}


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_allocation_policy(tmp_path, case):
    registry, policy, message = POLICY_CASES[case]
    config = write_fleet(tmp_path, registry, policy=policy)
    before = snapshot(tmp_path)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc != 0, out
    assert re.search(message, out), out
    assert snapshot(tmp_path) == before, "a failed allocation wrote files"


def allocated_fleet(tmp_path, registry):
    config = write_fleet(tmp_path, registry)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc == 0, out
    return config


def test_unknown_cloud_host_removed_under_live_devices(tmp_path):
    config = allocated_fleet(tmp_path, devices("{id: dev1}") + CLOUD)
    (tmp_path / "registry.yml").write_text(devices("{id: dev1}") + "cloud_hosts:\n  - {name: c9, address: 192.0.2.109}\n")
    before = snapshot(tmp_path)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation", {"config": str(config)})
    assert rc != 0 and re.search(r"c1", out) and re.search(r"dev1", out), out
    assert snapshot(tmp_path) == before


def test_move_to_unknown_cloud_host(tmp_path):
    config = allocated_fleet(tmp_path, devices("{id: dev1}") + CLOUD)
    before = snapshot(tmp_path)
    rc, out = ansible_module("edgefleet.mysql_backup.allocation",
                             {"config": str(config), "move": ["dev1"], "move_to": "nosuch"})
    assert rc != 0 and re.search(r"nosuch", out), out
    assert snapshot(tmp_path) == before


def test_registry_vars_cannot_override_allocated_ids(tmp_path):
    """A device may not give itself another device's server_id through registry vars."""
    config = allocated_fleet(tmp_path, devices("{id: dev1}", "{id: dev2, vars: {edgefleet_server_id: 1000}}") + CLOUD)
    rc, out = ansible_inventory(config)
    assert rc == 0, out
    hostvars = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]["_meta"]["hostvars"]
    ids = [hostvars[d]["edgefleet_server_id"] for d in ("dev1", "dev2")]
    assert len(set(ids)) == 2, f"server_id clash through registry vars: {ids}"


# Listeners a role adds on a cloud host must never bind every address (devices reach that host):
# each case stops at the role's first task, before anything is installed.
LISTEN_CASES = {
    "nginx on a bare port": ("monitoring", {"monitoring_nginx_listen": ["80"]}, "admin address): 80."),
    "nginx on [::]": ("monitoring", {"monitoring_nginx_listen": ["127.0.0.1:8088", "[::]:8088"]},
                      "admin address): [::]:8088."),
    "node_exporter on 0.0.0.0": ("monitoring", {"monitoring_node_exporter_listen_address": "0.0.0.0:9100"},
                                 "admin address): 0.0.0.0:9100."),
    "node_exporter with no host": ("monitoring", {"monitoring_node_exporter_listen_address": ":9100"},
                                   "admin address): :9100."),
    "enrollment on ::": ("enrollment", {"enrollment_listen_address": "::"}, "never a wildcard"),
}


@pytest.mark.parametrize("case", sorted(LISTEN_CASES))
def test_role_refuses_a_listener_on_every_address(tmp_path, case):
    role, settings, message = LISTEN_CASES[case]
    marker = tmp_path / "untouched"
    # --check: should the refusal ever regress, the role still changes nothing on this machine.
    rc, out = run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
                   "-m", "ansible.builtin.include_role", "-a", "name=edgefleet.mysql_backup.%s" % role,
                   "-e", json.dumps(dict(settings, monitoring_devices=[], monitoring_instances=[],
                                         enrollment_registry={"type": "file", "path": str(marker)},
                                         enrollment_cloud_hosts={}, edgefleet_replication_password="unused"))])
    assert rc != 0, out
    assert message in out, out
    assert not marker.exists()
