"""device_mysql on the lab devices: binlog, GTID identity, least-privilege replication user."""
import pytest

from tests.support.lab import devices, hostvars, lab_host, sql

DEVICES = devices()


def test_lab_has_devices():
    assert len(DEVICES) >= 2


@pytest.mark.parametrize("name", DEVICES)
def test_server_is_running_with_allocated_identity(name):
    host = lab_host(name)
    assert host.service("mariadb").is_running
    assert host.service("mariadb").is_enabled
    hv = hostvars(name)
    row = sql(host, "SELECT @@server_id, @@gtid_domain_id, @@log_bin, @@binlog_format, @@bind_address")[0]
    assert row == [str(hv["edgefleet_server_id"]), str(hv["edgefleet_gtid_domain_id"]), "1", "ROW", "127.0.0.1"]


def test_identities_are_unique_across_the_fleet():
    server_ids = [sql(lab_host(name), "SELECT @@server_id")[0][0] for name in DEVICES]
    domains = [sql(lab_host(name), "SELECT @@gtid_domain_id")[0][0] for name in DEVICES]
    assert len(set(server_ids)) == len(DEVICES)
    assert len(set(domains)) == len(DEVICES)


@pytest.mark.parametrize("name", DEVICES)
def test_server_listens_on_loopback_only(name):
    host = lab_host(name)
    assert host.socket("tcp://127.0.0.1:3306").is_listening
    assert not host.socket("tcp://0.0.0.0:3306").is_listening


@pytest.mark.parametrize("name", DEVICES)
def test_replication_user_has_only_replication_slave(name):
    grants = sql(lab_host(name), "SHOW GRANTS FOR 'edgefleet_repl'@'127.0.0.1'")
    assert len(grants) == 1
    assert grants[0][0].startswith("GRANT REPLICATION SLAVE ON *.* TO `edgefleet_repl`@`127.0.0.1`")


@pytest.mark.parametrize("name", DEVICES)
def test_replication_user_never_reached_the_binlog(name):
    host = lab_host(name)
    logs = [row[0] for row in sql(host, "SHOW BINARY LOGS")]
    assert logs, "binary logging is off"
    # One argument per file: testinfra quotes each %s (a device that restarted has several logs).
    dump = host.check_output("cd /var/lib/mysql && mariadb-binlog" + " %s" * len(logs), *logs)
    assert "edgefleet_repl" not in dump


@pytest.mark.parametrize("name", DEVICES)
def test_binlog_retention_covers_offline_period(name):
    seconds = int(sql(lab_host(name), "SELECT @@binlog_expire_logs_seconds")[0][0])
    assert seconds >= 7 * 86400
