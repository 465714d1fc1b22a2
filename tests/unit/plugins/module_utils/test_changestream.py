# -*- coding: utf-8 -*-
"""The change stream's pure logic: envelope, event ids, device mapping, checkpoint, fan-in plans."""

from __future__ import annotations

import datetime
import decimal
import json
import os

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import envelope, fanin
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.checkpoint import Checkpoint
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.devices import (
    DeviceMap, UnknownDevice,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.envelope import EnvelopeError

SOURCE = {'server_id': 7, 'gtid': '7-7-42', 'ts_ms': 1000, 'file': 'replica-bin.000001', 'pos': 4, 'row': 3}


def row_event(op='c', before=None, after=None, source=None, key=('id',)):
    src = dict(SOURCE)
    src.update(source or {})
    return envelope.build_event(op, 'dev1', 'app', 'items', before, after, list(key), src, 2000)


def roundtrip(event):
    source = event['payload']['source']
    return envelope.decode(envelope.encode(event), envelope.event_id(source['gtid'], source['row']))


def test_envelope_is_debezium_shaped_and_keyed_by_primary_key():
    event = row_event('u', {'id': 1, 'name': 'a'}, {'id': 1, 'name': 'b'})
    payload = event['payload']
    assert set(payload) == {'before', 'after', 'source', 'op', 'ts_ms'}
    assert payload['op'] == 'u' and payload['before'] == {'id': 1, 'name': 'a'} and payload['after']['name'] == 'b'
    assert payload['source']['name'] == 'dev1' and payload['source']['db'] == 'app'
    assert payload['source']['connector'] == 'mariadb' and payload['source']['gtid'] == '7-7-42'
    assert event['key'] == {'id': 1}
    assert roundtrip(event) == (event, 'row')


def test_delete_keys_from_the_before_image():
    event = row_event('d', before={'id': 5, 'name': 'x'})
    assert event['key'] == {'id': 5} and event['payload']['after'] is None


def test_values_become_json():
    after = {'id': 1, 'at': datetime.datetime(2026, 1, 2, 3, 4, 5), 'price': decimal.Decimal('1.50'),
             'raw': b'\xff\x00', 'txt': b'abc'}
    event = row_event(after=after)
    assert event['payload']['after'] == {'id': 1, 'at': '2026-01-02T03:04:05', 'price': '1.50', 'raw': '/wA=',
                                         'txt': 'abc'}
    json.dumps(event)


def test_a_table_without_primary_key_is_refused():
    with pytest.raises(EnvelopeError, match='no primary key'):
        row_event(after={'id': 1}, key=())


def test_event_id_is_stable_and_parses():
    assert envelope.event_id('7-7-42', 3) == '7-7-42:3'
    assert envelope.parse_event_id('7-7-42:3') == (7, 7, 42, 3)
    with pytest.raises(EnvelopeError):
        envelope.parse_event_id('7-7:3')


@pytest.mark.parametrize('body, message', [
    (b'\xff\xfe', 'not JSON'),
    (b'{"payload": 1}', 'no payload'),
    (b'[]', 'no payload'),
])
def test_poisoned_bodies_are_refused(body, message):
    with pytest.raises(EnvelopeError, match=message):
        envelope.decode(body)


def test_decode_checks_what_the_fanin_relies_on():
    good = row_event(after={'id': 1})
    for mutate, message in [
        (lambda e: e['payload'].update(op='x'), 'op'),
        (lambda e: e['payload'].update(after=None), 'needs payload.after'),
        (lambda e: e.update(key=None), 'key missing'),
        (lambda e: e['payload']['source'].update(table='a;drop'), 'table'),
        (lambda e: e['payload']['after'].update({'bad`col': 1}), 'column name'),
        (lambda e: e['payload']['source'].pop('gtid'), 'gtid'),
    ]:
        event = json.loads(envelope.encode(good))
        mutate(event)
        with pytest.raises(EnvelopeError, match=message):
            envelope.decode(json.dumps(event).encode())
    with pytest.raises(EnvelopeError, match='message_id'):
        envelope.decode(envelope.encode(good), '7-7-42:4')


@pytest.mark.parametrize('query, schema', [
    ('ALTER TABLE dev1_app.items ADD COLUMN note VARCHAR(32)', 'dev1_app'),
    ('alter online table `dev1_app`.`items` add c int', 'dev1_app'),
    ('CREATE TABLE IF NOT EXISTS dev2_app.t (id INT)', 'dev2_app'),
    ('DROP TABLE dev1_app.t', 'dev1_app'),
    ('ALTER TABLE items ADD c INT', 'default'),
    ('GRANT SELECT ON *.* TO x', 'default'),
])
def test_ddl_schema_is_the_qualifier_else_the_session_database(query, schema):
    assert envelope.ddl_schema(query, 'default') == schema


def test_ddl_events_decode_as_ddl():
    event = envelope.build_ddl_event('dev1', 'app', 'ALTER TABLE items ADD c INT', dict(SOURCE, row=0), 1)
    assert envelope.decode(envelope.encode(event))[1] == 'ddl'


DEVICES = [{'id': 'dev1', 'gtid_domain_id': 7, 'schema_prefix': 'dev1_'},
           {'id': 'dev2', 'gtid_domain_id': 8, 'schema_prefix': 'dev2_'}]


def test_device_map_channel_mode_strips_the_prefix():
    devices = DeviceMap(DEVICES, ['app'])
    assert devices.resolve(7, 'dev1_app') == ('dev1', 'app')
    assert devices.resolve(8, 'dev2_app') == ('dev2', 'app')
    assert devices.watches('dev1_app') and not devices.watches('mysql')
    with pytest.raises(UnknownDevice, match='domain 9'):
        devices.resolve(9, 'dev1_app')
    with pytest.raises(UnknownDevice, match='not one of device dev1'):
        devices.resolve(7, 'dev2_app')


def test_device_map_instance_mode_and_duplicate_domains():
    assert DeviceMap([{'id': 'd', 'gtid_domain_id': 3, 'schema_prefix': ''}], ['app']).resolve(3, 'app') == ('d', 'app')
    with pytest.raises(ValueError, match='domain 7'):
        DeviceMap(DEVICES + [{'id': 'dev3', 'gtid_domain_id': 7}], ['app'])


def test_checkpoint_advances_per_domain_and_survives_a_reload(tmp_path):
    path = str(tmp_path / 'checkpoint.json')
    checkpoint = Checkpoint.load(path, '7-7-1')
    checkpoint.advance('7-7-5')
    checkpoint.advance('8-8-2')
    checkpoint.advance('7-7-4')
    assert checkpoint.text() == '7-7-5,8-8-2'
    assert Checkpoint.load(path).text() == ''
    checkpoint.save()
    assert Checkpoint.load(path).text() == '7-7-5,8-8-2'
    assert oct(os.stat(path).st_mode & 0o777) == '0o640'


TABLES = {'app.items': 'items'}
COLUMNS = {'items': {'device_id', 'id', 'name'}}


def decoded(op='c', before=None, after=None, **source):
    return roundtrip(row_event(op, before, after, source))[0]


def test_insert_plans_an_upsert_and_the_applied_position():
    plan = fanin.plan_event(decoded(after={'id': 1, 'name': 'a'}), TABLES, COLUMNS, {})
    assert plan.action == 'apply'
    (upsert, upsert_args), (applied, applied_args) = plan.statements
    assert upsert.startswith('INSERT INTO `items` (device_id, `id`, `name`)') and 'ON DUPLICATE KEY UPDATE' in upsert
    assert upsert_args == ('dev1', 1, 'a')
    assert applied_args == ('dev1', 42, 3, '7-7-42:3')


def test_update_of_the_key_deletes_the_old_key_first():
    plan = fanin.plan_event(decoded('u', {'id': 1, 'name': 'a'}, {'id': 2, 'name': 'a'}), TABLES, COLUMNS, {})
    assert plan.statements[0] == ('DELETE FROM `items` WHERE device_id = %s AND `id` = %s', ('dev1', 1))
    assert plan.statements[1][1] == ('dev1', 2, 'a')


def test_delete_plans_a_delete_by_device_and_key():
    plan = fanin.plan_event(decoded('d', before={'id': 4, 'name': 'z'}), TABLES, COLUMNS, {})
    assert plan.statements[0] == ('DELETE FROM `items` WHERE device_id = %s AND `id` = %s', ('dev1', 4))


def test_duplicates_are_skipped_by_position():
    event = decoded(after={'id': 1, 'name': 'a'})
    assert fanin.plan_event(event, TABLES, COLUMNS, {'dev1': (42, 3)}).action == 'skip'
    assert fanin.plan_event(event, TABLES, COLUMNS, {'dev1': (43, 0)}).action == 'skip'
    assert fanin.plan_event(event, TABLES, COLUMNS, {'dev1': (42, 2)}).action == 'apply'
    assert fanin.plan_event(event, TABLES, COLUMNS, {'dev2': (99, 0)}).action == 'apply'


def test_unknown_table_and_unknown_column_are_refused_with_nothing_to_run():
    plan = fanin.plan_event(decoded(after={'id': 1, 'name': 'a'}), {}, COLUMNS, {})
    assert plan.action == 'refuse' and 'app.items is not fanned in' in plan.reason and not plan.statements
    plan = fanin.plan_event(decoded(after={'id': 1, 'name': 'a', 'note': 'n'}), TABLES, COLUMNS, {})
    assert plan.action == 'refuse' and 'note' in plan.reason and not plan.statements
    plan = fanin.plan_event(decoded(after={'id': 1, 'name': 'a'}), TABLES, {}, {})
    assert plan.action == 'refuse' and 'does not exist' in plan.reason


def test_checkpoint_start_position_leaves_out_deleted_and_restarted_domains(tmp_path):
    checkpoint = Checkpoint(str(tmp_path / 'checkpoint.json'))
    for gtid in ('0-2000000001-3', '1001-1001-653', '1002-1002-7', '1003-1003-9'):
        checkpoint.advance(gtid)
    # 1002 moved away (DELETE_DOMAIN_ID); 1003's history restarted (binlog at 4 < 9): both left
    # out, the checkpoint unchanged; 1001 kept (the binlog is past the checkpoint)
    position, left_out, from_now = checkpoint.start_position('0-2000000001-3,1001-1001-700,1003-1003-4')
    assert position == '0-2000000001-3,1001-1001-653' and from_now == {}
    assert sorted(left_out) == [1002, 1003]
    assert 'moved away' in left_out[1002] and 'binlog is at 4, the stream at 9' in left_out[1003]
    assert checkpoint.text() == '0-2000000001-3,1001-1001-653,1002-1002-7,1003-1003-9'
    # a domain the replica still has at or past the checkpoint is always asked for (purged: refused, not skipped)
    assert checkpoint.start_position('1002-1002-7,0-2000000001-3,1001-1001-653,1003-1003-10') == (
        checkpoint.text(), {}, {})
    assert checkpoint.start_position('')[0] == ''
    assert Checkpoint(str(tmp_path / 'x')).start_position('5-5-5') == ('', {}, {})


def test_checkpoint_start_position_asks_other_domains_from_now(tmp_path):
    """A binlog domain that is no device's and has no checkpoint (a device that moved away before
    the capture started, the replica's own domain 0, a stray writer) is asked from its last
    transaction: its history is not read and dead-lettered at every start. A device's domain
    without a checkpoint (a device that joined this replica) is left to the oldest binlog."""
    checkpoint = Checkpoint(str(tmp_path / 'checkpoint.json'))
    checkpoint.advance('1001-1001-653')
    binlog = '0-2000000001-3,1001-1001-700,1002-1002-40,1004-1004-12'
    position, left_out, from_now = checkpoint.start_position(binlog, frozenset([1001, 1004]))
    assert position == '0-2000000001-3,1001-1001-653,1002-1002-40'
    assert left_out == {} and sorted(from_now) == [0, 1002]
    assert 'asked from 1002-1002-40' in from_now[1002] and 'no device of this replica' in from_now[1002]
    # a first start: only the devices' domains are read from the oldest binlog
    assert Checkpoint(str(tmp_path / 'y')).start_position(binlog, frozenset([1004]))[0] == \
        '0-2000000001-3,1001-1001-700,1002-1002-40'
    # a domain in the checkpoint (written before checkpoints held device domains only) keeps its rules
    checkpoint.advance('1002-1002-50')
    position, left_out, from_now = checkpoint.start_position(binlog, frozenset([1001, 1004]))
    assert position == '0-2000000001-3,1001-1001-653' and sorted(left_out) == [1002] and sorted(from_now) == [0]


def test_checkpoint_covers_only_what_it_confirmed(tmp_path):
    checkpoint = Checkpoint(str(tmp_path / 'checkpoint.json'))
    checkpoint.advance('7-7-5')
    assert checkpoint.covers('7-7-5') and checkpoint.covers('7-9-1')
    assert not checkpoint.covers('7-7-6') and not checkpoint.covers('8-8-1')


def test_capture_checkpoints_device_domains_only(tmp_path):
    """A confirmed transaction of a domain no device of this replica holds (a device that joins a
    running replica before the capture knows it, the replica's own domain 0) leaves the checkpoint
    where it is, so the capture reads that device from the binlog once its config lists it."""
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.capture import Capture

    class Confirmed:
        def __init__(self, gtids):
            self.gtids = gtids

        def confirmed(self):
            gtids, self.gtids = self.gtids, []
            return gtids

    config = {'devices': [{'id': 'dev1', 'gtid_domain_id': 11, 'schema_prefix': 'dev1_'}], 'databases': ['app'],
              'checkpoint': str(tmp_path / 'checkpoint.json'), 'checkpoint_interval': 0}
    capture = Capture(config)
    capture.advance(Confirmed(['11-11-5', '13-13-9', '0-2000000001-3', '11-11-6']))
    assert capture.checkpoint.text() == '11-11-6'
    with open(config['checkpoint'], encoding='utf-8') as handle:
        assert json.load(handle) == {'gtid_pos': '11-11-6'}
