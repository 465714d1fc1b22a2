# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""allocation module end to end on a file registry (main() with module args)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.modules import allocation
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import LAB, run_main, write_fleet


@pytest.fixture
def fleet(tmp_path):
    return str(write_fleet(tmp_path, LAB, 'allocation: {replica_mode: instance}\n'))


def test_allocate_check_mode_diff_then_real(mocker, fleet):
    res = run_main(mocker, allocation, {'config': fleet, '_ansible_check_mode': True, '_ansible_diff': True})
    assert res['changed'] and sorted(res['allocations']) == ['device01', 'device02']
    assert sorted(res['diff']['after']['allocations']) == ['device01', 'device02']
    assert not os.path.exists(fleet.replace('lab.fleet.yml', 'registry.alloc.yml'))
    res = run_main(mocker, allocation, {'config': fleet})
    assert res['changed'] and res['allocated'] == ['device01', 'device02']
    assert res['allocations']['device01']['tunnel_mysql_port'] == 20000
    res = run_main(mocker, allocation, {'config': fleet})
    assert not res['changed'] and res['changes'] == []


def test_explicit_policy_overrides_file(mocker, fleet):
    res = run_main(mocker, allocation, {'config': fleet, 'allocation': {'replica_mode': 'channel',
                                                                        'tunnel_ports': '21000-21999'}})
    rec = res['allocations']['device01']
    assert rec['replica_mode'] == 'channel' and rec['tunnel_mysql_port'] == 21000
    assert rec['schema_prefix'] == 'device01_'


def test_bad_input_fails_clearly(mocker, fleet, tmp_path):
    res = run_main(mocker, allocation, {'config': fleet, 'allocation': {'tunnel_ports': '20000-20002'}})
    assert res['failed'] and 'device device02: no cloud host can take it' in res['msg']
    res = run_main(mocker, allocation, {'config': fleet, 'allocation': {'channels_per_instance': 300}})
    assert res['failed'] and 'channels_per_instance' in res['msg']
    res = run_main(mocker, allocation, {'config': fleet, 'devices': ['ghost']})
    assert res['failed'] and 'device ghost: not in the registry' in res['msg']
    res = run_main(mocker, allocation, {'config': str(tmp_path / 'missing.fleet.yml')})
    assert res['failed'] and 'cannot be read' in res['msg']
