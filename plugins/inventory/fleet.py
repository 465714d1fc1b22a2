# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet
short_description: Devices and cloud hosts of an edgefleet from its registry and allocations
version_added: 0.1.0
description:
  - Reads the device registry (a YAML file or a MySQL/MariaDB table) and the allocations
    written by M(edgefleet.mysql_backup.allocation). It never allocates anything itself.
  - Every device becomes a host named by its id, with its registry entry and its allocation as
    C(edgefleet_*) host variables and its registry C(vars) merged in. Every cloud host becomes a
    host in group C(cloud) with C(edgefleet_cloud_devices) (one dict per active device allocated
    there) and C(edgefleet_cloud_instances). docs/inventory.md lists every variable; the keys of
    the device record are defined in C(plugins/module_utils/device_record.py).
  - A device is reached either at its first-contact O(reach=address) from the registry or
    through its own reverse SSH back-channel O(reach=tunnel) - C(ansible_host=127.0.0.1),
    C(ansible_port=<its tunnel SSH port>), jumping through the cloud host that carries the
    tunnel, with C(HostKeyAlias=<device id>) so every device keeps its own pinned host key.
  - "Groups: C(devices) (all devices), C(cloud) (cloud hosts), C(cloud_<name>) (devices on
    that cloud host), C(site_<site>), C(status_<status>) and C(mode_<instance|channel>)."
  - Devices without an allocation still appear (in C(devices), C(status_*), C(site_*)) without
    the allocation variables. Retired devices are left out unless O(include_retired=true).
  - The config file name must end in C(fleet.yml) or C(fleet.yaml). The same file is the
    C(config) of the M(edgefleet.mysql_backup.allocation) and M(edgefleet.mysql_backup.registry)
    modules, so its O(allocation) policy keys are validated here too.
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - edgefleet.mysql_backup.fleet_config.registry
options:
  plugin:
    description: Marks this file as a fleet config for this plugin.
    type: str
    required: true
    choices: [edgefleet.mysql_backup.fleet]
  registry:
    # description and type: the fleet_config.registry doc fragment (shared with the modules)
    required: true
  allocation:
    description:
      - The allocation policy used by M(edgefleet.mysql_backup.allocation) (port ranges,
        quarantine, replica mode, ids). The plugin validates it, takes its default port ranges
        for the C(edgefleet_cloud_tunnel_ports) and C(edgefleet_cloud_replica_ports) of cloud
        hosts without their own, and its C(lock_timeout) for reading a MySQL registry. See the
        module for the keys.
    type: dict
    default: {}
  reach:
    description:
      - How devices are reached.
      - V(auto) uses the registry C(address) when the device has one, else its tunnel.
      - V(address) always uses the registry C(address) (first contact).
      - V(tunnel) always uses the back-channel through the cloud host.
      - A device's own C(reach) field in the registry overrides this.
    type: str
    choices: [auto, address, tunnel]
    default: auto
  jump:
    description:
      - How SSH hops through the cloud host to the back-channel port.
      - V(proxyjump) sets C(-o ProxyJump=[user@]cloud[:port]); V(proxycommand) sets
        C(-o ProxyCommand=ssh -W %h:%p ...). Either way C(-o HostKeyAlias=<device id>) is added
        to C(ansible_ssh_common_args).
    type: str
    choices: [proxyjump, proxycommand]
    default: proxyjump
  cloud_ssh_user:
    description:
      - User for the jump to the cloud host, unless the cloud host's registry C(vars) set
        C(ansible_user).
    type: str
  cloud_ssh_port:
    description:
      - SSH port of the cloud hosts for the jump, unless the cloud host's registry C(vars)
        set C(ansible_port).
    type: int
  ssh_common_args:
    description:
      - SSH options put in front of the jump options in C(ansible_ssh_common_args) of devices
        reached through their tunnel (for example C(-o UserKnownHostsFile=... -o
        StrictHostKeyChecking=yes)). Needed because that host variable overrides an
        C(ansible_ssh_common_args) from C(group_vars).
    type: str
    default: ''
  jump_ssh_args:
    description:
      - Extra options for the inner C(ssh -W) of O(jump=proxycommand) (for example the key and
        known_hosts file for the cloud host). With O(jump=proxyjump) the jump host takes its
        settings from C(~/.ssh/config) only, as OpenSSH applies command line options to the
        final destination.
    type: str
    default: ''
  tunnel_host:
    description:
      - Address the back-channel listens on at the cloud host; the C(ansible_host) of devices
        reached through their tunnel.
    type: str
    default: 127.0.0.1
  include_retired:
    description: Also yield retired devices (in group C(status_retired)).
    type: bool
    default: false
