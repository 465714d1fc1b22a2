# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleet_status and table_checksum module entry points (argument checks, no servers)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.modules import fleet_status, table_checksum
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import run_main


DEVICES = [{'id': 'd1', 'tunnel_mysql_port': 20000, 'replica_instance': 'd1', 'site': 'lab'}]


def test_fleet_status_collects_in_one_call(mocker, tmp_path):
    collect = mocker.patch.object(fleet_status, 'collect', return_value={
        'devices': [], 'summary': {'total': 0}, 'hosts': [], 'generated_at': 1, 'thresholds': {}})
    result = run_main(mocker, fleet_status, {'devices': DEVICES, 'cloud_host': 'cloud01',
                                             'socket_dir': str(tmp_path), 'lag_threshold': 60,
                                             '_ansible_check_mode': True})
    assert result['changed'] is False and 'failed' not in result
    assert collect.call_count == 1
    args = collect.call_args[0]
    assert args[2] == 'cloud01' and args[3]['lag_threshold'] == 60


def test_fleet_status_rejects_records_without_ports(mocker):
    result = run_main(mocker, fleet_status, {'devices': [{'id': 'd1'}], 'cloud_host': 'c'})
    assert result['failed'] and 'tunnel_mysql_port' in result['msg']


def test_fleet_status_rejects_negative_thresholds(mocker):
    result = run_main(mocker, fleet_status, {'devices': DEVICES, 'cloud_host': 'c', 'lag_threshold': -1})
    assert result['failed'] and 'negative' in result['msg']


def test_table_checksum_reports_unreachable_instance_without_writing_in_check_mode(mocker, tmp_path):
    result = run_main(mocker, table_checksum, {
        'devices': DEVICES, 'source_password': 'secret', 'socket_dir': str(tmp_path),
        'results_dir': str(tmp_path), 'connect_timeout': 1, '_ansible_check_mode': True})
    assert result['changed'] is False and result['written'] == []
    assert result['devices'][0]['state'] == 'error'
    assert 'not reachable' in result['devices'][0]['error']
    assert result['summary'] == {'devices': 1, 'ok': 0, 'diverged': 0, 'error': 1,
                                 'tables_checked': 0, 'tables_differing': 0}
    assert 'secret' not in repr(result)


def test_table_checksum_writes_results(mocker, tmp_path):
    result = run_main(mocker, table_checksum, {
        'devices': DEVICES, 'source_password': 'secret', 'socket_dir': str(tmp_path),
        'results_dir': str(tmp_path), 'connect_timeout': 1})
    assert result['changed'] is True and result['written'] == [str(tmp_path / 'd1.json')]
    assert '"state": "error"' in (tmp_path / 'd1.json').read_text()


def test_table_checksum_needs_an_existing_results_dir(mocker, tmp_path):
    result = run_main(mocker, table_checksum, {
        'devices': DEVICES, 'source_password': 'x', 'results_dir': str(tmp_path / 'missing')})
    assert result['failed'] and 'does not exist' in result['msg']
