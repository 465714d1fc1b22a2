# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup program's parts that need no server (plugins/module_utils/backup): configuration,
command lines of mariadb-dump, zstd, mariabackup and restic, the client's output parsing, what
is on disk (listing, leftovers, retention, the host lock), restore mappings and the printed
tables. The parts that run MariaDB are tested by tests/live/test_backup_cli.py and
test_backup_server.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
from types import SimpleNamespace

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup import (
    cli, client, commands, config, dump, files, listing, log, offsite, physical, retention)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.context import Context
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError

DAY = 86400
T0 = 1735689600  # 2025-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def quiet_log():
    log.configure(quiet=True)
    yield
    log.configure(quiet=False)


# configuration ----------------------------------------------------------------------------

def test_config_defaults_and_device_defaults():
    loaded = {'backup_dir': '/b', 'tools': {'zstd': '/opt/zstd'}, 'physical': {'enabled': True},
              'devices': [{'id': 'dev1', 'socket': '/run/mysqld/edgefleet-dev1.sock'},
                          {'id': 'dev2', 'socket': '/s', 'mode': 'channel', 'channel': 'c2'}]}
    got = config.complete_config(loaded, 'backup.json')
    assert got['status_dir'] == '/b/status'
    assert got['min_age_s'] == 20 * 3600 and got['physical']['min_age_s'] == 7 * DAY
    assert got['checksum_method'] == 'dump'
    assert got['file_mode_i'] == 0o640 and got['dir_mode_i'] == 0o750 and got['gid'] is None
    # Nested settings are merged key by key with the defaults.
    assert got['tools']['zstd'] == '/opt/zstd' and got['tools']['mariadb-dump'] == 'mariadb-dump'
    assert got['physical']['enabled'] is True and got['physical']['keep_last'] == 2
    dev1, dev2 = got['devices']
    assert (dev1['mode'], dev1['channel'], dev1['instance'], dev1['schema_prefix']) == ('instance', 'dev1', 'dev1', '')
    assert (dev2['mode'], dev2['channel'], dev2['instance'], dev2['schema_prefix']) == ('channel', 'c2', 'dev2', 'dev2_')
    # The defaults themselves are not changed by a load.
    assert config.DEFAULTS['tools']['zstd'] == 'zstd' and 'min_age_s' not in config.DEFAULTS['physical']


def test_config_numeric_group_is_a_gid():
    assert config.complete_config({'group': '4242'}, 'c')['gid'] == 4242


@pytest.mark.parametrize('loaded,message', [
    ({'devices': [{'id': 'd', 'socket': '/s'}, {'id': 'd', 'socket': '/t'}]}, 'lists a device twice'),
    ({'devices': [{'id': 'd'}]}, 'has no socket'),
    ({'devices': [{'socket': '/s', 'id': ''}]}, 'has no id'),
    ({'checksums': 'md5'}, 'backup.json: '),
])
def test_config_errors_name_the_file(loaded, message):
    with pytest.raises(BackupError, match=message):
        config.complete_config(loaded, 'backup.json')


@pytest.mark.parametrize('loaded', [{'keep_last': -1}, {'physical': {'keep_days': -2}}, {'min_age': 'soon'}])
def test_config_bad_policy_is_a_policy_error(loaded):
    with pytest.raises(P.PolicyError):
        config.complete_config(loaded, 'c')


def test_load_config_missing_file(tmp_path):
    with pytest.raises(BackupError, match='not found'):
        config.load_config(str(tmp_path / 'none.json'))
    path = tmp_path / 'backup.json'
    path.write_text(json.dumps({'backup_dir': str(tmp_path)}))
    assert config.load_config(str(path))['status_dir'] == str(tmp_path / 'status')


# command lines ----------------------------------------------------------------------------

@pytest.mark.parametrize('level,threads,expected', [
    (6, 1, ['zstd', '-q', '-6', '--single-thread', '-c']),
    (1, 1, ['zstd', '-q', '-1', '--single-thread', '-c']),
    (19, 1, ['zstd', '-q', '-19', '-T1', '-c']),
    (3, 2, ['zstd', '-q', '-3', '-T2', '-c']),
])
def test_compress_args(level, threads, expected):
    assert dump.compress_args({'zstd': 'zstd'}, {'zstd_level': level, 'zstd_threads': threads}) == expected


