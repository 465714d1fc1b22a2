# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""registry module end to end on a file registry (main() with module args)."""

from __future__ import annotations


import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.modules import allocation, registry
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import LAB, run_main, write_fleet


@pytest.fixture
def fleet(tmp_path):
    return str(write_fleet(tmp_path, LAB, 'allocation: {replica_mode: instance}\n'))


def test_register_public_key_retire_and_release(mocker, fleet):
    key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQXIftKBsmdNzE2DLNnRf3U4jn6rsC3i33UBQfl1zsC root@device03'
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device03', 'site': 'berlin', '_ansible_diff': True})
    assert res['changed'] and res['created'] and res['diff']['before'] == {}
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device03', 'public_key': key})
    assert res['changed'] and res['device']['ssh_public_key'] == key
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device03', 'public_key': key})
    assert not res['changed']
    run_main(mocker, allocation, {'config': fleet})
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device03', 'state': 'retired', '_ansible_check_mode': True})
    assert res['changed'] and res['device']['status'] == 'retired'
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device03', 'state': 'retired'})
    assert res['changed']
    res = run_main(mocker, allocation, {'config': fleet})
    assert res['released'] == ['device03'] and 'device03' not in res['allocations']
    res = run_main(mocker, registry, {'config': fleet, 'id': 'nobody', 'state': 'disabled'})
    assert res['failed'] and 'device nobody: not in the registry' in res['msg']
    res = run_main(mocker, registry, {'config': fleet, 'id': 'Bad.Id'})
    assert res['failed'] and '"id"' in res['msg']
    res = run_main(mocker, registry, {'config': fleet, 'id': 'device01', 'public_key': 'garbage'})
    assert res['failed'] and 'device device01: field "ssh_public_key"' in res['msg']


def test_cloud_hosts(mocker, fleet):
    res = run_main(mocker, registry, {'config': fleet, 'cloud_host': 'cloud02', 'address': '10.231.0.202',
                                      'capacity': 10, 'tunnel_ports': ['21000-21099']})
    assert res['changed'] and res['device']['tunnel_ports'] == ['21000-21099']
    run_main(mocker, allocation, {'config': fleet})
    res = run_main(mocker, registry, {'config': fleet, 'cloud_host': 'cloud01', 'state': 'absent'})
    assert res['failed'] and 'cloud host cloud01 still carries' in res['msg']
    res = run_main(mocker, registry, {'config': fleet, 'cloud_host': 'cloud02', 'state': 'absent'})
    assert res['changed']
    res = run_main(mocker, registry, {'config': fleet, 'cloud_host': 'cloud02', 'site': 'x'})
    assert res['failed'] and 'not valid for a cloud host: site' in res['msg']
