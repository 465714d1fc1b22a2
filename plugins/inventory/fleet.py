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
        reached through their tunnel. A host name or IP address (letters, digits and C(.:%[]_-)).
    type: str
    default: 127.0.0.1
  include_retired:
    description: Also yield retired devices (in group C(status_retired)).
    type: bool
    default: false
  label_groups:
    description:
      - "Groups by registry label, built natively (no Jinja per host; the fast equivalent of a
        O(keyed_groups) entry C(key: edgefleet_labels.<label> | default(<default>)))."
      - Each item is a label key, or a mapping with C(label) (the key), C(prefix) (default
        C(label_<label>)) and C(default) (group name part for devices without that label; without
        it such devices join no group). A device joins C(<prefix>_<value>); characters other than
        letters, digits and C(_) become C(_).
    type: list
    elements: raw
    default: []
  unallocated_group:
    description:
      - "Name of a group holding the devices without an allocation (the native form of
        O(groups) C(<name>: edgefleet_tunnel_mysql_port is not defined)). Unset, no such group."
    type: str
  device_vars:
    description:
      - Fixed variables of every device, set once as variables of group C(devices) (the native
        form of a constant O(compose) entry, without a per-host expression). Plain data, never
        templated. A device's registry C(vars) and the plugin's own C(edgefleet_*) and connection
        variables win over them (host variables); C(group_vars/devices.yml) next to the
        inventory wins too.
    type: dict
    default: {}