def test_dump_args_pin_the_whole_command_line():
    server = SimpleNamespace(socket='/run/mysqld/r.sock', user='root')
    options = dump.dump_options({'dump_options': ['--compact']})
    assert options[-1] == '--compact' and '--single-transaction' in options and '--skip-dump-date' in options
    argv = dump.dump_args(server, {'mariadb-dump': '/usr/bin/mariadb-dump'}, 'dev1_app', options)
    assert argv == ['/usr/bin/mariadb-dump', '--no-defaults', '--socket=/run/mysqld/r.sock', '--user=root'] + options + ['dev1_app']
    # A verify re-dumps with the options its backup recorded, whatever they are.
    assert dump.dump_args(server, {'mariadb-dump': 'd'}, 's', ['--x'])[-2:] == ['--x', 's']


def test_dump_args_refuse_a_schema_name_that_is_not_plain():
    with pytest.raises(BackupError, match='not a plain schema name'):
        dump.dump_args(SimpleNamespace(socket='/s', user='root'), {'mariadb-dump': 'd'}, 'a`b', [])


class FakeServer:
    def __init__(self, schemas):
        self._schemas = schemas

    def schemas(self):
        return list(self._schemas)


def test_device_schemas_by_mode():
    server = FakeServer(['dev1_app', 'dev1_logs', 'dev2_app', 'mysql', 'sys', 'information_schema',
                         'performance_schema', 'edgefleet_verify_x', 'edgefleet_restore_y', 'shop'])
    channel = {'mode': 'channel', 'schema_prefix': 'dev1_'}
    assert dump.device_schemas(server, channel, ['app', 'logs', 'missing']) == [('app', 'dev1_app'), ('logs', 'dev1_logs')]
    instance = {'mode': 'instance', 'schema_prefix': ''}
    assert dump.device_schemas(server, instance, ['app']) == [
        ('dev1_app', 'dev1_app'), ('dev1_logs', 'dev1_logs'), ('dev2_app', 'dev2_app'), ('shop', 'shop')]


def test_mariabackup_args():
    server = SimpleNamespace(socket='/s', user='root')
    plain = physical.mariabackup_args({'mariabackup': 'mariabackup'}, {'name': 'r1'}, server, '/tmp/x')
    assert plain[:2] == ['mariabackup', '--no-defaults']
    assert {'--backup', '--stream=xbstream', '--target-dir=/tmp/x', '--socket=/s', '--slave-info',
            '--safe-slave-backup'} <= set(plain)
    tuned = physical.mariabackup_args({'mariabackup': 'mb'}, {'name': 'r1', 'defaults_group_suffix': '.r1',
                                                              'datadir': '/var/lib/r1'}, server, '/t')
    assert tuned[1] == '--defaults-group-suffix=.r1' and '--no-defaults' not in tuned
    assert tuned[-1] == '--datadir=/var/lib/r1'


def test_mariabackup_slave_info_lines():
    text = ('[00] 2025-01-01 00:00:00 Connecting to server\n'
            "[00] 2025-01-01 00:00:01 MySQL slave binlog position: master host '', gtid_slave_pos 0-1-5\n"
            '[00] 2025-01-01 00:00:02 completed OK!\n')
    # The line after mariabackup's thread tag, as recorded in the physical backup's metadata.
    assert physical.slave_info(text) == [
        "2025-01-01 00:00:01 MySQL slave binlog position: master host '', gtid_slave_pos 0-1-5"]


