# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-changestream-capture: one replica mysqld's binlog -> RabbitMQ (docs/changestream.md).

    edgefleet-changestream-capture --config /etc/edgefleet/changestream-<instance>.json

Config (JSON): ``replica`` (client_kwargs: host/port or unix_socket, user, password),
``reader_server_id`` (unique among the replica's readers), ``databases`` (the devices' own
schema names, e.g. ["app"]), ``devices`` (records: id, gtid_domain_id, schema_prefix, server_id),
``broker`` (host, port, user, password, vhost, tls, ca_file), ``exchange``,
``dead_letter_exchange``, ``queues`` ([{name, bindings}] declared before publishing, so nothing is
published into the void), ``checkpoint`` (path), ``start_gtid_pos`` (where to start without a
checkpoint; '' = the oldest binlog), ``checkpoint_interval`` (seconds, 1).

Every row event is published persistent, with publisher confirms, ``message_id`` = event id; the
checkpoint advances past a transaction only when all of its events were confirmed. A lost
broker: reconnect and re-read from the last confirmed transaction (same ids). Refused
credentials: exit 2 with the reason. Exit 0 on SIGTERM after saving the checkpoint.
"""

from __future__ import annotations

import sys
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import broker as broker_mod
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import envelope, program
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.checkpoint import Checkpoint
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream.devices import (
    DeviceMap, UnknownDevice,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    client_kwargs, connect_pymysql,
)


class CaptureError(Exception):
    """A setting the capture cannot run with (told once, exit 2)."""


class Stop(Exception):
    """SIGTERM/SIGINT: save the checkpoint and leave."""


def log(message):
    sys.stderr.write('changestream-capture: %s\n' % message)
    sys.stderr.flush()


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, (bytes, bytearray)) else (value or '')


def _primary_key(value):
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_replica(replica):
    """The replica must write full row images with column names into its binlog."""
    conn = connect_pymysql(**replica)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
            log_bin, binlog_format, row_image, row_metadata = cur.fetchone()
    finally:
        conn.close()
    problems = []
    if not int(log_bin):
        problems.append('log_bin is OFF')
    if binlog_format != 'ROW':
        problems.append('binlog_format is %s, not ROW' % binlog_format)
    if row_image != 'FULL':
        problems.append('binlog_row_image is %s, not FULL' % row_image)
    if row_metadata != 'FULL':
        problems.append('binlog_row_metadata is %s, not FULL (column names)' % row_metadata)
    if problems:
        raise CaptureError('the replica cannot feed the change stream: ' + '; '.join(problems))


def binlog_pos(replica):
    """The replica's @@gtid_binlog_pos: the last GTID of each domain its binlog still has."""
    conn = connect_pymysql(**replica)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            return cur.fetchone()[0] or ''
    finally:
        conn.close()


class PublishFailed(Exception):
    """The broker nacked or returned a message: re-read from the last confirmed transaction."""


