# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one GTID-position parser and formatter (replication, consistency and backups use it)."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import (
    Gtid, GtidError, format_gtid_pos, merge_gtid_pos, parse_gtid_pos,
)


def test_parse_names_fields_and_formats_in_domain_order():
    positions = parse_gtid_pos('5-5-100, 0-1-7')
    assert positions == {0: (0, 1, 7), 5: (5, 5, 100)}
    assert positions[5].server_id == 5 and positions[5].seq_no == 100 and positions[0].domain == 0
    assert str(positions[0]) == '0-1-7'
    assert format_gtid_pos(positions) == '0-1-7,5-5-100'
    assert format_gtid_pos({3: (3, 1, 2)}) == '3-1-2'


def test_empty_and_mariadb_multiline_positions():
    assert parse_gtid_pos('') == {} and parse_gtid_pos(None) == {}
    assert format_gtid_pos({}) == ''
    assert parse_gtid_pos('0-1-5,\n1000-1000-42\n') == {0: Gtid(0, 1, 5), 1000: Gtid(1000, 1000, 42)}
    assert parse_gtid_pos('0-1-5\n1-1-6') == {0: (0, 1, 5), 1: (1, 1, 6)}


@pytest.mark.parametrize('bad', ['1-2', 'a-b-c', '1-2-x', '1-1-1,1-2-3', '1-1-1;2-2-2', '-1-1-1'])
def test_rejects_malformed_positions(bad):
    with pytest.raises(GtidError) as info:
        parse_gtid_pos(bad)
    assert isinstance(info.value, ValueError)


def test_merge_sets_seeded_domains_only():
    current = parse_gtid_pos('1-1-40,2-2-9')
    merged = merge_gtid_pos(current, parse_gtid_pos('3-3-1842,2-2-12'))
    assert format_gtid_pos(merged) == '1-1-40,2-2-12,3-3-1842'
    assert format_gtid_pos(current) == '1-1-40,2-2-9'
