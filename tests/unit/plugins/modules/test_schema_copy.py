# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""schema_copy: dump, load, or both, with fake mariadb-dump and mariadb clients on PATH."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.dump_load import DumpLoadError
from ansible_collections.edgefleet.mysql_backup.plugins.modules import schema_copy as M

DUMP = b"""CREATE DATABASE /*!32312 IF NOT EXISTS*/ `app` /*!40100 DEFAULT CHARACTER SET latin1 */;
USE `app`;
INSERT INTO `t` VALUES (1);
-- SET GLOBAL gtid_slave_pos='7-7-42';
-- Dump completed on 2026-12-06
"""


@pytest.fixture
def clients(tmp_path, monkeypatch):
    """mariadb-dump prints DUMP and records its argv; mariadb records argv and stdin per call."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    (tmp_path / 'dump.sql').write_bytes(DUMP)
    scripts = {
        'mariadb-dump': 'echo "$@" > %s/dump.argv\necho "$MYSQL_PWD" > %s/dump.pw\ncat %s/dump.sql\n'
                        % (tmp_path, tmp_path, tmp_path),
        'mariadb': 'n=$(ls %s | grep -c "^load.*sql$") ; echo "$@" > %s/load$n.argv\ncat > %s/load$n.sql\n'
                   % (tmp_path, tmp_path, tmp_path),
    }
    for name, body in scripts.items():
        path = bindir / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv('PATH', '%s%s%s' % (bindir, os.pathsep, os.environ['PATH']))
    return tmp_path


def params(**kw):
    base = dict(purpose='seed', databases=['app'], path=None, dump=None, load=None, rename_prefix='',
                replace=False, keep=True, loaded_marker=None)
    base.update(kw)
    return base


def test_seed_dumps_through_the_tunnel_replaces_renamed_schemas_and_removes_the_file(clients):
    path = str(clients / 'seed' / 'dev1.sql')
    result = M.run(params(path=path, dump=dict(login_unix_socket=None, login_host='127.0.0.1', login_port=40001,
                                               login_user='check', login_password='s3cret'),
                          load=dict(login_unix_socket='/run/mysqld/edgefleet-shared1.sock', login_user='root'),
                          rename_prefix='p1_', replace=True, keep=False))
    assert result['gtid_pos'] == '7-7-42' and result['changed']
    assert (clients / 'dump.argv').read_text().split() == [
        '--host=127.0.0.1', '--port=40001', '--user=check', '--single-transaction', '--triggers', '--gtid',
        '--master-data=2', '--skip-add-locks', '--databases', 'app']
    assert (clients / 'dump.pw').read_text().strip() == 's3cret'  # through the environment only
    assert (clients / 'load0.sql').read_text() == 'DROP DATABASE IF EXISTS `p1_app`;\n'
    assert b'USE `p1_app`;' in (clients / 'load1.sql').read_bytes()
    assert '--init-command=SET SESSION sql_log_bin=0' in (clients / 'load1.argv').read_text()
    assert not os.path.exists(path)


def test_move_export_keeps_the_dump_and_load_touches_the_marker(clients):
    path = str(clients / 'moves' / 'dev1' / 'dump.sql.gz')
    result = M.run(params(purpose='move', path=path,
                          dump=dict(login_unix_socket='/run/mysqld/edgefleet-dev1.sock', login_host=None,
                                    login_port=None, login_user='root', login_password=None)))
    assert 'gtid_pos' not in result and os.path.getsize(path) == result['bytes']
    assert '--add-drop-database' in (clients / 'dump.argv').read_text()
    marker = str(clients / 'imported')
    M.run(params(purpose='move', path=path, load=dict(login_unix_socket='/s', login_user='root'),
                 loaded_marker=marker))
    assert (clients / 'load0.sql').read_bytes() == DUMP and os.path.exists(marker) and os.path.exists(path)


def test_nothing_to_copy_yet_writes_a_placeholder(clients):
    path = str(clients / 'empty.sql')
    M.run(params(purpose='move', databases=[], path=path,
                 dump=dict(login_unix_socket='/s', login_host=None, login_port=None, login_user='root',
                           login_password=None)))
    assert not (clients / 'dump.argv').exists()
    assert open(path, 'rb').read().startswith(b'-- nothing')


def test_a_failed_load_removes_a_file_not_kept(clients):
    path = str(clients / 'dev1.sql')
    (clients / 'bin' / 'mariadb').write_text('#!/bin/sh\ncat >/dev/null\necho "ERROR 1049" >&2\nexit 1\n')
    with pytest.raises(DumpLoadError, match='ERROR 1049'):
        M.run(params(path=path, dump=dict(login_unix_socket='/s', login_host=None, login_port=None,
                                          login_user='root', login_password=None),
                     load=dict(login_unix_socket='/s', login_user='root'), keep=False))
    assert not os.path.exists(path)
