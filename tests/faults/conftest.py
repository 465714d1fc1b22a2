"""Fault suite fixtures: the lab lock for the whole session, writers' tools, and the lab put back.

`--with-changestream` runs the suite with the change stream switched on for cloud01 (issue 20: the
replication path must lose nothing with it on); every playbook the suite runs meanwhile sees the
stream's inventory too, so a repair does not switch the replicas' stream settings off.
"""
import contextlib
import dataclasses
import os

import pytest

from tests.faults import harness
from tests.support.lab import INVENTORY


# The fault writers' table, fanned in when the stream is on (tests/faults/harness.py TABLE_DDL).
FANIN_FAULT_WRITES = {"source": "app.fault_writes", "table": "fault_writes", "primary_key": ["id"],
                      "columns": "id BIGINT UNSIGNED NOT NULL, run VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, "
                                 "updates INT NOT NULL, payload CHAR(40) NOT NULL, written_at TIMESTAMP(6) NULL"}


def pytest_addoption(parser):
    parser.addoption("--with-changestream", action="store_true", default=False,
                     help="run the faults with the change stream on for cloud01 (make test-faults-changestream)")


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
def lab(lab_lock, request, tmp_path_factory):  # pylint: disable=redefined-outer-name,unused-argument
    with contextlib.ExitStack() as stack:
        if request.config.getoption("--with-changestream"):
            stack.enter_context(stream_on(tmp_path_factory))
        yield from fault_lab()


@contextlib.contextmanager
def stream_on(tmp_path_factory):
    """The change stream on cloud01 around the suite, fanning in the writers' table; the playbooks
    the harness runs (repairs, put_back's site.yml) see its inventory while it is on."""
    from tests.lab.changestream_support import change_stream_on  # pylint: disable=import-outside-toplevel
    work = tmp_path_factory.mktemp("faults-changestream")
    work.chmod(0o700)
    with change_stream_on(work, [FANIN_FAULT_WRITES]) as inventory:
        harness.ENV["ANSIBLE_INVENTORY"] = ",".join([INVENTORY, inventory])
        harness.RESULTS_PATH = os.path.join(harness.RESULTS_DIR, "faults-changestream.json")
        try:
            yield
        finally:
            del harness.ENV["ANSIBLE_INVENTORY"]


def fault_lab():
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
        terminalreporter.section("fault results (also in %s)" % os.path.relpath(harness.RESULTS_PATH, harness.ROOT))
        terminalreporter.write_line(harness.table(harness.RESULTS))
