# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every module that talks to MySQL/MariaDB (pymysql).

Use ``mysql_connection_argument_spec()`` in the module's argument spec and the doc fragment
``edgefleet.mysql_backup.mysql_connection`` in its DOCUMENTATION.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_native

PYMYSQL_IMPORT_ERROR = None
try:
    import pymysql
    import pymysql.cursors
    HAS_PYMYSQL = True
except ImportError:
    pymysql = None
    HAS_PYMYSQL = False
    PYMYSQL_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    Dialect, UnsupportedServer, plain_params,
)


def mysql_connection_argument_spec():
    """The connection options (documented by the mysql_connection doc fragment)."""
    return dict(
        login_user=dict(type='str', aliases=['login_username']),
        login_password=dict(type='str', no_log=True),
        login_host=dict(type='str'),
        login_port=dict(type='int'),
        login_unix_socket=dict(type='str'),
        connect_timeout=dict(type='int', default=30),
        config_file=dict(type='path', default='~/.my.cnf'),
        ca_cert=dict(type='path', aliases=['ssl_ca']),
        client_cert=dict(type='path', aliases=['ssl_cert']),
        client_key=dict(type='path', aliases=['ssl_key'], no_log=False),
        check_hostname=dict(type='bool'),
    )


def instance_socket_options():
    """Suboptions of an ``instances`` list entry: several servers of the managed host in one call,
    each through its own unix socket with the otherwise shared login options."""
    return dict(name=dict(type='str', required=True), login_unix_socket=dict(type='str', required=True))


# ``instances`` replaces the single server's socket or host.
INSTANCES_EXCLUSIVE = [('instances', 'login_unix_socket'), ('instances', 'login_host')]


def require_pymysql(module):
    if not HAS_PYMYSQL:
        module.fail_json(msg=missing_required_lib('PyMySQL'), exception=PYMYSQL_IMPORT_ERROR)


def connection_kwargs(params):
    """pymysql.connect() keyword arguments from module params (pure; unit-tested)."""
    kwargs = {
        'connect_timeout': params.get('connect_timeout') or 30,
        'autocommit': True,
        'charset': 'utf8mb4',
    }
    config_file = params.get('config_file')
    if config_file:
        config_file = os.path.expanduser(config_file)
        if os.path.exists(config_file):
            kwargs['read_default_file'] = config_file
            kwargs['read_default_group'] = 'client'
    if params.get('login_unix_socket'):
        kwargs['unix_socket'] = params['login_unix_socket']
    if params.get('login_host'):
        kwargs['host'] = params['login_host']
    elif 'read_default_file' not in kwargs:
        kwargs['host'] = 'localhost'
    if params.get('login_port'):
        kwargs['port'] = params['login_port']
    elif 'read_default_file' not in kwargs:
        kwargs['port'] = 3306
    if params.get('login_user') is not None:
        kwargs['user'] = params['login_user']
    if params.get('login_password') is not None:
        kwargs['password'] = params['login_password']
    if params.get('ca_cert'):
        kwargs['ssl_ca'] = params['ca_cert']
    if params.get('client_cert'):
        kwargs['ssl_cert'] = params['client_cert']
    if params.get('client_key'):
        kwargs['ssl_key'] = params['client_key']
    if params.get('check_hostname') is not None:
        kwargs['ssl_verify_identity'] = params['check_hostname']
    return kwargs


class ServerSession(object):
    """A pymysql connection plus the detected dialect; runs (sql, params) statements."""

    def __init__(self, connection):
        self.connection = connection
        row = self.query_one('SELECT VERSION() AS version, @@version_comment AS comment')
        self.version_string = row['version']
        self.version_comment = row['comment'] or ''
        self.dialect = Dialect.from_version_string(self.version_string, self.version_comment)
        self._make_escaping_safe()

    def _make_escaping_safe(self):
        """pymysql escapes with backslashes; they are literal under NO_BACKSLASH_ESCAPES."""
        mode = self.query_one('SELECT @@SESSION.sql_mode AS mode')['mode'] or ''
        modes = [m for m in mode.split(',') if m and m.upper() != 'NO_BACKSLASH_ESCAPES']
        if len(modes) != len([m for m in mode.split(',') if m]):
            self.execute('SET SESSION sql_mode = %s', [','.join(modes)])

    def cursor(self):
        return self.connection.cursor(pymysql.cursors.DictCursor)

    def execute(self, sql, params=None):
        with self.cursor() as cur:
            cur.execute(sql, plain_params(params or []) or None)
            try:
                return list(cur.fetchall())
            except pymysql.err.Error:
                return []

    def query(self, sql, params=None):
        return self.execute(sql, params)

    def query_one(self, sql, params=None):
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def try_query(self, sql, params=None):
        """Rows, or None when the server refuses (missing privilege or table)."""
        try:
            return self.execute(sql, params)
        except pymysql.err.Error:
            return None

    def close(self):
        try:
            self.connection.close()
        except Exception:  # pylint: disable=broad-except
            pass


class ConnectError(Exception):
    """The server could not be reached or identified; the message says where and why."""


def open_session(params):
    """A ServerSession from login_* params; raises ConnectError with a clear message."""
    kwargs = connection_kwargs(params)
    try:
        connection = pymysql.connect(**kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        where = kwargs.get('unix_socket') or '%s:%s' % (kwargs.get('host', '(from config file)'),
                                                        kwargs.get('port', ''))
        raise ConnectError('unable to connect to the database at %s: %s. Check login_host, '
                           'login_port, login_user and login_password (or config_file %s).'
                           % (where, to_native(exc), params.get('config_file')))
    try:
        return ServerSession(connection)
    except UnsupportedServer as exc:
        connection.close()
        raise ConnectError(to_native(exc))
    except Exception as exc:  # pylint: disable=broad-except
        connection.close()
        raise ConnectError('unable to detect the server version: %s' % to_native(exc))


def connect(module, params=None):
    """Connect with the module's login_* options (or ``params``, the same keys); fail_json with a
    clear message if not."""
    require_pymysql(module)
    try:
        return open_session(module.params if params is None else params)
    except ConnectError as exc:
        module.fail_json(msg=to_native(exc))
