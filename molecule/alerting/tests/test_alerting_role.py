"""alerting role on the lab: both daemons configured, on loopback only, the collection's rules
loaded with the lab's durations, every cloud host scraped, one receiver grouped by alert name and
cloud host. (Check mode, changed=0 on the converged lab, is tested by tests/lab/test_alerting.py.)"""
import json

import pytest
import yaml

from tests.support.lab import clouds, group, hostvars, lab_host

HOSTS = group("alerting")


def test_the_lab_has_an_alerting_host():
    assert HOSTS, "no host in the alerting group (inventories/lab/lab.fleet.yml)"


@pytest.mark.parametrize("name", HOSTS)
def test_services_listen_on_loopback_only(name):
    host = lab_host(name)
    for unit in ("prometheus.service", "prometheus-alertmanager.service"):
        assert host.service(unit).is_enabled and host.service(unit).is_running, unit
    listening = host.check_output("ss -Hltn '( sport = :9090 or sport = :9093 or sport = :9094 )'")
    assert sorted(line.split()[3] for line in listening.splitlines()) == ["127.0.0.1:9090", "127.0.0.1:9093"], listening
    # Alertmanager's gossip port (Debian's default *:9094, TCP and UDP) is off
    assert host.check_output("ss -Hlun 'sport = :9094'") == ""


@pytest.mark.parametrize("name", HOSTS)
def test_configs_validate_and_secrets_file_is_private(name):
    host = lab_host(name)
    host.check_output("amtool check-config /etc/prometheus/alertmanager.yml")
    host.check_output("promtool check config /etc/prometheus/prometheus.yml")
    config = host.file("/etc/prometheus/alertmanager.yml")
    assert (config.user, config.group, config.mode) == ("root", "prometheus", 0o640)
    route = yaml.safe_load(config.content_string)["route"]
    assert route["group_by"] == ["alertname", "cloud_host"]
    assert route["receiver"] == "edgefleet"


@pytest.mark.parametrize("name", HOSTS)
def test_rules_loaded_and_every_cloud_host_scraped(name):
    host = lab_host(name)
    rules = json.loads(host.check_output("curl -fsS http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    alerts = {rule["name"]: rule for group_ in rules for rule in group_["rules"]}
    assert {"EdgefleetDeviceOffline", "EdgefleetReplicationStopped", "EdgefleetAlertDeliveryFailing",
            "EdgefleetMetricsScrapeFailing"} <= set(alerts)
    # the lab's alerting_rule_for (seconds instead of 15 minutes)
    assert alerts["EdgefleetDeviceOffline"]["duration"] == 10
    targets = json.loads(host.check_output("curl -fsS http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]
    fleet = {t["labels"]["cloud_host"]: t for t in targets if t["labels"]["job"] == "edgefleet"}
    assert sorted(fleet) == clouds()
    assert all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]
    devices = json.loads(host.check_output(
        "curl -fsS --data-urlencode query=edgefleet_device_info http://127.0.0.1:9090/api/v1/query"))["data"]["result"]
    assert devices, "no edgefleet_device_info series in Prometheus"
    assert all(s["metric"]["cloud_host"] in clouds() for s in devices)


@pytest.mark.parametrize("name", HOSTS)
def test_webhook_points_at_the_configured_receiver(name):
    receivers = yaml.safe_load(lab_host(name).file("/etc/prometheus/alertmanager.yml").content_string)["receivers"]
    assert receivers == [{"name": "edgefleet", "webhook_configs": [
        {"url": hostvars(name)["alerting_webhook_url"], "send_resolved": True, "max_alerts": 0}]}]
