# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup role's configuration filters (they replaced the append loops of backup.json.j2;
the rendered file was compared byte for byte with the loops' output when they were replaced)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import backup_config as B

DEVICES = [
    {'id': 'd2', 'replica_instance': 'shared1', 'replica_mode': 'channel', 'channel_name': 'c2',
     'schema_prefix': 'd2_', 'gtid_domain_id': 12, 'site': 's1'},
    {'id': 'd1', 'replica_instance': 'd1'},
    {'id': 'd3', 'replica_instance': 'd3', 'status': 'retired'},
]


def test_registered():
    assert set(B.FilterModule().filters()) == {'backup_config_devices', 'backup_config_instances'}


def test_devices_sorted_filtered_and_defaulted():
    assert B.backup_config_devices(DEVICES, ['active'], '/run/mysqld') == [
        {'id': 'd1', 'socket': '/run/mysqld/edgefleet-d1.sock', 'mode': 'instance', 'channel': 'd1',
         'instance': 'd1', 'schema_prefix': '', 'gtid_domain_id': None, 'site': None},
        {'id': 'd2', 'socket': '/run/mysqld/edgefleet-shared1.sock', 'mode': 'channel', 'channel': 'c2',
         'instance': 'shared1', 'schema_prefix': 'd2_', 'gtid_domain_id': 12, 'site': 's1'}]
    assert [d['id'] for d in B.backup_config_devices(DEVICES, ['active', 'retired'], '/s')] == ['d1', 'd2', 'd3']
    assert B.backup_config_devices([], ['active'], '/s') == []


def test_instances():
    assert B.backup_config_instances([{'name': 'shared1', 'datadir': '/v', 'channels': ('d2',)}, {'name': 'd1'}],
                                     '/run/mysqld') == [
        {'name': 'd1', 'socket': '/run/mysqld/edgefleet-d1.sock', 'datadir': '', 'defaults_group_suffix': '.d1',
         'devices': []},
        {'name': 'shared1', 'socket': '/run/mysqld/edgefleet-shared1.sock', 'datadir': '/v',
         'defaults_group_suffix': '.shared1', 'devices': ['d2']}]


@pytest.mark.parametrize('bad', [[{'replica_instance': 'x'}], [{'id': 'x'}], ['d1']])
def test_device_without_required_keys_is_refused(bad):
    with pytest.raises(AnsibleFilterError):
        B.backup_config_devices(bad, ['active'], '/s')


def test_instance_without_name_is_refused():
    with pytest.raises(AnsibleFilterError):
        B.backup_config_instances([{'datadir': '/v'}], '/s')
