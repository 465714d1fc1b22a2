# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The known_hosts file that pins the enrolled devices' host keys (playbooks/converge_new.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def pinned_known_hosts(names, hostvars):
    """known_hosts content: '<device id> <key type> <key>' for every named host that has an
    edgefleet_host_public_key (the key the enrollment service stored), sorted by device id. The
    device id is the host pattern because the fleet's ssh_common_args set HostKeyAlias=<device id>;
    a comment after the key is dropped. Empty when no host has a key."""
    entries = []
    for name in names:
        try:
            hv = hostvars[name]
        except KeyError:
            raise AnsibleFilterError('%s is not in the inventory' % name)
        if 'edgefleet_host_public_key' not in hv:
            continue
        key = hv['edgefleet_host_public_key']
        if not isinstance(key, str):
            raise AnsibleFilterError('edgefleet_host_public_key of %s is not a string: %r' % (name, key))
        # the fleet inventory's host name is the device id (older inventories: edgefleet_device_id)
        entries.append((hv.get('edgefleet_device_id', name), ' '.join(key.split()[:2])))
    # Jinja's sort (what wrote this file before) ignores case; sorted() is stable like it.
    entries.sort(key=lambda entry: entry[0].lower() if isinstance(entry[0], str) else entry[0])
    return ''.join('%s %s\n' % entry for entry in entries)


class FilterModule:
    """edgefleet.mysql_backup known_hosts filter."""

    def filters(self):
        return {'pinned_known_hosts': pinned_known_hosts}
