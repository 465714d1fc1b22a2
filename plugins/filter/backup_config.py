# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that shape the backup role's inputs into the device and instance entries of
/etc/edgefleet/backup.json (roles/backup/templates/backup.json.j2)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _socket(socket_dir, instance):
    return '%s/edgefleet-%s.sock' % (socket_dir, instance)


def _require(entry, key, what):
    if not isinstance(entry, dict) or key not in entry:
        raise AnsibleFilterError('%s entry without %r: %r' % (what, key, entry))
    return entry[key]


def backup_config_devices(devices, statuses, socket_dir):
    """One backup.json device entry per device whose status (default active) is in ``statuses``,
    sorted by id."""
    out = []
    for device in sorted(devices or [], key=lambda d: str(_require(d, 'id', 'backup_devices'))):
        if device.get('status', 'active') not in statuses:
            continue
        instance = _require(device, 'replica_instance', 'backup_devices')
        out.append({
            'id': device['id'],
            'socket': _socket(socket_dir, instance),
            'mode': device.get('replica_mode', 'instance'),
            'channel': device.get('channel_name', device['id']),
            'instance': instance,
            'schema_prefix': device.get('schema_prefix', ''),
            'gtid_domain_id': device.get('gtid_domain_id'),
            'site': device.get('site'),
        })
    return out


def backup_config_instances(instances, socket_dir):
    """One backup.json instance entry (physical backups) per replica instance, sorted by name."""
    out = []
    for instance in sorted(instances or [], key=lambda i: str(_require(i, 'name', 'backup_instances'))):
        name = instance['name']
        out.append({
            'name': name,
            'socket': _socket(socket_dir, name),
            'datadir': instance.get('datadir', ''),
            'defaults_group_suffix': '.' + name,
            'devices': list(instance.get('channels', [])),
        })
    return out


class FilterModule:
    """edgefleet.mysql_backup backup configuration filters."""

    def filters(self):
        return {'backup_config_devices': backup_config_devices,
                'backup_config_instances': backup_config_instances}
