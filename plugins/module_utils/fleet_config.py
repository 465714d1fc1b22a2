# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet config file (``*.fleet.yml``): registry location and allocation policy.

One file drives the inventory plugin, the allocation module and the registry module::

    plugin: edgefleet.mysql_backup.fleet
    registry: {type: file, path: registry.yml}
    allocation:
      replica_mode: instance
      tunnel_ports: 20000-29999
      replica_ports: 30000-32767
      quarantine_days: 7
"""

from __future__ import annotations

import os

from ansible.module_utils.common.yaml import HAS_YAML, yaml_load

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, MYSQL_MAX_CHANNELS, REPLICA_MODES, REACH_MODES,
)

DEFAULT_POLICY = {
    'replica_mode': 'instance',
    'channels_per_instance': 64,
    'tunnel_ports': '20000-29999',
    'replica_ports': '30000-32767',
    'reserved_ports': [22, 80, 443, 3306, 3307, 33060, 33061, 33062],
    'capacity': None,
    'quarantine_days': 7.0,
    'server_id_base': 1000,
    'gtid_domain_id_base': 1000,
    'replica_server_id_base': 2000000000,
    'replica_datadir_base': '/var/lib/edgefleet/replicas',
    'channel_instance_prefix': 'multi-',
    'free_disabled': True,
    'lock_timeout': 60.0,
}

POLICY_KEYS = frozenset(DEFAULT_POLICY)
REGISTRY_FILE_KEYS = frozenset(('type', 'path', 'alloc_path', 'lock_path'))
REGISTRY_MYSQL_KEYS = frozenset(('type', 'host', 'port', 'user', 'password', 'database', 'unix_socket',
                                 'table_prefix', 'connect_timeout', 'defaults_file', 'ssl_ca', 'ssl_cert',
                                 'ssl_key', 'lock_timeout'))

MAX_SERVER_ID = 4294967295
MIN_PORT = 1024
MAX_PORT = 65535


def parse_port_ranges(value, where):
    """Parse ``"20000-29999"``, ``20000``, ``[20000, "21000-21999"]`` into sorted [(lo, hi)]."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    ranges = []
    for item in items:
        if isinstance(item, bool):
            raise FleetError('%s: port range %r is not a port or "low-high" range' % (where, item))
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str):
            text = item.strip()
            parts = text.split('-') if '-' in text else [text, text]
            if len(parts) != 2:
                raise FleetError('%s: port range %r is not "low-high"' % (where, item))
            try:
                lo, hi = int(parts[0].strip()), int(parts[1].strip())
            except ValueError:
                raise FleetError('%s: port range %r is not "low-high" with integer ports' % (where, item))
        else:
            raise FleetError('%s: port range %r is not a port or "low-high" range' % (where, item))
        if not MIN_PORT <= lo <= hi <= MAX_PORT:
            raise FleetError('%s: port range %r must satisfy %d <= low <= high <= %d'
                             % (where, item, MIN_PORT, MAX_PORT))
        ranges.append((lo, hi))
    ranges.sort()
    for (alo, ahi), (blo, bhi) in zip(ranges, ranges[1:]):
        if blo <= ahi:
            raise FleetError('%s: port ranges %d-%d and %d-%d overlap' % (where, alo, ahi, blo, bhi))
    return ranges


def format_port_ranges(ranges):
    return ['%d-%d' % (lo, hi) if lo != hi else '%d' % lo for lo, hi in ranges]


def ranges_overlap(a, b):
    """Return the first overlapping pair between two sorted range lists, else None."""
    for alo, ahi in a:
        for blo, bhi in b:
            if alo <= bhi and blo <= ahi:
                return (alo, ahi), (blo, bhi)
    return None


def parse_port_list(value, where):
    if value is None:
        return set()
    if not isinstance(value, (list, tuple, set)):
        value = [value]
    out = set()
    for item in value:
        for lo, hi in parse_port_ranges_loose(item, where):
            out.update(range(lo, hi + 1))
    return out


def parse_port_ranges_loose(item, where):
    """Like parse_port_ranges for one item but accepting ports below 1024 (reserved lists)."""
    if isinstance(item, bool):
        raise FleetError('%s: %r is not a port' % (where, item))
    if isinstance(item, int):
        if not 1 <= item <= MAX_PORT:
            raise FleetError('%s: %r is not a valid port' % (where, item))
        return [(item, item)]
    if isinstance(item, str):
        text = item.strip()
        parts = text.split('-') if '-' in text else [text, text]
        try:
            lo, hi = int(parts[0]), int(parts[-1])
        except ValueError:
            raise FleetError('%s: %r is not a port or "low-high" range' % (where, item))
        if len(parts) != 2 or not 1 <= lo <= hi <= MAX_PORT:
            raise FleetError('%s: %r is not a valid port range' % (where, item))
        return [(lo, hi)]
    raise FleetError('%s: %r is not a port' % (where, item))


