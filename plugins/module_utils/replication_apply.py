# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the wanted replication channels to servers: the work of the replication_source module.

Per server (:func:`configure_server`): connect, take the server lock, read the live channels,
plan with :func:`replication_state.plan_channels`, run the statements (starting again what this
run stopped when one fails), wait for started channels to settle. :func:`configure_instances`
does that for several servers of one host in order. Input checks that need no server are in
:func:`validate_request`. Nothing here knows AnsibleModule: the caller passes its options, its
check mode, its ``warn`` and the session factory.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    channel_key, format_version, render, validate_channel_name,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import ConnectError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_state import (
    REPLICA_LOCK_NAME, PlanError, diagnose, parse_gtid_pos, plan_channels, read_channel_statuses,
)


def validate_channels(channels):
    """Input errors that need no server; returns a list of messages."""
    errors = []
    seen = {}
    for channel in channels:
        name = channel.get('name')
        message = validate_channel_name(name)
        if message:
            errors.append(message)
            continue
        key = channel_key(name)
        if key in seen:
            errors.append('channel %r is listed twice (channel names are case-insensitive; '
                          'also %r)' % (name, seen[key]))
        seen[key] = name
        for option in ('source_port', 'connect_retry', 'retry_count', 'delay'):
            value = channel.get(option)
            if value is not None and value < 0:
                errors.append('channel %r: %s must not be negative' % (name, option))
        port = channel.get('source_port')
        if port is not None and not 0 < port < 65536:
            errors.append('channel %r: source_port %d is not a TCP port' % (name, port))
        heartbeat = channel.get('heartbeat_period')
        if heartbeat is not None and not 0 <= heartbeat <= 4294967:
            errors.append('channel %r: heartbeat_period must be between 0 and 4294967' % name)
        if channel.get('gtid_pos'):
            try:
                parse_gtid_pos(channel['gtid_pos'])
            except ValueError as exc:
                errors.append('channel %r: gtid_pos: %s' % (name, exc))
    return errors


def read_stored_passwords(session):
    query = session.dialect.stored_password_query()
    if not query:
        return None
    rows = session.try_query(*query)
    if rows is None:
        return None
    passwords = {}
    for row in rows:
        if row.get('User_password') is not None:
            value = row['User_password']
            if isinstance(value, bytes):
                value = value.decode('utf-8', 'replace')
            passwords[channel_key(row.get('Channel_name'))] = value
    return passwords


LOCK_NAME = REPLICA_LOCK_NAME


def settled(status):
    """Connected and applying, or a first error to report (a stopped thread, or the IO thread
    retrying after a failed connection attempt)."""
    if status['last_sql_errno'] and not status['sql_thread']:
        return True
    if status['last_io_errno'] and status['io_running'].lower() != 'yes':
        return True
    return status['io_running'].lower() == 'yes' and status['sql_thread']


def wait_for_started(session, plan, timeout, warn):
    """START returns before the threads report running; wait so the result (and the next
    run, which may come right after) sees them, and report each started channel's health."""
    started = sorted(set(channel_key(name) for verb, name, _threads in plan.steps
                         if verb == 'start'))
    if not started or timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    while True:
        by_key = dict((channel_key(s['name']), s) for s in read_channel_statuses(session))
        pending = [key for key in started if key in by_key and not settled(by_key[key])]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for key in started:
        status = by_key.get(key)
        if status is None or key not in plan.channels:
            continue
        health, diagnosis = diagnose(status, None)
        plan.channels[key]['health'] = health
        if diagnosis:
            plan.channels[key]['diagnosis'] = diagnosis
        if health == 'error':
            warn('channel %s: %s' % (status['name'], diagnosis))


def take_lock(session, server, lock_timeout, warn):
    """Serialise runs against one server (released when the session closes)."""
    try:
        row = session.query_one('SELECT GET_LOCK(%s, %s) AS locked', [LOCK_NAME, lock_timeout])
    except Exception as exc:  # pylint: disable=broad-except
        warn('could not take the server lock %s: %s' % (LOCK_NAME, to_native(exc)))
        return
    if not row or not row.get('locked'):
        session.close()
        raise ServerFailure('another replication_source run holds the lock %s on this server '
                            '(waited %d s)' % (LOCK_NAME, lock_timeout), server=server)


class ServerFailure(Exception):
    """A server could not be configured; ``details`` go into the failure result."""

    def __init__(self, msg, **details):
        super(ServerFailure, self).__init__(msg)
        self.details = details


