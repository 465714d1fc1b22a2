# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The version table: which SQL each server flavor and version gets."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dialect import (
    BOTH_THREADS, DIALECT_TABLE, MASK, THREAD_IO, THREAD_SQL, Dialect, Secret,
    UnsupportedServer, parse_server_version, plain_params, render, validate_channel_name,
)

OPTIONS = {'source_host': '127.0.0.1', 'source_port': 33001, 'source_user': 'repl',
           'source_password': 'secret', 'use_gtid': True, 'connect_retry': 10,
           'heartbeat_period': 5.0}


def sql_text(statement):
    sql, params = statement
    return render(sql, params)


@pytest.mark.parametrize('version, comment, flavor, numbers', [
    ('10.11.19-MariaDB-0+deb12u1-log', 'Debian 12', 'mariadb', (10, 11, 19)),
    ('11.4.2-MariaDB', 'mariadb.org binary distribution', 'mariadb', (11, 4, 2)),
    ('5.5.5-10.5.23-MariaDB', '', 'mariadb', (10, 5, 23)),
    ('8.0.36', 'MySQL Community Server - GPL', 'mysql', (8, 0, 36)),
    ('8.4.0-log', 'MySQL Community Server - GPL', 'mysql', (8, 4, 0)),
    ('8.0.35-27', 'Percona Server (GPL), Release 27', 'mysql', (8, 0, 35)),
    ('5.7.44', 'MySQL Community Server (GPL)', 'mysql', (5, 7, 44)),
])
def test_parse_server_version(version, comment, flavor, numbers):
    assert parse_server_version(version, comment) == (flavor, numbers)


def test_parse_garbage_version():
    with pytest.raises(UnsupportedServer):
        parse_server_version('banana')


@pytest.mark.parametrize('flavor, version, label', [
    ('mysql', (5, 7, 44), 'mysql-5.7'),
    ('mysql', (8, 0, 21), 'mysql-8.0'),
    ('mysql', (8, 0, 22), 'mysql-8.0.22'),
    ('mysql', (8, 0, 23), 'mysql-8.0.23'),
    ('mysql', (8, 0, 40), 'mysql-8.0.23'),
    ('mysql', (8, 4, 3), 'mysql-8.4'),
    ('mysql', (9, 1, 0), 'mysql-8.4'),
    ('mariadb', (10, 4, 34), 'mariadb-10.3'),
    ('mariadb', (10, 5, 0), 'mariadb-10.3'),
    ('mariadb', (10, 5, 1), 'mariadb-10.5'),
    ('mariadb', (10, 11, 19), 'mariadb-10.5'),
    ('mariadb', (11, 4, 2), 'mariadb-10.5'),
    ('mariadb', (12, 0, 1), 'mariadb-12.0'),
])
def test_version_table_rows(flavor, version, label):
    assert Dialect(flavor, version).label == label


@pytest.mark.parametrize('flavor, version', [('mysql', (5, 6, 51)), ('mysql', (5, 7, 5)),
                                             ('mariadb', (10, 2, 44)), ('mariadb', (5, 5, 68))])
def test_too_old_is_rejected_with_the_minimum(flavor, version):
    with pytest.raises(UnsupportedServer) as exc:
        Dialect(flavor, version)
    assert 'oldest supported' in str(exc.value)


def test_table_rows_are_sorted_per_flavor():
    for flavor in ('mysql', 'mariadb'):
        since = [row['since'] for row in DIALECT_TABLE if row['flavor'] == flavor]
        assert since == sorted(since)


