# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn allocation records into module arguments."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.channel_isolation import (
    IsolationError, instance_filters,
)


def replication_channel(device, user, password, connect_retry=10):
    """Desired replication channel for one allocated device: its tunnel port on loopback."""
    return {
        "name": device["channel_name"],
        "source_host": "127.0.0.1",
        "source_port": int(device["tunnel_mysql_port"]),
        "source_user": user,
        "source_password": password,
        "connect_retry": int(connect_retry),
        "state": "running",
    }


def channel_filters(devices, databases, mode):
    """Per-channel replication filters of one replica instance (see module_utils.channel_isolation)."""
    try:
        return instance_filters(list(devices), list(databases), mode)
    except IsolationError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """edgefleet.mysql_backup replication filters."""

    def filters(self):
        return {"replication_channel": replication_channel, "channel_filters": channel_filters}
