# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""status_* filters: merging several cloud hosts' results and rendering them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import status as status_filters
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_status as fs

NOW = 1700000000


def host_result(cloud, devices, listening):
    records = [fs.build_record(d, cloud, listening, {'name': d['id'], 'health': 'ok',
                                                     'io_running': 'Yes', 'sql_running': 'Yes',
                                                     'seconds_behind': 0}, None, None, None, NOW)
               for d in devices]
    report = fs.make_report(records, [{'cloud_host': cloud, 'collected_at': NOW, 'devices': len(records),
                                       'instances': []}], NOW)
    report['changed'] = False  # a registered module result carries Ansible's keys too
    return report


def dev(dev_id, port):
    return {'id': dev_id, 'site': 'lab', 'tunnel_mysql_port': port, 'replica_instance': dev_id}


def test_filters_are_registered():
    names = set(status_filters.FilterModule().filters())
    assert names == {'status_report', 'status_table', 'status_summary', 'status_html',
                     'status_metrics', 'status_table_diff'}


def test_report_merges_hosts_and_keeps_unreachable_hosts_devices():
    one = host_result('cloud01', [dev('a', 10), dev('b', 12)], {10})
    report = status_filters.status_report([one], {'cloud01': [dev('a', 10), dev('b', 12)],
                                                  'cloud02': [dev('c', 14)]})
    assert [d['device'] for d in report['devices']] == ['c', 'b', 'a']
    assert report['devices'][0]['state'] == 'error' and report['devices'][1]['state'] == 'offline'
    assert report['summary']['total'] == 3
    # a merged report can be rendered again (status.yml merges once, renders three times)
    assert status_filters.status_table(report).count('\n') == 6


def test_single_result_and_renderings():
    one = host_result('cloud01', [dev('a', 10)], {10})
    assert status_filters.status_summary(one).startswith('fleet: 1 device |')
    assert 'edgefleet_tunnel_up{device="a"' in status_filters.status_metrics(one)
    page = status_filters.status_html(one, 'T', 0)
    assert '<title>T</title>' in page and 'http-equiv="refresh"' not in page


def test_bad_input_is_a_filter_error():
    with pytest.raises(AnsibleFilterError):
        status_filters.status_table('nope')
    with pytest.raises(AnsibleFilterError):
        status_filters.status_table([{'no': 'devices'}])
    with pytest.raises(AnsibleFilterError):
        status_filters.status_table_diff('x')
