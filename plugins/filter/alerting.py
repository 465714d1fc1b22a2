# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shaping for the alerting role: what Prometheus scrapes (one target per cloud host), the
collection's alert rules with per-site ``for:`` durations, and the endpoints Alertmanager's
receivers send to (probed by the role before it writes anything)."""

from __future__ import annotations

import copy
import re
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

LOOPBACK = re.compile(r'^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$')
DURATION = re.compile(r'^([0-9]+(ms|s|m|h|d|w|y))+$')
RECEIVER_KINDS = ('webhook', 'email', 'slack')
DEFAULT_PORTS = {'http': 80, 'https': 443}


def _split_hostport(value, what):
    text = str(value or '').strip()
    match = re.match(r'^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):([0-9]{1,5})$', text)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise AnsibleFilterError('%s must be HOST:PORT, got %r' % (what, value))
    return match.group(1), int(match.group(2))


def alerting_scrape_targets(cloud_hosts, hostvars, server, addresses=None,
                            default_listen='127.0.0.1:9100'):
    """One Prometheus static_configs entry per cloud host: ``{'targets': [HOST:PORT], 'labels':
    {'cloud_host': NAME}}``, sorted by name. The address is, in this order, ``addresses[NAME]``,
    the host's ``alerting_scrape_address``, its ``monitoring_node_exporter_listen_address``, or
    ``default_listen``. A loopback address is only reachable from the host itself: for any other
    host it is refused with the settings that fix it."""
    if isinstance(cloud_hosts, str) or not isinstance(cloud_hosts, (list, tuple)):
        raise AnsibleFilterError('alerting_scrape_targets expects a list of cloud host names, got %r' % (cloud_hosts,))
    addresses = addresses or {}
    if not isinstance(addresses, dict):
        raise AnsibleFilterError('alerting_scrape_addresses must be a mapping {cloud host: HOST:PORT}, got %r'
                                 % (addresses,))
    unknown = sorted(set(addresses) - set(cloud_hosts))
    if unknown:
        raise AnsibleFilterError('alerting_scrape_addresses names hosts that are not cloud hosts: %s'
                                 % ', '.join(unknown))
    out = []
    for name in sorted(set(cloud_hosts)):
        hv = hostvars[name] if name in hostvars else {}
        listen = (addresses.get(name) or hv.get('alerting_scrape_address')
                  or hv.get('monitoring_node_exporter_listen_address') or default_listen)
        host, port = _split_hostport(listen, 'the scrape address of %s' % name)
        if LOOPBACK.match(host) and name != server:
            raise AnsibleFilterError(
                'cloud host %s exposes its metrics only on %s (loopback), which Prometheus on %s cannot '
                'reach: set monitoring_node_exporter_listen_address on %s to an admin address, or '
                'alerting_scrape_addresses: {%s: HOST:PORT} (for example the local end of an SSH tunnel)'
                % (name, listen, server, name, name))
        out.append({'targets': ['%s:%d' % (host, port)], 'labels': {'cloud_host': name}})
    return out


def alerting_rules(rules, durations=None):
    """The rule groups with the ``for:`` of the alerts named in ``durations`` replaced (``0s``
    drops it). An alert name that is not in the rules, or a malformed duration, is refused."""
    if not isinstance(rules, dict) or not isinstance(rules.get('groups'), list):
        raise AnsibleFilterError('alerting_rules expects a Prometheus rule file ({groups: [...]}), got %r'
                                 % (type(rules).__name__,))
    durations = durations or {}
    if not isinstance(durations, dict):
        raise AnsibleFilterError('alerting_rule_for must be a mapping {alert name: duration}, got %r' % (durations,))
    out = copy.deepcopy(rules)
    seen = set()
    for group in out['groups']:
        for rule in group.get('rules') or []:
            name = rule.get('alert')
            if name not in durations:
                continue
            seen.add(name)
            value = str(durations[name]).strip()
            if not DURATION.match(value):
                raise AnsibleFilterError('alerting_rule_for: %s: %r is not a Prometheus duration (30s, 5m, 1h)'
                                         % (name, durations[name]))
            if re.match(r'^0+(ms|s|m|h|d|w|y)$', value):
                rule.pop('for', None)
            else:
                rule['for'] = value
    missing = sorted(set(durations) - seen)
    if missing:
        raise AnsibleFilterError('alerting_rule_for names alerts the rule files do not have: %s' % ', '.join(missing))
    return out


def _endpoint(kind, host, port):
    shown = '[%s]' % host if ':' in host else host
    return {'kind': kind, 'host': host, 'port': port, 'name': '%s %s:%d' % (kind, shown, port)}


def _url_endpoint(kind, url):
    parts = urlsplit(str(url or ''))
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise AnsibleFilterError('the %s receiver needs an http(s) URL, got %r' % (kind, url))
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise AnsibleFilterError('the %s receiver URL %r has a bad port: %s' % (kind, url, exc))
    return _endpoint(kind, parts.hostname, port)


def alerting_receiver_endpoints(notify, webhook_url=None, email_smarthost=None, slack_api_url=None):
    """``[{'kind', 'host', 'port', 'name'}]``: where each notification channel of ``notify`` (webhook,
    email, slack) connects to. A channel without its setting, or an unknown channel, is refused."""
    if isinstance(notify, str) or not isinstance(notify, (list, tuple)) or not notify:
        raise AnsibleFilterError('alerting_notify must be a non-empty list of %s, got %r'
                                 % (', '.join(RECEIVER_KINDS), notify))
    out = []
    for kind in notify:
        if kind == 'webhook':
            out.append(_url_endpoint(kind, webhook_url))
        elif kind == 'slack':
            out.append(_url_endpoint(kind, slack_api_url))
        elif kind == 'email':
            host, port = _split_hostport(email_smarthost, 'alerting_email_smarthost')
            out.append(_endpoint(kind, host.strip('[]'), port))
        else:
            raise AnsibleFilterError('alerting_notify: unknown channel %r (one of %s)' % (kind, ', '.join(RECEIVER_KINDS)))
    return out


class FilterModule:
    """edgefleet.mysql_backup alerting filters."""

    def filters(self):
        return {'alerting_scrape_targets': alerting_scrape_targets,
                'alerting_rules': alerting_rules,
                'alerting_receiver_endpoints': alerting_receiver_endpoints}