def test_restic_arguments_and_environment():
    offsite_config = {'repository': 'sftp:u@h:/r', 'password_file': '/etc/p', 'sftp_command': 'ssh -i k u@h -s sftp',
                      'keep_last': 5, 'keep_days': 30}
    env = offsite.restic_env(offsite_config)
    assert (env['RESTIC_REPOSITORY'], env['RESTIC_PASSWORD_FILE']) == ('sftp:u@h:/r', '/etc/p')
    assert env['RESTIC_CACHE_DIR'] == '/var/cache/edgefleet-backup/restic'
    ctx = SimpleNamespace(tools={'restic': 'restic'})
    assert offsite.restic_args(ctx, offsite_config, 'snapshots') == [
        'restic', '-o', 'sftp.command=ssh -i k u@h -s sftp', 'snapshots']
    assert offsite.restic_args(ctx, {}, 'init') == ['restic', 'init']
    assert offsite.forget_args('cloud01', offsite_config) == [
        'forget', '--tag', 'edgefleet', '--host', 'cloud01', '--prune', '--keep-last', '5', '--keep-within', '30d']
    assert offsite.forget_args('c', {})[-2:] == ['--keep-last', '14']


def test_restic_backup_summary():
    out = '\n'.join([json.dumps({'message_type': 'status', 'percent_done': 0.5}), 'not json',
                     json.dumps({'message_type': 'summary', 'snapshot_id': 'abc', 'files_new': 3})])
    assert offsite.backup_summary(out)['snapshot_id'] == 'abc'
    assert offsite.backup_summary('') == {}


# the mariadb client's output --------------------------------------------------------------

@pytest.mark.parametrize('field,value', [
    ('NULL', None), ('a\\tb', 'a\tb'), ('l1\\nl2', 'l1\nl2'), ('back\\\\slash', 'back\\slash'), ('z\\0', 'z\0'),
    ('\\\\n', '\\n'), ('', ''),
])
def test_client_unescape(field, value):
    assert client.unescape(field) == value


def test_sql_string_quotes():
    assert client.sql_string("it's a \\ path") == "'it''s a \\\\ path'"
    assert client.sql_string(5) == "'5'"


# what is on disk --------------------------------------------------------------------------

def make_backup(directory, subject, epoch, ok=True, seq=0, kind='logical', meta=True):
    name = P.backup_file_name(subject, epoch, kind, seq)
    (directory / name).write_bytes(b'data')
    if meta:
        (directory / (name + P.META_SUFFIX)).write_text(json.dumps({'ok': ok, 'started_ts': epoch, 'size_bytes': 4}))
    return name


def test_list_backups_only_good_ones_oldest_first(tmp_path):
    second = make_backup(tmp_path, 'dev1', T0 + DAY)
    first = make_backup(tmp_path, 'dev1', T0)
    same_second = make_backup(tmp_path, 'dev1', T0 + DAY, seq=1)
    make_backup(tmp_path, 'dev1', T0 + 2 * DAY, ok=False)
    make_backup(tmp_path, 'dev1', T0 + 3 * DAY, meta=False)
    make_backup(tmp_path, 'dev2', T0)
    make_backup(tmp_path, 'dev1', T0, kind='physical')
    assert [b[0] for b in listing.list_backups(str(tmp_path), 'dev1')] == [first, second, same_second]
    assert [b[1] for b in listing.list_backups(str(tmp_path), 'dev1')] == [T0, T0 + DAY, T0 + DAY]
    assert len(listing.list_backups(str(tmp_path))) == 4
    assert listing.list_backups(str(tmp_path / 'missing')) == []


def test_orphans_are_partial_files_and_halves(tmp_path):
    good = make_backup(tmp_path, 'dev1', T0)
    data_only = make_backup(tmp_path, 'dev1', T0 + 1, meta=False)
    meta_only = make_backup(tmp_path, 'dev1', T0 + 2)
    os.unlink(str(tmp_path / meta_only))
    (tmp_path / (good + '.partial')).write_bytes(b'')
    (tmp_path / 'README').write_text('not ours')
    assert listing.orphans(str(tmp_path)) == sorted([data_only, meta_only + P.META_SUFFIX, good + '.partial'])
    assert listing.orphans(str(tmp_path / 'missing')) == []


def test_unique_name_skips_taken_and_partial_names(tmp_path):
    taken = make_backup(tmp_path, 'dev1', T0)
    (tmp_path / (P.backup_file_name('dev1', T0, 'logical', 1) + P.PARTIAL_SUFFIX)).write_bytes(b'')
    assert taken == P.backup_file_name('dev1', T0, 'logical', 0)
    assert listing.unique_name(str(tmp_path), 'dev1', T0, 'logical') == P.backup_file_name('dev1', T0, 'logical', 2)


