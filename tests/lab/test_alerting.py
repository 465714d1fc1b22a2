"""Alerts that reach a person, on the lab as `make lab-site` converged it (playbooks/alerting.yml:
Prometheus and Alertmanager on the `alerting` host, cloud01, with the lab's second-scale intervals
from inventories/lab/group_vars/alerting/alerting.yml).

The test runs the webhook receiver Alertmanager is configured with (alerting_webhook_url, on the
controller's lab bridge address) and reaches both daemons, which listen on cloud01's loopback only,
through an SSH port forward with the lab key and pinned host keys.

* an unreachable receiver is not silent: with the receiver down, the role (check mode) stops
  naming it, and at run time a delivery fails, Alertmanager counts it and
  EdgefleetAlertDeliveryFailing fires in Prometheus;
* grouping: 500 alerts of one name on one cloud host (a 500-device outage) arrive as ONE
  notification listing 500 alerts, and their recovery as one resolved notification;
* a real fault: a device's tunnel stopped -> EdgefleetDeviceOffline for that device at the
  receiver; tunnel started -> the resolved notification; both times printed (while the alert is
  pending, the role's check mode with the receiver up: probe passes, changed=0);
* the dashboard: every panel's PromQL (and template variable) of prometheus/dashboards/*.json
  evaluated against the live Prometheus: non-empty, with the labels its legend uses.

    scripts/lab-lock python -m pytest -s -m lab tests/lab/test_alerting.py
"""
import contextlib
import datetime
import glob
import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from tests.runner.lab import lab_lock
from tests.support.lab import ENV, ROOT, devices, group, hostvars, lab_host

pytestmark = pytest.mark.lab

PROBE = "EdgefleetGroupingProbe"
DELIVERY_PROBE = "EdgefleetDeliveryProbe"
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "prometheus", "dashboards", "*.json")))


