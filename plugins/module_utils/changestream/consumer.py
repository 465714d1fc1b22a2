# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-changestream-fanin: RabbitMQ -> one central MariaDB schema (docs/changestream.md).

    edgefleet-changestream-fanin --config /etc/edgefleet/changestream-fanin.json

Config (JSON): ``central`` (client_kwargs with ``database``), ``broker``, ``queue`` (the fan-in
queue), ``queues`` (declared as the capture declares them), ``dead_letter_exchange``,
``tables`` ({"<db>.<table>": "<central table>"}), ``batch`` (messages per central transaction,
100), ``prefetch`` (200).

A batch of messages is applied in one central transaction (a savepoint per message, so a row the
central database refuses is rolled back alone and dead-lettered), committed, and only then acked
(multiple). A crash before the ack redelivers the batch; the applied positions committed with it
make the redelivered events duplicates that are skipped. Refused and poisoned messages are
published to the dead-letter exchange with the reason in the ``x-edgefleet-error`` header.
"""

from __future__ import annotations

import signal
import sys
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import broker as broker_mod
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import envelope, fanin, program
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import connect_pymysql


class Stop(Exception):
    """SIGTERM/SIGINT between batches."""


def log(message):
    sys.stderr.write('changestream-fanin: %s\n' % message)
    sys.stderr.flush()


class Central:
    """The central schema: its tables' columns, the applied positions, one transaction per batch."""

    def __init__(self, options, tables):
        self.conn = connect_pymysql(autocommit=False, **options)
        self.database = options['database']
        self.tables = tables
        with self.conn.cursor() as cur:
            cur.execute(fanin.APPLIED_DDL)
        self.conn.commit()
        self.columns = {}
        for target in set(tables.values()):
            self.refresh(target)

    def refresh(self, target):
        with self.conn.cursor() as cur:
            cur.execute('SELECT column_name FROM information_schema.columns WHERE table_schema = %s '
                        'AND table_name = %s', (self.database, target))
            self.columns[target] = set(row[0] for row in cur.fetchall())
        self.conn.commit()

    def applied(self):
        with self.conn.cursor() as cur:
            cur.execute(fanin.APPLIED_SELECT)
            return dict((device, (pos['seq_no'], pos['row']))
                        for device, pos in fanin.applied_positions(cur.fetchall()).items())


def apply_batch(central, batch, stats):
    """Apply a batch in one transaction; return [(message, reason)] to dead-letter."""
    import pymysql
    dead = []
    last = central.applied()
    cur = central.conn.cursor()
    for number, message in enumerate(batch):
        method, properties, body = message
        try:
            event, kind = envelope.decode(body, properties.message_id)
        except envelope.EnvelopeError as exc:
            dead.append((message, 'poisoned message: %s' % exc))
            continue
        if kind == 'ddl':
            log('schema change on device %s (%s): %s; central tables are not altered'
                % (event['payload']['source']['name'], event['payload']['databaseName'], event['payload']['ddl']))
            stats['ddl'] += 1
            continue
        plan = fanin.plan_event(event, central.tables, central.columns, last)
        if plan.action == 'refuse' and plan.target:
            central.refresh(plan.target)  # the central table may have been altered since
            plan = fanin.plan_event(event, central.tables, central.columns, last)
        if plan.action == 'skip':
            stats['duplicates'] += 1
            continue
        if plan.action == 'refuse':
            dead.append((message, plan.reason))
            continue
        cur.execute('SAVEPOINT m%d' % number)
        try:
            for sql, args in plan.statements:
                cur.execute(sql, args)
        except (pymysql.err.DataError, pymysql.err.IntegrityError, pymysql.err.ProgrammingError,
                pymysql.err.InternalError, pymysql.err.NotSupportedError) as exc:
            cur.execute('ROLLBACK TO SAVEPOINT m%d' % number)
            dead.append((message, 'the central database refused it: %s' % (exc,)))
            continue
        last[plan.device] = (plan.position[2], plan.position[3])
        stats['applied'] += 1
    central.conn.commit()
    cur.close()
    return dead


def consume(config, central, stats, stopping):
    """One broker connection: consume until stopped; raises pika errors when the broker is lost."""
    import pika
    connection = broker_mod.connect(config['broker'])
    try:
        channel = connection.channel()
        broker_mod.declare(channel, config)
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=int(config.get('prefetch', 200)))
        dead_exchange = config.get('dead_letter_exchange', 'edgefleet.dead')
        size = int(config.get('batch', 100))
        batch = []
        log('consuming %s' % config['queue'])
        for message in channel.consume(config['queue'], inactivity_timeout=0.2):
            if message[0] is not None:
                batch.append(message)
            if batch and (message[0] is None or len(batch) >= size):
                dead = apply_batch(central, batch, stats)
                for (method, properties, body), reason in dead:
                    headers = dict(properties.headers or {})
                    headers[broker_mod.ERROR_HEADER] = reason
                    log('dead-lettered %s: %s' % (properties.message_id, reason))
                    channel.basic_publish(dead_exchange, method.routing_key, body, pika.BasicProperties(
                        delivery_mode=2, message_id=properties.message_id, content_type=properties.content_type,
                        headers=headers), mandatory=True)
                stats['dead'] += len(dead)
                channel.basic_ack(batch[-1][0].delivery_tag, multiple=True)
                batch = []
                log('applied %(applied)d, duplicates %(duplicates)d, dead-lettered %(dead)d, ddl %(ddl)d' % stats)
            if stopping and not batch:
                return
    finally:
        broker_mod.close_quietly(connection)


def run(config):
    import pika.exceptions
    # The broker's word on the credentials first: refused, the central schema is not touched.
    broker_mod.connect(config['broker']).close()
    central = Central(config['central'], config['tables'])
    stats = {'applied': 0, 'duplicates': 0, 'dead': 0, 'ddl': 0}
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 1.0
    while not stopping:
        try:
            consume(config, central, stats, stopping)
            delay = 1.0
        except (pika.exceptions.AMQPError, OSError) as exc:
            # Unacked messages go back to the queue; what was committed is skipped as duplicates.
            central.conn.rollback()
            log('broker lost or unreachable (%s: %s); retrying in %.0f s' % (exc.__class__.__name__, exc, delay))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    return 0


def main(argv=None):
    return program.main(argv, 'edgefleet-changestream-fanin', __doc__, run, broker_mod.BrokerAuthError, log)