def test_pick_devices(tmp_path):
    conf = {'backup_dir': str(tmp_path), 'devices': [{'id': 'dev1'}, {'id': 'dev2'}]}
    assert [d['id'] for d in listing.pick_devices(conf, None)] == ['dev1', 'dev2']
    assert [d['id'] for d in listing.pick_devices(conf, ['dev2'])] == ['dev2']
    with pytest.raises(BackupError, match='unknown device'):
        listing.pick_devices(conf, ['gone'])
    # A device no longer configured here but with backups is listed (list, show), not backed up.
    (tmp_path / 'logical' / 'gone').mkdir(parents=True)
    assert listing.pick_devices(conf, ['gone'], backups_only=True)[0]['socket'] is None
    with pytest.raises(BackupError):
        listing.pick_devices(conf, ['gone'])


def test_describe():
    meta = {'started_ts': T0, 'size_bytes': 10, 'kind': 'logical', 'position': {'device_gtid_pos': '1-1-1'},
            'schemas': [{'name': 'app'}], 'tables': {'app.t': {}}, 'sha256': 'x', 'duration_s': 1.5}
    got = listing.describe('/d', 'f', meta)
    assert got['time'] == '2025-01-01T00:00:00Z' and got['path'] == '/d/f' and got['position'] == '1-1-1'
    assert (got['schemas'], got['tables']) == (['app'], 1)


def test_apply_retention_deletes_what_the_policy_drops_and_leftovers(tmp_path):
    names = [make_backup(tmp_path, 'dev1', T0 + i * DAY) for i in range(5)]
    leftover = make_backup(tmp_path, 'dev1', T0 + 10 * DAY, meta=False)
    ctx = SimpleNamespace(now=lambda: T0 + 30 * DAY)
    keep, removed = retention.apply_retention(ctx, str(tmp_path), 'dev1', 'logical', 2, 7)
    assert keep == [names[4], names[3]] and removed == [names[2], names[1], names[0]]
    assert sorted(os.listdir(str(tmp_path))) == sorted(
        [names[3], names[3] + '.json', names[4], names[4] + '.json'])
    assert leftover not in os.listdir(str(tmp_path))


def test_apply_retention_never_deletes_the_newest_good_backup(tmp_path):
    newest = make_backup(tmp_path, 'dev1', T0)
    keep, removed = retention.apply_retention(SimpleNamespace(now=lambda: T0 + 365 * DAY), str(tmp_path),
                                              'dev1', 'logical', 0, 0)
    assert (keep, removed) == ([newest], [])
    assert os.path.exists(str(tmp_path / newest))


def test_remove_unfinished_keeps_a_completed_backup(tmp_path):
    path, partial = str(tmp_path / 'b'), str(tmp_path / 'b.partial')
    for name in (path, partial):
        open(name, 'w').close()
    open(path + P.META_SUFFIX, 'w').close()
    files.remove_unfinished(partial, path)
    assert os.path.exists(path) and os.path.exists(partial)
    os.unlink(path + P.META_SUFFIX)
    files.remove_unfinished(partial, path)
    assert not os.path.exists(path) and not os.path.exists(partial)


def test_host_lock_is_one_holder_at_a_time(tmp_path):
    path = str(tmp_path / 'run' / 'lock')
    with files.host_lock(path, 0):
        with open(path, encoding='utf-8') as handle:
            assert handle.read() == '%d\n' % os.getpid()
        with pytest.raises(BackupError, match='another edgefleet-backup run holds'):
            with files.host_lock(path, 0):
                pass
    with files.host_lock(path, 0):
        pass


def test_read_json_missing_is_none(tmp_path):
    assert files.read_json(str(tmp_path / 'x.json')) is None


# commands without a server ----------------------------------------------------------------

def test_restore_mapping():
    meta = {'schemas': [{'name': 'app'}, {'name': 'logs'}]}
    assert commands.restore_mapping(meta, None, None) == {'app': 'app', 'logs': 'logs'}
    assert commands.restore_mapping(meta, 'r_', ['logs=']) == {'app': 'r_app', 'logs': None}
    assert commands.restore_mapping(meta, 'r_', ['app=other']) == {'app': 'other', 'logs': 'r_logs'}
    with pytest.raises(BackupError, match='SOURCE=TARGET'):
        commands.restore_mapping(meta, None, ['app'])
    with pytest.raises(BackupError, match="has no schema 'shop'"):
        commands.restore_mapping(meta, None, ['shop=x'])


