# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one atomic file write of the collection (controller and host programs).

Readers of the files we write (the registry, allocation and enrollment files, node_exporter
textfiles, backup metadata and status) must never see half a file, and a crash must leave either
the old or the new content. :func:`atomic_write` writes a temporary file in the same directory,
fsyncs it, renames it over the target and fsyncs the directory (so the rename itself survives a
power loss).

Pure standard library: host programs without ansible-core import it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


def fsync_dir(directory):
    """fsync a directory so that a rename or unlink inside it is durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, text, mode=None, group=None):
    """Write ``text`` (str, UTF-8) to ``path`` atomically.

    ``mode`` None keeps the mode of an existing file (0o644 for a new one); ``group`` (a gid)
    changes the group of the new file when given.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if group is not None:
            os.chown(tmp, -1, group)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The data is safe; a directory that cannot be fsynced (some filesystems) only risks the rename.
    with contextlib.suppress(OSError):
        fsync_dir(directory)


def write_if_changed(path, text, mode=0o644, group=None):
    """:func:`atomic_write` unless ``path`` already holds ``text``; returns True if it wrote."""
    try:
        with open(path, encoding='utf-8') as handle:
            if handle.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text, mode, group)
    return True


def write_json_atomic(path, data, mode=0o640, group=None):
    """``data`` as indented, key-sorted JSON with a final newline, written atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + '\n', mode, group)
