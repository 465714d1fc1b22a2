# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure backup logic: names, durations, dates, retention, selection, GTID positions, the dump
stream rewriter, checksum comparison and the status record (no server, no files)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P

DAY = 86400
T0 = 1735689600  # 2025-01-01T00:00:00Z


# names and times ------------------------------------------------------------------------

def test_file_names_round_trip():
    name = P.backup_file_name('device01', T0 + 3723, 'logical')
    assert name == 'device01-20250101T010203Z.sql.zst'
    assert P.parse_backup_file_name(name) == ('device01', T0 + 3723, 'logical', 0)
    second = P.backup_file_name('shared_1', T0, 'physical', seq=2)
    assert second == 'shared_1-20250101T000000Z-2.xbstream.zst'
    assert P.parse_backup_file_name(second) == ('shared_1', T0, 'physical', 2)


@pytest.mark.parametrize('name', [
    'device01-20250101T010203Z.sql.zst.json', 'device01-20250101T010203Z.sql.zst.partial',
    'Device01-20250101T010203Z.sql.zst', 'device01-20251301T010203Z.sql.zst', 'device01.sql.zst',
    'device01-20250101T010203Z.sql.gz', '',
])
def test_other_files_are_not_backups(name):
    assert P.parse_backup_file_name(name) is None


@pytest.mark.parametrize('subject', ['Dev1', '1dev', 'dev 1', '../dev1', 'dev/1', '', None])
def test_bad_subject_or_kind_is_refused(subject):
    with pytest.raises(P.PolicyError):
        P.backup_file_name(subject, T0)
    with pytest.raises(P.PolicyError):
        P.backup_file_name('dev1', T0, 'incremental')


def test_same_second_backups_sort_by_sequence():
    entries = [(P.backup_file_name('d', T0, seq=s), T0) for s in (2, 0, 1)]
    assert [e[0] for e in sorted(entries, key=P.sort_key)] == [
        'd-20250101T000000Z.sql.zst', 'd-20250101T000000Z-1.sql.zst', 'd-20250101T000000Z-2.sql.zst']


@pytest.mark.parametrize('value,seconds', [
    (90, 90), ('90', 90), ('90s', 90), ('30m', 1800), ('20h', 72000), ('7d', 604800), ('2w', 1209600),
    (' 5 h ', 18000), (0, 0),
])
def test_durations(value, seconds):
    assert P.parse_duration(value) == seconds


@pytest.mark.parametrize('value', ['', '5y', '-1', -3, True, '1.5h', None])
def test_bad_durations(value):
    with pytest.raises(P.PolicyError):
        P.parse_duration(value)


@pytest.mark.parametrize('value,epoch', [
    ('2025-01-01', T0 + DAY - 1),
    ('2025-01-01T06:30', T0 + 6 * 3600 + 1800),
    ('2025-01-01T06:30:15Z', T0 + 6 * 3600 + 1815),
    ('2025-01-01 06:30:15+00:00', T0 + 6 * 3600 + 1815),
    ('20250101T000001', T0 + 1),
    (str(T0), T0), (T0, T0), ('newest', None), ('', None), (None, None), ('latest', None),
])
def test_when(value, epoch):
    assert P.parse_when(value) == epoch


def test_when_start_of_day_on_request():
    assert P.parse_when('2025-01-01', end_of_day=False) == T0


@pytest.mark.parametrize('value', ['yesterday', '2025-13-01', '01/02/2025', True])
def test_bad_when(value):
    with pytest.raises(P.PolicyError):
        P.parse_when(value)


# schedule, retention, selection -------------------------------------------------------------

def test_due():
    assert P.is_due(None, 3600, T0)
    assert not P.is_due(T0 - 100, 3600, T0)
    assert P.is_due(T0 - 3600, 3600, T0)
    assert P.is_due(T0 - 1, 3600, T0, force=True)


def daily(days, hour=1):
    return [(P.backup_file_name('d', T0 + d * DAY + hour * 3600), T0 + d * DAY + hour * 3600) for d in days]


def test_retention_keeps_last_n_and_young_ones():
    backups = daily(range(30))
    now = T0 + 29 * DAY + 2 * 3600
    keep, remove = P.retention(backups, keep_last=3, keep_days=7, now=now)
    assert keep == [b[0] for b in reversed(backups[-7:])]  # days 23..29 are younger than 7 days
    assert remove == [b[0] for b in reversed(backups[:-7])]
    keep = P.retention(backups, keep_last=10, keep_days=2, now=now)[0]
    assert len(keep) == 10


