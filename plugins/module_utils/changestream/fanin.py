# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fan-in's decision for one event: the statements that apply it, a skip, or a refusal.

Central schema: per fanned-in source table ``<db>.<table>`` one table with a ``device_id``
column and the source's columns, primary key ``(device_id, <source primary key>)``; and
``_edgefleet_applied`` with the last applied ``(seq_no, row)`` per device. :func:`plan_event`
is pure: the consumer hands it the decoded event, the central tables' columns and the last
applied position, and runs the statements it returns in one transaction.

- duplicate (at or below the device's last applied event): skip, nothing runs;
- unknown table, or a column the central table does not have: refusal, nothing runs (the
  consumer dead-letters the message with the reason);
- c / u: upsert by device + key (an update that changed the key deletes the old key first);
- d: delete by device + key.
"""

from __future__ import annotations

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.envelope import (
    event_id, parse_event_id,
)

APPLIED_TABLE = '_edgefleet_applied'
DEVICE_COLUMN = 'device_id'

APPLIED_DDL = ('CREATE TABLE IF NOT EXISTS `%s` (device_id VARCHAR(64) NOT NULL PRIMARY KEY, '
               'seq_no BIGINT UNSIGNED NOT NULL, row_index INT UNSIGNED NOT NULL, event_id VARCHAR(96) NOT NULL, '
               'applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)) '
               'ENGINE=InnoDB' % APPLIED_TABLE)
# Its rows as the fan-in and the monitor (observe.read_applied) read them; applied_positions() shapes them.
APPLIED_SELECT = 'SELECT device_id, seq_no, row_index, event_id, UNIX_TIMESTAMP(applied_at) FROM `%s`' % APPLIED_TABLE


def applied_positions(rows):
    """{device: {'seq_no', 'row', 'event_id', 'applied_ts'}} from the rows of APPLIED_SELECT."""
    return dict((device, {'seq_no': int(seq), 'row': int(row), 'event_id': event,
                          'applied_ts': float(ts) if ts is not None else None})
                for device, seq, row, event, ts in rows)


class Plan:
    """action: 'apply' (statements), 'skip' (duplicate) or 'refuse' (reason)."""

    def __init__(self, action, device, position, statements=(), reason=None, target=None):
        self.action = action
        self.device = device
        self.position = position
        self.statements = list(statements)
        self.reason = reason
        self.target = target

    def __repr__(self):
        return 'Plan(%s, %s, %s, %s)' % (self.action, self.device, self.position, self.reason or self.statements)


def _quote(name):
    return '`%s`' % name.replace('`', '``')


def _where(key):
    columns = sorted(key)
    return ' AND '.join(['%s = %%s' % DEVICE_COLUMN] + ['%s = %%s' % _quote(c) for c in columns]), columns


def applied_statement(device, position):
    seq_no, row = position[2], position[3]
    return ('INSERT INTO `%s` (device_id, seq_no, row_index, event_id) VALUES (%%s, %%s, %%s, %%s) '
            'ON DUPLICATE KEY UPDATE seq_no = VALUES(seq_no), row_index = VALUES(row_index), '
            'event_id = VALUES(event_id)' % APPLIED_TABLE,
            (device, seq_no, row, event_id('%d-%d-%d' % position[:3], row)))


def plan_event(event, tables, target_columns, last_applied):
    """Plan one decoded row event.

    tables:          {'<db>.<table>': '<central table>'} (the tables fanned in)
    target_columns:  {'<central table>': set of its columns}
    last_applied:    {device: (seq_no, row)} as read from _edgefleet_applied
    """
    payload = event['payload']
    source = payload['source']
    device = source['name']
    position = parse_event_id(event_id(source['gtid'], source['row']))
    last = last_applied.get(device)
    if last is not None and (position[2], position[3]) <= tuple(last):
        return Plan('skip', device, position, reason='duplicate of an applied event (last %d:%d)' % tuple(last))
    name = '%s.%s' % (source['db'], source['table'])
    target = tables.get(name)
    if target is None:
        return Plan('refuse', device, position, reason='table %s is not fanned in' % name)
    columns = target_columns.get(target)
    if not columns:
        return Plan('refuse', device, position, reason='central table %s of %s does not exist' % (target, name),
                    target=target)
    key = event['key']
    images = [image for image in (payload.get('before'), payload.get('after')) if image]
    unknown = sorted(set(c for image in images for c in image) - set(columns) | (set(key) - set(columns)))
    if DEVICE_COLUMN in set(c for image in images for c in image):
        return Plan('refuse', device, position, reason='%s has a column named %s' % (name, DEVICE_COLUMN))
    if unknown:
        return Plan('refuse', device, position, target=target,
                    reason='column(s) %s of %s unknown to the central table %s (a schema change on device %s?)'
                    % (', '.join(unknown), name, target, device))
    statements = []
    op = payload['op']
    if op == 'd':
        where, order = _where(key)
        statements.append(('DELETE FROM %s WHERE %s' % (_quote(target), where),
                           tuple([device] + [key[c] for c in order])))
    else:
        after = payload['after']
        if op == 'u':
            before = payload['before']
            old_key = dict((c, before.get(c)) for c in key)
            if old_key != dict((c, after.get(c)) for c in key):
                where, order = _where(old_key)
                statements.append(('DELETE FROM %s WHERE %s' % (_quote(target), where),
                                   tuple([device] + [old_key[c] for c in order])))
        order = sorted(after)
        statements.append((
            'INSERT INTO %s (%s) VALUES (%s) ON DUPLICATE KEY UPDATE %s' % (
                _quote(target), ', '.join([DEVICE_COLUMN] + [_quote(c) for c in order]),
                ', '.join(['%s'] * (len(order) + 1)),
                ', '.join('%s = VALUES(%s)' % (_quote(c), _quote(c)) for c in order)),
            tuple([device] + [after[c] for c in order])))
    statements.append(applied_statement(device, position))
    return Plan('apply', device, position, statements, target=target)
