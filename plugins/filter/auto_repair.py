# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which devices of a cloud host are opted in for automatic repair (monitoring role)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean


def _flag(value, device_id):
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise AnsibleFilterError('edgefleet_auto_repair of %s must be a boolean, got %r' % (device_id, value))


def auto_repair_flags(devices, hostvars, default=False):
    """``devices`` (allocation records of one cloud host) with ``auto_repair`` set on each: the
    device's host variable ``edgefleet_auto_repair`` when it has one, else ``default`` (the
    fleet-wide monitoring_auto_repair)."""
    if not isinstance(devices, (list, tuple)):
        raise AnsibleFilterError('auto_repair_flags expects a list of device records, got %r' % (devices,))
    out = []
    for device in devices:
        host = hostvars.get(device['id']) if hasattr(hostvars, 'get') else None
        value = host.get('edgefleet_auto_repair', default) if host is not None else default
        out.append(dict(device, auto_repair=_flag(value, device['id'])))
    return out


class FilterModule:
    """edgefleet.mysql_backup automatic repair filters."""

    def filters(self):
        return {'auto_repair_flags': auto_repair_flags}
