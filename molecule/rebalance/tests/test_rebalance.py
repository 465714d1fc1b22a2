"""rebalance on the one-cloud-host lab: the plan in check mode, refused input, no journal left.

The real move (two cloud hosts) is tests/live/test_rebalance_lab.py."""
import subprocess

import pytest

from tests.support.lab import ENV, INVENTORY, ROOT, clouds, devices, lab_host

CLOUD = clouds()[0]
DEVICE = devices()[0]
ALLOCATIONS = INVENTORY.replace("lab.fleet.yml", "registry.alloc.yml")
REGISTRY = INVENTORY.replace("lab.fleet.yml", "registry.yml")


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def rebalance(*args):
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, "playbooks/rebalance.yml"] + list(args),
                          env=ENV, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture
def unchanged_registry():
    before = read(REGISTRY), read(ALLOCATIONS)
    yield
    assert (read(REGISTRY), read(ALLOCATIONS)) == before, "the registry or the allocation changed"


def test_plan_in_check_mode_moves_nothing_already_in_place(unchanged_registry):
    run = rebalance("--check", "-e", "rebalance_devices=%s" % ",".join(devices()), "-e", "target_host=" + CLOUD)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "nothing new to move" in run.stdout and "nothing moved" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["-e", "device_id=" + DEVICE, "-e", "drain_host=" + CLOUD], "Pass -e device_id=<id>"),
    (["-e", "device_id=Bad-Name"], "Pass -e device_id=<id>"),
    (["-e", "device_id=" + DEVICE, "-e", "target_host=cloud99"], "cloud host cloud99: not in the registry"),
])
def test_bad_input_is_refused_before_anything_is_written(unchanged_registry, args, message):
    run = rebalance(*args)
    assert run.returncode != 0
    assert message in run.stdout + run.stderr, run.stdout + run.stderr
    assert "Dump the device" not in run.stdout and "Move the allocation" not in run.stdout


def test_no_move_journal_is_left_on_the_cloud_host():
    found = lab_host(CLOUD).run("ls /var/lib/edgefleet/moves/*/move.json 2>/dev/null")
    assert found.stdout.strip() == ""