def test_mysql_57_old_syntax_with_warning():
    dialect = Dialect('mysql', (5, 7, 44))
    assert dialect.warning and 'end of life' in dialect.warning
    assert sql_text(dialect.change('dev1', OPTIONS)) == (
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=33001, MASTER_USER='repl', "
        "MASTER_PASSWORD='%s', MASTER_AUTO_POSITION=1, MASTER_CONNECT_RETRY=10, "
        "MASTER_HEARTBEAT_PERIOD=5 FOR CHANNEL 'dev1'" % MASK)
    assert sql_text(dialect.start('dev1')) == "START SLAVE FOR CHANNEL 'dev1'"
    assert sql_text(dialect.stop('dev1', [THREAD_IO])) == "STOP SLAVE IO_THREAD FOR CHANNEL 'dev1'"
    assert sql_text(dialect.reset_all('dev1')) == "RESET SLAVE ALL FOR CHANNEL 'dev1'"
    assert dialect.status_all() == ('SHOW SLAVE STATUS', [])


def test_mysql_8022_replica_verbs_but_change_master():
    dialect = Dialect('mysql', (8, 0, 22))
    assert sql_text(dialect.change('dev1', {'source_port': 3307})) == \
        "CHANGE MASTER TO MASTER_PORT=3307 FOR CHANNEL 'dev1'"
    assert sql_text(dialect.start('dev1')) == "START REPLICA FOR CHANNEL 'dev1'"
    assert sql_text(dialect.stop('dev1', [THREAD_SQL])) == \
        "STOP REPLICA SQL_THREAD FOR CHANNEL 'dev1'"
    assert dialect.status_all()[0] == 'SHOW REPLICA STATUS'
    assert sql_text(dialect.reset_all('x')) == "RESET REPLICA ALL FOR CHANNEL 'x'"


def test_mysql_8023_change_replication_source():
    dialect = Dialect('mysql', (8, 0, 23))
    assert sql_text(dialect.change('dev1', OPTIONS)) == (
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=33001, "
        "SOURCE_USER='repl', SOURCE_PASSWORD='%s', SOURCE_AUTO_POSITION=1, "
        "SOURCE_CONNECT_RETRY=10, SOURCE_HEARTBEAT_PERIOD=5 FOR CHANNEL 'dev1'" % MASK)


@pytest.mark.parametrize('version', [(8, 4, 0), (8, 4, 3), (9, 0, 1)])
def test_mysql_84_never_uses_removed_spellings(version):
    dialect = Dialect('mysql', version)
    assert dialect.traits['legacy_removed'] is True
    every_option = dict(OPTIONS, retry_count=3, delay=60, ssl=True, ssl_ca='/ca.pem',
                        ssl_capath='/ca', ssl_cert='/c.pem', ssl_key='/k.pem', ssl_cipher='X',
                        ssl_crl='/crl', ssl_verify_server_cert=True)
    statements = [dialect.change('dev1', every_option), dialect.start('dev1'),
                  dialect.stop('dev1'), dialect.stop('dev1', [THREAD_IO]),
                  dialect.start('dev1', [THREAD_SQL]), dialect.reset_all('dev1'),
                  dialect.status_all()]
    for sql, _params in statements:
        assert 'MASTER' not in sql and 'SLAVE' not in sql, sql


@pytest.mark.parametrize('version, verb', [((10, 5, 0), 'SLAVE'), ((10, 5, 1), 'REPLICA'),
                                           ((10, 11, 19), 'REPLICA'), ((11, 4, 2), 'REPLICA')])
def test_mariadb_named_connections(version, verb):
    dialect = Dialect('mariadb', version)
    assert sql_text(dialect.change('dev1', OPTIONS)) == (
        "CHANGE MASTER 'dev1' TO MASTER_HOST='127.0.0.1', MASTER_PORT=33001, "
        "MASTER_USER='repl', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos, "
        "MASTER_CONNECT_RETRY=10, MASTER_HEARTBEAT_PERIOD=5" % MASK)
    assert sql_text(dialect.start('dev1')) == "START %s 'dev1'" % verb
    assert sql_text(dialect.stop('dev1', [THREAD_IO])) == "STOP %s 'dev1' IO_THREAD" % verb
    assert sql_text(dialect.reset_all('dev1')) == "RESET %s 'dev1' ALL" % verb
    plural = 'SLAVES' if verb == 'SLAVE' else 'REPLICAS'
    assert dialect.status_all()[0] == 'SHOW ALL %s STATUS' % plural
    assert sql_text(dialect.change('dev1', {'use_gtid': False})) == \
        "CHANGE MASTER 'dev1' TO MASTER_USE_GTID=no"


