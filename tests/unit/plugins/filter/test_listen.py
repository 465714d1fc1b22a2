# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""wildcard_listens: which listen settings bind every address of a host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import listen as L


@pytest.mark.parametrize('value', ['80', '*:80', '0.0.0.0:80', '[::]:8088', ':9100', '[::]:443 ssl', '8088 default_server'])
def test_wildcards_with_port(value):
    assert L.wildcard_listens([value]) == [value]


@pytest.mark.parametrize('value', ['127.0.0.1:8088', '[::1]:9100', '10.0.0.5:443 ssl', 'localhost:8088',
                                   'unix:/run/edgefleet.sock', 'admin.example:9100'])
def test_named_addresses_with_port(value):
    assert L.wildcard_listens([value]) == []


def test_bare_addresses():
    assert L.wildcard_listens(['0.0.0.0', '::', '[::]', '*', '', '203.0.113.10', '::1'], False) == \
        ['0.0.0.0', '::', '[::]', '*', '']


def test_order_kept_and_registered():
    assert L.wildcard_listens(['127.0.0.1:1', '80', '10.0.0.1:2', '*:3']) == ['80', '*:3']
    assert set(L.FilterModule().filters()) == {'wildcard_listens'}


@pytest.mark.parametrize('bad', ['127.0.0.1:80', None, {'a': 1}])
def test_not_a_list_is_refused(bad):
    with pytest.raises(AnsibleFilterError):
        L.wildcard_listens(bad)
