# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn allocation records into module arguments."""

from __future__ import annotations


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


class FilterModule:
    """edgefleet.mysql_backup replication filters."""

    def filters(self):
        return {"replication_channel": replication_channel}
