# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""allocation module: move / move_from / move_to on a file registry (main() with module args)."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils import basic

from ansible_collections.edgefleet.mysql_backup.plugins.modules import allocation
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import run_main, write_fleet

REGISTRY = """devices:
  - {id: device01, status: active}
  - {id: device02, status: active}
  - {id: device03, status: active}
  - {id: device04, status: active}
cloud_hosts:
  - {name: cloud01, address: 10.231.0.201}
  - {name: cloud02, address: 10.231.0.202}
"""


def run(mocker, args):
    return run_main(mocker, allocation, args)


@pytest.fixture
def fleet(tmp_path, mocker):
    config = write_fleet(tmp_path, REGISTRY)
    res = run(mocker, {'config': str(config)})
    assert res['changed']
    return config


def on(allocs, host):
    return sorted(d for d, rec in allocs.items() if rec['cloud_host'] == host)


def test_move_check_mode_then_real_then_noop(mocker, fleet):
    alloc_file = fleet.parent / 'registry.alloc.yml'
    before = alloc_file.read_text()
    first = run(mocker, {'config': str(fleet)})['allocations']
    assert on(first, 'cloud01') and on(first, 'cloud02'), 'capacity spreads the devices'
    dev = on(first, 'cloud01')[0]
    plan = run(mocker, {'config': str(fleet), 'move': [dev], 'move_to': 'cloud02',
                        '_ansible_check_mode': True, '_ansible_diff': True})
    assert plan['changed'] and plan['moved'][dev]['to']['cloud_host'] == 'cloud02'
    assert plan['diff']['before']['allocations'][dev]['cloud_host'] == 'cloud01'
    assert alloc_file.read_text() == before, 'check mode wrote the allocation file'
    res = run(mocker, {'config': str(fleet), 'move': [dev], 'move_to': 'cloud02'})
    assert res['changed'] and res['allocations'][dev]['cloud_host'] == 'cloud02'
    assert res['changes'][0]['action'] == 'move'
    stored = json.loads(alloc_file.read_text())
    assert stored['allocations'][dev]['cloud_host'] == 'cloud02'
    assert {(q['cloud_host'], q['owner']) for q in stored['quarantine']} == {('cloud01', dev)}
    again = run(mocker, {'config': str(fleet), 'move': [dev], 'move_to': 'cloud02'})
    assert not again['changed'] and again['unchanged'] == [dev] and again['moved'] == {}
    for other in first:
        if other != dev:
            assert res['allocations'][other] == first[other]


def test_drain_moves_all_and_warns_without_drain_flag(mocker, fleet):
    warnings = []
    mocker.patch.object(basic.AnsibleModule, 'warn', lambda self, msg: warnings.append(msg))
    first = run(mocker, {'config': str(fleet)})['allocations']
    res = run(mocker, {'config': str(fleet), 'move_from': 'cloud02'})
    assert res['changed'] and on(res['allocations'], 'cloud02') == []
    assert sorted(res['moved']) == on(first, 'cloud02')
    assert any('cloud host cloud02 does not drain' in w for w in warnings)
    again = run(mocker, {'config': str(fleet), 'move_from': 'cloud02'})
    assert not again['changed'] and again['moved'] == {}


def test_move_errors(mocker, fleet):
    res = run(mocker, {'config': str(fleet), 'move': ['ghost']})
    assert res['failed'] and 'device ghost: not in the registry' in res['msg']
    res = run(mocker, {'config': str(fleet), 'move_from': 'cloud09'})
    assert res['failed'] and 'cloud host cloud09: not in the registry' in res['msg']
    res = run(mocker, {'config': str(fleet), 'move_to': 'cloud02'})
    assert res['failed'] and 'move_to needs move' in res['msg']
    res = run(mocker, {'config': str(fleet), 'move': ['device01'], 'devices': ['device01']})
    assert res['failed'] and 'mutually exclusive' in res['msg']
