# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one command run works with: the configuration, the clock (fixed by --now in tests and
simulations), the backup directories, the per-device status files and the tools' versions."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import sys
import threading
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import write_json_atomic
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.config import VERSION
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import ensure_dir, read_json
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.process import binary_identity, tool_version


class Context:
    def __init__(self, config, now=None):
        self.config = config
        self.fixed_now = now
        self.status_lock = threading.Lock()
        self.hostname = os.uname().nodename
        self.tools = config['tools']
        self._versions = None
        self._versions_lock = threading.Lock()

    def now(self):
        return int(self.fixed_now) if self.fixed_now is not None else int(time.time())

    def logical_dir(self, device_id):
        return os.path.join(self.config['backup_dir'], 'logical', device_id)

    def physical_dir(self, instance):
        return os.path.join(self.config['backup_dir'], 'physical', instance)

    def held_dir(self):
        return os.path.join(self.config['backup_dir'], '.held')

    def mkdir(self, path):
        ensure_dir(path, self.config['dir_mode_i'], self.config['gid'])
        return path

    def write_json(self, path, data):
        """``data`` as JSON at ``path``, atomically, with the configured file mode and group."""
        write_json_atomic(path, data, self.config['file_mode_i'], self.config['gid'])

    def versions(self):
        """The tools' versions for the metadata. Asking a tool costs a process start per tool
        and run, so the answers are kept in <backup_dir>/tool-versions.json, each with the
        identity of the binary that gave it (an upgrade changes it)."""
        with self._versions_lock:
            if self._versions is None:
                path = os.path.join(self.config['backup_dir'], 'tool-versions.json')
                known = read_json(path) or {}
                versions = {'edgefleet-backup': VERSION, 'python': sys.version.split()[0]}
                for name in ('mariadb-dump', 'mariadb', 'zstd'):
                    identity = binary_identity(self.tools[name])
                    entry = known.get(name) or {}
                    if identity is None or entry.get('identity') != identity or entry.get('version') is None:
                        entry = {'identity': identity, 'version': tool_version([self.tools[name], '--version'])}
                        if identity is not None and entry['version'] is not None and known.get(name) != entry:
                            known[name] = entry
                            with contextlib.suppress(OSError):
                                self.write_json(path, known)
                    versions[name] = entry['version']
                self._versions = versions
        return dict(self._versions)

    # status ---------------------------------------------------------------------------

    def status_path(self, device_id):
        return os.path.join(self.config['status_dir'], '%s.json' % device_id)

    def update_status(self, device_id, change):
        """Read-modify-write one device's status under the context's lock, atomically."""
        with self.status_lock:
            self.mkdir(self.config['status_dir'])
            path = self.status_path(device_id)
            status = P.normalize_status(device_id, read_json(path))
            status = change(status)
            self.write_json(path, status)
            return status

    def read_status(self, device_id):
        return P.normalize_status(device_id, read_json(self.status_path(device_id)))