class Receiver:
    """Alertmanager's webhook receiver: every POSTed notification with its arrival time."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path or "/"
        self.notifications = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200 if self.path == receiver.path else 404)
                self.end_headers()
                if self.path == receiver.path:
                    with receiver.cond:
                        receiver.notifications.append((time.time(), json.loads(body)))
                        receiver.cond.notify_all()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((parts.hostname, parts.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def wait(self, predicate, timeout, what):
        """The first notification (time, payload) matching predicate, waiting up to timeout s."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for item in self.notifications:
                    if predicate(item[1]):
                        return item
                left = deadline - time.time()
                if left <= 0:
                    seen = [(n["status"], n["groupLabels"], len(n["alerts"])) for _at, n in self.notifications]
                    raise AssertionError(f"no notification for {what} within {timeout} s; received: {seen}")
                self.cond.wait(left)

    def matching(self, predicate):
        with self.cond:
            return [item for item in self.notifications if predicate(item[1])]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def forward(host, *remote_ports):
    """ssh -L from local free ports to the host's loopback ports; yields {remote: local}."""
    hv = hostvars(host)
    ports = {remote: free_port() for remote in remote_ports}
    args = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
            "-i", hv["ansible_ssh_private_key_file"], *hv.get("ansible_ssh_common_args", "").split()]
    for remote, local in ports.items():
        args += ["-L", f"127.0.0.1:{local}:127.0.0.1:{remote}"]
    proc = subprocess.Popen(args + [f"{hv.get('ansible_user', 'root')}@{hv['ansible_host']}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        for local in ports.values():
            while True:
                assert proc.poll() is None, "ssh forward to %s failed: %s" % (host, proc.stderr.read().decode())
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", local)) == 0:
                        break
                assert time.time() < deadline, "ssh forward to %s did not come up" % host
                time.sleep(0.2)
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


def http_json(url, data=None):
    request = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture(scope="module")
def lab():
    hosts = group("alerting")
    assert hosts, "no host in the lab's alerting group (inventories/lab/lab.fleet.yml); is the lab converged?"
    host = hosts[0]
    hv = hostvars(host)
    prom_port = int(hv.get("alerting_prometheus_listen", "127.0.0.1:9090").rsplit(":", 1)[1])
    am_port = int(hv.get("alerting_alertmanager_listen", "127.0.0.1:9093").rsplit(":", 1)[1])
    with lab_lock(), forward(host, prom_port, am_port) as ports:
        yield {"host": host, "hv": hv, "prom": f"http://127.0.0.1:{ports[prom_port]}",
               "am": f"http://127.0.0.1:{ports[am_port]}"}


def query(lab, expr):
    out = http_json(lab["prom"] + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert out["status"] == "success", out
    return out["data"]["result"]


def wait_until(predicate, timeout, what, interval=1):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


def probe_alerts(lab, count, ends=None, name=PROBE, **extra):
    now = time.time()
    alerts = [{"labels": dict({"alertname": name, "cloud_host": lab["host"], "device": f"probe{index:04d}",
                               "severity": "info"}, **extra),
               "annotations": {"summary": f"probe{index:04d} is a test alert"},
               "startsAt": iso(now - 1), **({"endsAt": iso(ends)} if ends else {})}
              for index in range(count)]
    http_json(lab["am"] + "/api/v2/alerts", alerts)


def check_mode_run(lab):
    """playbooks/alerting.yml --check with alerting_receiver_check=fail (the role's deploy-time
    probe, from the alerting host to the lab's webhook URL)."""
    return subprocess.run(["ansible-playbook", "playbooks/alerting.yml", "--check", "-e", "alerting_receiver_check=fail"],
                          env=dict(ENV, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"), cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_unreachable_receiver_is_reported(lab):
    """No receiver listening. At deploy time the role stops, naming it. At run time a delivery
    fails, Alertmanager counts it and EdgefleetAlertDeliveryFailing fires in Prometheus."""
    failed = 'sum(alertmanager_notifications_failed_total{job="alertmanager",integration="webhook"})'
    before = float(query(lab, failed)[0]["value"][1])
    run = f"failing-{time.time():.0f}"
    probe_alerts(lab, 1, name=DELIVERY_PROBE, run=run)
    try:
        refused = check_mode_run(lab)  # meanwhile Alertmanager tries to deliver the probe
        assert refused.returncode != 0, refused.stdout[-3000:]
        receiver = urllib.parse.urlsplit(lab["hv"]["alerting_webhook_url"]).netloc
        assert f"could not deliver to: webhook {receiver}" in refused.stdout, refused.stdout[-3000:]
        assert "Install Prometheus and Alertmanager" not in refused.stdout  # stopped before any change
        wait_until(lambda: float(query(lab, failed)[0]["value"][1]) > before, 60,
                   "Alertmanager counting the failed webhook delivery")
        firing = wait_until(lambda: query(lab, 'ALERTS{alertname="EdgefleetAlertDeliveryFailing",'
                                               'alertstate="firing",integration="webhook"}'), 60,
                            "EdgefleetAlertDeliveryFailing firing")
        assert firing[0]["metric"]["severity"] == "critical"
    finally:
        probe_alerts(lab, 1, ends=time.time(), name=DELIVERY_PROBE, run=run)


def test_500_device_outage_is_one_notification(lab):
    url = lab["hv"]["alerting_webhook_url"]
    run = f"grouping-{time.time():.0f}"
    # A name of its own per run: alerts left by an interrupted run (Alertmanager keeps them for
    # resolve_timeout) cannot join this group.
    name = f"{PROBE}{time.time():.0f}"

    def probe(status):
        return lambda n: (n["groupLabels"].get("alertname") == name and n["status"] == status
                          and n["commonLabels"].get("run") == run)

    with Receiver(url) as receiver, contextlib.ExitStack() as cleanup:
        started = time.time()
        probe_alerts(lab, 500, name=name, run=run)
        cleanup.callback(lambda: probe_alerts(lab, 500, ends=time.time(), name=name, run=run))
        at, firing = receiver.wait(probe("firing"), 60, "500 probe alerts")
        time.sleep(3)  # a second notification of the same group would follow at once
        assert len(receiver.matching(probe("firing"))) == 1
        assert len(firing["alerts"]) == 500
        assert firing["groupLabels"] == {"alertname": name, "cloud_host": lab["host"]}
        assert len({a["labels"]["device"] for a in firing["alerts"]}) == 500
        print(f"\n500 alerts -> 1 notification after {at - started:.1f} s")
        ended = time.time()
        probe_alerts(lab, 500, ends=ended, name=name, run=run)
        at, resolved = receiver.wait(probe("resolved"), 60, "the 500 probe alerts resolved")
        assert len(receiver.matching(probe("resolved"))) == 1
        assert len(resolved["alerts"]) == 500 and {a["status"] for a in resolved["alerts"]} == {"resolved"}
        print(f"500 resolved -> 1 notification after {at - ended:.1f} s")


def test_tunnel_down_alert_reaches_the_receiver_and_resolves(lab):
    device = devices()[0]
    host = lab_host(device)
    url = lab["hv"]["alerting_webhook_url"]
    wait_until(lambda: query(lab, f'edgefleet_tunnel_up{{device="{device}"}} == 1'), 60,
               f"{device}'s tunnel up before the fault")
    assert not query(lab, f'ALERTS{{alertname="EdgefleetDeviceOffline",device="{device}"}}')

    def offline(status):
        return lambda n: (n["groupLabels"].get("alertname") == "EdgefleetDeviceOffline" and n["status"] == status
                          and any(a["labels"].get("device") == device and a["status"] == status for a in n["alerts"]))

    with Receiver(url) as receiver:
        try:
            fault = time.time()
            host.check_output("systemctl stop edgefleet-tunnel.service")
            # While the alert is pending: with the receiver listening, the role's probe passes and
            # a check-mode run of playbooks/alerting.yml changes nothing (the converged lab).
            passed = check_mode_run(lab)
            assert passed.returncode == 0, passed.stdout[-3000:]
            assert re.search(r"^%s\s+: ok=\d+\s+changed=0\s" % lab["host"], passed.stdout, re.M), passed.stdout[-2000:]
            at, firing = receiver.wait(offline("firing"), 120, f"EdgefleetDeviceOffline for {device}")
            alert = next(a for a in firing["alerts"] if a["labels"]["device"] == device)
            assert alert["labels"]["cloud_host"] == hostvars(device)["edgefleet_cloud_host"]
            assert alert["labels"]["severity"] == "warning"
            assert f"{device} (" in alert["annotations"]["summary"]
            fired_after = at - fault
            print(f"\nfault -> notification: {fired_after:.1f} s ({device}'s tunnel stopped, alert firing at the webhook)")
        finally:
            recovery = time.time()
            host.check_output("systemctl start edgefleet-tunnel.service")
        at, _resolved = receiver.wait(offline("resolved"), 120, f"EdgefleetDeviceOffline for {device} resolved")
        print(f"recovery -> resolved notification: {at - recovery:.1f} s")
    wait_until(lambda: query(lab, f'edgefleet_tunnel_up{{device="{device}"}} == 1'), 60, f"{device}'s tunnel back")


def _substitute(expr, values):
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def _panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_dashboard_queries_on_live_prometheus(lab, path):
    with open(path, encoding="utf-8") as handle:
        dashboard = json.load(handle)
    device = devices()[0]
    values = {"cloud_host": hostvars(device)["edgefleet_cloud_host"], "device": device}
    checked = 0
    # template variables: label_values(SELECTOR, LABEL) -> SELECTOR must carry LABEL
    for var in dashboard["templating"]["list"]:
        match = re.match(r"^label_values\((.*),\s*(\w+)\)$", var.get("query", "") if var["type"] == "query" else "")
        if var["type"] == "query":
            assert match, f"template variable {var['name']}: unsupported query {var.get('query')}"
            result = query(lab, _substitute(match.group(1), values))
            assert result and all(match.group(2) in s["metric"] for s in result), (var["name"], result)
            assert values[var["name"]] in {s["metric"][match.group(2)] for s in result}
            checked += 1
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = _substitute(target["expr"], values)
            result = query(lab, expr)
            assert result, f"panel {panel['title']!r}: {expr} returned nothing"
            labels = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
            for series in result:
                missing = [label for label in labels if label not in series["metric"]]
                assert not missing, f"panel {panel['title']!r}: {expr} lacks {missing}: {series['metric']}"
                if "$device" in target["expr"]:
                    assert series["metric"].get("device") == device, (panel["title"], series)
            checked += 1
    print(f"\n{os.path.basename(path)}: {checked} queries non-empty with their legend labels")
    assert checked >= 20
