# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render fleet_status results: table, HTML page, Prometheus metrics, JSON."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.consistency import (
    describe_table,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status import (
    merge_reports, unreachable_report,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_render import (
    render_metrics, render_table, summary_line,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_status_html import (
    render_html,
)


def _report(data, expected=None):
    """One fleet_status result, or a list of them (one per cloud host) -> one fleet report.

    ``expected`` maps cloud host -> its allocated devices; a cloud host with no result there
    (unreachable, failed) contributes its devices as errors instead of vanishing.
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise AnsibleFilterError('expected a fleet_status result or a list of them, got %s'
                                 % type(data).__name__)
    for item in data:
        if not isinstance(item, dict) or 'devices' not in item:
            raise AnsibleFilterError('every item must be a fleet_status result (with devices)')
    reports = list(data)
    if expected:
        if not isinstance(expected, dict):
            raise AnsibleFilterError('expected must map cloud host -> list of devices')
        seen = set(h.get('cloud_host') for r in reports for h in r.get('hosts') or [])
        for cloud_host, devices in sorted(expected.items()):
            if cloud_host not in seen:
                reports.append(unreachable_report(devices or [], cloud_host,
                                                  'no status collected (unreachable or failed)'))
    return merge_reports(reports)


def status_report(data, expected=None):
    """Merged fleet report: devices sorted worst first, summary, hosts."""
    return _report(data, expected)


def status_table(data):
    """Plain-text table, worst first, with the one-line fleet summary."""
    return render_table(_report(data))


def status_summary(data):
    """The one-line fleet summary."""
    return summary_line(_report(data)['summary'])


def status_html(data, title='edgefleet status', refresh=60):
    """Self-contained HTML page (no external assets)."""
    return render_html(_report(data), title=title, refresh=refresh)


def status_metrics(data):
    """Prometheus text exposition (node_exporter textfile format)."""
    return render_metrics(_report(data))


def status_table_diff(table):
    """One line describing a table result of table_checksum."""
    if not isinstance(table, dict):
        raise AnsibleFilterError('status_table_diff expects one item of table_checksum tables')
    return describe_table(table)


class FilterModule:
    """edgefleet.mysql_backup status filters."""

    def filters(self):
        return {
            'status_report': status_report,
            'status_table': status_table,
            'status_summary': status_summary,
            'status_html': status_html,
            'status_metrics': status_metrics,
            'status_table_diff': status_table_diff,
        }
