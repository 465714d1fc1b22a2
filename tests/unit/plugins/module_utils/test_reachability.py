# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Online/offline classification: ss parsing, tunnel and address devices, real loopback probes."""

from __future__ import annotations

import socket

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.reachability import (
    classify, device_error, listening_ports, tcp_open,
)
from ansible_collections.edgefleet.mysql_backup.plugins.modules import online_devices
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import run_main

SS = """LISTEN 0      128        127.0.0.1:40001      0.0.0.0:*
LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
LISTEN 0      128             [::]:22            [::]:*
LISTEN 0      80         127.0.0.1:3306       0.0.0.0:*
garbage
""".splitlines()


def test_listening_ports_reads_every_family_and_skips_garbage():
    assert listening_ports(SS) == {40001, 22, 3306}
    assert listening_ports([]) == set() and listening_ports(None) == set()


def test_tunnel_devices_are_online_only_when_their_back_channel_listens():
    devices = [{'name': 'up', 'reach': 'tunnel', 'cloud_host': 'c1', 'tunnel_ssh_port': 40001},
               {'name': 'down', 'reach': 'tunnel', 'cloud_host': 'c1', 'tunnel_ssh_port': 40003},
               {'name': 'unasked', 'reach': 'tunnel', 'cloud_host': 'c2', 'tunnel_ssh_port': 40001},
               {'name': 'nowhere', 'reach': 'none'}]
    online, offline = classify(devices, {'c1': listening_ports(SS)}, probe=None)
    assert online == ['up']
    assert sorted(offline) == ['down', 'nowhere', 'unasked']
    assert '40003' in offline['down'] and 'c2' in offline['unasked']


def test_address_devices_are_probed_on_their_ssh_port():
    asked = []

    def probe(host, port, timeout):
        asked.append((host, port, timeout))
        return host == '10.0.0.1'

    devices = [{'name': 'b', 'reach': 'address', 'host': '10.0.0.2', 'port': 2222},
               {'name': 'a', 'reach': 'address', 'host': '10.0.0.1'}]
    online, offline = classify(devices, {}, timeout=1.5, probe=probe)
    assert online == ['a'] and list(offline) == ['b'] and '10.0.0.2:2222' in offline['b']
    assert sorted(asked) == [('10.0.0.1', 22, 1.5), ('10.0.0.2', 2222, 1.5)]


def test_tcp_open_against_real_loopback_sockets():
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        assert tcp_open('127.0.0.1', open_port, 2)
    with socket.socket() as closed:
        closed.bind(('127.0.0.1', 0))
        closed_port = closed.getsockname()[1]
        assert not tcp_open('127.0.0.1', closed_port, 2)
    assert not tcp_open('127.0.0.1', 'not-a-port', 2)


@pytest.mark.parametrize('device, fragment', [
    ({'reach': 'tunnel'}, 'needs a name'),
    ({'name': 'd', 'reach': 'carrier-pigeon'}, 'reach must be one of'),
    ({'name': 'd', 'reach': 'address'}, 'no host'),
])
def test_bad_device_records_are_named(device, fragment):
    assert fragment in device_error(device)
    assert device_error({'name': 'd', 'reach': 'address', 'host': 'h'}) is None


def test_module_classifies_and_never_changes(mocker):
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_main(mocker, online_devices, {
            'devices': [{'name': 'd1', 'reach': 'address', 'host': '127.0.0.1', 'port': port},
                        {'name': 'd2', 'reach': 'tunnel', 'cloud_host': 'c1', 'tunnel_ssh_port': 40001},
                        {'name': 'd3', 'reach': 'tunnel', 'cloud_host': 'c1', 'tunnel_ssh_port': 40002}],
            'listening': {'c1': SS}, '_ansible_check_mode': True})
    assert result['changed'] is False and 'failed' not in result
    assert result['online'] == ['d1', 'd2'] and list(result['offline']) == ['d3']


def test_module_refuses_bad_input(mocker):
    result = run_main(mocker, online_devices, {'devices': [{'name': 'd', 'reach': 'address'}]})
    assert result['failed'] and 'no host' in result['msg']
    result = run_main(mocker, online_devices, {'devices': [], 'timeout': 0})
    assert result['failed'] and 'timeout' in result['msg']