def configure_server(params, channels, check_mode, warn, open_session):
    """Compare, plan and apply the channels of one server; returns (result, diff before, diff
    after). Raises ServerFailure.

    ``params``: the options of the call (login_*, prune_unlisted, update_password, lock_timeout,
    start_wait); ``warn``: called with each warning; ``open_session``: params -> ServerSession
    (raises ConnectError)."""
    try:
        session = open_session(params)
    except ConnectError as exc:
        raise ServerFailure(to_native(exc))
    dialect = session.dialect
    if dialect.warning:
        warn(dialect.warning)
    server = {'flavor': dialect.flavor, 'version': format_version(dialect.version),
              'dialect': dialect.label}
    unsupported = sorted(set(
        '%s (channel %r)' % (option, channel['name'])
        for channel in channels for option in ('retry_count',)
        if channel.get(option) is not None and not dialect.supports_option(option)))
    if unsupported:
        session.close()
        raise ServerFailure('not a per-channel option on %s %s: %s; set the server option '
                            'master_retry_count instead' % (dialect.flavor, server['version'],
                                                            ', '.join(unsupported)),
                            server=server)

    if not check_mode:
        take_lock(session, server, params['lock_timeout'], warn)
    try:
        live = read_channel_statuses(session)
        gtid_slave_pos = None
        if dialect.is_mariadb:
            gtid_slave_pos = session.query_one('SELECT @@GLOBAL.gtid_slave_pos AS pos')['pos']
        stored = read_stored_passwords(session)
    except Exception as exc:  # pylint: disable=broad-except
        session.close()
        raise ServerFailure('cannot read replication status: %s' % to_native(exc), server=server)

    try:
        plan = plan_channels(dialect, channels, live,
                             prune_unlisted=params['prune_unlisted'],
                             update_password=params['update_password'],
                             stored_passwords=stored, gtid_slave_pos=gtid_slave_pos)
    except (PlanError, ValueError) as exc:
        session.close()
        raise ServerFailure(to_native(exc), server=server)

    done = []
    if not check_mode:
        for index, (sql, sql_params) in enumerate(plan.statements):
            try:
                session.execute(sql, sql_params)
            except Exception as exc:  # pylint: disable=broad-except
                recovered, not_recovered = [], []
                for name, threads in plan.recovery(index):
                    statement = dialect.start(name, threads)
                    try:
                        session.execute(*statement)
                        recovered.append(render(*statement))
                    except Exception:  # pylint: disable=broad-except
                        not_recovered.append(name)
                session.close()
                raise ServerFailure(
                    'statement failed: %s: %s' % (render(sql, sql_params), to_native(exc)),
                    queries=done, changed=bool(done), server=server,
                    recovery_queries=recovered, still_stopped=not_recovered,
                    hint='statements before the failing one were applied; channels this run '
                         'had stopped were started again where possible (recovery_queries); '
                         'run again after fixing the cause')
            done.append(render(sql, sql_params))
        wait_for_started(session, plan, params['start_wait'], warn)
    session.close()

    result = dict(
        changed=plan.changed,
        channels=[plan.channels[key] for key in sorted(plan.channels)],
        queries=plan.queries(),
        server=server,
    )
    before = {'channels': plan.diff_before}
    after = {'channels': plan.diff_after}
    if plan.gtid is not None:
        result['gtid_slave_pos'] = plan.gtid
        before['gtid_slave_pos'] = plan.gtid['before']
        after['gtid_slave_pos'] = plan.gtid['after']
    for warning in plan.warnings:
        warn(warning)
    return result, before, after


def validate_request(channels, instances):
    """Errors of a whole call (one server's ``channels`` or several ``instances``), before any
    server is touched."""
    if instances is None:
        return validate_channels(channels)
    names = [instance['name'] for instance in instances]
    errors = ['instances: every name must be unique'] if len(set(names)) != len(names) else []
    errors += ['instance %s: %s' % (instance['name'], error)
               for instance in instances for error in validate_channels(instance['channels'])]
    return errors


class InstanceFailure(Exception):
    """One of several servers failed; ``result`` is the failure result (servers before it keep
    their changes and are listed under ``instances``)."""

    def __init__(self, msg, result):
        super(InstanceFailure, self).__init__(msg)
        self.result = result


def configure_instances(params, instances, check_mode, warn, open_session):
    """configure_server for each instance (its own socket, the shared options) in order; returns
    (results, diffs). Raises InstanceFailure with the partial results."""
    results, diffs = [], []
    for instance in instances:
        server_params = dict(params, login_unix_socket=instance['login_unix_socket'])
        try:
            result, before, after = configure_server(server_params, instance['channels'], check_mode, warn,
                                                     open_session)
        except ServerFailure as exc:
            details = dict((key, value) for key, value in exc.details.items() if key != 'changed')
            details.update(instance=instance['name'], instances=results,
                           changed=any(done['changed'] for done in results) or bool(exc.details.get('changed')))
            raise InstanceFailure('instance %s: %s' % (instance['name'], to_native(exc)), details)
        result['name'] = instance['name']
        results.append(result)
        if result['changed']:
            diffs.append({'before_header': instance['name'], 'after_header': instance['name'],
                          'before': before, 'after': after})
    return results, diffs
