# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.channel_isolation import (
    IsolationError, instance_filters, like_literal,
)


def dev(dev_id, prefix=None):
    return {'id': dev_id, 'channel_name': dev_id, 'schema_prefix': dev_id + '_' if prefix is None else prefix}


def test_like_literal_escapes_wildcards_and_escape():
    assert like_literal('a_b%c\\d') == 'a\\_b\\%c\\\\d'


def test_channel_mode_matches_exactly_the_renamed_schemas():
    filters = instance_filters([dev('device02'), dev('shop')], ['app', 'audit'], 'channel')
    assert filters == {
        'device02': {'replicate_wild_do_table': ['device02\\_app.%', 'device02\\_audit.%']},
        'shop': {'replicate_wild_do_table': ['shop\\_app.%', 'shop\\_audit.%']},
    }


def test_prefix_of_another_device_is_not_a_wildcard():
    # device "a" must not match "a_b_app" of device "a_b": the underscore is escaped, no trailing %
    patterns = instance_filters([dev('a'), dev('a_b')], ['app'], 'channel')['a']['replicate_wild_do_table']
    assert patterns == ['a\\_app.%']


def test_two_devices_writing_the_same_schema_are_refused():
    with pytest.raises(IsolationError) as err:
        instance_filters([dev('a'), dev('a_b')], ['b_x', 'x'], 'channel')
    assert 'a_b_x' in str(err.value) and 'a' in str(err.value)


def test_instance_mode_ignores_the_mysql_schema_only():
    assert instance_filters([dev('device01', '')], ['app'], 'instance') == {
        'device01': {'replicate_wild_ignore_table': ['mysql.%']}}
