# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one atomic write: content, modes, group, no leftovers, failure keeps the old file."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import atomic_file as A


def test_atomic_write_new_file_default_mode_and_no_temp_left(tmp_path):
    path = str(tmp_path / 'f.txt')
    A.atomic_write(path, 'héllo\n')
    assert open(path, encoding='utf-8').read() == 'héllo\n'
    assert os.stat(path).st_mode & 0o7777 == 0o644
    assert os.listdir(str(tmp_path)) == ['f.txt']


def test_atomic_write_keeps_existing_mode_unless_given(tmp_path):
    path = str(tmp_path / 'f.txt')
    A.atomic_write(path, 'a', mode=0o600)
    A.atomic_write(path, 'b')
    assert os.stat(path).st_mode & 0o7777 == 0o600
    A.atomic_write(path, 'c', mode=0o640)
    assert os.stat(path).st_mode & 0o7777 == 0o640
    assert open(path).read() == 'c'


def test_atomic_write_group(tmp_path):
    path = str(tmp_path / 'f.txt')
    gid = os.getgid()
    A.atomic_write(path, 'x', group=gid)
    assert os.stat(path).st_gid == gid


def test_atomic_write_failure_keeps_old_content_and_removes_temp(tmp_path, monkeypatch):
    path = str(tmp_path / 'f.txt')
    A.atomic_write(path, 'old')

    def boom(src, dst):
        raise OSError('disk gone')
    monkeypatch.setattr(A.os, 'replace', boom)
    with pytest.raises(OSError):
        A.atomic_write(path, 'new')
    assert open(path).read() == 'old'
    assert os.listdir(str(tmp_path)) == ['f.txt']


def test_write_if_changed(tmp_path):
    path = str(tmp_path / 'm.prom')
    assert A.write_if_changed(path, 'a 1\n') is True
    assert A.write_if_changed(path, 'a 1\n') is False
    assert A.write_if_changed(path, 'a 2\n') is True
    assert open(path).read() == 'a 2\n'


def test_write_json_atomic(tmp_path):
    path = str(tmp_path / 's.json')
    A.write_json_atomic(path, {'b': 1, 'a': [1, 2]})
    text = open(path).read()
    assert text == json.dumps({'a': [1, 2], 'b': 1}, indent=2, sort_keys=True) + '\n'
    assert os.stat(path).st_mode & 0o7777 == 0o640
