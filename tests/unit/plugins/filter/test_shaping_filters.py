# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that replaced Jinja append loops: replica instances (replication role), online
devices (playbooks/online.yml) and the rebalance role's move progress and lines."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import online as O
from ansible_collections.edgefleet.mysql_backup.plugins.filter import rebalance as R
from ansible_collections.edgefleet.mysql_backup.plugins.filter import replica_instances as I

DEVICES = [
    {'id': 'd1', 'replica_instance': 'd1', 'channel_name': 'd1', 'tunnel_mysql_port': 40001},
    {'id': 'd2', 'replica_instance': 'shared1', 'channel_name': 'd2', 'tunnel_mysql_port': '40002'},
    {'id': 'd3', 'replica_instance': 'shared1', 'channel_name': 'd3', 'tunnel_mysql_port': 40003},
]
INSTANCES = [{'name': 'd1'}, {'name': 'shared1'}, {'name': 'idle'}]


def test_filters_are_registered():
    assert set(I.FilterModule().filters()) == {'instance_sockets', 'instance_channels'}
    assert set(O.FilterModule().filters()) == {'reach_records', 'stdout_lines_by_host'}
    assert set(R.FilterModule().filters()) == {'move_progress', 'move_plan_lines', 'move_report_lines'}


def test_instance_sockets():
    assert I.instance_sockets(INSTANCES, '/run/x/') == [
        {'name': 'd1', 'login_unix_socket': '/run/x/edgefleet-d1.sock'},
        {'name': 'shared1', 'login_unix_socket': '/run/x/edgefleet-shared1.sock'},
        {'name': 'idle', 'login_unix_socket': '/run/x/edgefleet-idle.sock'}]
    with pytest.raises(AnsibleFilterError):
        I.instance_sockets([{'port': 1}])
    with pytest.raises(AnsibleFilterError):
        I.instance_sockets('d1')


def test_instance_channels_sets_every_device_on_its_instance():
    out = I.instance_channels(INSTANCES, DEVICES, '/run/mysqld', 'repl', 'pw', 5)
    assert [i['name'] for i in out] == ['d1', 'shared1', 'idle']
    assert [c['name'] for c in out[1]['channels']] == ['d2', 'd3']
    assert out[1]['login_unix_socket'] == '/run/mysqld/edgefleet-shared1.sock'
    assert out[1]['channels'][0] == {'name': 'd2', 'source_host': '127.0.0.1', 'source_port': 40002,
                                     'source_user': 'repl', 'source_password': 'pw', 'connect_retry': 5,
                                     'state': 'running'}
    assert out[2]['channels'] == []  # prune an instance that lost its devices


def test_instance_channels_holds_devices_and_leaves_out_idle_instances():
    out = I.instance_channels(INSTANCES, DEVICES, '/run/mysqld', 'repl', 'pw', 5, ['d1', 'd3'], ['idle'])
    # d1 held: its instance has no channel to set and carries none now -> left out;
    # idle carries channels now -> kept (its channels are pruned)
    assert [(i['name'], [c['name'] for c in i['channels']]) for i in out] == [('shared1', ['d2']), ('idle', [])]
    assert I.instance_channels(INSTANCES, DEVICES, '/s', 'u', 'p', 5, ['d1', 'd2', 'd3'], []) == []


class FakeHostvars(dict):
    """hostvars: a mapping of host -> mapping with .get()."""


def test_reach_records_read_how_each_device_is_reached():
    hv = FakeHostvars(a={'edgefleet_reach': 'tunnel', 'edgefleet_cloud_host': 'cloud01', 'edgefleet_tunnel_ssh_port': 40101},
                      b={'edgefleet_reach': 'address', 'ansible_host': '10.0.0.5', 'ansible_port': 2222},
                      c={})
    assert O.reach_records(['a', 'b', 'c'], hv) == [
        {'name': 'a', 'reach': 'tunnel', 'host': '', 'port': 22, 'cloud_host': 'cloud01', 'tunnel_ssh_port': 40101},
        {'name': 'b', 'reach': 'address', 'host': '10.0.0.5', 'port': 2222, 'cloud_host': '', 'tunnel_ssh_port': 0},
        {'name': 'c', 'reach': 'none', 'host': '', 'port': 22, 'cloud_host': '', 'tunnel_ssh_port': 0}]
    with pytest.raises(AnsibleFilterError):
        O.reach_records(['nowhere'], hv)


def test_stdout_lines_by_host_leaves_out_hosts_without_output():
    hv = FakeHostvars(cloud01={'ss': {'stdout_lines': ['LISTEN 0 128 127.0.0.1:40101 *:*']}},
                      cloud02={'ss': {'skipped': True}}, cloud03={})
    assert O.stdout_lines_by_host(['cloud01', 'cloud02', 'cloud03', 'gone'], hv, 'ss') == {
        'cloud01': ['LISTEN 0 128 127.0.0.1:40101 *:*']}


def journal(device, from_host):
    return {'device': device, 'from_host': from_host, 'schemas': ['app'], 'gtid_pos': '1-1-1'}


def test_move_progress_before_and_after_the_allocation_moved():
    journals = {'a': journal('a', 'cloud02'), 'b': journal('b', 'cloud02'), 'c': journal('c', 'cloud02'),
                'gone': journal('gone', 'cloud02'), 'x': journal('x', 'cloud02')}
    hv = FakeHostvars(a={'edgefleet_cloud_host': 'cloud02'}, b={'edgefleet_cloud_host': 'cloud01'},
                      c={'edgefleet_cloud_host': 'cloud02'}, x={})
    progress = R.move_progress(journals, hv, ['a', 'b', 'x', 'gone'])
    assert progress['commit'] == ['a']           # still allocated on its source: move the allocation
    assert progress['finish'] == {'b': dict(journals['b'], to_host='cloud01')}  # moved: load it there
    # c is inactive, x has no cloud host, gone is not in the inventory
    assert R.move_progress(list(journals.values()), hv, ['a', 'b']) == progress
    with pytest.raises(AnsibleFilterError):
        R.move_progress([{'device': 'a'}], hv, ['a'])


def test_move_lines():
    planned = {'b': {'from': {'cloud_host': 'cloud02'}, 'to': {'cloud_host': 'cloud01'}},
               'a': {'from': {'cloud_host': 'cloud01'}, 'to': {'cloud_host': 'cloud03'}}}
    assert R.move_plan_lines(planned) == ['a: cloud01 -> cloud03', 'b: cloud02 -> cloud01']
    assert R.move_plan_lines({}) == ['nothing new to move']
    moves = {'b': dict(journal('b', 'cloud02'), to_host='cloud01'), 'a': dict(journal('a', 'cloud02'), to_host='cloud01')}
    hv = FakeHostvars(a={'edgefleet_tunnel_mysql_port': 40010, 'edgefleet_tunnel_ssh_port': 40110},
                      b={'edgefleet_tunnel_mysql_port': 40011, 'edgefleet_tunnel_ssh_port': 40111})
    assert R.move_report_lines(moves, hv, ['b']) == [
        'a: cloud02 -> cloud01 (tunnel ports 40010/40110, NOT verified)',
        'b: cloud02 -> cloud01 (tunnel ports 40011/40111, verified)']
    assert R.move_report_lines({}, hv) == ['nothing moved']