def _as_int(value, field, where, minimum=None, maximum=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise FleetError('%s: field "%s" must be an integer, got %r' % (where, field, value))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise FleetError('%s: field "%s" must be an integer, got %r' % (where, field, value))
    if isinstance(value, float) and value != number:
        raise FleetError('%s: field "%s" must be an integer, got %r' % (where, field, value))
    if minimum is not None and number < minimum:
        raise FleetError('%s: field "%s" must be >= %d, got %d' % (where, field, minimum, number))
    if maximum is not None and number > maximum:
        raise FleetError('%s: field "%s" must be <= %d, got %d' % (where, field, maximum, number))
    return number


def _as_bool(value, field, where):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('yes', 'true', 'on', '1', 'no', 'false', 'off', '0'):
        return value.lower() in ('yes', 'true', 'on', '1')
    raise FleetError('%s: field "%s" must be a boolean, got %r' % (where, field, value))


def normalize_policy(raw, where='allocation policy'):
    """Merge ``raw`` over the defaults and validate every key. Returns a new dict."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise FleetError('%s must be a mapping, got %s' % (where, type(raw).__name__))
    unknown = sorted(set(raw) - POLICY_KEYS)
    if unknown:
        raise FleetError('%s: unknown field(s) %s (allowed: %s)' % (where, ', '.join(unknown), ', '.join(sorted(POLICY_KEYS))))
    policy = dict(DEFAULT_POLICY)
    policy.update((k, v) for k, v in raw.items() if v is not None or k == 'capacity')
    if policy['replica_mode'] not in REPLICA_MODES:
        raise FleetError('%s: field "replica_mode" must be one of %s, got %r' % (where, ', '.join(REPLICA_MODES), policy['replica_mode']))
    policy['channels_per_instance'] = _as_int(policy['channels_per_instance'], 'channels_per_instance', where, 1, MYSQL_MAX_CHANNELS)
    policy['tunnel_ports'] = parse_port_ranges(policy['tunnel_ports'], where + ' field "tunnel_ports"')
    policy['replica_ports'] = parse_port_ranges(policy['replica_ports'], where + ' field "replica_ports"')
    policy['reserved_ports'] = parse_port_list(policy['reserved_ports'], where + ' field "reserved_ports"')
    policy['capacity'] = _as_int(policy['capacity'], 'capacity', where, 0, allow_none=True)
    try:
        policy['quarantine_days'] = float(policy['quarantine_days'])
    except (TypeError, ValueError):
        raise FleetError('%s: field "quarantine_days" must be a number, got %r' % (where, policy['quarantine_days']))
    if policy['quarantine_days'] < 0:
        raise FleetError('%s: field "quarantine_days" must be >= 0' % where)
    for key in ('server_id_base', 'gtid_domain_id_base', 'replica_server_id_base'):
        policy[key] = _as_int(policy[key], key, where, 1 if key != 'gtid_domain_id_base' else 0, MAX_SERVER_ID)
    if policy['replica_server_id_base'] <= policy['server_id_base']:
        raise FleetError('%s: field "replica_server_id_base" (%d) must be above "server_id_base" (%d): device '
                         'server ids grow from server_id_base up to replica_server_id_base'
                         % (where, policy['replica_server_id_base'], policy['server_id_base']))
    if not isinstance(policy['replica_datadir_base'], str) or not policy['replica_datadir_base'].startswith('/'):
        raise FleetError('%s: field "replica_datadir_base" must be an absolute path' % where)
    policy['replica_datadir_base'] = policy['replica_datadir_base'].rstrip('/') or '/'
    prefix = policy['channel_instance_prefix']
    if not isinstance(prefix, str) or not prefix or '-' not in prefix or '/' in prefix or len(prefix) > 16:
        raise FleetError('%s: field "channel_instance_prefix" must contain "-" (so it can never equal a '
                         'device id) and no "/", at most 16 characters, got %r' % (where, prefix))
    policy['free_disabled'] = _as_bool(policy['free_disabled'], 'free_disabled', where)
    try:
        policy['lock_timeout'] = float(policy['lock_timeout'])
    except (TypeError, ValueError):
        raise FleetError('%s: field "lock_timeout" must be a number' % where)
    return policy


def normalize_registry_spec(raw, base_dir=None, where='registry'):
    """Validate the ``registry:`` mapping; resolve file paths relative to ``base_dir``."""
    if not isinstance(raw, dict):
        raise FleetError('%s must be a mapping with "type: file" or "type: mysql", got %r' % (where, raw))
    spec = dict(raw)
    rtype = spec.get('type', 'file')
    spec['type'] = rtype
    if rtype == 'file':
        unknown = sorted(set(spec) - REGISTRY_FILE_KEYS)
        if unknown:
            raise FleetError('%s: unknown field(s) %s for type file' % (where, ', '.join(unknown)))
        if not spec.get('path') or not isinstance(spec['path'], str):
            raise FleetError('%s: field "path" (the registry YAML file) is required for type file' % where)
        for key in ('path', 'alloc_path', 'lock_path'):
            if spec.get(key):
                path = os.path.expanduser(spec[key])
                if not os.path.isabs(path) and base_dir:
                    path = os.path.join(base_dir, path)
                spec[key] = os.path.normpath(path)
        stem, _ext = os.path.splitext(spec['path'])
        spec.setdefault('alloc_path', None)
        spec.setdefault('lock_path', None)
        if not spec['alloc_path']:
            spec['alloc_path'] = stem + '.alloc.yml'
        if not spec['lock_path']:
            spec['lock_path'] = os.path.join(os.path.dirname(spec['path']), '.' + os.path.basename(spec['path']) + '.lock')
    elif rtype == 'mysql':
        unknown = sorted(set(spec) - REGISTRY_MYSQL_KEYS)
        if unknown:
            raise FleetError('%s: unknown field(s) %s for type mysql' % (where, ', '.join(unknown)))
        spec.setdefault('host', '127.0.0.1')
        spec['port'] = _as_int(spec.get('port', 3306), 'port', where, 1, 65535)
        spec.setdefault('user', None)
        if spec.get('password') is None:
            spec['password'] = os.environ.get('EDGEFLEET_REGISTRY_PASSWORD', '')
        if not spec.get('database'):
            raise FleetError('%s: field "database" is required for type mysql' % where)
        prefix = spec.get('table_prefix') or 'edgefleet_'
        if not isinstance(prefix, str) or not prefix.replace('_', 'a').isalnum() or len(prefix) > 32:
            raise FleetError('%s: field "table_prefix" must be letters, digits and "_"' % where)
        spec['table_prefix'] = prefix
        spec['connect_timeout'] = _as_int(spec.get('connect_timeout', 10), 'connect_timeout', where, 1)
        if spec.get('defaults_file'):
            spec['defaults_file'] = os.path.expanduser(spec['defaults_file'])
    else:
        raise FleetError('%s: field "type" must be "file" or "mysql", got %r' % (where, rtype))
    return spec


def read_fleet_config(path):
    """Load a fleet config YAML file; returns the raw mapping and its directory."""
    if not HAS_YAML:
        raise FleetError('PyYAML is required to read %s' % path)
    try:
        with open(path, 'rb') as handle:
            data = yaml_load(handle)
    except (IOError, OSError) as exc:
        raise FleetError('fleet config %s cannot be read: %s' % (path, exc))
    except Exception as exc:  # yaml errors
        raise FleetError('fleet config %s is not valid YAML: %s' % (path, exc))
    if not isinstance(data, dict):
        raise FleetError('fleet config %s must be a mapping' % path)
    return data, os.path.dirname(os.path.abspath(path))


def resolve(config_path=None, registry=None, allocation=None, base_dir=None):
    """Combine a fleet config file with explicit overrides.

    Returns ``(registry_spec, policy, raw_config)``. ``registry`` replaces the file's registry
    mapping; ``allocation`` keys override the file's ``allocation`` keys one by one.
    """
    raw = {}
    if config_path:
        raw, base_dir = read_fleet_config(config_path)
    reg = registry if registry else raw.get('registry')
    if not reg:
        raise FleetError('no registry given: set "registry" in the fleet config or pass it explicitly')
    if registry and base_dir is None:
        base_dir = os.getcwd()
    spec = normalize_registry_spec(reg, base_dir)
    merged = dict(raw.get('allocation') or {})
    if not isinstance(merged, dict):
        raise FleetError('fleet config field "allocation" must be a mapping')
    merged.update((k, v) for k, v in (allocation or {}).items() if v is not None)
    policy = normalize_policy(merged)
    reach = raw.get('reach', 'auto')
    if reach not in REACH_MODES:
        raise FleetError('fleet config field "reach" must be one of %s' % ', '.join(REACH_MODES))
    return spec, policy, raw
