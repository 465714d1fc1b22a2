# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/failover.yml: the report of a failover run."""

from __future__ import annotations


def failover_report_lines(devices, hostvars, lost_host, verified=(), online=()):
    """One line per device of a lost cloud host: where it went and whether it replicates again.

    ``devices``: the devices that came off ``lost_host`` (still active and allocated elsewhere);
    ``verified``: those whose new replica caught up in this run; ``online``: those that answered.
    """
    verified = set(verified or ())
    online = set(online or ())
    lines = []
    for device in sorted(devices or ()):
        hv = hostvars[device]
        if device in verified:
            state = 'replicating, caught up'
        elif device in online:
            state = 'PENDING: not verified (run failover.yml again)'
        else:
            state = 'PENDING: offline (the next site.yml or failover.yml run after it is back finishes it)'
        lines.append('%s: %s -> %s (tunnel ports %s/%s, replica %s): %s' % (
            device, lost_host, hv.get('edgefleet_cloud_host'), hv.get('edgefleet_tunnel_mysql_port'),
            hv.get('edgefleet_tunnel_ssh_port'), hv.get('edgefleet_replica_instance', device), state))
    return lines or ['no device to re-home from %s' % lost_host]


def listening_ports(ss_output):
    """TCP ports listening in ``ss -Htln`` output (the local address column), as a sorted list of ints."""
    ports = set()
    for line in (ss_output or '').splitlines():
        fields = line.split()
        if len(fields) >= 4 and ':' in fields[3]:
            port = fields[3].rsplit(':', 1)[1]
            if port.isdigit():
                ports.add(int(port))
    return sorted(ports)


class FilterModule:
    """edgefleet.mysql_backup failover filters."""

    def filters(self):
        return {'failover_report_lines': failover_report_lines, 'listening_ports': listening_ports}
