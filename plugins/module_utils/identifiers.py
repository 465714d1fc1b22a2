# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names that travel everywhere: device ids, cloud host names, sites, labels.

A device id becomes an inventory host name, a MySQL replication channel (MariaDB connection)
name, a systemd instance name, a datadir file name and the prefix of replica schemas
(``<id>_<db>``). The allowed set is the intersection of what all of those accept without
quoting surprises:

``^[a-z][a-z0-9_]{0,31}$``

* at most 32 characters: channel names may be 64 long, and the replica schema ``<id>_<db>``
  must fit MySQL's 64-character identifier limit, which leaves 31 characters for ``<db>``;
* lowercase only: MariaDB connection names are case-insensitive and file systems may be too,
  so ``Dev1`` and ``dev1`` would collide;
* no ``-`` or ``.``: both need quoting in SQL and ``.`` is the schema/table separator.

Names that would collide with the groups the inventory plugin creates are refused too.
"""

from __future__ import annotations

import re

ID_PATTERN = r'^[a-z][a-z0-9_]{0,31}$'
ID_RE = re.compile(ID_PATTERN)
ID_MAX_LEN = 32

# Cloud host names are inventory host names and part of group names (cloud_<name>).
CLOUD_HOST_PATTERN = r'^[a-z][a-z0-9_]{0,31}$'
CLOUD_HOST_RE = re.compile(CLOUD_HOST_PATTERN)

# Sites become group names (site_<site>).
SITE_PATTERN = r'^[a-z0-9][a-z0-9_]{0,62}$'
SITE_RE = re.compile(SITE_PATTERN)

# Source database names on a device; <id>_<db> must fit 64 characters.
DB_NAME_PATTERN = r'^[A-Za-z0-9_$]{1,31}$'
DB_NAME_RE = re.compile(DB_NAME_PATTERN)

LABEL_KEY_PATTERN = r'^[A-Za-z_][A-Za-z0-9_.-]{0,62}$'
LABEL_KEY_RE = re.compile(LABEL_KEY_PATTERN)

MYSQL_IDENTIFIER_MAX = 64
MYSQL_MAX_CHANNELS = 256

RESERVED_NAMES = frozenset(('all', 'ungrouped', 'devices', 'cloud', 'localhost'))
RESERVED_PREFIXES = ('cloud_', 'site_', 'status_', 'mode_')

STATUSES = ('active', 'disabled', 'retired')
REPLICA_MODES = ('instance', 'channel')
REACH_MODES = ('auto', 'address', 'tunnel')


class FleetError(Exception):
    """Bad input or state. The message names the device (or cloud host) and the field."""


def check_device_id(value, where='device'):
    """Return the id or raise FleetError explaining why it is unsafe."""
    if not isinstance(value, str):
        raise FleetError('%s: field "id" must be a string matching %s, got %r' % (where, ID_PATTERN, value))
    if not ID_RE.fullmatch(value):
        raise FleetError(
            '%s: field "id" value %r is not allowed: ids must match %s (lowercase letter first, then '
            'lowercase letters, digits or "_", at most %d characters) because they become host names, '
            'replication channel names, file names and replica schema prefixes'
            % (where, value, ID_PATTERN, ID_MAX_LEN))
    if value in RESERVED_NAMES or value.startswith(RESERVED_PREFIXES):
        raise FleetError(
            '%s: field "id" value %r is reserved: it would collide with an inventory group '
            '(reserved: %s; reserved prefixes: %s)'
            % (where, value, ', '.join(sorted(RESERVED_NAMES)), ', '.join(RESERVED_PREFIXES)))
    return value


def check_cloud_host_name(value, where='cloud host'):
    if not isinstance(value, str) or not CLOUD_HOST_RE.fullmatch(value):
        raise FleetError('%s: field "name" value %r is not allowed: cloud host names must match %s'
                         % (where, value, CLOUD_HOST_PATTERN))
    if value in RESERVED_NAMES or value.startswith(RESERVED_PREFIXES):
        raise FleetError('%s: field "name" value %r is reserved (it would collide with an inventory group)'
                         % (where, value))
    return value


def check_site(value, where):
    if value is None:
        return None
    if not isinstance(value, str) or not SITE_RE.fullmatch(value):
        raise FleetError('%s: field "site" value %r is not allowed: sites must match %s (they become '
                         'the group site_<site>)' % (where, value, SITE_PATTERN))
    return value


def check_db_name(value, where='database'):
    if not isinstance(value, str) or not DB_NAME_RE.fullmatch(value):
        raise FleetError('%s: database name %r must match %s so that <device id>_<db> fits %d characters'
                         % (where, value, DB_NAME_PATTERN, MYSQL_IDENTIFIER_MAX))
    return value


def replica_schema(device_id, db_name, prefix=None):
    """The replica schema name for source database ``db_name`` of ``device_id``."""
    if prefix is None:
        prefix = device_id + '_'
    name = prefix + db_name
    if len(name) > MYSQL_IDENTIFIER_MAX:
        raise FleetError('device %s: replica schema %r is longer than %d characters'
                         % (device_id, name, MYSQL_IDENTIFIER_MAX))
    return name


def check_labels(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FleetError('%s: field "labels" must be a mapping of strings, got %s' % (where, type(value).__name__))
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key):
            raise FleetError('%s: field "labels" key %r must match %s' % (where, key, LABEL_KEY_PATTERN))
        if isinstance(val, bool):
            val = 'true' if val else 'false'
        elif isinstance(val, (int, float)):
            val = str(val)
        elif not isinstance(val, str):
            raise FleetError('%s: field "labels.%s" must be a string, got %s' % (where, key, type(val).__name__))
        out[key] = val
    return out


def check_choice(value, choices, field, where, default=None):
    if value is None:
        return default
    if value not in choices:
        raise FleetError('%s: field "%s" value %r must be one of %s' % (where, field, value, ', '.join(choices)))
    return value
