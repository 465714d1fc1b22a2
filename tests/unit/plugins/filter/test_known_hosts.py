# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The known_hosts content playbooks/converge_new.yml writes. The expected text is the file the
Jinja loop this filter replaced wrote for the same hostvars (ansible-core 2.19 copy, byte for byte)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import known_hosts as K

HOSTVARS = {
    'dev-b': {'edgefleet_device_id': 'Beta', 'edgefleet_host_public_key': 'ssh-ed25519 AAAAkeyB root@beta'},
    'dev-a': {'edgefleet_device_id': 'alpha', 'edgefleet_host_public_key': '  ssh-rsa   AAAAkeyA  '},
    'dev-c': {'edgefleet_device_id': 'gamma'},
}


def test_filter_is_registered():
    assert set(K.FilterModule().filters()) == {'pinned_known_hosts'}


def test_known_hosts_is_the_file_the_jinja_loop_wrote():
    # sorted by device id ignoring case (Jinja's sort), comment dropped, whitespace normalized,
    # the host without a key left out, every line ending in a newline
    assert K.pinned_known_hosts(['dev-b', 'dev-a', 'dev-c'], HOSTVARS) == \
        'alpha ssh-rsa AAAAkeyA\nBeta ssh-ed25519 AAAAkeyB\n'


def test_known_hosts_is_empty_when_no_device_has_a_key():
    assert K.pinned_known_hosts(['dev-c'], HOSTVARS) == ''
    assert K.pinned_known_hosts([], HOSTVARS) == ''


def test_known_hosts_refuses_unknown_hosts_and_bad_keys():
    with pytest.raises(AnsibleFilterError, match='not in the inventory'):
        K.pinned_known_hosts(['nowhere'], HOSTVARS)
    with pytest.raises(AnsibleFilterError, match='not a string'):
        K.pinned_known_hosts(['d'], {'d': {'edgefleet_device_id': 'd', 'edgefleet_host_public_key': None}})
    # the host name is the device id when the inventory does not repeat it as edgefleet_device_id
    assert K.pinned_known_hosts(['d'], {'d': {'edgefleet_host_public_key': 'ssh-ed25519 AAAA'}}) == 'd ssh-ed25519 AAAA\n'
