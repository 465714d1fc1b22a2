"""The whole path on the lab: a row written on each device arrives on its cloud replica."""
import time
import uuid

import pytest

from tests.support.lab import devices, hostvars, lab_host, replica_schema, replica_socket, sql

DEVICES = devices()


def test_lab_has_devices():
    assert len(DEVICES) >= 2


@pytest.mark.parametrize("name", DEVICES)
def test_row_written_on_device_arrives_on_replica(name):
    device = lab_host(name)
    cloud = lab_host(hostvars(name)["edgefleet_cloud_host"])
    token = f"{name}-{uuid.uuid4()}"
    sql(device, "CREATE DATABASE IF NOT EXISTS app")
    sql(device, "USE app; CREATE TABLE IF NOT EXISTS e2e (token VARCHAR(80) PRIMARY KEY, device VARCHAR(64))")
    sql(device, f"INSERT INTO app.e2e VALUES ('{token}', '{name}')")
    query = f"SELECT device FROM `{replica_schema(name)}`.e2e WHERE token = '{token}'"
    deadline = time.monotonic() + 60
    while True:
        try:
            rows = sql(cloud, query, socket=replica_socket(name))
        except AssertionError:
            rows = []
        if rows or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows == [[name]], f"row {token} of {name} did not reach its replica within 60 s"


@pytest.mark.parametrize("name", DEVICES)
def test_replica_is_read_only_and_replicating(name):
    cloud = lab_host(hostvars(name)["edgefleet_cloud_host"])
    socket = replica_socket(name)
    assert sql(cloud, "SELECT @@read_only", socket=socket) == [["1"]]
    status = cloud.check_output("mariadb --socket=%s -e %s", socket, "SHOW ALL SLAVES STATUS\\G")
    assert "Slave_IO_Running: Yes" in status
    assert "Slave_SQL_Running: Yes" in status