def test_retention_never_deletes_the_newest_backup():
    backups = daily([0, 1, 2])
    keep, remove = P.retention(backups, keep_last=0, keep_days=0, now=T0 + 400 * DAY)
    assert keep == [backups[-1][0]] and len(remove) == 2
    assert P.retention([], 3, 3, T0) == ([], [])


def test_retention_keeps_backups_from_the_future():
    backups = daily([0, 10])
    keep, remove = P.retention(backups, keep_last=0, keep_days=1, now=T0 + 5 * DAY)
    assert keep == [backups[1][0]] and remove == [backups[0][0]]


def test_retention_age_boundary_is_exclusive():
    backups = daily([0, 1])
    keep, remove = P.retention(backups, keep_last=1, keep_days=1, now=backups[0][1] + DAY)
    assert remove == [backups[0][0]]


@pytest.mark.parametrize('keep_last,keep_days', [(-1, 1), (1, -1), ('3', 1), (True, 1), (None, 1)])
def test_bad_retention_policy(keep_last, keep_days):
    with pytest.raises(P.PolicyError):
        P.retention(daily([0]), keep_last, keep_days, T0)


def test_duplicate_names_are_an_error():
    with pytest.raises(P.PolicyError):
        P.retention(daily([0]) * 2, 1, 1, T0)


def test_select_backup_as_of():
    backups = daily([0, 1, 2])
    assert P.select_backup(backups) == backups[2][0]
    assert P.select_backup(backups, P.parse_when('2025-01-02')) == backups[1][0]
    assert P.select_backup(backups, backups[1][1]) == backups[1][0]
    assert P.select_backup(backups, backups[1][1] - 1) == backups[0][0]
    assert P.select_backup(backups, T0) is None
    assert P.select_backup([], None) is None


# GTID -------------------------------------------------------------------------------------------

def test_gtid_positions():
    assert P.parse_gtid_pos('0-1-5, 1000-1000-42\n') == {0: (1, 5), 1000: (1000, 42)}
    assert P.format_gtid_pos({1000: (1000, 42), 0: (1, 5)}) == '0-1-5,1000-1000-42'
    assert P.filter_gtid_pos('0-1-5,1000-1000-42,1001-1001-7', [1000]) == '1000-1000-42'
    assert P.filter_gtid_pos('', [1000]) == ''
    assert P.gtid_behind('1000-1000-40', '1000-1000-42,1001-1001-1') == {1000: (40, 42), 1001: (None, 1)}
    assert P.gtid_behind('1000-1000-42', '1000-1000-42') == {}


@pytest.mark.parametrize('text', ['1-2', '1-2-x', '0-1-5,0-1-6', 'a-b-c'])
def test_bad_gtid_positions(text):
    with pytest.raises(P.PolicyError):
        P.parse_gtid_pos(text)


# dump stream --------------------------------------------------------------------------------------

def stream(nonce='abc123', schemas=('app', 'audit')):
    lines = []
    for db in schemas:
        lines += P.section_header(nonce, db, '/*!40100 DEFAULT CHARACTER SET utf8mb4 */')
        lines += ['CREATE TABLE `t` (id INT);\n', "INSERT INTO `t` VALUES (1),(2);\n",
                  "INSERT INTO `notes` VALUES ('USE `%s`;');\n" % db,
                  '-- edgefleet-schema other: %s\n' % db]
    lines.append(P.stream_end(nonce, len(schemas)))
    return [line.encode() for line in lines]


def run_rewriter(rewriter, lines):
    return b''.join(rewriter.feed(line) for line in lines).decode()


def test_section_header_and_database_options():
    assert P.section_header('n', 'app') == ['-- edgefleet-schema n: app\n', 'CREATE DATABASE IF NOT EXISTS `app`;\n',
                                            'USE `app`;\n']
    create = 'CREATE DATABASE `dev1_app` /*!40100 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci */'
    assert P.database_options(create) == '/*!40100 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci */'
    assert P.database_options('CREATE DATABASE `a``b`') == ''
    assert P.quote_ident('a`b') == '`a``b`'


def test_rewriter_renames_only_the_section_headers():
    rewriter = P.SchemaRewriter('abc123', {'app': 'scratch_app'})
    out = run_rewriter(rewriter, stream())
    assert 'CREATE DATABASE IF NOT EXISTS `scratch_app` /*!40100' in out and 'USE `scratch_app`;\n' in out
    assert "VALUES ('USE `app`;')" in out  # data is never touched
    assert 'USE `audit`;\n' in out
    assert rewriter.sections == ['app', 'audit'] and rewriter.ended


