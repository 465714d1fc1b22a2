# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which device an event of a replica's binlog belongs to.

A replica keeps each device's GTID domain (``gtid_domain_id``, unique in the fleet) through
``log_slave_updates``; in channel mode it also rewrote the device's schema ``app`` to
``<schema_prefix>app``. :class:`DeviceMap` maps the domain back to the device record and strips
the prefix, and refuses an event whose schema does not carry that device's prefix.

Pure standard library (host programs import it).
"""

from __future__ import annotations


class UnknownDevice(ValueError):
    """An event no device record accounts for (unknown domain, or a schema of another device)."""


class DeviceMap:
    """Built from device records: dicts with id, gtid_domain_id, schema_prefix ('' in instance mode)."""

    def __init__(self, records, databases):
        self.by_domain = {}
        self.databases = frozenset(databases)
        for record in records:
            domain = int(record['gtid_domain_id'])
            if domain in self.by_domain:
                raise ValueError('GTID domain %d is held by devices %s and %s'
                                 % (domain, self.by_domain[domain]['id'], record['id']))
            self.by_domain[domain] = {'id': record['id'], 'schema_prefix': record.get('schema_prefix') or '',
                                      'server_id': record.get('server_id')}
        self._domains = frozenset(self.by_domain)
        # Every schema the replica may hold for a watched database: prefix + database.
        self.schemas = frozenset(device['schema_prefix'] + db for device in self.by_domain.values()
                                 for db in self.databases)

    def watches(self, schema):
        """Whether events of this replica schema belong to the stream at all."""
        return schema in self.schemas or schema in self.databases

    def domains(self):
        """The GTID domains of this replica's devices."""
        return self._domains

    def name_of(self, domain):
        """The device id of a GTID domain, or 'no device of this replica'."""
        device = self.by_domain.get(int(domain))
        return device['id'] if device else 'no device of this replica'

    def resolve(self, domain, schema):
        """(device id, the device's own schema name) of an event; UnknownDevice otherwise."""
        device = self.by_domain.get(int(domain))
        if device is None:
            raise UnknownDevice('GTID domain %s is no device of this replica (schema %s)' % (domain, schema))
        prefix = device['schema_prefix']
        if not schema.startswith(prefix) or schema[len(prefix):] not in self.databases:
            raise UnknownDevice('schema %s is not one of device %s (prefix %r, databases %s)'
                                % (schema, device['id'], prefix, ', '.join(sorted(self.databases))))
        return device['id'], schema[len(prefix):]
