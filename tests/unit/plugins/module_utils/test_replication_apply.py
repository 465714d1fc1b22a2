# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""replication_apply without AnsibleModule: request validation, the settle rule of started
channels, one server configured through an injected session factory, several instances in order
with a failure that keeps the servers before it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import replication_apply as A
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import Dialect
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import ConnectError
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.test_replication_fakes import (
    FakeSession, mariadb_row,
)

PARAMS = {'prune_unlisted': False, 'update_password': 'on_create', 'lock_timeout': 5, 'start_wait': 0}


def channel(name, port):
    return {'name': name, 'source_host': '127.0.0.1', 'source_port': port, 'source_user': 'repl',
            'source_password': 'pw', 'state': 'running', 'use_gtid': True}


def status(io='Yes', sql=True, io_errno=0, sql_errno=0):
    return {'io_running': io, 'sql_thread': sql, 'last_io_errno': io_errno, 'last_sql_errno': sql_errno}


def test_settled_means_applying_or_a_first_error():
    assert A.settled(status())
    assert not A.settled(status(io='Connecting'))
    assert A.settled(status(io='Connecting', io_errno=2003))
    assert A.settled(status(io='No', sql=False, sql_errno=1062))
    assert not A.settled(status(io='Yes', sql=False))


def test_validate_request_checks_every_instance_before_any_server():
    assert A.validate_request([channel('dev1', 33001)], None) == []
    errors = A.validate_request(None, [{'name': 'a', 'channels': [channel('dev1', 70000)]},
                                       {'name': 'a', 'channels': [channel('dev1', 1), channel('DEV1', 2)]}])
    assert errors[0] == 'instances: every name must be unique'
    assert any('instance a: channel' in e and 'is not a TCP port' in e for e in errors)
    assert any('listed twice' in e for e in errors)


def test_configure_server_plans_applies_and_warns_through_callables():
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[])
    warnings = []
    result, before, after = A.configure_server(PARAMS, [channel('dev1', 33001)], False, warnings.append,
                                               lambda params: session)
    assert result['changed'] and result['server']['flavor'] == 'mariadb'
    assert [c['actions'] for c in result['channels']] == [['created', 'started']]
    assert 'SELECT GET_LOCK(%s, %s) AS locked' in session.queries and session.closed
    assert before == {'channels': {}} and 'dev1' in after['channels']


def test_check_mode_takes_no_lock_and_runs_nothing():
    session = FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[])
    result, _before, _after = A.configure_server(PARAMS, [channel('dev1', 33001)], True, [].append,
                                                 lambda params: session)
    assert result['changed'] and result['queries'] and session.executed == []
    assert not any(q.startswith('SELECT GET_LOCK') for q in session.queries)


def test_a_held_lock_and_a_connect_error_are_server_failures():
    held = FakeSession(Dialect('mariadb', (10, 11, 19)), lock=0)
    with pytest.raises(A.ServerFailure, match='holds the lock'):
        A.configure_server(PARAMS, [channel('dev1', 33001)], False, [].append, lambda params: held)

    def refuse(params):
        raise ConnectError('unable to connect')
    with pytest.raises(A.ServerFailure, match='unable to connect'):
        A.configure_server(PARAMS, [channel('dev1', 33001)], False, [].append, refuse)


def test_instances_in_order_and_a_failure_keeps_the_earlier_results():
    sessions = {
        '/run/a.sock': FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[mariadb_row('dev1', 33001)]),
        '/run/b.sock': FakeSession(Dialect('mariadb', (10, 11, 19)), rows=[], fail_on='CHANGE MASTER'),
    }
    instances = [{'name': 'a', 'login_unix_socket': '/run/a.sock', 'channels': [channel('dev1', 34001)]},
                 {'name': 'b', 'login_unix_socket': '/run/b.sock', 'channels': [channel('dev2', 33002)]}]
    with pytest.raises(A.InstanceFailure) as failure:
        A.configure_instances(PARAMS, instances, False, [].append,
                              lambda params: sessions[params['login_unix_socket']])
    assert str(failure.value).startswith('instance b: statement failed')
    assert failure.value.result['instance'] == 'b' and failure.value.result['changed'] is True
    assert [r['name'] for r in failure.value.result['instances']] == ['a']
    results, diffs = A.configure_instances(PARAMS, instances[:1], False, [].append,
                                           lambda params: sessions[params['login_unix_socket']])
    assert [r['name'] for r in results] == ['a'] and results[0]['changed'] is True
    assert diffs[0]['before_header'] == 'a'