def test_retry_count_per_channel_support():
    assert not Dialect('mariadb', (10, 11, 0)).supports_option('retry_count')
    assert not Dialect('mariadb', (11, 8, 0)).supports_option('retry_count')
    assert Dialect('mariadb', (12, 0, 2)).supports_option('retry_count')
    assert Dialect('mysql', (8, 0, 23)).supports_option('retry_count')
    assert sql_text(Dialect('mysql', (8, 0, 23)).change('a', {'retry_count': 5})) == \
        "CHANGE REPLICATION SOURCE TO SOURCE_RETRY_COUNT=5 FOR CHANNEL 'a'"


def test_threads_needed_for_change():
    mariadb = Dialect('mariadb', (10, 11, 0))
    mysql = Dialect('mysql', (8, 0, 30))
    assert mariadb.threads_for_change(['connect_retry']) == BOTH_THREADS
    assert mariadb.threads_for_change([]) == frozenset()
    assert mysql.threads_for_change(['source_port', 'source_password']) == frozenset([THREAD_IO])
    assert mysql.threads_for_change(['delay']) == frozenset([THREAD_SQL])
    assert mysql.threads_for_change(['use_gtid']) == BOTH_THREADS


def test_values_are_parameters_not_sql():
    dialect = Dialect('mariadb', (10, 11, 0))
    sql, params = dialect.change('dev1', {'source_host': "h'; DROP DATABASE x; --",
                                          'source_password': "p'w"})
    assert 'DROP' not in sql
    assert sql.count('%s') == 3
    assert params[0] == 'dev1' and params[1] == "h'; DROP DATABASE x; --"
    assert isinstance(params[2], Secret)
    assert plain_params(params)[2] == "p'w" and not isinstance(plain_params(params)[2], Secret)
    assert render(sql, params) == ("CHANGE MASTER 'dev1' TO MASTER_HOST='h\\'; DROP DATABASE x; "
                                   "--', MASTER_PASSWORD='%s'" % MASK)


def test_numbers_are_validated():
    dialect = Dialect('mariadb', (10, 11, 0))
    with pytest.raises(ValueError):
        dialect.change('a', {'source_port': '3306; DROP'})
    with pytest.raises(ValueError):
        dialect.change('a', {'heartbeat_period': float('nan')})
    assert dialect.change('a', {'heartbeat_period': 0.5})[0].endswith('MASTER_HEARTBEAT_PERIOD=0.5')
    with pytest.raises(ValueError):
        dialect.change('a', {})


def test_password_equal_to_user_only_masks_password():
    sql, params = Dialect('mariadb', (10, 11, 0)).change(
        'a', {'source_user': 'repl', 'source_password': 'repl'})
    assert render(sql, params) == ("CHANGE MASTER 'a' TO MASTER_USER='repl', "
                                   "MASTER_PASSWORD='%s'" % MASK)


@pytest.mark.parametrize('name', ['', 'dev1', 'DEV_1', 'site-3.kiosk_12', 'a' * 64, '0'])
def test_valid_channel_names(name):
    assert validate_channel_name(name) is None


@pytest.mark.parametrize('name', ['a' * 65, "dev1'", 'dev 1', '-dev', '.dev', 'dév', 'a;b',
                                  'group_replication_applier', None, 5])
def test_invalid_channel_names(name):
    assert validate_channel_name(name)


def test_gtid_pos_only_on_mariadb():
    assert Dialect('mariadb', (10, 11, 0)).set_gtid_pos('1-1-1') == \
        ('SET GLOBAL gtid_slave_pos = %s', ['1-1-1'])
    with pytest.raises(UnsupportedServer):
        Dialect('mysql', (8, 0, 36)).set_gtid_pos('1-1-1')
    assert Dialect('mysql', (8, 0, 36)).stored_password_query()
    assert Dialect('mariadb', (10, 11, 0)).stored_password_query() is None
