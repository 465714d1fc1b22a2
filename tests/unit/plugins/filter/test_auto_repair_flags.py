# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""auto_repair_flags: the fleet-wide default, the per-device override, a bad value refused."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter.auto_repair import auto_repair_flags

DEVICES = [{'id': 'd1', 'tunnel_mysql_port': 1}, {'id': 'd2', 'tunnel_mysql_port': 2}, {'id': 'd3'}]


def test_default_and_override():
    hostvars = {'d1': {'edgefleet_auto_repair': True}, 'd2': {'edgefleet_auto_repair': 'no'}, 'd3': {}}
    assert [d['auto_repair'] for d in auto_repair_flags(DEVICES, hostvars)] == [True, False, False]
    assert [d['auto_repair'] for d in auto_repair_flags(DEVICES, hostvars, True)] == [True, False, True]
    # A device the play does not know (not in hostvars) takes the default; the input is not changed.
    assert [d['auto_repair'] for d in auto_repair_flags(DEVICES, {}, True)] == [True, True, True]
    assert 'auto_repair' not in DEVICES[0]


def test_bad_value_names_the_device():
    with pytest.raises(AnsibleFilterError, match='edgefleet_auto_repair of d1 must be a boolean'):
        auto_repair_flags(DEVICES, {'d1': {'edgefleet_auto_repair': 'sometimes'}})
    with pytest.raises(AnsibleFilterError, match='expects a list'):
        auto_repair_flags('d1', {})
