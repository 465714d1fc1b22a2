# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fan-in's applied-position table has one definition (changestream/fanin.py): the table, its
DDL, the query that reads it and the shape of its rows, used by the fan-in program (consumer) and
the monitor (observe)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import decimal
import re

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.changestream import consumer, fanin, observe


def test_observe_reads_the_fanin_definition():
    assert observe.APPLIED_TABLE is fanin.APPLIED_TABLE
    assert observe.APPLIED_SELECT is fanin.APPLIED_SELECT
    assert observe.applied_positions is fanin.applied_positions
    assert consumer.fanin is fanin


def test_the_query_reads_the_columns_the_ddl_creates():
    created = re.findall(r'[(,] ?([a-z_]+) [A-Z]', fanin.APPLIED_DDL)
    assert created == ['device_id', 'seq_no', 'row_index', 'event_id', 'applied_at']
    selected = re.match(r'SELECT (.*) FROM `([^`]+)`$', fanin.APPLIED_SELECT)
    assert selected.group(2) == fanin.APPLIED_TABLE == '_edgefleet_applied'
    assert [re.sub(r'^UNIX_TIMESTAMP\((.*)\)$', r'\1', c) for c in selected.group(1).split(', ')] == created
    # what applied_statement writes is what the query reads
    sql, params = fanin.applied_statement('dev1', (7, 7, 42, 3))
    assert sql.startswith('INSERT INTO `_edgefleet_applied` (device_id, seq_no, row_index, event_id) ')
    assert params == ('dev1', 42, 3, '7-7-42:3')


def test_applied_positions_shapes_the_rows():
    rows = [('dev1', 42, 3, '7-7-42:3', decimal.Decimal('1765000000.125')),
            ('dev2', 9, 0, '8-8-9:0', None)]
    assert fanin.applied_positions(rows) == {
        'dev1': {'seq_no': 42, 'row': 3, 'event_id': '7-7-42:3', 'applied_ts': 1765000000.125},
        'dev2': {'seq_no': 9, 'row': 0, 'event_id': '8-8-9:0', 'applied_ts': None},
    }
    assert fanin.applied_positions([]) == {}
