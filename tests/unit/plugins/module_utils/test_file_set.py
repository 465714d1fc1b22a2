# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""file_set planning: request validation, apply order, content comparison and diffs."""

from __future__ import annotations

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.file_set import (
    DIFF_LIMIT, content_diff, content_differs, ordered, validate,
)


def test_a_sound_request_has_no_errors():
    request = {'directories': [{'path': '/etc/edgefleet'}],
               'files': [{'path': '/etc/edgefleet/a.json', 'content': '{}\n'}],
               'links': [{'path': '/etc/nginx/sites-enabled/x', 'src': '/etc/nginx/sites-available/x'}],
               'absent': ['/etc/nginx/sites-enabled/default']}
    assert validate(request) == []


@pytest.mark.parametrize('request_, fragment', [
    ({'files': [{'path': 'etc/x', 'content': ''}]}, 'not an absolute, normalized path'),
    ({'files': [{'path': '/etc/../x', 'content': ''}]}, 'not an absolute, normalized path'),
    ({'directories': [{'path': '/'}]}, 'not an absolute, normalized path'),
    ({'files': [{'path': '/etc/x'}]}, 'needs content'),
    ({'links': [{'path': '/etc/x'}]}, 'needs src'),
    ({'files': [{'content': 'x'}]}, 'every entry needs a path'),
    ({'files': [{'path': '/etc/x', 'content': ''}], 'absent': ['/etc/x']}, 'listed twice'),
    ({'files': [{'path': '/etc/x', 'content': ''}, {'path': '/etc/x/y', 'content': ''}]}, "is below '/etc/x'"),
])
def test_bad_requests_are_refused_with_the_reason(request_, fragment):
    errors = validate(request_)
    assert errors and any(fragment in error for error in errors), errors


def test_directories_parents_first_removals_deepest_first():
    request = {'directories': [{'path': '/a/b/c'}, {'path': '/a'}, {'path': '/a/b'}],
               'files': [{'path': '/a/b/c/f', 'content': ''}],
               'links': [{'path': '/a/l', 'src': '/a/b'}],
               'absent': ['/x', '/x/y/z', '/x/y']}
    steps = [(kind, item if kind == 'absent' else item['path']) for kind, item in ordered(request)]
    assert steps == [('directories', '/a'), ('directories', '/a/b'), ('directories', '/a/b/c'),
                     ('files', '/a/b/c/f'), ('links', '/a/l'),
                     ('absent', '/x/y/z'), ('absent', '/x/y'), ('absent', '/x')]


def test_content_comparison_is_byte_exact(tmp_path):
    path = tmp_path / 'f'
    assert content_differs(str(path), 'x') is True
    path.write_bytes('grüße\n'.encode('utf-8'))
    assert content_differs(str(path), 'grüße\n') is False
    assert content_differs(str(path), 'grüße') is True
    assert content_differs(str(path), 'grüsse\n') is True


def test_diffs_show_text_and_skip_large_or_binary(tmp_path):
    path = tmp_path / 'f'
    assert content_diff(str(path), 'new\n') == {'before_header': str(path), 'after_header': str(path),
                                                'before': '', 'after': 'new\n'}
    path.write_text('old\n')
    assert content_diff(str(path), 'new\n')['before'] == 'old\n'
    assert content_diff(str(path), 'x' * (DIFF_LIMIT + 1)) is None
    path.write_bytes(b'\xff\xfe')
    assert content_diff(str(path), 'new\n') is None