notes:
  - "File registry: readers take no lock; writers replace files atomically, so the plugin never
    sees a half written registry or allocation file. MySQL registry: one read-only transaction."
  - "With C(cache: true) the built inventory is cached (for example C(jsonfile)); run the
    allocation module, then refresh the inventory (AWX: update on launch). The cache saves the
    registry read and the build (0.28 s at 10,000 devices with the file registry against 0.15 s
    to load the cache; a remote MySQL registry costs more and is never opened on a warm load);
    docs/inventory.md has the figures."
  - "O(compose), O(groups) and O(keyed_groups) expressions are compiled once per run, not once
    per host; O(label_groups), O(unallocated_group) and O(device_vars) cover the common cases
    without any expression and cost almost nothing at 10,000 devices."
  - "A cloud host's device and instance lists are kept as one compact string,
    C(edgefleet_cloud_table); C(edgefleet_cloud_devices) and C(edgefleet_cloud_instances) are
    expressions that expand it where they are used (filters
    P(edgefleet.mysql_backup.cloud_table_devices#filter) and
    P(edgefleet.mysql_backup.cloud_table_instances#filter))."
  - "Each device's data is written once: a device carries its connection variables, labels, site,
    reach, cloud host, tunnel ports, server and GTID domain ids, replica mode, and its replica
    instance when that is not the device id; its replica port, datadir, channel name (the device
    id) and schema prefix are only in its cloud host's entry
    (P(edgefleet.mysql_backup.cloud_table_devices#filter) with the device id). The device id is
    the host name; C(edgefleet_status) is set only when it is not C(active)."
  - "The address a device dials, C(edgefleet_cloud_address), is a variable of the group
    C(cloud_<cloud host>) (once per cloud host), so a device never needs the cloud host's
    C(hostvars): an AWX sliced job's inventory holds only its slice's hosts but every group's
    variables."
  - "Only strings that cannot hold a template are trusted-as-template: no C({) (every Jinja
    delimiter starts with one) and no C(#) (a C(#jinja2:) header can change the delimiters).
    Rendering one gives the same text, and C(ansible-inventory --list) prints it as a plain string
    instead of an C(__ansible_unsafe) object. Every other string, registry data that could be a
    template above all, stays untrusted and is never rendered as a template, in host and group
    variables and inside their lists and mappings."
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
# extra groups from labels (hw_rpi4, hw_unknown, ...), the devices not allocated yet in group
# unbacked, a fixed user for every device; cache for AWX
plugin: edgefleet.mysql_backup.fleet
registry:
  type: mysql
  host: registry.db.internal
  user: edgefleet
  database: edgefleet
reach: tunnel
label_groups:
  - {label: hw, prefix: hw, default: unknown}
unallocated_group: unbacked
device_vars:
  ansible_user: admin
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/tmp/edgefleet-inventory
cache_timeout: 300

---
# The same groups and variable through Constructable expressions (compiled once per run; still
# about 2-3x slower than the native options above at 10,000 devices)
plugin: edgefleet.mysql_backup.fleet
registry: {type: file, path: registry.yml}
keyed_groups:
  - key: edgefleet_labels.hw | default('unknown')
    prefix: hw
groups:
  unbacked: edgefleet_tunnel_mysql_port is not defined
compose:
  ansible_user: "'admin'"
"""

import os
from contextlib import contextmanager

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy, normalize_registry_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import read_snapshot
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19: every plain string is a template
    def trust_as_template(value):
        return value

# Cloud host variables the plugin sets as expressions over edgefleet_cloud_table (one compact
# string per cloud host, module_utils/fleet_table.py): the lists are built where they are used.
CLOUD_LIST_EXPRESSIONS = {
    'edgefleet_cloud_devices': '{{ edgefleet_cloud_table | edgefleet.mysql_backup.cloud_table_devices }}',
    'edgefleet_cloud_instances': '{{ edgefleet_cloud_table | edgefleet.mysql_backup.cloud_table_instances }}',
}


def _plain(value):
    """Strip Ansible's tagged string/container types from config values (dict/list/str)."""
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class TemplateFreeTrust:
    """Marks trusted-as-template every string that cannot hold a template
    (fleet_inventory.cannot_hold_template), in host and group variables and inside their lists
    and dicts; every other string (registry data with ``{`` or ``#``, the packed cloud tables)
    stays untrusted. Registry values repeat (sites, labels, cloud hosts): one tagged copy each.
    A copy, never the config's tagged object: no origin tag rides along. (bench/inventory's
    floor-data plugin applies the same walk.)"""

    def __init__(self):
        self._tagged = {}

    def __call__(self, value):
        cls = value.__class__
        if cls is str:
            tagged = self._tagged.get(value)
            if tagged is None:
                tagged = trust_as_template(value) if fleet_inventory.cannot_hold_template(value) else value
                self._tagged[value] = tagged
            return tagged
        if cls is dict:
            return self.mapping(value)
        if cls is list:
            return [self(item) for item in value]
        return value

    def mapping(self, value):
        """``self(value)`` for a dict, its strings looked up inline: 130,000 values at 10,000
        devices, where a call per value cost as much as the tagging."""
        tagged_of = self._tagged
        out = {}
        for key, item in value.items():
            tagged = tagged_of.get(item) if item.__class__ is str else None
            out[key] = self(item) if tagged is None else tagged
        return out


@contextmanager
def _expressions_compiled_once(templar):
    """Compile each compose/groups/keyed_groups expression once for the whole run: ansible-core
    compiles it again for every host (about 0.5 ms per expression and host). Without the
    engine's compile hook (another ansible-core version) nothing changes."""
    engine = getattr(templar, '_engine', None)
    compile_expression = getattr(engine, '_compile_expression', None)
    if compile_expression is None:
        yield
        return
    compiled = {}

    def compile_once(expression, options):
        key = (str(expression), getattr(options, 'escape_backslashes', None))
        result = compiled.get(key)
        if result is None:
            result = compiled[key] = compile_expression(expression, options)
        return result

    engine._compile_expression = compile_once
    try:
        yield
    finally:
        engine.__dict__.pop('_compile_expression', None)


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
        if use_cache and cache:
            try:
                data = fleet_inventory.from_cache(self._cache[cache_key])
            except KeyError:
                pass
        if data is None:
            try:
                data = fleet_inventory.pack(self._build(path))
            except FleetError as exc:
                raise AnsibleParserError('%s: %s' % (to_native(path), to_native(exc)))
            if use_cache:
                self._cache[cache_key] = fleet_inventory.to_cache(data)
        self._populate(data)

    def _build(self, path):
        base_dir = os.path.dirname(os.path.abspath(path))
        spec = normalize_registry_spec(_plain(self.get_option('registry')), base_dir)
        policy = normalize_policy(_plain(self.get_option('allocation')))
        devices, cloud_hosts, state = read_snapshot(spec, policy['lock_timeout'])
        # Option values come from the YAML config, tagged (origin, trusted-as-template): copied
        # into 10,000 devices they made every cache read decode tags and marked ansible_host
        # and edgefleet_reach as templates. _plain() leaves plain str/int/bool/list/dict.
        options = dict((name, _plain(self.get_option(name))) for name in (
            'reach', 'jump', 'cloud_ssh_user', 'cloud_ssh_port', 'tunnel_host', 'include_retired',
            'ssh_common_args', 'jump_ssh_args', 'label_groups', 'unallocated_group', 'device_vars'))
        options['policy'] = policy
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
        trust = TemplateFreeTrust()
        for name, hostvars in hosts.items():
            inventory.add_host(name)
            inv_hosts[name].vars.update(trust.mapping(hostvars))
        add_child = inventory.add_child
        for group, members in groups.items():
            for name in members:
                add_child(group, name)
        for group, gvars in (data.get('group_vars') or {}).items():
            for key, value in gvars.items():
                inventory.set_variable(group, key, trust(value))
        expressions = dict((key, trust_as_template(text)) for key, text in CLOUD_LIST_EXPRESSIONS.items())
        for name in groups['cloud']:
            inv_hosts[name].vars.update(expressions)

        compose = self.get_option('compose')
        composed_groups = self.get_option('groups')
        keyed_groups = self.get_option('keyed_groups')
        if compose or composed_groups or keyed_groups:
            self._construct(hosts, compose, composed_groups, keyed_groups)

    def _construct(self, hosts, compose, composed_groups, keyed_groups):
        """compose, groups and keyed_groups for every host: each expression compiled once, the
        host's variables merged once (ansible-core's helpers merge them again per option)."""
        strict = self.get_option('strict')
        inv_hosts = self.inventory.hosts
        with _expressions_compiled_once(self.templar):
            for name in hosts:
                merged = inv_hosts[name].get_vars()
                for varname, expression in (compose or {}).items():
                    try:
                        value = self._compose(expression, merged)
                    except Exception as exc:  # same contract as Constructable._set_composite_vars
                        if strict:
                            raise AnsibleParserError('Could not set %s for host %s: %s' % (varname, name, to_native(exc)))
                        continue
                    self.inventory.set_variable(name, varname, value)
                    merged[varname] = value
                self._add_host_to_composed_groups(composed_groups, merged, name, strict=strict, fetch_hostvars=False)
                self._add_host_to_keyed_groups(keyed_groups, merged, name, strict=strict, fetch_hostvars=False)
