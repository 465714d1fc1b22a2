# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn a cloud host's replica instances and device records into the ``instances``
argument of replication_info and replication_source (one call for every instance of a host)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter.replication import replication_channel


def _socket(socket_dir, name):
    return '%s/edgefleet-%s.sock' % (str(socket_dir).rstrip('/'), name)


def _names(instances):
    if not isinstance(instances, (list, tuple)):
        raise AnsibleFilterError('instances must be a list of {name} dicts, got %s' % type(instances).__name__)
    names = []
    for instance in instances:
        if not isinstance(instance, dict) or not instance.get('name'):
            raise AnsibleFilterError('every instance needs a name: %r' % (instance,))
        names.append(instance['name'])
    return names


def instance_sockets(instances, socket_dir='/run/mysqld'):
    """[{name, login_unix_socket}] of each instance: the instance's socket in ``socket_dir``."""
    return [{'name': name, 'login_unix_socket': _socket(socket_dir, name)} for name in _names(instances)]


def instance_channels(instances, devices, socket_dir, user, password, connect_retry=10, held=(), include_empty=True):
    """[{name, login_unix_socket, channels}] of each instance: the desired channel of every device
    on it (replication_channel), except the ``held`` device ids (seeded first, or not checked).

    ``include_empty`` True keeps every instance (an instance with no channel gets its channels
    pruned); a list keeps only the instances named there (those that carry channels now) among
    the instances with no channel to set."""
    held = set(held or ())
    out = []
    for name in _names(instances):
        channels = [replication_channel(device, user, password, connect_retry) for device in devices
                    if device.get('replica_instance') == name and device.get('id') not in held]
        if include_empty is True or channels or name in (include_empty or ()):
            out.append({'name': name, 'login_unix_socket': _socket(socket_dir, name), 'channels': channels})
    return out


class FilterModule:
    """edgefleet.mysql_backup replica instance filters."""

    def filters(self):
        return {'instance_sockets': instance_sockets, 'instance_channels': instance_channels}
