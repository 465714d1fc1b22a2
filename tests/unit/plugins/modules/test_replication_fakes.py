# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fakes shared by the replication module tests: a server session and a module runner."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    plain_params,
)
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.module_utils.test_replication_state import (  # noqa: E501 pylint: disable=line-too-long
    mariadb_row as _mariadb_row, mysql_row as _mysql_row,
)
from ansible_collections.edgefleet.mysql_backup.tests.unit.plugins.modules.utils import run_main


def mariadb_row(name, port, **extra):
    return _mariadb_row(name, port, **extra)


def mysql_row(name, port, **extra):
    return _mysql_row(name, port, **extra)


class FakeSession(object):
    """Stands in for mysql_connection.ServerSession."""

    def __init__(self, dialect, rows=None, facts=None, fail_on=None, gtid_slave_pos='',
                 lock=1):
        self.dialect = dialect
        self.rows = rows or []
        self.facts = facts or {'read_only': 0, 'server_id': 1}
        self.fail_on = fail_on
        self.gtid_slave_pos = gtid_slave_pos
        self.executed = []
        self.version_string = '.'.join(str(part) for part in dialect.version)
        self.closed = False
        self.lock = lock
        self.queries = []

    @property
    def executed_changes(self):
        return [sql for sql, _params in self.executed]

    def query(self, sql, params=None):
        self.queries.append(sql)
        if sql.startswith('SELECT GET_LOCK'):
            return [{'locked': self.lock}]
        if sql == self.dialect.status_all()[0]:
            return list(self.rows)
        if 'gtid_slave_pos AS pos' in sql:
            return [{'pos': self.gtid_slave_pos}]
        if sql == self.dialect.server_facts_query()[0]:
            return [dict(self.facts)]
        raise AssertionError('unexpected query %s' % sql)

    def query_one(self, sql, params=None):
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def try_query(self, sql, params=None):
        return []

    def execute(self, sql, params=None):
        if self.fail_on and sql.startswith(self.fail_on):
            raise RuntimeError('simulated failure')
        self.executed.append((sql, plain_params(params or [])))
        return []

    def close(self):
        self.closed = True


def run_module(mocker, module, session, args, connect=None):
    """Run module.main() with args; return the exit_json/fail_json dict."""
    if connect is None:
        # replication_info connects through connect(module, ...), replication_source (which may
        # reach several servers in one call) through open_session(params).
        for name in ('connect', 'open_session'):
            if hasattr(module, name):
                mocker.patch.object(module, name, return_value=session)
    mocker.patch.object(module, 'require_pymysql')
    if 'start_wait' in getattr(module, 'argument_spec', lambda: {})():
        args = dict({'start_wait': 0}, **args)
    return run_main(mocker, module, args, exit_defaults={'changed': False})
