# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The broker side both programs share: connection parameters and the topology they declare.

exchange  (topic, durable)    every event, routing key <device>.<db>.<table>
dead      (fanout, durable)   refused and poisoned messages, with the reason in a header
queues    (durable)           each bound to the exchange, dead-lettering into `dead` unless the
                              queue says dead_letter: false (the stream queue)

pika is imported by the functions that need it, so the pure parts import without it.
"""

from __future__ import annotations

ERROR_HEADER = 'x-edgefleet-error'


class BrokerAuthError(Exception):
    """The broker refused the credentials: retrying will not help."""


def connection_parameters(broker):
    import pika
    kwargs = {}
    if broker.get('tls'):
        import ssl
        context = ssl.create_default_context(cafile=broker.get('ca_file'))
        kwargs['ssl_options'] = pika.SSLOptions(context, broker.get('host', '127.0.0.1'))
    return pika.ConnectionParameters(
        host=broker.get('host', '127.0.0.1'), port=int(broker.get('port', 5672)),
        virtual_host=broker.get('vhost', '/'),
        credentials=pika.PlainCredentials(broker['user'], broker['password']),
        heartbeat=int(broker.get('heartbeat', 30)), blocked_connection_timeout=60,
        connection_attempts=1, socket_timeout=10, **kwargs)


def connect(broker):
    """A BlockingConnection; BrokerAuthError when the broker refuses the credentials."""
    import pika
    import pika.exceptions
    try:
        return pika.BlockingConnection(connection_parameters(broker))
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError) as exc:
        raise BrokerAuthError('broker %s:%s refused the credentials of %s (%s)'
                              % (broker.get('host'), broker.get('port'), broker['user'], exc.__class__.__name__))
    except pika.exceptions.ConnectionClosedByBroker as exc:
        if exc.reply_code in (403, 530):
            raise BrokerAuthError('broker %s:%s refused the credentials of %s (%s)'
                                  % (broker.get('host'), broker.get('port'), broker['user'], exc.reply_text))
        raise


def close_quietly(connection):
    """Close a connection on the way out: one the broker already dropped has nothing to close,
    and an error here must not hide the one being raised."""
    if connection.is_open:
        try:
            connection.close()
        except Exception:  # pylint: disable=broad-except
            pass


def declare(channel, config):
    """Declare the exchange, the dead-letter exchange and queue, and the configured queues."""
    exchange = config.get('exchange', 'edgefleet.changes')
    dead = config.get('dead_letter_exchange', 'edgefleet.dead')
    channel.exchange_declare(exchange, exchange_type='topic', durable=True)
    channel.exchange_declare(dead, exchange_type='fanout', durable=True)
    channel.queue_declare(config.get('dead_letter_queue', dead), durable=True)
    channel.queue_bind(config.get('dead_letter_queue', dead), dead)
    for queue in config.get('queues', []):
        # A queue without dead_letter (the stream queue nobody of ours consumes) drops what its TTL or
        # length cap removes: dead-lettering that would fill the dead-letter queue (and its alert) daily.
        arguments = {'x-dead-letter-exchange': dead} if queue.get('dead_letter', True) else {}
        channel.queue_declare(queue['name'], durable=True, arguments=arguments)
        for binding in queue.get('bindings', ['#']):
            channel.queue_bind(queue['name'], exchange, routing_key=binding)
