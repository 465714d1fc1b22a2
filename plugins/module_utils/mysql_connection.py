# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection opens a MySQL/MariaDB connection (PyMySQL), and the login options
of the modules.

* :func:`client_kwargs` / :func:`connect_pymysql`: every pymysql connection - the modules'
  sessions (:func:`connection_kwargs` from login_* options), the consistency check and the status
  collector (consistency.connect), the MySQL registry (registry_mysql) - is built here, so the
  character set, option files and TLS keywords are decided in one place.
* Modules: ``mysql_connection_argument_spec()`` in the argument spec and the doc fragment
  ``edgefleet.mysql_backup.mysql_connection`` in DOCUMENTATION; :func:`connect` fails the module
  with a clear message.

Standard library plus PyMySQL, no Ansible imports: host programs (the status collector, the
enrollment service) import it through consistency.py and the registry.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import platform
import sys
import traceback

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


def missing_pymysql_message():
    """The text of ansible-core's missing_required_lib('PyMySQL') (this module has no Ansible imports)."""
    return ("Failed to import the required Python library (PyMySQL) on %s's Python %s. Please read the module "
            "documentation and install it in the appropriate location. If the required library is installed, "
            "but Ansible is using the wrong Python interpreter, please consult the documentation on "
            "ansible_python_interpreter" % (platform.node(), sys.executable))


def require_pymysql(module):
    if not HAS_PYMYSQL:
        module.fail_json(msg=missing_pymysql_message(), exception=PYMYSQL_IMPORT_ERROR)


def client_kwargs(host=None, port=None, user=None, password=None, unix_socket=None, database=None,
                  defaults_file=None, tls=None, connect_timeout=30, read_timeout=None, autocommit=True,
                  dict_rows=False):
    """pymysql.connect() keyword arguments; None leaves an option to PyMySQL (or the option file).

    ``defaults_file``: a my.cnf read for its [client] group. ``tls``: PyMySQL TLS keywords as the
    caller means them (``ssl_ca``/``ssl_cert``/``ssl_key``/``ssl_verify_identity``, or
    ``ssl={...}``, which also verifies the server certificate against its ``ca``).
    ``dict_rows``: rows as dicts instead of tuples.
    """
    kwargs = {'connect_timeout': connect_timeout, 'autocommit': autocommit, 'charset': 'utf8mb4'}
    if defaults_file:
        kwargs['read_default_file'] = defaults_file
        kwargs['read_default_group'] = 'client'
    for key, value in (('unix_socket', unix_socket), ('host', host), ('port', port), ('user', user),
                       ('password', password), ('database', database), ('read_timeout', read_timeout)):
        if value is not None:
            kwargs[key] = value
    kwargs.update(tls or {})
    if dict_rows:
        kwargs['cursorclass'] = pymysql.cursors.DictCursor
    return kwargs


def connect_pymysql(**options):
    """A pymysql connection from :func:`client_kwargs` options."""
    return pymysql.connect(**client_kwargs(**options))


def connection_kwargs(params):
    """pymysql.connect() keyword arguments from module login_* params (pure; unit-tested)."""
    config_file = params.get('config_file')
    if config_file:
        config_file = os.path.expanduser(config_file)
        if not os.path.exists(config_file):
            config_file = None
    # Without an option file the modules default to localhost:3306; with one, the file decides.
    host = params.get('login_host') or (None if config_file else 'localhost')
    port = params.get('login_port') or (None if config_file else 3306)
    tls = {}
    for option, keyword in (('ca_cert', 'ssl_ca'), ('client_cert', 'ssl_cert'), ('client_key', 'ssl_key')):
        if params.get(option):
            tls[keyword] = params[option]
    if params.get('check_hostname') is not None:
        tls['ssl_verify_identity'] = params['check_hostname']
    return client_kwargs(host=host, port=port, user=params.get('login_user'), password=params.get('login_password'),
                         unix_socket=params.get('login_unix_socket') or None, defaults_file=config_file, tls=tls,
                         connect_timeout=params.get('connect_timeout') or 30)


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
                           % (where, exc, params.get('config_file')))
    try:
        return ServerSession(connection)
    except UnsupportedServer as exc:
        connection.close()
        raise ConnectError(str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        connection.close()
        raise ConnectError('unable to detect the server version: %s' % exc)


def connect(module, params=None):
    """Connect with the module's login_* options (or ``params``, the same keys); fail_json with a
    clear message if not."""
    require_pymysql(module)
    try:
        return open_session(module.params if params is None else params)
    except ConnectError as exc:
        module.fail_json(msg=str(exc))
