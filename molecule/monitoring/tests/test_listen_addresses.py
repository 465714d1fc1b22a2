"""monitoring role on the lab: its listeners bind loopback (issue 15, point 4)."""
import pytest

from tests.support.lab import clouds, lab_host

CLOUDS = clouds()


@pytest.mark.parametrize("name", CLOUDS)
def test_node_exporter_and_nginx_listen_on_loopback_only(name):
    host = lab_host(name)
    node_exporter = host.check_output("ss -Hltn 'sport = :9100'")
    assert "127.0.0.1:9100" in node_exporter, node_exporter
    assert not [line for line in node_exporter.splitlines() if "127.0.0.1:9100" not in line], node_exporter
    assert host.run("curl -fsS -o /dev/null http://127.0.0.1:9100/metrics").rc == 0
    assert host.file("/etc/systemd/system/prometheus-node-exporter.service.d/edgefleet-listen.conf").contains(
        "--web.listen-address=127.0.0.1:9100")
    # nginx: only the status site (127.0.0.1:8088); Debian's default site (*:80) is gone.
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.check_output("ss -Hltn 'sport = :80'") == ""
