"""replica on the lab cloud hosts: one small read-only instance per allocated instance."""
import pytest

from tests.support.lab import clouds, devices, hostvars, lab_host, sql

DEVICES = devices()


@pytest.mark.parametrize("name", DEVICES)
def test_instance_runs_read_only_on_its_port(name):
    hv = hostvars(name)
    cloud = lab_host(hv["edgefleet_cloud_host"])
    instance = hv["edgefleet_replica_instance"]
    assert cloud.service(f"mariadb@{instance}").is_running
    assert cloud.service(f"mariadb@{instance}").is_enabled
    socket = f"/run/mysqld/edgefleet-{instance}.sock"
    row = sql(cloud, "SELECT @@port, @@read_only, @@relay_log_recovery, @@bind_address", socket=socket)[0]
    assert row == [str(hv["edgefleet_replica_port"]), "1", "1", "127.0.0.1"]


@pytest.mark.parametrize("name", DEVICES)
def test_instance_applies_in_parallel_with_transactional_positions(name):
    """Parallel apply (the role's defaults); GTID positions in the InnoDB mysql.gtid_slave_pos (crash safety)."""
    hv = hostvars(name)
    cloud = lab_host(hv["edgefleet_cloud_host"])
    socket = f"/run/mysqld/edgefleet-{hv['edgefleet_replica_instance']}.sock"
    row = sql(cloud, "SELECT @@slave_parallel_threads, @@slave_parallel_mode, @@slave_domain_parallel_threads, "
                     "(SELECT engine FROM information_schema.tables WHERE table_schema = 'mysql' "
                     "AND table_name = 'gtid_slave_pos'), @@sync_binlog, @@innodb_flush_log_at_trx_commit, "
                     "@@innodb_buffer_pool_size", socket=socket)[0]
    # replica_durability relaxed (the default): what an OS crash loses is refetched from gtid_slave_pos.
    assert row == ["4", "optimistic", "0", "InnoDB", "0", "2", str(32 * 1024 * 1024)]


@pytest.mark.parametrize("cloud", clouds())
def test_default_server_is_off_and_instance_ids_unique(cloud):
    host = lab_host(cloud)
    assert not host.service("mariadb").is_running
    instances = {hostvars(n)["edgefleet_replica_instance"] for n in DEVICES
                 if hostvars(n)["edgefleet_cloud_host"] == cloud}
    ids = [sql(host, "SELECT @@server_id", socket=f"/run/mysqld/edgefleet-{i}.sock")[0][0] for i in instances]
    device_ids = {str(hostvars(n)["edgefleet_server_id"]) for n in DEVICES}
    assert len(set(ids)) == len(ids)
    assert not set(ids) & device_ids


@pytest.mark.parametrize("cloud", clouds())
def test_instance_memory_is_small(cloud):
    """Beyond its buffer pool (replica_innodb_buffer_pool_size, whose pages count once touched:
    a lab instance that held the backup scenario's 100,000-row restores has touched them all), an
    instance stays under 184 MiB RSS (the limit was 200 MiB with the 16M pool of before)."""
    host = lab_host(cloud)
    processes = [line.split(None, 1) for line in host.check_output("ps -C mariadbd -o rss=,args=").splitlines()]
    assert processes
    for rss, args in ((int(rss), args) for rss, args in processes):
        suffix = args.split("--defaults-group-suffix=.")
        if len(suffix) < 2:
            continue  # not a replica instance
        socket = "/run/mysqld/edgefleet-%s.sock" % suffix[1].split()[0]
        pool_kb = int(sql(host, "SELECT @@innodb_buffer_pool_size", socket=socket)[0][0]) // 1024
        assert rss - pool_kb < 184 * 1024, "instance %s: %d KiB RSS with a %d KiB pool" % (socket, rss, pool_kb)
