# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils.seed_probe: which new devices hold data to seed (parsing real results, not stdout)."""

from __future__ import annotations

import threading
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import seed_probe as S


def test_query_lists_only_the_seeded_schemas_as_parameters():
    sql, args = S.schemata_query(['app', "o'hare"])
    assert sql.endswith('WHERE SCHEMA_NAME IN (%s, %s) ORDER BY SCHEMA_NAME')
    assert args == ['app', "o'hare"]


def test_probe_sorts_devices_into_seed_empty_and_unreached():
    answers = {40001: ['shop', 'app'], 40002: [], 40003: OSError("(2003, \"Can't connect\n to MySQL\")")}

    def schemas_of(port):
        answer = answers[port]
        if isinstance(answer, Exception):
            raise answer
        return answer
    devices = [{'id': 'd%d' % n, 'tunnel_mysql_port': str(40000 + n)} for n in (1, 2, 3)]
    assert S.probe(devices, schemas_of) == {
        'seed': {'d1': ['app', 'shop']}, 'empty': ['d2'],
        'unreached': {'d3': "(2003, \"Can't connect to MySQL\")"}}
    assert S.probe([], schemas_of) == {'seed': {}, 'empty': [], 'unreached': {}}


def test_probe_asks_in_parallel_up_to_the_limit():
    running, peak, lock = [0], [0], threading.Lock()

    def schemas_of(port):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return []
    devices = [{'id': 'd%d' % n, 'tunnel_mysql_port': 40000 + n} for n in range(12)]
    assert len(S.probe(devices, schemas_of, parallel=4)['empty']) == 12
    assert 1 < peak[0] <= 4
