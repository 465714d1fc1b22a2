# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data shaping of the changestream role: the broker topology both programs declare, and one
capture configuration per replica instance (docs/changestream.md)."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')
SOURCE_RE = re.compile(r'^[A-Za-z0-9_$]+\.[A-Za-z0-9_$]+$')
DEVICE_KEYS = ('id', 'gtid_domain_id', 'schema_prefix', 'server_id')


def _name(value, what):
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise AnsibleFilterError('changestream: %s %r is not a queue/exchange name (letters, digits, _ . -)'
                                 % (what, value))
    return value


def changestream_topology(fanin_tables, fanin_queue, stream_queue, consumers, exchange, dead_letter_exchange):
    """The queues both programs declare, the names a program may touch as one regex, and each
    consumer's queue.

    The fan-in queue binds ``*.<db>.<table>`` of every fanned-in table and ``*.<db>.__ddl`` of
    their schemas; the stream queue (if named) binds every event; a consumer naming a queue of
    its own gets it declared with its ``bindings`` (default every event)."""
    queues = []
    sources = []
    for table in fanin_tables or []:
        source = table.get('source') if isinstance(table, dict) else None
        if not isinstance(source, str) or not SOURCE_RE.match(source):
            raise AnsibleFilterError('changestream: fan-in table %r needs source: <db>.<table>' % (table,))
        for key in ('table', 'columns', 'primary_key'):
            if not table.get(key):
                raise AnsibleFilterError('changestream: fan-in table %s needs %s' % (source, key))
        sources.append(source)
    if sources:
        ddl = sorted(set('*.%s.__ddl' % source.split('.')[0] for source in sources))
        queues.append({'name': _name(fanin_queue, 'fan-in queue'),
                       'bindings': ['*.%s' % source for source in sources] + ddl})
    if stream_queue:
        # Nothing of ours consumes it: what its TTL or cap drops is not a dead letter (see broker.declare).
        queues.append({'name': _name(stream_queue, 'stream queue'), 'bindings': ['#'], 'dead_letter': False})
    known = set(queue['name'] for queue in queues)
    consumer_queues = {}
    for consumer in consumers or []:
        if not isinstance(consumer, dict) or not consumer.get('name'):
            raise AnsibleFilterError('changestream: a consumer needs name and password, got %r'
                                     % (sorted(consumer) if isinstance(consumer, dict) else consumer,))
        queue = _name(consumer.get('queue') or stream_queue, 'queue of consumer %s' % consumer['name'])
        if queue not in known:
            queues.append({'name': queue, 'bindings': list(consumer.get('bindings') or ['#'])})
            known.add(queue)
        consumer_queues[consumer['name']] = queue
    names = [_name(exchange, 'exchange'), _name(dead_letter_exchange, 'dead-letter exchange')]
    names += [queue['name'] for queue in queues]
    return {'queues': queues, 'names_regex': '^(%s)$' % '|'.join(re.escape(name) for name in names),
            'consumer_queues': consumer_queues}


def changestream_capture_configs(instances, devices, base, socket_dir, reader_server_id_offset, state_dir):
    """[{instance, devices, config}] for every instance carrying at least one device: ``base`` (the
    settings every capture shares) plus the instance's socket, its devices' records, its reader
    server_id (offset + place in the sorted instance list) and its checkpoint file."""
    result = []
    by_instance = {}
    for device in devices or []:
        by_instance.setdefault(device.get('replica_instance') or device['id'], []).append(device)
    for number, instance in enumerate(sorted(instances or [], key=lambda item: item['name']), start=1):
        name = instance['name']
        records = [dict((key, device.get(key)) for key in DEVICE_KEYS)
                   for device in sorted(by_instance.get(name, []), key=lambda item: item['id'])]
        if not records:
            continue
        missing = [record['id'] for record in records if record['gtid_domain_id'] is None]
        if missing:
            raise AnsibleFilterError('changestream: devices %s have no gtid_domain_id (not allocated yet?)'
                                     % ', '.join(missing))
        for record in records:
            record['schema_prefix'] = record['schema_prefix'] or ''
        config = dict(base)
        config['replica'] = dict(base.get('replica') or {}, unix_socket='%s/edgefleet-%s.sock' % (socket_dir, name))
        config['reader_server_id'] = int(reader_server_id_offset) + number
        config['devices'] = records
        config['checkpoint'] = '%s/capture-%s.checkpoint' % (state_dir, name)
        result.append({'instance': name, 'devices': [record['id'] for record in records], 'config': config})
    return result


class FilterModule:
    """edgefleet.mysql_backup change-stream filters."""

    def filters(self):
        return {
            'changestream_topology': changestream_topology,
            'changestream_capture_configs': changestream_capture_configs,
        }