class Publisher:
    """Publisher confirms with a window of messages in flight on one channel.

    Delivery tags count the channel's publishes from 1; a transaction is confirmed when every tag
    up to its last one is (the lowest unconfirmed tag is above it). A nack or a returned
    (unroutable, mandatory) message fails the stream, which re-reads from the checkpoint.
    """

    def __init__(self, connection, config):
        import collections
        import pika
        self.pika = pika
        self.connection = connection
        self.channel = connection.channel()
        broker_mod.declare(self.channel, config)
        self.exchange = config.get('exchange', 'edgefleet.changes')
        self.dead = config.get('dead_letter_exchange', 'edgefleet.dead')
        self.window = int(config.get('confirm_window', 500))
        self.published = 0
        self.next_tag = 1
        self.unconfirmed = set()
        self.commits = collections.deque()
        self.failure = None
        # The asynchronous channel under the blocking one: BlockingChannel.basic_publish waits for
        # each confirm (one broker fsync per message), this keeps `window` of them in flight.
        self.impl = self.channel._impl  # pylint: disable=protected-access
        selected = []
        self.impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self.impl.add_on_return_callback(self._on_return)
        self.wait(lambda: selected, timeout=30)

    def _on_confirm(self, frame):
        method = frame.method
        if isinstance(method, self.pika.spec.Basic.Nack):
            self.failure = 'the broker refused (nack) message %d' % method.delivery_tag
        if method.multiple:
            self.unconfirmed = set(tag for tag in self.unconfirmed if tag > method.delivery_tag)
        else:
            self.unconfirmed.discard(method.delivery_tag)

    def _on_return(self, channel, method, properties, body):
        self.failure = 'no queue took message %s (routing key %s)' % (properties.message_id, method.routing_key)

    def wait(self, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check()
            if time.monotonic() > deadline:
                raise PublishFailed('no confirm from the broker within %d s' % timeout)
            self.connection.process_data_events(time_limit=0.05)
        self.check()

    def check(self):
        if self.failure:
            raise PublishFailed(self.failure)

    def publish(self, routing_key, event, message_id, headers=None, dead=False):
        properties = self.pika.BasicProperties(
            delivery_mode=2, message_id=message_id, content_type='application/json',
            timestamp=int(time.time()), headers=headers or None)
        # mandatory: a message no queue takes is an error, not a silent loss.
        self.impl.basic_publish(self.dead if dead else self.exchange, routing_key, envelope.encode(event),
                                properties, mandatory=True)
        self.unconfirmed.add(self.next_tag)
        self.next_tag += 1
        self.published += 1
        if len(self.unconfirmed) >= self.window:
            self.wait(lambda: len(self.unconfirmed) < self.window // 2 + 1)

    def mark(self, gtid):
        """The transaction `gtid` ends after the messages published so far."""
        self.commits.append((self.next_tag - 1, gtid))

    def confirmed(self):
        """GTIDs of the transactions whose every message the broker confirmed, in order."""
        self.connection.process_data_events(time_limit=0)
        self.check()
        low = min(self.unconfirmed) if self.unconfirmed else self.next_tag
        done = []
        while self.commits and self.commits[0][0] < low:
            done.append(self.commits.popleft()[1])
        return done

    def flush(self, timeout=30):
        self.wait(lambda: not self.unconfirmed, timeout)


class Capture:
    def __init__(self, config):
        self.config = config
        self.devices = DeviceMap(config['devices'], config['databases'])
        self.checkpoint = Checkpoint.load(config['checkpoint'], config.get('start_gtid_pos', ''))
        self.interval = float(config.get('checkpoint_interval', 1.0))
        self.saved_at = 0.0
        self.saved_text = None

    def save(self, force=False):
        text = self.checkpoint.text()
        if text != self.saved_text and (force or time.monotonic() - self.saved_at >= self.interval):
            self.checkpoint.save()
            self.saved_text = text
            self.saved_at = time.monotonic()

    def stream(self, publisher):
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        position, left_out, from_now = self.checkpoint.start_position(binlog_pos(self.config['replica']),
                                                                      self.devices.domains())
        for domain, why in sorted(left_out.items()):
            log('GTID domain %d (%s): %s; its transactions the checkpoint covers are skipped'
                % (domain, self.devices.name_of(domain), why))
        for domain, why in sorted(from_now.items()):
            log('GTID domain %d: %s' % (domain, why))
        reader = BinLogStreamReader(
            connection_settings=client_kwargs(**self.config['replica']),
            server_id=int(self.config['reader_server_id']), is_mariadb=True,
            auto_position=position, blocking=True, slave_heartbeat=2,
            only_events=[MariadbGtidEvent, QueryEvent, XidEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent,
                         HeartbeatLogEvent],
            enable_logging=False)
        log('reading the replica binlog from %r' % (position,))
        gtid = None
        row = 0
        ts_ms = 0
        try:
            for event in reader:
                if isinstance(event, HeartbeatLogEvent):
                    self.advance(publisher)
                    continue
                if isinstance(event, MariadbGtidEvent):
                    gtid, row, ts_ms = event.gtid, 0, int(event.timestamp) * 1000
                    if left_out and self.checkpoint.covers(gtid):
                        gtid = None  # published and confirmed before (a domain left out of the position)
                    continue
                if gtid is None:
                    continue
                domain, server_id = (int(part) for part in gtid.split('-')[:2])
                source = {'server_id': server_id, 'gtid': gtid, 'ts_ms': ts_ms,
                          'file': reader.log_file, 'pos': event.packet.log_pos}
                if isinstance(event, QueryEvent):
                    query = _text(event.query).strip()
                    if query.upper() == 'BEGIN':
                        continue
                    if query.upper() != 'COMMIT':
                        self.ddl(publisher, domain, envelope.ddl_schema(query, _text(event.schema)), query,
                                 dict(source, row=row))
                    self.commit(publisher, gtid)
                    gtid = None
                    continue
                if isinstance(event, XidEvent):
                    self.commit(publisher, gtid)
                    gtid = None
                    continue
                op = {WriteRowsEvent: 'c', UpdateRowsEvent: 'u', DeleteRowsEvent: 'd'}[type(event)]
                if not self.devices.watches(event.schema):
                    continue
                for values in event.rows:
                    before = values.get('before_values') if op == 'u' else (values['values'] if op == 'd' else None)
                    after = values.get('after_values') if op == 'u' else (values['values'] if op == 'c' else None)
                    self.row(publisher, op, domain, event.schema, event.table, before, after,
                             _primary_key(event.primary_key), dict(source, row=row))
                    row += 1
        finally:
            reader.close()

    def row(self, publisher, op, domain, schema, table, before, after, primary_key, source):
        message_id = envelope.event_id(source['gtid'], source['row'])
        try:
            device, db = self.devices.resolve(domain, schema)
        except UnknownDevice as exc:
            event = envelope.build_event(op, None, schema, table, before, after, primary_key, source,
                                         int(time.time() * 1000))
            publisher.publish('unknown.%s.%s' % (schema, table), event, message_id,
                              headers={broker_mod.ERROR_HEADER: str(exc)}, dead=True)
            return
        try:
            event = envelope.build_event(op, device, db, table, before, after, primary_key, source,
                                         int(time.time() * 1000))
        except envelope.EnvelopeError as exc:
            event = {'payload': {'source': dict(source, name=device, db=db, table=table), 'op': op,
                                 'before': envelope._image(before), 'after': envelope._image(after)}, 'key': None}
            publisher.publish(envelope.routing_key(device, db, table), event, message_id,
                              headers={broker_mod.ERROR_HEADER: str(exc)}, dead=True)
            return
        publisher.publish(envelope.routing_key(device, db, table), event, message_id)

    def ddl(self, publisher, domain, schema, query, source):
        try:
            device, db = self.devices.resolve(domain, schema)
        except UnknownDevice:
            return  # not a watched schema of a device (the replica's own or another database)
        event = envelope.build_ddl_event(device, db, query, source, int(time.time() * 1000))
        publisher.publish(envelope.routing_key(device, db, envelope.DDL_TABLE), event,
                          envelope.event_id(source['gtid'], source['row']))

    def commit(self, publisher, gtid):
        publisher.mark(gtid)
        self.advance(publisher)

    def advance(self, publisher):
        """Move the checkpoint past every transaction of a device the broker confirmed in full.
        A transaction of a domain no device of this replica holds does not move it: in channel
        mode a device joins a running replica (the replication play starts its channel) before
        the change-stream play adds it to this capture's devices and restarts the capture, and
        its first transactions, skipped or dead-lettered meanwhile, are then read again from the
        binlog (start_position) instead of being lost behind the checkpoint."""
        for gtid in publisher.confirmed():
            self.checkpoint.advance(gtid, self.devices.domains())
        self.save()


def run(config):
    import pika.exceptions
    check_replica(config['replica'])
    capture = Capture(config)
    delay = 1.0
    try:
        while True:
            try:
                connection = broker_mod.connect(config['broker'])
            except pika.exceptions.AMQPConnectionError as exc:
                log('broker unreachable (%s); retrying in %.0f s' % (exc.__class__.__name__, delay))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 1.0
            publisher = None
            try:
                publisher = Publisher(connection, config)
                capture.stream(publisher)
            except Stop:
                if publisher is not None:
                    try:  # what is in flight: confirmed now is not re-published at the next start
                        publisher.flush(timeout=10)
                        capture.advance(publisher)
                    except (pika.exceptions.AMQPError, OSError, PublishFailed):
                        pass
                raise
            except (pika.exceptions.AMQPError, OSError, PublishFailed) as exc:
                log('broker lost (%s: %s); resuming from %s' % (exc.__class__.__name__, exc, capture.checkpoint.text()))
                capture.save(force=True)
                time.sleep(1.0)
            finally:
                broker_mod.close_quietly(connection)
    except Stop:
        log('stopping at %s' % capture.checkpoint.text())
        return 0
    finally:
        capture.save(force=True)


def _stop(signum, frame):
    raise Stop()


def main(argv=None):
    return program.main(argv, 'edgefleet-changestream-capture', __doc__, run,
                        (broker_mod.BrokerAuthError, CaptureError), log, on_signal=_stop)
