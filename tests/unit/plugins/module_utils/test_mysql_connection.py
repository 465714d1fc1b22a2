# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared connection options -> pymysql.connect() arguments."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import mysql_connection
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    connection_kwargs, mysql_connection_argument_spec,
)


def params(**overrides):
    base = dict((key, spec.get('default')) for key, spec in mysql_connection_argument_spec().items())
    base['config_file'] = '/nonexistent/my.cnf'
    base.update(overrides)
    return base


def test_argument_spec_marks_secrets():
    spec = mysql_connection_argument_spec()
    assert spec['login_password']['no_log'] is True
    assert spec['client_key']['no_log'] is False
    assert spec['config_file']['default'] == '~/.my.cnf'


def test_defaults_without_config_file():
    kwargs = connection_kwargs(params())
    assert kwargs['host'] == 'localhost' and kwargs['port'] == 3306
    assert 'user' not in kwargs and 'password' not in kwargs
    assert kwargs['connect_timeout'] == 30 and kwargs['autocommit'] is True
    assert 'read_default_file' not in kwargs


def test_explicit_options():
    kwargs = connection_kwargs(params(login_host='10.0.0.5', login_port=3307, login_user='u',
                                      login_password='p', connect_timeout=5, ca_cert='/ca.pem',
                                      client_cert='/c.pem', client_key='/k.pem',
                                      check_hostname=False))
    assert (kwargs['host'], kwargs['port'], kwargs['user'], kwargs['password']) == \
        ('10.0.0.5', 3307, 'u', 'p')
    assert kwargs['ssl_ca'] == '/ca.pem' and kwargs['ssl_cert'] == '/c.pem'
    assert kwargs['ssl_key'] == '/k.pem' and kwargs['ssl_verify_identity'] is False
    assert kwargs['connect_timeout'] == 5


def test_config_file_supplies_what_is_not_given(tmp_path):
    cnf = tmp_path / 'my.cnf'
    cnf.write_text('[client]\nuser=backup\npassword=x\nhost=db.example\n')
    kwargs = connection_kwargs(params(config_file=str(cnf)))
    assert kwargs['read_default_file'] == str(cnf)
    assert kwargs['read_default_group'] == 'client'
    # host/port/user are left to the file (pymysql reads them), explicit options still win
    assert 'host' not in kwargs and 'port' not in kwargs and 'user' not in kwargs
    assert connection_kwargs(params(config_file=str(cnf), login_host='h'))['host'] == 'h'


def test_unix_socket():
    kwargs = connection_kwargs(params(login_unix_socket='/run/mysqld/mysqld.sock'))
    assert kwargs['unix_socket'] == '/run/mysqld/mysqld.sock'


def test_pymysql_guard_reports_missing_library(mocker):
    module = mocker.Mock()
    module.fail_json.side_effect = SystemExit
    mocker.patch.object(mysql_connection, 'HAS_PYMYSQL', False)
    try:
        mysql_connection.require_pymysql(module)
    except SystemExit:
        pass
    assert 'PyMySQL' in module.fail_json.call_args[1]['msg']
