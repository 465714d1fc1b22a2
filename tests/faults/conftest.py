"""Fault suite fixtures: the lab lock for the whole session, writers' tools, and the lab put back."""
import dataclasses

import pytest

from tests.faults import harness


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long fault; only in the full form (make test-faults)")


@dataclasses.dataclass
class Lab:
    devices: list
    clouds: list

    def device(self, name):
        return next(d for d in self.devices if d.name == name)


@pytest.fixture(scope="session")
def lab_lock():
    with harness.lab_lock():
        yield


@pytest.fixture(scope="session")
def lab(lab_lock):  # pylint: disable=redefined-outer-name,unused-argument
    devices = harness.fleet()
    clouds = sorted({d.cloud for d in devices})
    if len(devices) < 2:
        pytest.fail("the fault suite needs at least 2 lab devices (make lab-up)")
    harness.restore_lab(devices, clouds)
    problems = harness.wait_healthy(devices)
    if problems:
        pytest.fail("the lab is not replicating before any fault was injected; run `make lab-up` and "
                    "`ansible-playbook site.yml` first:\n  " + "\n  ".join(problems))
    harness.install_tools(devices, clouds)
    try:
        yield Lab(devices, clouds)
    finally:
        put_back(devices, clouds)


def put_back(devices, clouds):
    """Whatever happened: no writer, links up, services and channels running, else site.yml."""
    for device in devices:
        harness.sh(device.name, "systemctl disable --now 'edgefleet-fault-writer@*.service' >/dev/null 2>&1; true",
                   check=False) if harness.container_running(device.name) else None
    harness.restore_lab(devices, clouds)
    problems = harness.wait_healthy(devices, timeout=90)
    if problems:
        print("fault suite teardown: lab unhealthy (" + "; ".join(problems) + "): running site.yml")
        proc = harness.run_playbook("site.yml")
        print(proc.stdout[-3000:])
        problems = harness.wait_healthy(devices, timeout=120)
    harness.remove_tools(devices, clouds)
    if problems:
        raise harness.LabError("the fault suite could not put the lab back: " + "; ".join(problems))


def pytest_terminal_summary(terminalreporter):
    if harness.RESULTS:
        terminalreporter.section("fault results (also in bench/results/faults.json)")
        terminalreporter.write_line(harness.table(harness.RESULTS))
