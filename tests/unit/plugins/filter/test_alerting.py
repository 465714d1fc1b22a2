# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""alerting filters: scrape targets per cloud host, rule durations, receiver endpoints."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import alerting as A

RULES = {'groups': [{'name': 'g', 'rules': [
    {'alert': 'EdgefleetDeviceOffline', 'expr': 'edgefleet_tunnel_up == 0', 'for': '15m'},
    {'alert': 'EdgefleetBackupVerifyFailed', 'expr': 'edgefleet_backup_last_verify_ok == 0'},
    {'record': 'x:y', 'expr': 'sum(up)'}]}]}


def test_targets_local_loopback_and_admin_addresses():
    hostvars = {'cloud01': {}, 'cloud02': {'monitoring_node_exporter_listen_address': '10.0.0.6:9100'},
                'cloud03': {'alerting_scrape_address': '[fd00::3]:9100'}}
    out = A.alerting_scrape_targets(['cloud02', 'cloud01', 'cloud03', 'cloud04'], hostvars, 'cloud01',
                                    {'cloud04': '10.0.0.8:19104'})
    assert out == [
        {'targets': ['127.0.0.1:9100'], 'labels': {'cloud_host': 'cloud01'}},
        {'targets': ['10.0.0.6:9100'], 'labels': {'cloud_host': 'cloud02'}},
        {'targets': ['[fd00::3]:9100'], 'labels': {'cloud_host': 'cloud03'}},
        {'targets': ['10.0.0.8:19104'], 'labels': {'cloud_host': 'cloud04'}},
    ]


def test_explicit_address_wins_even_on_loopback_for_a_tunnel_on_the_server():
    out = A.alerting_scrape_targets(['cloud02'], {'cloud02': {}}, 'prom01', {'cloud02': '10.9.0.1:19100'})
    assert out[0]['targets'] == ['10.9.0.1:19100']


@pytest.mark.parametrize('listen', ['127.0.0.1:9100', 'localhost:9100', '[::1]:9100'])
def test_loopback_of_another_host_is_refused(listen):
    with pytest.raises(AnsibleFilterError, match='cloud02 exposes its metrics only on .*alerting_scrape_addresses'):
        A.alerting_scrape_targets(['cloud01', 'cloud02'], {'cloud02': {'monitoring_node_exporter_listen_address': listen}},
                                  'cloud01')


@pytest.mark.parametrize('args, message', [
    (('cloud01', {}, 'cloud01'), 'list of cloud host names'),
    ((['cloud01'], {}, 'cloud01', ['x']), 'must be a mapping'),
    ((['cloud01'], {}, 'cloud01', {'cloud09': '10.0.0.1:1'}), 'not cloud hosts: cloud09'),
    ((['cloud01'], {'cloud01': {'alerting_scrape_address': '10.0.0.1'}}, 'cloud01'), 'HOST:PORT'),
    ((['cloud01'], {'cloud01': {'alerting_scrape_address': '10.0.0.1:99999'}}, 'cloud01'), 'HOST:PORT'),
])
def test_bad_targets_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        A.alerting_scrape_targets(*args)


def test_rule_durations_replaced_and_removed_input_untouched():
    out = A.alerting_rules(RULES, {'EdgefleetDeviceOffline': '10s', 'EdgefleetBackupVerifyFailed': '2m'})
    rules = out['groups'][0]['rules']
    assert rules[0]['for'] == '10s' and rules[1]['for'] == '2m' and 'for' not in rules[2]
    assert RULES['groups'][0]['rules'][0]['for'] == '15m'
    assert 'for' not in A.alerting_rules(RULES, {'EdgefleetDeviceOffline': '0s'})['groups'][0]['rules'][0]
    assert A.alerting_rules(RULES) == RULES


@pytest.mark.parametrize('durations, message', [
    ({'EdgefleetNoSuchAlert': '1m'}, 'do not have: EdgefleetNoSuchAlert'),
    ({'EdgefleetDeviceOffline': '10 seconds'}, 'not a Prometheus duration'),
    ({'EdgefleetDeviceOffline': ''}, 'not a Prometheus duration'),
    (['EdgefleetDeviceOffline'], 'must be a mapping'),
])
def test_bad_durations_refused(durations, message):
    with pytest.raises(AnsibleFilterError, match=message):
        A.alerting_rules(RULES, durations)


def test_not_a_rule_file_refused():
    with pytest.raises(AnsibleFilterError, match='rule file'):
        A.alerting_rules({'rules': []})


def test_receiver_endpoints():
    out = A.alerting_receiver_endpoints(['webhook', 'email', 'slack'], 'http://10.0.0.9:9097/hook',
                                        'smtp.example.org:587', 'https://hooks.slack.com/services/T/B/X')
    assert out == [
        {'kind': 'webhook', 'host': '10.0.0.9', 'port': 9097, 'name': 'webhook 10.0.0.9:9097'},
        {'kind': 'email', 'host': 'smtp.example.org', 'port': 587, 'name': 'email smtp.example.org:587'},
        {'kind': 'slack', 'host': 'hooks.slack.com', 'port': 443, 'name': 'slack hooks.slack.com:443'},
    ]
    assert A.alerting_receiver_endpoints(['webhook'], 'http://[fd00::9]/x')[0]['name'] == 'webhook [fd00::9]:80'


@pytest.mark.parametrize('args, message', [
    (([],), 'non-empty list'),
    (('webhook',), 'non-empty list'),
    ((['webhook'], ''), 'http\\(s\\) URL'),
    ((['webhook'], 'ftp://x/'), 'http\\(s\\) URL'),
    ((['webhook'], 'http://x:99999/'), 'bad port'),
    ((['email'], None, 'smtp.example.org'), 'HOST:PORT'),
    ((['slack'],), 'http\\(s\\) URL'),
    ((['pager'],), "unknown channel 'pager'"),
])
def test_bad_receivers_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        A.alerting_receiver_endpoints(*args)


def test_registered():
    assert set(A.FilterModule().filters()) == {'alerting_scrape_targets', 'alerting_rules', 'alerting_receiver_endpoints'}
