# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files of the backup program: JSON reads, checksums, directories, the host lock and the
leftovers of a failed backup. Atomic writes are module_utils/atomic_file.py's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import hashlib
import json
import os
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import HostBusy
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import CHUNK, STOPPING


def read_json(path):
    """The JSON document at ``path``, or None when there is no such file."""
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def ensure_dir(path, mode, group=None):
    """Create ``path`` (and parents) if missing; correct its mode and group if they differ."""
    os.makedirs(path, mode=mode, exist_ok=True)
    if (os.stat(path).st_mode & 0o7777) != mode:
        os.chmod(path, mode)
    if group is not None and os.stat(path).st_gid != group:
        os.chown(path, -1, group)


def remove_unfinished(partial, path):
    """After a failed backup: its partial file, and its final file unless the meta file (written
    last) says the backup is complete."""
    for leftover in (partial, path):
        if os.path.exists(leftover) and not os.path.exists(path + P.META_SUFFIX):
            with contextlib.suppress(OSError):
                os.unlink(leftover)


@contextlib.contextmanager
def host_lock(path, wait):
    """The whole host runs one backup/verify/prune command at a time (concurrency inside)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline or STOPPING.is_set():
                    raise HostBusy('another edgefleet-backup run holds %s (waited %ds)' % (path, wait))
                time.sleep(1)
        os.ftruncate(fd, 0)
        os.write(fd, ('%d\n' % os.getpid()).encode())
        yield
    finally:
        os.close(fd)
