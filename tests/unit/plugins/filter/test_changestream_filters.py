# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""changestream_topology and changestream_capture_configs: the changestream role's data shaping."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import changestream as C
from ansible_collections.edgefleet.mysql_backup.plugins.filter import host_code

TABLES = [{'source': 'app.orders', 'table': 'orders', 'columns': 'id INT NOT NULL', 'primary_key': ['id']},
          {'source': 'app.items', 'table': 'items', 'columns': 'id INT NOT NULL', 'primary_key': ['id']}]


def topology(tables=None, stream='edgefleet.events', consumers=()):
    return C.changestream_topology(TABLES if tables is None else tables, 'edgefleet.fanin', stream, list(consumers), 'edgefleet.changes', 'edgefleet.dead')


def test_fanin_binds_its_tables_and_their_ddl_stream_binds_everything():
    shape = topology()
    assert shape['queues'] == [
        {'name': 'edgefleet.fanin', 'bindings': ['*.app.orders', '*.app.items', '*.app.__ddl']},
        {'name': 'edgefleet.events', 'bindings': ['#'], 'dead_letter': False}]
    regex = re.compile(shape['names_regex'])
    for name in ('edgefleet.changes', 'edgefleet.dead', 'edgefleet.fanin', 'edgefleet.events'):
        assert regex.match(name)
    for name in ('edgefleet.changesX', 'edgefleetXfanin', 'amq.direct', 'other'):
        assert not regex.match(name)


def test_consumers_get_their_queue_declared_once():
    shape = topology(consumers=[{'name': 'bi', 'password': 'x', 'queue': 'edgefleet.bi', 'bindings': ['*.app.orders']},
                                {'name': 'audit', 'password': 'y'},
                                {'name': 'bi2', 'password': 'z', 'queue': 'edgefleet.bi'}])
    assert shape['queues'][-1] == {'name': 'edgefleet.bi', 'bindings': ['*.app.orders']}
    assert [q['name'] for q in shape['queues']].count('edgefleet.bi') == 1
    assert shape['consumer_queues'] == {'bi': 'edgefleet.bi', 'audit': 'edgefleet.events', 'bi2': 'edgefleet.bi'}


def test_no_tables_no_fanin_queue():
    assert topology(tables=[])['queues'] == [{'name': 'edgefleet.events', 'bindings': ['#'], 'dead_letter': False}]


@pytest.mark.parametrize('tables', [[{'source': 'orders', 'table': 't', 'columns': 'c', 'primary_key': ['id']}],
                                    [{'source': 'app.orders', 'table': 't', 'columns': 'c'}],
                                    ['app.orders']])
def test_bad_tables_refused(tables):
    with pytest.raises(AnsibleFilterError):
        topology(tables=tables)


def test_bad_queue_name_refused():
    with pytest.raises(AnsibleFilterError, match='queue of consumer'):
        topology(consumers=[{'name': 'x', 'password': 'p', 'queue': 'a b'}])


INSTANCES = [{'name': 'shared1', 'mode': 'channel'}, {'name': 'dev3', 'mode': 'instance'}, {'name': 'empty'}]
DEVICES = [
    {'id': 'dev1', 'replica_instance': 'shared1', 'gtid_domain_id': 11, 'server_id': 101, 'schema_prefix': 'dev1_'},
    {'id': 'dev2', 'replica_instance': 'shared1', 'gtid_domain_id': 12, 'server_id': 102, 'schema_prefix': 'dev2_'},
    {'id': 'dev3', 'gtid_domain_id': 13, 'server_id': 103},
]


def test_one_capture_per_instance_with_devices():
    base = {'databases': ['app'], 'replica': {'user': 'cap', 'password': 'pw'}}
    configs = C.changestream_capture_configs(INSTANCES, DEVICES, base, '/run/mysqld', 4200000000, '/var/lib/cs')
    assert [c['instance'] for c in configs] == ['dev3', 'shared1']
    dev3, shared = configs
    assert dev3['config']['replica'] == {'user': 'cap', 'password': 'pw', 'unix_socket': '/run/mysqld/edgefleet-dev3.sock'}
    assert dev3['config']['reader_server_id'] == 4200000001
    assert shared['config']['reader_server_id'] == 4200000003  # place in the sorted list: dev3, empty, shared1
    assert shared['config']['devices'] == [
        {'id': 'dev1', 'gtid_domain_id': 11, 'schema_prefix': 'dev1_', 'server_id': 101},
        {'id': 'dev2', 'gtid_domain_id': 12, 'schema_prefix': 'dev2_', 'server_id': 102}]
    assert dev3['config']['devices'][0]['schema_prefix'] == ''
    assert shared['config']['checkpoint'] == '/var/lib/cs/capture-shared1.checkpoint'
    assert base == {'databases': ['app'], 'replica': {'user': 'cap', 'password': 'pw'}}  # not mutated


def test_unallocated_device_refused():
    with pytest.raises(AnsibleFilterError, match='gtid_domain_id'):
        C.changestream_capture_configs([{'name': 'd'}], [{'id': 'd'}], {}, '/run/mysqld', 1, '/var/lib/cs')


def test_launcher_with_another_python():
    text = host_code.host_program_launcher('changestream.capture', '/usr/local/lib/cs', None, None,
                                           '/usr/local/lib/cs/venv/bin/python')
    assert "\nexec /usr/local/lib/cs/venv/bin/python -I -c 'import sys;" in text
    with pytest.raises(AnsibleFilterError):
        host_code.host_program_launcher('changestream.capture', '/usr/local/lib/cs', None, None, 'python; rm -rf /')
