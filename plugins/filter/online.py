# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that shape the inventory into the arguments of online_devices (playbooks/online.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def reach_records(names, hostvars):
    """[{name, reach, host, port, cloud_host, tunnel_ssh_port}] of the named hosts: how
    online_devices reaches each one (reach 'none' when the inventory does not say)."""
    out = []
    for name in names:
        try:
            hv = hostvars[name]
        except KeyError:
            raise AnsibleFilterError('%s is not in the inventory' % name)
        out.append({
            'name': name,
            'reach': hv.get('edgefleet_reach', 'none'),
            'host': hv.get('ansible_host', ''),
            'port': hv.get('ansible_port', 22),
            'cloud_host': hv.get('edgefleet_cloud_host', ''),
            'tunnel_ssh_port': hv.get('edgefleet_tunnel_ssh_port', 0),
        })
    return out


def stdout_lines_by_host(names, hostvars, registered):
    """{host: stdout_lines} of the result each named host registered as ``registered``; hosts
    without it (unreachable, skipped) are left out."""
    out = {}
    for name in names:
        result = hostvars[name].get(registered) if name in hostvars else None
        if isinstance(result, dict) and result.get('stdout_lines') is not None:
            out[name] = list(result['stdout_lines'])
    return out


class FilterModule:
    """edgefleet.mysql_backup online-device filters."""

    def filters(self):
        return {'reach_records': reach_records, 'stdout_lines_by_host': stdout_lines_by_host}
