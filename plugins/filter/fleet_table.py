# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expand a cloud host's compact ``edgefleet_cloud_table`` (fleet inventory plugin) into its
``edgefleet_cloud_devices`` / ``edgefleet_cloud_instances`` lists (module_utils/fleet_table.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_table


def cloud_table_devices(table, ids=None):
    try:
        entries = fleet_table.devices(table)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))
    if ids is None:
        return entries
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise AnsibleFilterError('cloud_table_devices: ids must be a list of device ids')
    wanted = set(ids)
    return [entry for entry in entries if entry['id'] in wanted]


def cloud_table_instances(table):
    try:
        return fleet_table.instances(table)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule:
    """edgefleet.mysql_backup fleet_table filters."""

    def filters(self):
        return {'cloud_table_devices': cloud_table_devices, 'cloud_table_instances': cloud_table_instances}
