# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the rebalance role: where each exported device stands, and the plan and report lines.

A move journal is what the export phase writes next to the dump on the source cloud host:
{device, from_host, from (the old allocation record), schemas, gtid_pos, connection, exported_at}.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def move_progress(journals, hostvars, active):
    """Where each journaled device stands against the inventory (the allocation as loaded now).

    Returns {'commit': [devices still allocated on their source host: their allocation moves
    next], 'finish': {device: journal + to_host, for devices already allocated elsewhere: their
    data is loaded there next}}. Inactive devices, and devices without a cloud host in the
    inventory, are in neither."""
    if isinstance(journals, dict):
        journals = list(journals.values())
    active = set(active or ())
    commit, finish = [], {}
    for journal in journals:
        if not isinstance(journal, dict) or 'device' not in journal or 'from_host' not in journal:
            raise AnsibleFilterError('not a move journal: %r' % (journal,))
        device = journal['device']
        if device not in active or device not in hostvars:
            continue
        current = hostvars[device].get('edgefleet_cloud_host')
        if not current:
            continue
        if current == journal['from_host']:
            commit.append(device)
        else:
            finish[device] = dict(journal, to_host=current)
    return {'commit': sorted(commit), 'finish': finish}


def move_plan_lines(planned):
    """['device: from -> to', ...] of an allocation plan (the allocation module's ``moved``)."""
    lines = ['%s: %s -> %s' % (device, move['from']['cloud_host'], move['to']['cloud_host'])
             for device, move in sorted((planned or {}).items())]
    return lines or ['nothing new to move']


def move_report_lines(moves, hostvars, verified=()):
    """One line per move of this run: hosts, the new tunnel ports and whether it was verified."""
    verified = set(verified or ())
    lines = []
    for device, move in sorted((moves or {}).items()):
        hv = hostvars[device]
        lines.append('%s: %s -> %s (tunnel ports %s/%s, %s)' % (
            device, move['from_host'], move['to_host'], hv.get('edgefleet_tunnel_mysql_port'),
            hv.get('edgefleet_tunnel_ssh_port'), 'verified' if device in verified else 'NOT verified'))
    return lines or ['nothing moved']


class FilterModule:
    """edgefleet.mysql_backup rebalance filters."""

    def filters(self):
        return {'move_progress': move_progress, 'move_plan_lines': move_plan_lines,
                'move_report_lines': move_report_lines}
