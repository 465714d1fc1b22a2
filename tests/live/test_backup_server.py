"""edgefleet-backup's Server (module_utils/backup/client.py: one `mariadb` client kept open per
server) against a real MariaDB.

What a run relies on: results parsed as before (escapes, NULL, empty sets), one client for many
statements (server-side connection count), an error reported with the server's message and the
next statement working, sql_log_bin switched back on after a no_binlog statement, a statement
that hangs ended by the timeout, a stop signal refusing all but cleanup statements, and the
tools' versions asked once and kept by the binary's identity.
"""
import json
from types import SimpleNamespace

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup import context
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.client import Server
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import DEFAULTS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import STOPPING
from tests.support.mariadb import mariadb_server

pytestmark = pytest.mark.mariadb

# The names these tests use, from the modules of the backup package that hold them.
B = SimpleNamespace(Server=Server, BackupError=BackupError, STOPPING=STOPPING, DEFAULTS=DEFAULTS,
                    Context=context.Context)


@pytest.fixture(scope='module')
def source():
    with mariadb_server(server_id=61) as server:
        yield server


def connections(server):
    return int(server.execute("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])


def test_results_are_parsed_and_one_client_serves_many_statements(source):
    before = connections(source)
    with B.Server(source.socket) as server:
        rows = server.query("SELECT 'a\\tb\\nc' AS `x y`, NULL AS n, '' AS e UNION ALL SELECT 'back\\\\slash', 1, 'z'")
        assert rows == [{'x y': 'a\tb\nc', 'n': None, 'e': ''}, {'x y': 'back\\slash', 'n': '1', 'e': 'z'}]
        assert server.query('SELECT 1 AS one FROM DUAL WHERE 0') == []
        assert server.value('SELECT 1 FROM DUAL WHERE 0') is None
        assert server.value('SELECT @@GLOBAL.server_id;') == '61'
        server.execute('CREATE DATABASE IF NOT EXISTS session_t; DROP DATABASE session_t')
        assert server.version().startswith(('10.', '11.'))
    # five calls above and the count check's own connection: two connections, not seven
    assert connections(source) - before == 2


def test_an_error_names_the_statement_and_the_next_one_works(source):
    with B.Server(source.socket) as server:
        assert server.value('SELECT 1') == '1'  # a row equal to its header is a row
        with pytest.raises(B.BackupError, match=r"mariadb failed \(exit 1\):.*no_such_table"):
            server.query('SELECT * FROM mysql.no_such_table')
        assert server.value('SELECT 2') == '2'


def test_no_binlog_statement_is_not_logged_and_logging_comes_back(source):
    with B.Server(source.socket) as server:
        position = server.value('SELECT @@GLOBAL.gtid_binlog_pos')
        server.execute('CREATE DATABASE nolog_t', no_binlog=True)
        assert server.value('SELECT @@GLOBAL.gtid_binlog_pos') == position
        assert server.value('SELECT @@SESSION.sql_log_bin') == '1'
        server.execute('DROP DATABASE nolog_t')
        assert server.value('SELECT @@GLOBAL.gtid_binlog_pos') != position


def test_a_hanging_statement_times_out_and_the_server_stays_usable(source):
    with B.Server(source.socket, timeout=1) as server:
        with pytest.raises(B.BackupError, match='timed out after 1s'):
            server.query('SELECT SLEEP(5)')
        assert server.value('SELECT 3') == '3'


def test_after_a_stop_signal_only_cleanup_statements_run(source):
    with B.Server(source.socket) as server:
        B.STOPPING.set()
        try:
            with pytest.raises(B.BackupError, match='stopping'):
                server.query('SELECT 1')
            server.execute('DO 1', cleanup=True)
        finally:
            B.STOPPING.clear()


def test_tool_versions_are_asked_once_and_kept_by_binary_identity(tmp_path, monkeypatch):
    asked = []
    real = context.tool_version
    # Context looks tool_version up in its own module (backup/context.py): patch it there.
    monkeypatch.setattr(context, 'tool_version', lambda args: asked.append(args[0]) or real(args))
    config = dict(B.DEFAULTS, backup_dir=str(tmp_path), file_mode_i=0o640, gid=None)
    first = B.Context(config).versions()
    assert sorted(asked) == ['mariadb', 'mariadb-dump', 'zstd']
    assert first['mariadb-dump'].startswith('mariadb-dump') and 'Zstandard' in first['zstd']
    cached = json.loads((tmp_path / 'tool-versions.json').read_text())
    assert cached['zstd']['version'] == first['zstd']
    del asked[:]
    assert B.Context(config).versions() == first and asked == []
    cached['zstd']['identity'][1] += 1  # another binary under the same name: asked again
    (tmp_path / 'tool-versions.json').write_text(json.dumps(cached))
    assert B.Context(config).versions() == first and asked == ['zstd']
