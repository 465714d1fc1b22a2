# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One change event: the Debezium-compatible envelope, its stable id and its routing key.

Pure standard library (host programs import it).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re

VERSION = 'edgefleet-1'
CONNECTOR = 'mariadb'
OPS = ('c', 'u', 'd')
DDL_TABLE = '__ddl'
_EVENT_ID_RE = re.compile(r'^(\d+)-(\d+)-(\d+):(\d+)$')
_NAME_RE = re.compile(r'^[A-Za-z0-9_$]{1,64}$')


class EnvelopeError(ValueError):
    """A message that is not a valid change event (a poisoned message)."""


_DDL_TABLE_RE = re.compile(
    r'^\s*(?:/\*.*?\*/\s*)*(?:ALTER|CREATE|DROP|RENAME|TRUNCATE)\s+(?:ONLINE\s+|IGNORE\s+|OR\s+REPLACE\s+|'
    r'TEMPORARY\s+)*(?:TABLE|INDEX\s+\S+\s+ON|VIEW)?\s*(?:IF\s+(?:NOT\s+)?EXISTS\s+)?'
    r'`?([A-Za-z0-9_$]+)`?\s*\.', re.IGNORECASE | re.DOTALL)


def ddl_schema(query, default):
    """The schema a DDL statement changes: the qualifier of its first table, else the session's."""
    match = _DDL_TABLE_RE.match(query or '')
    return match.group(1) if match else default


def event_id(gtid, row):
    """'<domain>-<server>-<seq>:<row index within the transaction>'; the same on every re-read."""
    return '%s:%d' % (gtid, row)


def parse_event_id(text):
    """'7-7-42:3' -> (7, 7, 42, 3); EnvelopeError otherwise."""
    match = _EVENT_ID_RE.match(text or '')
    if not match:
        raise EnvelopeError('invalid event id %r (expected domain-server-seqno:row)' % (text,))
    return tuple(int(part) for part in match.groups())


def routing_key(device, db, table):
    return '%s.%s.%s' % (device, db, table)


def json_value(value):
    """A binlog value as JSON: temporal types as ISO text, DECIMAL as text, binary as base64."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode('utf-8')
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode('ascii')
    if isinstance(value, set):
        return ','.join(sorted(value))
    return value


def _image(values):
    if values is None:
        return None
    return dict((str(name), json_value(value)) for name, value in values.items())


def build_event(op, device, db, table, before, after, primary_key, source, capture_ts_ms):
    """The envelope of one row change; `source` carries server_id, gtid, ts_ms, file, pos, row.

    `primary_key` is the list of key column names; the key is taken from `after` (from
    `before` for a delete).
    """
    if op not in OPS:
        raise EnvelopeError('unknown op %r' % (op,))
    before, after = _image(before), _image(after)
    image = after if after is not None else before
    if not primary_key:
        raise EnvelopeError('%s.%s has no primary key: the stream needs one to key its events' % (db, table))
    missing = [column for column in primary_key if column not in (image or {})]
    if missing:
        raise EnvelopeError('%s.%s: primary key column(s) %s not in the row image' % (db, table, ', '.join(missing)))
    src = {'version': VERSION, 'connector': CONNECTOR, 'name': device, 'db': db, 'table': table, 'snapshot': 'false'}
    src.update(source)
    return {
        'payload': {'before': before, 'after': after, 'source': src, 'op': op, 'ts_ms': capture_ts_ms},
        'key': dict((column, image[column]) for column in primary_key),
    }


def build_ddl_event(device, db, ddl, source, capture_ts_ms):
    src = {'version': VERSION, 'connector': CONNECTOR, 'name': device, 'db': db, 'table': None, 'snapshot': 'false'}
    src.update(source)
    return {'payload': {'source': src, 'databaseName': db, 'ddl': ddl, 'ts_ms': capture_ts_ms}, 'key': None}


def encode(event):
    return json.dumps(event, sort_keys=True, separators=(',', ':')).encode('utf-8')


def decode(body, message_id=None):
    """Bytes of a message -> (event, kind) with kind 'row' or 'ddl'; EnvelopeError when poisoned.

    Checks everything the fan-in relies on, so that a refused message has changed nothing.
    """
    try:
        event = json.loads(body.decode('utf-8') if isinstance(body, (bytes, bytearray)) else body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeError('not JSON: %s' % exc)
    if not isinstance(event, dict) or not isinstance(event.get('payload'), dict):
        raise EnvelopeError('no payload object')
    payload = event['payload']
    source = payload.get('source')
    if not isinstance(source, dict):
        raise EnvelopeError('payload.source missing')
    for field in ('name', 'db', 'gtid'):
        if not isinstance(source.get(field), str) or not source[field]:
            raise EnvelopeError('payload.source.%s missing' % field)
    if not isinstance(source.get('row'), int) or isinstance(source.get('row'), bool):
        raise EnvelopeError('payload.source.row missing')
    expected_id = event_id(source['gtid'], source['row'])
    parse_event_id(expected_id)
    if message_id is not None and message_id != expected_id:
        raise EnvelopeError('message_id %r does not match the event (%s)' % (message_id, expected_id))
    if 'ddl' in payload:
        if not isinstance(payload['ddl'], str):
            raise EnvelopeError('payload.ddl is not text')
        return event, 'ddl'
    op = payload.get('op')
    if op not in OPS:
        raise EnvelopeError('payload.op %r is not one of c, u, d' % (op,))
    if not isinstance(source.get('table'), str) or not _NAME_RE.match(source['table']):
        raise EnvelopeError('payload.source.table missing or invalid')
    if not _NAME_RE.match(source['db']):
        raise EnvelopeError('payload.source.db invalid')
    images = {'before': payload.get('before'), 'after': payload.get('after')}
    needs = {'c': ('after',), 'u': ('before', 'after'), 'd': ('before',)}[op]
    for name in needs:
        if not isinstance(images[name], dict) or not images[name]:
            raise EnvelopeError('op %s needs payload.%s' % (op, name))
    key = event.get('key')
    if not isinstance(key, dict) or not key:
        raise EnvelopeError('key missing')
    for image in images.values():
        if isinstance(image, dict):
            for column in image:
                if not _NAME_RE.match(column):
                    raise EnvelopeError('invalid column name %r' % (column,))
    return event, 'row'
