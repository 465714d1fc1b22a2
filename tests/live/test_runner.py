# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The playbooks under ansible-runner, the engine AWX / Automation Controller uses.

* AWX inventory update: the fleet inventory plugin as a project inventory source.
* Canary rollouts (no lab needed): the serial/max_fail_percentage header of the device plays on
  ten simulated hosts - a failed canary stops the rollout; percentages after it.
* On the lab (holding the lab lock): site.yml converges with no change; devices.yml in canary
  batches runs one device first, then the rest; a canary that fails stops the rollout before any
  other device is touched.
"""

from __future__ import annotations

import os

import pytest

from tests.runner import lab
from tests.runner.support import Job, inventory_list

CANARY = os.path.join("tests", "runner", "canary.yml")
CANARY_INVENTORY = os.path.join(lab.ROOT, "tests", "runner", "canary_inventory.yml")


def _job(playbook, inventory, **extravars):
    job = Job(playbook, inventory, extravars=extravars).run()
    return job


def _ran(job):
    return sorted(job.hosts_with_task_events())


def test_canary_success_runs_batches_in_order():
    job = _job(CANARY, CANARY_INVENTORY, edgefleet_device_batches=[1, "30%", "100%"],
               edgefleet_device_max_fail_percentage=0)
    try:
        assert job.status == "successful", job.describe()
        order = [host for host, _task in job.started_order()]
        # batch sizes 1, 3 (30% of 10), then the remaining 6
        assert order[0] == "dev01" and sorted(order[1:4]) == ["dev02", "dev03", "dev04"]
        assert sorted(order[4:]) == ["dev%02d" % i for i in range(5, 11)]
    finally:
        job.cleanup()


def test_failed_canary_stops_the_rollout():
    job = _job(CANARY, CANARY_INVENTORY, edgefleet_device_batches=[1, "30%", "100%"],
               edgefleet_device_max_fail_percentage=0, canary_fail=["dev01"])
    try:
        assert job.status == "failed", job.describe()
        assert _ran(job) == ["dev01"], "the rollout went on after the canary failed"
    finally:
        job.cleanup()


def test_failure_in_a_later_batch_stops_the_next_batches():
    # batch 2 = dev02..dev04; one failure there is 33% > 20%: batch 3 never starts
    job = _job(CANARY, CANARY_INVENTORY, edgefleet_device_batches=[1, "30%", "100%"],
               edgefleet_device_max_fail_percentage=20, canary_fail=["dev03"])
    try:
        assert job.status == "failed", job.describe()
        assert _ran(job) == ["dev01", "dev02", "dev03", "dev04"]
    finally:
        job.cleanup()


def test_tolerated_failures_let_the_rollout_finish():
    # with 50% allowed, one failure in batch 2 (33%) is tolerated; the run reports the failure
    job = _job(CANARY, CANARY_INVENTORY, edgefleet_device_batches=[1, "30%", "100%"],
               edgefleet_device_max_fail_percentage=50, canary_fail=["dev03"])
    try:
        assert job.status == "failed" and len(_ran(job)) == 10, job.describe()
    finally:
        job.cleanup()


def test_default_is_one_batch():
    job = _job(CANARY, CANARY_INVENTORY, canary_fail=["dev01"])
    try:
        assert len(_ran(job)) == 10, "without batches every device runs at once"
    finally:
        job.cleanup()


def test_fleet_inventory_as_an_awx_inventory_source():
    """What an AWX inventory update of a project source runs: ansible-inventory on the fleet config."""
    data = inventory_list(os.path.join(lab.ROOT, "inventories", "examples", "basic", "basic.fleet.yml"))
    assert set(data["devices"]["hosts"]) and set(data["cloud"]["hosts"])
    hostvars = data["_meta"]["hostvars"]
    device = sorted(data["devices"]["hosts"])[0]
    assert hostvars[device]["edgefleet_reach"] in ("address", "tunnel", "none")


@pytest.fixture(scope="module")
def lab_locked():
    with lab.lab_lock():
        lab.inventory_cache(refresh=True)
        yield


@pytest.mark.lab
def test_site_converges_under_ansible_runner(lab_locked):
    job = Job("site.yml", lab.INVENTORY).run()
    try:
        assert job.status == "successful" and job.rc == 0, job.describe()
        stats = job.stats()
        assert not stats.get("failures") and not stats.get("dark"), stats
        changed = {h: n for h, n in stats.get("changed", {}).items() if n}
        assert not changed, "site.yml changed something on a converged lab: %s" % changed
        assert set(stats["ok"]) >= set(lab.inventory_cache()["devices"]["hosts"])
    finally:
        job.cleanup()


@pytest.mark.lab
def test_devices_yml_canary_batches_on_the_lab(lab_locked):
    devices = sorted(lab.inventory_cache()["devices"]["hosts"])
    assert len(devices) >= 2
    job = Job("playbooks/devices.yml", lab.INVENTORY,
              extravars={"edgefleet_device_batches": [1, "100%"], "edgefleet_device_max_fail_percentage": 0}).run()
    try:
        assert job.status == "successful", job.describe()
        order = [host for host, _task in job.started_order()]
        first = order[0]
        last_of_first = max(i for i, host in enumerate(order) if host == first)
        assert all(host == first for host in order[:last_of_first + 1]), "the canary batch was not alone"
        assert set(order[last_of_first + 1:]) == set(devices) - {first}
        assert not {h: n for h, n in job.stats().get("changed", {}).items() if n}
    finally:
        job.cleanup()


@pytest.mark.lab
def test_failed_canary_on_the_lab_touches_no_other_device(lab_locked):
    # device_mysql_server_id=0 makes the device_mysql role refuse the canary before it changes anything
    job = Job("playbooks/devices.yml", lab.INVENTORY,
              extravars={"edgefleet_device_batches": [1, "100%"], "edgefleet_device_max_fail_percentage": 0,
                         "device_mysql_server_id": 0}).run()
    try:
        assert job.status == "failed", job.describe()
        ran = job.hosts_with_task_events()
        assert len(ran) == 1, "devices after the canary ran: %s" % sorted(ran)
        failed = [ev["event_data"]["host"] for ev in job.events if ev.get("event") == "runner_on_failed"]
        assert failed == sorted(ran)
    finally:
        job.cleanup()