def test_rewriter_skips_sections_mapped_to_none():
    rewriter = P.SchemaRewriter('abc123', {'audit': None})
    out = run_rewriter(rewriter, stream())
    assert 'audit' not in out.replace("VALUES ('USE `app`;')", '') and 'USE `app`;' in out
    assert rewriter.ended


def test_rewriter_ignores_markers_with_another_nonce_and_detects_truncation():
    rewriter = P.SchemaRewriter('zzz', {'app': 'x'})
    out = run_rewriter(rewriter, stream()[:-1])
    assert 'USE `app`;' in out and not rewriter.ended and rewriter.sections == []


def test_target_schemas():
    assert P.target_schemas(['app', 'audit'], prefix='r_') == {'app': 'r_app', 'audit': 'r_audit'}
    assert P.target_schemas(['app', 'audit'], mapping={'audit': None}) == {'app': 'app', 'audit': None}
    with pytest.raises(P.PolicyError):
        P.target_schemas(['app', 'audit'], mapping={'app': 'same', 'audit': 'same'})
    with pytest.raises(P.PolicyError):
        P.target_schemas(['app'], prefix='x' * 62)
    with pytest.raises(P.PolicyError):
        P.target_schemas(['app'], mapping={'app': 'bad name'})


def test_scratch_names_are_short_and_distinct():
    names = set()
    for device in ('d' * 32, 'dev1', 'dev2'):
        for db in ('a' * 31, 'app'):
            name = P.scratch_schema_name('edgefleet_verify_', device, db)
            assert len(name) <= 64 and name.startswith('edgefleet_verify_')
            names.add(name)
    assert len(names) == 6


# checksums and status ----------------------------------------------------------------------------

def test_compare_tables():
    want = {'app.t': {'checksum': 1, 'rows': 2}, 'app.u': {'checksum': None, 'rows': 0}}
    assert P.compare_tables(want, {'app.t': {'checksum': 1, 'rows': 2}, 'app.u': {'checksum': 5, 'rows': 0}}) == \
        (True, '2 tables (2 rows) match')
    ok, detail = P.compare_tables(want, {'app.t': {'checksum': 9, 'rows': 2}, 'app.x': {}})
    assert not ok
    assert 'missing tables: app.u' in detail and 'unexpected tables: app.x' in detail
    assert 'app.t checksum 9 != 1' in detail


def test_status_record():
    status = P.normalize_status('dev1', None)
    assert set(P.STATUS_KEYS) <= set(status) and status['backups_kept'] == 0 and status['last_verify_ok'] is None
    good = P.record_attempt(status, True, T0, file_name='f', size=10, duration=1.23456, kept=3, position='1-1-1')
    assert good['last_success_ts'] == T0 and good['last_attempt_ok'] is True and good['last_duration_s'] == 1.235
    bad = P.record_attempt(good, False, T0 + 60, error='boom', kept=3)
    assert bad['last_success_ts'] == T0 and bad['last_success_file'] == 'f' and bad['last_attempt_ok'] is False
    assert bad['last_error'] == 'boom' and bad['last_attempt_ts'] == T0 + 60
    again = P.record_attempt(bad, True, T0 + 120, file_name='g', size=11, duration=1, kept=4)
    assert again['last_error'] is None
    verified = P.record_verify(again, True, T0 + 200, 'ok', file_name='g')
    assert verified['last_verify_ok'] is True and verified['last_verify_file'] == 'g'
    kept_unknown = P.normalize_status('dev1', {'device': 'other', 'extra': 1})
    assert kept_unknown['device'] == 'dev1' and kept_unknown['extra'] == 1


# ---------------------------------------------------------------------------------------
# Checksum methods and dump digests
# ---------------------------------------------------------------------------------------

DUMP = (b"-- MariaDB dump\n"
        b"CREATE TABLE `a` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB AUTO_INCREMENT=9;\n"
        b"INSERT INTO `a` VALUES (1,'x'),(2,'INSERT INTO `b` VALUES');\n"
        b"INSERT INTO `a` VALUES (3,'y');\n"
        b"INSERT INTO `we``ird` VALUES (1);\n"
        b"INSERT INTO `b` (`id`, `v`) VALUES (5,'z');\n"
        b"INSERT INTO `rows` VALUES\n(1,'one; two'),\n(2,'x\\nINSERT INTO `a` VALUES (9);'),\n(3,'three');\n"
        b"UNLOCK TABLES;\n")


def digests_of(data, block, tables=()):
    digest = P.DumpDigest()
    for start in range(0, len(data), block):
        digest.feed(data[start:start + block])
    return digest.digests(tables)


@pytest.mark.parametrize('value, method', [('dump', 'dump'), ('server', 'server'), ('none', 'none'),
                                           (True, 'server'), (False, 'none'), (None, 'none')])