@pytest.mark.parametrize('state,newest,behind', [
    ({}, 0, True),
    ({'last_attempt_ok': False, 'last_success_wall_ts': 100}, 50, True),
    ({'last_attempt_ok': True, 'last_success_wall_ts': 100}, 50, False),
    ({'last_attempt_ok': True, 'last_success_wall_ts': 100}, 101, True),
])
def test_offsite_behind(state, newest, behind):
    assert commands.offsite_behind(state, newest) is behind


def test_parallel_keeps_order_and_limits_concurrency():
    ctx = SimpleNamespace(config={'concurrency': 3})
    assert commands.parallel(ctx, lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]
    assert commands.parallel(ctx, lambda x: x, []) == []


def test_commands_on_an_empty_host(tmp_path):
    conf = config.complete_config({'backup_dir': str(tmp_path), 'devices': [{'id': 'dev1', 'socket': '/s'}]}, 'c')
    ctx = Context(conf, now=T0)
    args = SimpleNamespace(device=None)
    assert commands.cmd_list(ctx, args) == {'devices': [{'device': 'dev1', 'backups': []}], 'ok': True}
    status = commands.cmd_status(ctx, args)
    assert status['ok'] and status['devices'][0]['device'] == 'dev1'
    with pytest.raises(BackupError, match='no good backup of dev1'):
        commands.cmd_show(ctx, SimpleNamespace(device='dev1', file=None, as_of=None))


# the command line -------------------------------------------------------------------------

def test_parser():
    args = cli.build_parser().parse_args(['--json', 'run', '--device', 'a', '--device', 'b', '--force'])
    assert (args.command, args.device, args.force, args.json) == ('run', ['a', 'b'], True, True)
    restore = cli.build_parser().parse_args(['restore', '--file', 'f', '--socket', 's'])
    assert (restore.gtid_state, restore.login_user, restore.binlog) == ('skip', 'root', False)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['show'])


def test_print_human_tables(capsys):
    cli.print_human('status', {'devices': [
        {'device': 'dev1', 'last_success_ts': T0, 'last_size_bytes': 123, 'backups_kept': 2,
         'last_attempt_ok': True, 'last_verify_ok': None, 'last_error': None},
        {'device': 'dev2', 'last_success_ts': None, 'last_size_bytes': None, 'backups_kept': 0,
         'last_attempt_ok': False, 'last_verify_ok': False, 'last_error': 'boom'}]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['DEVICE', 'LAST', 'SUCCESS', '(UTC)', 'SIZE', 'KEPT', 'ATTEMPT', 'VERIFY', 'ERROR']
    assert lines[1].split() == ['dev1', '2025-01-01', '00:00:00', '123', '2', 'ok', '-']
    assert lines[2].split() == ['dev2', 'never', '-', '0', 'FAILED', 'FAILED', 'boom']
    cli.print_human('list', {'devices': [{'device': 'dev1', 'backups': [
        {'file': 'f', 'time': 't', 'size_bytes': 5, 'position': '1-1-1'}]}]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['DEVICE', 'FILE', 'TAKEN', '(UTC)', 'BYTES', 'GTID', 'POSITION']
    assert lines[1].split() == ['dev1', 'f', 't', '5', '1-1-1']
    cli.print_human('scratch', {'ok': True, 'schemas': [
        {'schema': 'edgefleet_restore_dev1_app', 'kind': 'restore', 'device': 'dev1', 'tables': 2, 'bytes': 9, 'socket': '/s'}]})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['SCHEMA', 'KIND', 'DEVICE', 'TABLES', 'BYTES', 'SOCKET']
    assert lines[1].split() == ['edgefleet_restore_dev1_app', 'restore', 'dev1', '2', '9', '/s']
    cli.print_human('show', {'ok': True, 'b': 1})
    assert json.loads(capsys.readouterr().out) == {'ok': True, 'b': 1}
