# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils.dump_load: the dump and load command lines of seed, move and backup, parsing the
dump's GTID line, renaming schemas, and running fake clients into and out of files."""

from __future__ import annotations

import gzip
import os
import stat

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import dump_load as D

SEED_DUMP = b"""-- MariaDB dump 10.19
-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;

--
-- Current Database: `app`
--

CREATE DATABASE /*!32312 IF NOT EXISTS*/ `app` /*!40100 DEFAULT CHARACTER SET latin1 */;

USE `app`;
INSERT INTO `t` VALUES (1,'USE `app`;\\n-- SET GLOBAL gtid_slave_pos=\\'9-9-9\\';');

-- Preferably use GTID to start replication from GTID position:

-- SET GLOBAL gtid_slave_pos='501-501-7';
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

-- Dump completed on 2026-12-06 10:00:00
"""


def test_backup_argv_is_the_backup_programs():
    """The backup program's command line, flag for flag (its recorded dump_options are these)."""
    assert D.dump_options('backup') == ['--single-transaction', '--triggers', '--quick', '--routines', '--events',
                                        '--hex-blob', '--skip-dump-date', '--default-character-set=utf8mb4',
                                        '--max-allowed-packet=1G']
    argv = D.dump_argv('backup', ['app'], socket='/run/mysqld/x.sock', user='root', extra=['--compact'])
    assert argv[:4] == ['mariadb-dump', '--no-defaults', '--socket=/run/mysqld/x.sock', '--user=root']
    assert argv[-2:] == ['--compact', 'app'] and '--databases' not in argv
    with pytest.raises(D.DumpLoadError):
        D.dump_argv('backup', ['a', 'b'], socket='/s')


def test_seed_argv_reads_the_device_through_its_tunnel_with_a_gtid_comment():
    argv = D.dump_argv('seed', ['app', 'shop'], host='127.0.0.1', port='40001', user='edgefleet_check')
    assert argv == ['mariadb-dump', '--host=127.0.0.1', '--port=40001', '--user=edgefleet_check',
                    '--single-transaction', '--triggers', '--gtid', '--master-data=2', '--skip-add-locks',
                    '--databases', 'app', 'shop']
    assert not [a for a in argv if a.startswith('--password')]


def test_move_argv_copies_everything_and_takes_no_position():
    argv = D.dump_argv('move', ['p1_app'], socket='/run/mysqld/edgefleet-shared1.sock', user='root')
    assert '--routines' in argv and '--events' in argv and '--add-drop-database' in argv
    assert '--gtid' not in argv and not [a for a in argv if a.startswith('--master-data')]
    assert argv[-2:] == ['--databases', 'p1_app'] and '--no-defaults' not in argv


def test_every_purpose_takes_one_snapshot_with_triggers():
    for purpose in D.PURPOSES:
        assert set(D.SNAPSHOT_OPTIONS) <= set(D.dump_options(purpose))
    with pytest.raises(D.DumpLoadError):
        D.dump_options('restore')


def test_load_argv_never_binlogs():
    expected = ['mariadb', '--socket=/s', '--user=root', '--init-command=SET SESSION sql_log_bin=0']
    assert D.load_argv(socket='/s', user='root') == expected


@pytest.mark.parametrize('name', ['a`b', 'a.b', '', 'x' * 65, 'a/b', None])
def test_schema_names_that_could_break_sql_are_refused(name):
    with pytest.raises(D.DumpLoadError):
        D.dump_argv('seed', [name], host='h')


def test_gtid_position_from_the_header():
    assert D.dump_gtid_pos(SEED_DUMP.splitlines(True)) == '501-501-7'
    assert D.dump_gtid_pos([b"-- SET GLOBAL gtid_slave_pos='';\n"]) == ''
    assert D.dump_gtid_pos([b"-- SET GLOBAL gtid_slave_pos='0-1-5,501-501-9';\n"]) == '0-1-5,501-501-9'
    with pytest.raises(D.DumpLoadError):
        # a GTID-like text inside the data (escaped by mariadb-dump, never at a line start) does not count
        D.dump_gtid_pos([b"INSERT INTO t VALUES ('a\\n-- SET GLOBAL gtid_slave_pos=\\'1-1-1\\';');\n"])


def test_completion_line():
    assert D.dump_completed(b'-- Dump completed on 2026-12-06 10:00:00\n')
    assert D.dump_completed(b'-- Dump completed\n')
    assert not D.dump_completed(b"INSERT INTO `t` VALUES (1);\n")


