"""tunnel_gateway on the lab cloud hosts: one restricted key per active device, locked account."""
import pytest

from tests.support.lab import clouds, hostvars, lab_host
from tests.support.tunnel import devices_on

CLOUDS = clouds()


@pytest.mark.parametrize("cloud", CLOUDS)
def test_tunnel_account_cannot_log_in(cloud):
    host = lab_host(cloud)
    user = host.user("edgefleet-tunnel")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.password in ("*", "!", "!*")


@pytest.mark.parametrize("cloud", CLOUDS)
def test_one_restricted_line_per_active_device(cloud):
    host = lab_host(cloud)
    keys = host.file("/etc/ssh/edgefleet/authorized_keys")
    assert keys.user == "root" and keys.mode == 0o644
    lines = [line for line in keys.content_string.splitlines() if line and not line.startswith("#")]
    expected = devices_on(cloud)
    assert sorted(line.rsplit(" ", 1)[1] for line in lines) == sorted(expected)
    for line in lines:
        device = line.rsplit(" ", 1)[1]
        hv = hostvars(device)
        options = line.split(" ", 1)[0].split(",")
        assert options[:2] == ["restrict", "port-forwarding"]
        listens = sorted(o for o in options if o.startswith("permitlisten="))
        assert listens == sorted([f'permitlisten="127.0.0.1:{hv["edgefleet_tunnel_mysql_port"]}"',
                                  f'permitlisten="127.0.0.1:{hv["edgefleet_tunnel_ssh_port"]}"'])


@pytest.mark.parametrize("cloud", CLOUDS)
def test_sshd_match_block_confines_the_account(cloud):
    host = lab_host(cloud)
    effective = host.check_output(
        "sshd -T -C user=edgefleet-tunnel,host=device,addr=10.231.0.11,laddr=10.231.0.201,lport=22")
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert settings["allowtcpforwarding"] == "remote"
    assert settings["permittty"] == "no"
    assert settings["x11forwarding"] == "no"
    assert settings["allowagentforwarding"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["gatewayports"] == "no"
    assert settings["forcecommand"] == "/usr/sbin/nologin"
    assert settings["authorizedkeysfile"] == "/etc/ssh/edgefleet/authorized_keys"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_other_users_keep_their_settings(cloud):
    effective = lab_host(cloud).check_output(
        "sshd -T -C user=root,host=admin,addr=10.231.0.1,laddr=10.231.0.201,lport=22")
    assert "allowtcpforwarding yes" in effective
    assert "forcecommand none" in effective


@pytest.mark.parametrize("cloud", CLOUDS)
def test_limits_sized_from_fleet(cloud):
    host = lab_host(cloud)
    nofile = int(host.check_output("systemctl show -P LimitNOFILE ssh"))
    assert nofile >= 4096 + 8 * len(devices_on(cloud))
    assert host.service("ssh").is_running