notes:
  - "File registry: readers take no lock; writers replace files atomically, so the plugin never
    sees a half written registry or allocation file. MySQL registry: one read-only transaction."
  - "With C(cache: true) the built inventory is cached (for example C(jsonfile)); run the
    allocation module, then refresh the inventory (AWX: update on launch)."
seealso:
  - module: edgefleet.mysql_backup.allocation
  - module: edgefleet.mysql_backup.registry
"""

EXAMPLES = r"""
# inventories/lab/lab.fleet.yml - file registry next to this file
plugin: edgefleet.mysql_backup.fleet
registry:
  type: file
  path: registry.yml
allocation:
  replica_mode: instance
  tunnel_ports: 20000-29999
  replica_ports: 30000-32767
reach: auto
cloud_ssh_user: root

---
# prod.fleet.yml - devices register themselves in MariaDB; always go through the tunnel;
# extra groups from labels; cache for AWX
plugin: edgefleet.mysql_backup.fleet
registry:
  type: mysql
  host: registry.db.internal
  user: edgefleet
  database: edgefleet
reach: tunnel
keyed_groups:
  - key: edgefleet_labels.hw | default('unknown')
    prefix: hw
groups:
  unbacked: edgefleet_tunnel_mysql_port is not defined
compose:
  ansible_user: "'admin'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/tmp/edgefleet-inventory
cache_timeout: 300
"""

import os

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy, normalize_registry_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import read_snapshot
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory


def _plain(value):
    """Strip Ansible's tagged string/container types from config values (dict/list/str)."""
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'edgefleet.mysql_backup.fleet'

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        return path.endswith(('fleet.yml', 'fleet.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache')
        data = None
        update_cache = False
        if use_cache and cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        elif use_cache:
            update_cache = True

        if data is None:
            try:
                data = self._build(path)
            except FleetError as exc:
                raise AnsibleParserError('%s: %s' % (to_native(path), to_native(exc)))
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)

    def _build(self, path):
        base_dir = os.path.dirname(os.path.abspath(path))
        spec = normalize_registry_spec(_plain(self.get_option('registry')), base_dir)
        policy = normalize_policy(_plain(self.get_option('allocation')))
        devices, cloud_hosts, state = read_snapshot(spec, policy['lock_timeout'])
        options = {
            'reach': self.get_option('reach'),
            'jump': self.get_option('jump'),
            'cloud_ssh_user': self.get_option('cloud_ssh_user'),
            'cloud_ssh_port': self.get_option('cloud_ssh_port'),
            'tunnel_host': self.get_option('tunnel_host'),
            'include_retired': self.get_option('include_retired'),
            'ssh_common_args': self.get_option('ssh_common_args'),
            'jump_ssh_args': self.get_option('jump_ssh_args'),
            'policy': policy,
        }
        return fleet_inventory.build(devices, cloud_hosts, state, options)

    def _populate(self, data):
        inventory = self.inventory
        for warning in data.get('warnings') or []:
            self.display.warning(warning)
        groups = data['groups']
        for group in groups:
            inventory.add_group(group)
        hosts = data['hosts']
        inv_hosts = inventory.hosts
        for name, hostvars in hosts.items():
            inventory.add_host(name)
            host = inv_hosts[name]
            host.vars.update(hostvars)
        add_child = inventory.add_child
        for group, members in groups.items():
            for name in members:
                add_child(group, name)

        compose = self.get_option('compose')
        composed_groups = self.get_option('groups')
        keyed_groups = self.get_option('keyed_groups')
        if compose or composed_groups or keyed_groups:
            strict = self.get_option('strict')
            for name, hostvars in hosts.items():
                merged = inv_hosts[name].get_vars()
                self._set_composite_vars(compose, merged, name, strict=strict)
                merged = inv_hosts[name].get_vars()
                self._add_host_to_composed_groups(composed_groups, merged, name, strict=strict)
                self._add_host_to_keyed_groups(keyed_groups, merged, name, strict=strict)