def test_renaming_touches_only_create_database_and_use_lines():
    rename = D.schema_renamer({'app': 'p7_app'})
    out = b''.join(rename(line) for line in SEED_DUMP.splitlines(True))
    assert b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `p7_app` /*!40100" in out
    assert b"\nUSE `p7_app`;\n" in out
    assert b"INSERT INTO `t` VALUES (1,'USE `app`;" in out  # data is data
    assert D.schema_renamer({})(b'USE `app`;\n') == b'USE `app`;\n'
    assert D.schema_renamer({'other': 'x'})(b'USE `app`;\n') == b'USE `app`;\n'


def test_drop_statements():
    assert D.drop_statements(['p_app']) == ['DROP DATABASE IF EXISTS `p_app`']


def fake(tmp_path, name, body):
    path = tmp_path / name
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_dump_to_file_writes_a_private_whole_file_and_reads_its_position(tmp_path):
    source = tmp_path / 'src.sql'
    source.write_bytes(SEED_DUMP)
    dumper = fake(tmp_path, 'dump', 'test "$MYSQL_PWD" = secret || exit 9\ncat %s\n' % source)
    dest = str(tmp_path / 'work' / 'dev1.sql')
    result = D.dump_to_file([dumper], dest, password='secret', gtid=True)
    assert result == {'bytes': len(SEED_DUMP), 'gtid_pos': '501-501-7'}
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(dest)).st_mode) == 0o700
    gz = str(tmp_path / 'move' / 'dump.sql.gz')
    D.dump_to_file([dumper], gz, password='secret')
    with gzip.open(gz, 'rb') as handle:
        assert handle.read() == SEED_DUMP


def test_a_failed_or_cut_dump_leaves_no_file(tmp_path):
    dest = str(tmp_path / 'd.sql')
    failing = fake(tmp_path, 'fail', 'echo "-- partial"\necho "Access denied" >&2\nexit 2\n')
    with pytest.raises(D.DumpLoadError, match='exit 2.*Access denied'):
        D.dump_to_file([failing], dest)
    cut = fake(tmp_path, 'cut', 'printf "CREATE TABLE t (a int);\\nINSERT INTO t VALUES (1);\\n"\n')
    with pytest.raises(D.DumpLoadError, match='incomplete'):
        D.dump_to_file([cut], dest)
    nogtid = fake(tmp_path, 'nogtid', 'printf "CREATE TABLE t (a int);\\n-- Dump completed\\n"\n')
    with pytest.raises(D.DumpLoadError, match='no GTID line'):
        D.dump_to_file([nogtid], dest, gtid=True)
    assert sorted(os.listdir(str(tmp_path))) == ['cut', 'fail', 'nogtid']  # no dump, no partial file


def test_empty_dump_for_a_device_with_nothing_yet(tmp_path):
    dest = str(tmp_path / 'dump.sql.gz')
    assert D.dump_to_file(None, dest) == {'bytes': os.path.getsize(dest)}
    with gzip.open(dest, 'rb') as handle:
        assert handle.read() == D.EMPTY_DUMP


def test_load_streams_the_renamed_dump_into_the_client(tmp_path):
    received = tmp_path / 'received.sql'
    loader = fake(tmp_path, 'load', 'cat > %s\n' % received)
    dump = tmp_path / 'dump.sql.gz'
    with gzip.open(str(dump), 'wb') as handle:
        handle.write(SEED_DUMP)
    assert D.load_file([loader], str(dump), renames={'app': 'p_app'}) == len(SEED_DUMP)
    assert b'USE `p_app`;' in received.read_bytes()
    D.load_file([loader], str(dump))
    assert received.read_bytes() == SEED_DUMP


def test_a_failed_load_says_why(tmp_path):
    dump = tmp_path / 'dump.sql'
    dump.write_bytes(SEED_DUMP * 200)
    loader = fake(tmp_path, 'load', 'head -c 10 >/dev/null\necho "ERROR 1064 at line 3" >&2\nexit 1\n')
    with pytest.raises(D.DumpLoadError, match='ERROR 1064'):
        D.load_file([loader], str(dump))
    statements = fake(tmp_path, 'stmts', 'cat > %s\n' % (tmp_path / 'stmts.sql'))
    D.run_statements([statements], D.drop_statements(['a', 'b']))
    assert (tmp_path / 'stmts.sql').read_text() == 'DROP DATABASE IF EXISTS `a`;\nDROP DATABASE IF EXISTS `b`;\n'
    failing = fake(tmp_path, 'f', 'cat >/dev/null; echo nope >&2; exit 1\n')
    with pytest.raises(D.DumpLoadError, match='nope'):
        D.run_statements([failing], ['SELECT 1'])
