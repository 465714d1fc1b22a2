# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The alerting role refuses bad input before it installs or writes anything: an unreachable
receiver, a listener on every address, a cloud host Prometheus cannot reach, an unknown alert, a
channel without its endpoint. Each case runs the role in check mode on this machine and stops at
one of its first (read-only) tasks."""
import json
import os
import socket

import pytest

from tests.badinput.support import VENV_BIN, run


def _closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _role(settings):
    base = {"alerting_cloud_hosts": ["localhost"], "alerting_webhook_url": "http://127.0.0.1:%d/hook" % _closed_port(),
            "alerting_receiver_check_timeout": 1}
    return run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
                "-m", "ansible.builtin.include_role", "-a", "name=edgefleet.mysql_backup.alerting",
                "-e", json.dumps(dict(base, **settings))])


CASES = {
    "unreachable webhook": ({}, "could not deliver to: webhook 127.0.0.1:"),
    "unreachable SMTP relay": ({"alerting_notify": ["email"], "alerting_email_smarthost": "127.0.0.1:%d" % _closed_port(),
                                "alerting_email_to": "ops@example.org", "alerting_email_from": "am@example.org"},
                               "could not deliver to: email 127.0.0.1:"),
    "webhook without URL": ({"alerting_webhook_url": ""}, "the webhook receiver needs an http(s) URL"),
    "Prometheus on every address": ({"alerting_prometheus_listen": "0.0.0.0:9090"}, "(got 0.0.0.0:9090 on every address)"),
    "Alertmanager on a bare port": ({"alerting_alertmanager_listen": ":9093"}, "(got :9093 on every address)"),
    "another host's loopback": ({"alerting_cloud_hosts": ["localhost", "cloud-elsewhere"]},
                                "cloud host cloud-elsewhere exposes its metrics only on 127.0.0.1:9100 (loopback)"),
    "unknown alert in rule_for": ({"alerting_rule_for": {"EdgefleetNoSuchAlert": "1m"}},
                                  "alerting_rule_for names alerts the rule files do not have: EdgefleetNoSuchAlert"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_alerting_role_refuses(case):
    settings, message = CASES[case]
    rc, out = _role(settings)
    assert rc != 0, out
    assert message in out, out
    # stopped before the packages: nothing was even planned
    assert "Install Prometheus and Alertmanager" not in out, out
