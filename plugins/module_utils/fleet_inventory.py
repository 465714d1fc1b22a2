# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn registry + allocations into inventory data (hosts, host vars, groups).

Pure function of its inputs so it can be cached and unit tested; the inventory plugin only
feeds the result into Ansible's inventory.
"""

from __future__ import annotations

import json
import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.allocation import instances_by_host
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import format_port_ranges
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import (
    ADDRESS_RE, CLOUD_DEVICE_ENTRY_KEYS, DEVICE_HOST_VAR_KEYS, ENTRY_ONLY_KEYS, VAR_NAME_RE, cloud_device_entry,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_table

DEFAULT_OPTIONS = {
    'reach': 'auto',
    'jump': 'proxyjump',
    'cloud_ssh_user': None,
    'cloud_ssh_port': None,
    'tunnel_host': '127.0.0.1',
    'include_retired': False,
    'ssh_common_args': '',
    'jump_ssh_args': '',
    'policy': None,
    'label_groups': (),
    'unallocated_group': None,
    'device_vars': None,
}

_UNSAFE_GROUP_CHARS = re.compile(r'[^A-Za-z0-9_]')


def cannot_hold_template(text):
    """True when the string ``text`` can never be a Jinja template, whatever renders it: it has
    no ``{`` (every Jinja delimiter starts with one: ``{{``, ``{%``, ``{#``) and no ``#`` (a
    ``#jinja2:`` header can change the delimiters). The plugin marks exactly such strings
    trusted-as-template; rendering one gives the same text, and ansible-core prints it as a plain
    string instead of an ``__ansible_unsafe`` object (half the ``--list`` encoding work per string,
    10,000 times). Any other string, registry data above all, stays untrusted."""
    return '{' not in text and '#' not in text


def safe_group_name(name):
    """A valid Ansible group name: every character other than A-Z, a-z, 0-9 and _ becomes _."""
    return _UNSAFE_GROUP_CHARS.sub('_', name)


def normalize_label_groups(value):
    """The label_groups option: a list of label keys or {label, prefix, default} mappings ->
    a list of (label, prefix, default) tuples. Raises FleetError for anything else."""
    out = []
    for index, item in enumerate(value or ()):
        if isinstance(item, str):
            item = {'label': item}
        if not isinstance(item, dict) or not isinstance(item.get('label'), str) or not item['label']:
            raise FleetError('label_groups[%d]: must be a label key or a mapping with "label"' % index)
        extra = set(item) - {'label', 'prefix', 'default'}
        if extra:
            raise FleetError('label_groups[%d]: unknown key(s) %s (allowed: label, prefix, default)'
                             % (index, ', '.join(sorted(extra))))
        prefix = item.get('prefix')
        if prefix is None:
            prefix = 'label_' + item['label']
        default = item.get('default')
        if not isinstance(prefix, str) or (default is not None and not isinstance(default, str)):
            raise FleetError('label_groups[%d]: "prefix" and "default" must be strings' % index)
        out.append((item['label'], prefix, default or None))
    return out


def check_device_vars(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FleetError('device_vars: must be a mapping of variable names to values')
    for key in value:
        if not isinstance(key, str) or not VAR_NAME_RE.fullmatch(key):
            raise FleetError('device_vars: %r is not a valid variable name' % (key,))
    return dict(value)


def _shell_quote(text):
    if text and all(c.isalnum() or c in '@%+=:,./-_' for c in text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def jump_args(device_id, cloud, options):
    """ssh options that reach ``127.0.0.1:<port>`` on ``cloud`` and pin the device's host key."""
    cvars = cloud.get('vars') or {}
    address = cvars.get('ansible_host') or cloud.get('address') or cloud['name']
    user = cvars.get('ansible_user') or options.get('cloud_ssh_user')
    port = cvars.get('ansible_port') or options.get('cloud_ssh_port')
    alias = '-o HostKeyAlias=%s' % device_id
    prefix = (options.get('ssh_common_args') or '').strip()
    prefix = prefix + ' ' if prefix else ''
    if options.get('jump') == 'proxycommand':
        inner = 'ssh -W %h:%p'
        if port:
            inner += ' -p %s' % port
        if options.get('jump_ssh_args'):
            inner += ' ' + options['jump_ssh_args'].strip()
        inner += ' ' + ('%s@%s' % (user, address) if user else address)
        return "%s-o %s %s" % (prefix, _shell_quote('ProxyCommand=' + inner), alias)
    target = ('%s@%s' % (user, address)) if user else address
    if ':' in address and not address.startswith('['):
        target = ('%s@[%s]' % (user, address)) if user else '[%s]' % address
    if port:
        target += ':%s' % port
    return '%s-o ProxyJump=%s %s' % (prefix, target, alias)


def build(devices, cloud_hosts, state, options=None):
    """Return {'hosts': {name: vars}, 'groups': {name: [hosts]}, 'children': {group: [groups]}}."""
    opts = dict(DEFAULT_OPTIONS)
    opts.update(options or {})
    reach_default = opts['reach']
    tunnel_host = opts['tunnel_host']
    if not isinstance(tunnel_host, str) or not ADDRESS_RE.fullmatch(tunnel_host):
        raise FleetError('tunnel_host: %r is not a host name or IP address' % (tunnel_host,))
    include_retired = opts['include_retired']
    label_groups = normalize_label_groups(opts['label_groups'])
    unallocated_group = opts['unallocated_group'] or None
    if unallocated_group is not None:
        unallocated_group = safe_group_name(unallocated_group)
    allocations = state['allocations']
    clouds = dict((h['name'], h) for h in cloud_hosts)
    hosts = {}
    groups = {'devices': [], 'cloud': []}
    jump_cache = {}
    cloud_devices = dict((name, []) for name in clouds)
    active_ids = set()
    warnings = []

    for dev in devices:
        dev_id = dev['id']
        status = dev['status']
        if status == 'retired' and not include_retired:
            continue
        hv = dict(dev['vars']) if dev['vars'] else {}
        # the device id is the host name (inventory_hostname): not written again
        if status != 'active':  # the default; groups status_<status> hold every device's status
            hv['edgefleet_status'] = status
        hv['edgefleet_labels'] = dev['labels']
        # optional registry fields: set only when the registry has them (10,000 empty strings
        # cost ansible-inventory --list more than they tell)
        if dev['site']:
            hv['edgefleet_site'] = dev['site']
        if dev['address']:
            hv['edgefleet_address'] = dev['address']
        if dev['ssh_public_key']:
            hv['edgefleet_ssh_public_key'] = dev['ssh_public_key']
        groups['devices'].append(dev_id)
        groups.setdefault('status_' + status, []).append(dev_id)
        if dev['site']:
            groups.setdefault('site_' + dev['site'], []).append(dev_id)
        labels = dev['labels']
        for label, prefix, default in label_groups:
            value = labels.get(label) or default
            if value:
                groups.setdefault(safe_group_name('%s_%s' % (prefix, value)), []).append(dev_id)
        rec = allocations.get(dev_id)
        if rec is None and unallocated_group is not None:
            groups.setdefault(unallocated_group, []).append(dev_id)
        cloud = None
        if rec is not None:
            cloud = clouds.get(rec['cloud_host'])
            hv['edgefleet_cloud_host'] = rec['cloud_host']
            # the rest of the allocation (replica port, datadir, channel name, schema prefix;
            # the cloud host's address) is on the cloud host, once: device_record.ENTRY_ONLY_KEYS
            for key in DEVICE_HOST_VAR_KEYS:
                hv['edgefleet_' + key] = rec[key]
            if rec['replica_instance'] != dev_id:  # else: the instance is named after the device
                hv['edgefleet_replica_instance'] = rec['replica_instance']
            groups.setdefault('cloud_' + rec['cloud_host'], []).append(dev_id)
            groups.setdefault('mode_' + rec['replica_mode'], []).append(dev_id)
            if status == 'active' and rec['cloud_host'] in cloud_devices:
                active_ids.add(dev_id)
                cloud_devices[rec['cloud_host']].append(cloud_device_entry(dev, rec))
        reach = dev['reach'] or reach_default
        if reach == 'auto':
            reach = 'address' if dev['address'] else 'tunnel'
        if reach == 'address':
            if dev['address']:
                hv['ansible_host'] = dev['address']
            else:
                warnings.append('device %s: reach is "address" but the registry has no field "address"' % dev_id)
                reach = 'none'
        elif reach == 'tunnel':
            if rec is not None and cloud is not None:
                hv['ansible_host'] = tunnel_host
                hv['ansible_port'] = rec['tunnel_ssh_port']
                args = jump_cache.get(rec['cloud_host'])
                if args is None:
                    args = jump_args('@@ID@@', cloud, opts)
                    jump_cache[rec['cloud_host']] = args
                hv['ansible_ssh_common_args'] = args.replace('@@ID@@', dev_id)
            else:
                reach = 'none'
        hv['edgefleet_reach'] = reach
        if dev['vars']:
            for key, value in dev['vars'].items():  # registry vars override reach, not allocation facts
                if not key.startswith('edgefleet_'):
                    hv[key] = value
        hosts[dev_id] = hv

    inst = instances_by_host(state, active_ids)
    for name in sorted(clouds):
        host = clouds[name]
        if name in hosts:
            raise FleetError('cloud host %s: field "name" is also a device id' % name)
        hv = dict(host['vars']) if host['vars'] else {}
        if host['address'] and 'ansible_host' not in hv:
            hv['ansible_host'] = host['address']
        hv['edgefleet_cloud_name'] = name
        hv['edgefleet_cloud_address'] = host['address'] or ''
        hv['edgefleet_cloud_devices'] = sorted(cloud_devices[name], key=lambda entry: entry['id'])
        hv['edgefleet_cloud_instances'] = inst.get(name, [])
        hv['edgefleet_cloud_drain'] = bool(host['drain'])
        policy = opts.get('policy') or {}
        tunnel = host['tunnel_ports'] or policy.get('tunnel_ports')
        replica = host['replica_ports'] or policy.get('replica_ports')
        if tunnel:
            hv['edgefleet_cloud_tunnel_ports'] = format_port_ranges(tunnel)
        if replica:
            hv['edgefleet_cloud_replica_ports'] = format_port_ranges(replica)
        hosts[name] = hv
        if (host['vars'] or {}).get('edgefleet_lost'):  # declared lost by failover.yml: no play targets it
            groups.setdefault('lost_cloud', []).append(name)
        else:
            groups['cloud'].append(name)
    group_vars = {}
    device_vars = check_device_vars(opts['device_vars'])
    if device_vars:
        group_vars['devices'] = device_vars
    # The address a device dials, once per cloud host as a variable of the group of its devices:
    # a device reads its own edgefleet_cloud_address, not hostvars[<its cloud host>] (an AWX
    # sliced job's inventory holds only its slice's hosts, often not the device's cloud host,
    # but every group's variables).
    for name in sorted(clouds):
        if 'cloud_' + name in groups:
            group_vars['cloud_' + name] = {'edgefleet_cloud_address': clouds[name]['address'] or ''}
    return {'hosts': hosts, 'groups': groups, 'group_vars': group_vars, 'warnings': warnings}


def device_entry_vars(name, hostvars):
    """The variables of device ``name`` that the inventory keeps on its cloud host only:
    ``edgefleet_<key>`` for each key of device_record.ENTRY_ONLY_KEYS (from the cloud host's
    device entry) and ``edgefleet_cloud_address`` (also a variable of the device's group
    ``cloud_<cloud host>``). ``hostvars``: every host's variables as ``ansible-inventory --list``
    prints them (the cloud host's ``edgefleet_cloud_table`` or an expanded
    ``edgefleet_cloud_devices``). {} for a device without an active allocation."""
    cloud = (hostvars.get(name) or {}).get('edgefleet_cloud_host')
    cvars = hostvars.get(cloud) or {}
    table = cvars.get('edgefleet_cloud_table')
    entries = fleet_table.devices(table) if table else cvars.get('edgefleet_cloud_devices')
    for entry in entries if isinstance(entries, list) else ():
        if entry.get('id') == name:
            out = dict(('edgefleet_' + key, entry[key]) for key in ENTRY_ONLY_KEYS)
            out['edgefleet_cloud_address'] = cvars.get('edgefleet_cloud_address', '')
            return out
    return {}


def pack(data):
    """The same inventory with each cloud host's ``edgefleet_cloud_devices`` and
    ``edgefleet_cloud_instances`` replaced by one compact string, ``edgefleet_cloud_table``
    (module_utils/fleet_table.py); the plugin sets the two lists as expressions over it."""
    hosts = dict(data['hosts'])
    for name in data['groups']['cloud']:
        hv = dict(hosts[name])
        hv['edgefleet_cloud_table'] = fleet_table.pack(hv.pop('edgefleet_cloud_devices'),
                                                       hv.pop('edgefleet_cloud_instances'),
                                                       CLOUD_DEVICE_ENTRY_KEYS)
        hosts[name] = hv
    out = dict(data)
    out['hosts'] = hosts
    return out


CACHE_FORMAT = 5


def to_cache(data):
    """The built (packed) inventory in the form the plugin caches: ``{'format': 5, 'inventory':
    <one JSON string>}``. Inside the string each host's variables are a row of values under a
    shared tuple of names (a "shape"; the devices of a fleet have a handful). A cache plugin then
    stores and decodes one string, not 10,000 dicts through its tag-aware decoder (0.07 s instead
    of 0.27 s at 10,000 devices). :func:`from_cache` is the inverse."""
    shapes = {}
    rows = []
    for name, hv in data['hosts'].items():
        keys = tuple(hv)
        index = shapes.get(keys)
        if index is None:
            index = shapes[keys] = len(shapes)
        rows.append([name, index] + list(hv.values()))
    doc = {'shapes': [list(keys) for keys in shapes], 'hosts': rows, 'groups': data['groups'],
           'group_vars': data.get('group_vars') or {}, 'warnings': data.get('warnings') or []}
    return {'format': CACHE_FORMAT, 'inventory': json.dumps(doc, separators=(',', ':'))}


def from_cache(cached):
    """The inventory data of :func:`to_cache`, or None when ``cached`` is not in this format (a
    cache written by another version of the plugin: rebuild)."""
    if not isinstance(cached, dict) or cached.get('format') != CACHE_FORMAT \
            or not isinstance(cached.get('inventory'), str):
        return None
    doc = json.loads(str(cached['inventory']))
    shapes = doc['shapes']
    hosts = {}
    for row in doc['hosts']:
        hosts[row[0]] = dict(zip(shapes[row[1]], row[2:]))
    return {'hosts': hosts, 'groups': doc['groups'], 'group_vars': doc['group_vars'], 'warnings': doc['warnings']}


def expand(data):
    """The inverse of :func:`pack`: the cloud hosts' lists as the roles see them."""
    hosts = dict(data['hosts'])
    for name in data['groups']['cloud']:
        hv = dict(hosts[name])
        if 'edgefleet_cloud_table' in hv:
            table = hv.pop('edgefleet_cloud_table')
            hv['edgefleet_cloud_devices'] = fleet_table.devices(table)
            hv['edgefleet_cloud_instances'] = fleet_table.instances(table)
        hosts[name] = hv
    out = dict(data)
    out['hosts'] = hosts
    return out