def test_checksum_method_names_and_the_old_booleans(value, method):
    assert P.checksum_method(value) == method


def test_checksum_method_refuses_anything_else():
    with pytest.raises(ValueError, match='dump, server, none'):
        P.checksum_method('md5')


def test_insert_table_reads_backquoted_names():
    assert P.insert_table(b"INSERT INTO `a` VALUES (1);\n") == 'a'
    assert P.insert_table(b"INSERT INTO `we``ird` VALUES (1);\n") == 'we`ird'
    assert P.insert_table(b"INSERT INTO `b` (`id`) VALUES (1);\n") == 'b'
    assert P.insert_table(b"-- INSERT INTO `a` VALUES\n") is None
    assert P.insert_table(b"INSERT INTO `unterminated") is None


@pytest.mark.parametrize('block', [1, 3, 7, 64, 1 << 20])
def test_dump_digest_is_the_same_whatever_the_block_size(block):
    expected = digests_of(DUMP, len(DUMP), tables=['a', 'b', 'empty'])
    assert digests_of(DUMP, block, tables=['a', 'b', 'empty']) == expected
    a_lines = b"INSERT INTO `a` VALUES (1,'x'),(2,'INSERT INTO `b` VALUES');\nINSERT INTO `a` VALUES (3,'y');\n"
    assert expected['a'] == hashlib.sha256(a_lines).hexdigest()
    assert expected['empty'] == hashlib.sha256(b'').hexdigest()
    assert set(expected) == {'a', 'b', 'we`ird', 'rows', 'empty'}


def test_dump_digest_ignores_everything_but_rows_and_sees_one_changed_value():
    base = digests_of(DUMP, 5)
    other_ddl = DUMP.replace(b'AUTO_INCREMENT=9', b'AUTO_INCREMENT=4').replace(b'-- MariaDB dump', b'-- dumped again')
    assert digests_of(other_ddl, 5) == base
    changed = digests_of(DUMP.replace(b"(3,'y')", b"(3,'Y')"), 5)
    assert changed['a'] != base['a'] and changed['b'] == base['b']
    one_row_per_line = digests_of(DUMP.replace(b"(3,'three')", b"(3,'Three')"), 5)
    assert one_row_per_line['rows'] != base['rows'] and one_row_per_line['a'] == base['a']
    last_line_unterminated = digests_of(DUMP.rstrip(b'\n').replace(b'UNLOCK TABLES;', b"INSERT INTO `c` VALUES (1);"), 4)
    assert 'c' in last_line_unterminated


def test_compare_tables_on_digests_names_the_table():
    expected = {'app.a': {'checksum': None, 'rows': None, 'digest': 'aa'},
                'app.b': {'checksum': None, 'rows': None, 'digest': 'bb'}}
    ok, detail = P.compare_tables(expected, {'app.a': {'digest': 'aa'}, 'app.b': {'digest': 'bb'}})
    assert ok and detail == '2 tables match'
    ok, detail = P.compare_tables(expected, {'app.a': {'digest': 'aa'}, 'app.b': {'digest': 'cc'}})
    assert not ok and 'app.b digest cc != bb' in detail and 'app.a' not in detail


@pytest.mark.parametrize('subject', ['multi-01', 'bench-07', 'device01', 'a_b-c'])
@pytest.mark.parametrize('kind, seq', [('logical', 0), ('physical', 0), ('physical', 3)])
def test_shared_instance_names_with_a_dash_round_trip(subject, kind, seq):
    epoch = 1796000000
    name = P.backup_file_name(subject, epoch, kind, seq)
    assert P.parse_backup_file_name(name) == (subject, epoch, kind, seq)


APPLYING = {'Slave_SQL_Running': 'Yes', 'Seconds_Behind_Master': '0'}


@pytest.mark.parametrize('has_schema,channel,max_lag,expected', [
    (True, APPLYING, 60, None),
    (True, dict(APPLYING, Seconds_Behind_Master='60'), 60, None),
    (True, dict(APPLYING, Seconds_Behind_Master=None), 60, None),  # IO thread reconnecting: not measured
    (True, dict(APPLYING, Seconds_Behind_Master='61'), 60, 'catching up: 61 s behind'),
    (True, dict(APPLYING, Slave_SQL_Running='No'), 60, 'not applying (SQL thread No)'),
    (True, None, 60, 'no replication channel yet'),
    (False, APPLYING, 60, 'no schema of the device on its replica yet'),
])
def test_first_backup_waits_until_the_replica_is_ready(has_schema, channel, max_lag, expected):
    reason = P.first_backup_wait_reason(has_schema, channel, max_lag)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason
