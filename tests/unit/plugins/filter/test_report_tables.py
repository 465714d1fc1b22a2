# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report tables of playbooks/consistency.yml and playbooks/demo_check.yml. The expected
texts are what the Jinja loops these filters replaced printed for the same input (captured by
running the old tasks under ansible-core 2.19), byte for byte, trailing spaces and newline included."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter import report_tables as T

CONSISTENCY_HEADER = ['DEVICE', 'STATE', 'GTID POSITION', 'TABLES', 'DIFFERENCES / ERROR']
CONSISTENCY_WIDTHS = [16, 9, 22, 7]
DEMO_HEADER = ['DEVICE', 'CLOUD', 'INSTANCE', 'PORT', 'ROW ON REPLICA']
DEMO_WIDTHS = [12, 10, 10, 6]

CONSISTENCY_RESULTS = [
    {'device': 'dev02', 'state': 'diverged', 'gtid_pos': '0-1-55', 'tables_checked': 3, 'tables': [
        {'table': 'app.t1', 'status': 'same'},
        {'table': 'app.probe', 'status': 'differs', 'device_rows': 3, 'replica_rows': 3,
         'keys': {'counts': {'different': 1}, 'different': ['id=2']}},
        {'table': 'app.gone', 'status': 'missing_on_replica'}]},
    {'device': 'Dev01', 'state': 'ok', 'gtid_pos': '', 'tables_checked': 2, 'tables': [{'table': 'app.t1', 'status': 'same'}]},
    {'device': 'dev03', 'state': 'error', 'error': 'cannot connect'},
    {'device': 'dev04', 'state': 'ok', 'gtid_pos': '0-1-999999999,1-2-3', 'tables': []},
]
CONSISTENCY_TEXT = (
    'DEVICE           STATE     GTID POSITION          TABLES  DIFFERENCES / ERROR\n'
    'Dev01            ok        -                      2       \n'
    'dev02            diverged  0-1-55                 3       '
    'app.probe differs (3/3 rows; different: id=2); app.gone missing on the replica\n'
    'dev03            error     -                      0       cannot connect\n'
    'dev04            ok        0-1-999999999,1-2-3    0       \n')

DEMO_HOSTVARS = {
    'dev-b': {'edgefleet_cloud_host': 'cloud01', 'edgefleet_replica_instance': 'shared1',
              'edgefleet_replica_port': 3307, 'demo_arrived': True},
    'dev-a': {'edgefleet_cloud_host': 'cloud-long-name-x', 'edgefleet_replica_instance': 'dev-a',
              'edgefleet_replica_port': 3308, 'demo_arrived': False},
    'dev-c': {'edgefleet_cloud_host': 'cloud01', 'edgefleet_replica_instance': 'averyveryverylonginstance',
              'edgefleet_replica_port': 3309},
}
DEMO_TEXT = (
    'DEVICE       CLOUD      INSTANCE   PORT   ROW ON REPLICA\n'
    'dev-a        cloud-long-name-x dev-a      3308   NO\n'
    'dev-b        cloud01    shared1    3307   yes\n'
    'dev-c        cloud01    averyveryverylonginstance 3309   NO\n')


def test_filters_are_registered():
    assert set(T.FilterModule().filters()) == {'fixed_width_table', 'consistency_rows', 'demo_rows'}


def test_consistency_table_is_the_text_the_jinja_loop_printed():
    rows = T.consistency_rows(CONSISTENCY_RESULTS)
    assert T.fixed_width_table(rows, CONSISTENCY_HEADER, CONSISTENCY_WIDTHS) == CONSISTENCY_TEXT


def test_consistency_rows_sort_by_device_ignoring_case_and_fill_defaults():
    rows = T.consistency_rows(CONSISTENCY_RESULTS)
    assert [r[0] for r in rows] == ['Dev01', 'dev02', 'dev03', 'dev04']
    assert rows[0] == ['Dev01', 'ok', '-', 2, '']
    assert rows[2] == ['dev03', 'error', '-', 0, 'cannot connect']


def test_consistency_rows_prefer_differences_over_the_error():
    rows = T.consistency_rows([{'device': 'd', 'state': 'diverged', 'error': 'ignored',
                                'tables': [{'table': 'app.x', 'status': 'columns_differ'}]}])
    assert rows == [['d', 'diverged', '-', 0, 'app.x has different columns']]


def test_consistency_table_without_results_is_the_header():
    assert T.fixed_width_table(T.consistency_rows([]), CONSISTENCY_HEADER, CONSISTENCY_WIDTHS) == \
        'DEVICE           STATE     GTID POSITION          TABLES  DIFFERENCES / ERROR\n'


@pytest.mark.parametrize('results', ['dev01', [{'state': 'ok'}], [{'device': 'd'}], ['d'],
                                     [{'device': 'd', 'state': 'diverged', 'tables': ['app.x']}]])
def test_consistency_rows_refuse_what_is_not_table_checksum_results(results):
    with pytest.raises(AnsibleFilterError):
        T.consistency_rows(results)


def test_demo_table_is_the_text_the_jinja_loop_printed():
    rows = T.demo_rows(sorted(DEMO_HOSTVARS), DEMO_HOSTVARS)
    assert T.fixed_width_table(rows, DEMO_HEADER, DEMO_WIDTHS) == DEMO_TEXT


def test_demo_rows_keep_the_given_order():
    assert [r[0] for r in T.demo_rows(['dev-c', 'dev-a'], DEMO_HOSTVARS)] == ['dev-c', 'dev-a']


def test_demo_rows_refuse_unknown_hosts_and_missing_replica_vars():
    with pytest.raises(AnsibleFilterError, match='not in the inventory'):
        T.demo_rows(['nowhere'], DEMO_HOSTVARS)
    with pytest.raises(AnsibleFilterError, match='edgefleet_replica_port'):
        T.demo_rows(['d'], {'d': {'edgefleet_cloud_host': 'c', 'edgefleet_replica_instance': 'i'}})


def test_fixed_width_table_pads_every_column_but_the_last():
    assert T.fixed_width_table([['a', 1, 'free text']], ['X', 'Y', 'Z'], [3, 2]) == 'X   Y  Z\na   1  free text\n'
    assert T.fixed_width_table([['toolong', None, '']], ['X', 'Y', 'Z'], [3, 2]) == 'X   Y  Z\ntoolong None \n'


@pytest.mark.parametrize('rows, header, widths', [
    ([['a', 'b']], ['X', 'Y', 'Z'], [3, 2]),      # a row short of a column
    ([], ['X', 'Y'], [3, 2]),                      # header short of a column
    (['ab'], ['X', 'Y'], [3]),                     # a row that is a string
    ([], ['X', 'Y'], 3),                           # widths not a list
    ([], ['X', 'Y'], [-1]),                        # negative width
])
def test_fixed_width_table_refuses_rows_that_do_not_fit_the_widths(rows, header, widths):
    with pytest.raises(AnsibleFilterError):
        T.fixed_width_table(rows, header, widths)
