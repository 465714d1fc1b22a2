"""replication on the lab: every device has a running channel on its replica instance."""
import json
import subprocess

import pytest

from tests.support.lab import ENV, INVENTORY, ROOT, devices, hostvars, lab_host

DEVICES = devices()


def replication_info(cloud, instance):
    out = subprocess.run(
        ["ansible", "-i", INVENTORY, cloud, "-m", "edgefleet.mysql_backup.replication_info",
         "-a", f"login_unix_socket=/run/mysqld/edgefleet-{instance}.sock", "-o"],
        env=ENV, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    # One line per host; deprecation notices may follow it on stdout.
    result, _end = json.JSONDecoder().raw_decode(out.split(" => ", 1)[1])
    return result


@pytest.mark.parametrize("name", DEVICES)
def test_channel_is_healthy(name):
    hv = hostvars(name)
    info = replication_info(hv["edgefleet_cloud_host"], hv["edgefleet_replica_instance"])
    channels = {c["name"]: c for c in info["channels"]}
    channel = channels[hv["edgefleet_channel_name"]]
    assert channel["io_running"] and channel["sql_running"], channel
    assert channel["source_port"] == hv["edgefleet_tunnel_mysql_port"]
    assert channel["using_gtid"] in ("Slave_Pos", "slave_pos", True)


@pytest.mark.parametrize("name", DEVICES)
def test_device_writes_replicate(name):
    device = lab_host(name)
    device.check_output("mariadb -e %s", "CREATE DATABASE IF NOT EXISTS app; USE app; CREATE TABLE IF NOT EXISTS "
                        "replication_check (id INT PRIMARY KEY, v INT); "
                        "REPLACE INTO app.replication_check VALUES (1, UNIX_TIMESTAMP())")
    value = device.check_output("mariadb -N -e %s", "SELECT v FROM app.replication_check WHERE id = 1")
    hv = hostvars(name)
    cloud = lab_host(hv["edgefleet_cloud_host"])
    socket = f"/run/mysqld/edgefleet-{hv['edgefleet_replica_instance']}.sock"
    schema = hv["edgefleet_schema_prefix"] + "app" if hv["edgefleet_replica_mode"] == "channel" else "app"
    got = cloud.run("for i in $(seq 60); do v=$(mariadb --socket=%s -N -e 'SELECT v FROM `%s`.replication_check"
                    " WHERE id = 1' 2>/dev/null); [ \"$v\" = %s ] && echo $v && exit 0; sleep 1; done; exit 1",
                    socket, schema, str(value))
    assert got.rc == 0 and got.stdout.strip() == value
