# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The allowed id set: safe as SQL identifier, file name, channel name, host and group name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import (
    FleetError, ID_MAX_LEN, MYSQL_IDENTIFIER_MAX, check_cloud_host_name, check_db_name, check_device_id,
    check_labels, check_site, replica_schema,
)


@pytest.mark.parametrize('value', ['device01', 'a', 'kiosk_berlin_0001', 'x' * 32, 'a1_b2'])
def test_good_ids(value):
    assert check_device_id(value) == value


@pytest.mark.parametrize('value', ['', 'Device01', '1device', '_dev', 'dev-01', 'dev.01', 'dev 01', 'x' * 33,
                                   'dév', "dev'; DROP TABLE x;--", 'dev/../../etc', None, 5, 'devices', 'cloud',
                                   'all', 'cloud_x', 'site_a', 'status_ok', 'mode_x', 'dev\n'])
def test_bad_ids(value):
    with pytest.raises(FleetError) as err:
        check_device_id(value, 'device #3')
    assert 'device #3' in str(err.value) and '"id"' in str(err.value)


@given(st.from_regex(r'\A[a-z][a-z0-9_]{0,31}\Z'))
def test_every_allowed_id_is_safe_everywhere(dev_id):
    if dev_id in ('all', 'devices', 'cloud', 'ungrouped', 'localhost') or dev_id.startswith(
            ('cloud_', 'site_', 'status_', 'mode_')):
        return
    check_device_id(dev_id)
    assert len(dev_id) <= ID_MAX_LEN
    # channel name (64), replica schema <id>_<db> for a 31-char db (64), file name, no quoting needed
    assert len(replica_schema(dev_id, 'd' * 31)) <= MYSQL_IDENTIFIER_MAX
    assert re.match(r'^[a-z0-9_]+$', dev_id) and '/' not in dev_id and dev_id not in ('.', '..')


def test_schema_name_limit():
    assert replica_schema('x' * 32, 'a' * 31) == 'x' * 32 + '_' + 'a' * 31
    with pytest.raises(FleetError):
        replica_schema('x' * 32, 'a' * 32)
    check_db_name('app')
    with pytest.raises(FleetError):
        check_db_name('a' * 32)


def test_sites_labels_cloud_names():
    assert check_site('berlin_1', 'device d') == 'berlin_1'
    assert check_site(None, 'device d') is None
    with pytest.raises(FleetError, match='device d: field "site"'):
        check_site('Berlin-1', 'device d')
    assert check_labels({'lab': True, 'n': 3, 'hw': 'rpi'}, 'device d') == {'lab': 'true', 'n': '3', 'hw': 'rpi'}
    with pytest.raises(FleetError, match='labels'):
        check_labels({'a': [1]}, 'device d')
    with pytest.raises(FleetError, match='labels'):
        check_labels(['a'], 'device d')
    assert check_cloud_host_name('cloud01') == 'cloud01'
    for bad in ('Cloud01', 'cloud-01', 'devices', 'cloud_01'):
        with pytest.raises(FleetError, match='"name"'):
            check_cloud_host_name(bad)
