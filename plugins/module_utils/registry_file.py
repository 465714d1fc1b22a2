# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file backend of the registry: a YAML file for GitOps.

``devices:`` and ``cloud_hosts:`` live in the registry file; allocations in a JSON-formatted YAML
file next to it (``<registry>.alloc.yml``). Writers take an exclusive ``fcntl`` lock and replace
files atomically (module_utils/atomic_file.py), so readers never need a lock and never see half a
file. The interface is registry_backend.RegistryBackend.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time

from ansible.module_utils.common.yaml import HAS_YAML

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_backend import RegistryBackend
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_format import (
    TOP_LEVEL_KEYS, dump_registry_text, dump_state_text, normalize_registry, parse_registry_text, state_from_doc,
)

try:
    import fcntl
    HAS_FCNTL = True
except ImportError:  # pragma: no cover - not on POSIX
    HAS_FCNTL = False

if HAS_YAML:
    import yaml as _yaml
else:  # pragma: no cover
    _yaml = None


@contextlib.contextmanager
def file_lock(path, timeout=60.0):
    """Exclusive fcntl lock on ``path`` (created if missing), waiting up to ``timeout`` seconds."""
    if not HAS_FCNTL:  # pragma: no cover
        raise FleetError('file locking needs fcntl (POSIX)')
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FleetError('cannot open lock file %s: %s' % (path, exc))
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise FleetError('cannot lock %s: %s' % (path, exc))
                if time.monotonic() >= deadline:
                    raise FleetError('timed out after %.0fs waiting for the registry lock %s (another allocation '
                                     'or registration is running)' % (timeout, path))
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _load_yaml_text(data, path, what):
    try:
        return _yaml.load(data, Loader=_FastLoader)
    except Exception as exc:
        raise FleetError('%s %s is not valid YAML: %s' % (what, path, exc))


if HAS_YAML:
    try:
        from yaml import CSafeLoader as _FastLoader
    except ImportError:  # pragma: no cover
        from yaml import SafeLoader as _FastLoader


class FileRegistry(RegistryBackend):
    """YAML registry file + JSON-formatted allocation file, fcntl lock, atomic writes.

    Single-record writes (upsert_*, delete_cloud_host) rewrite the registry file at once (no
    commit step: a crash between two writes of one transaction keeps the first, as before).
    Inside a write transaction the devices and cloud hosts last read or written are kept, so a
    read-modify-write (get_device then upsert_device) parses the file once; nothing else writes
    the file while the lock is held.
    """

    kind = 'file'

    def __init__(self, spec, lock_timeout=60.0):
        if not HAS_YAML:
            raise FleetError('PyYAML is required for the file registry')
        self.path = spec['path']
        self.alloc_path = spec['alloc_path']
        self.lock_path = spec['lock_path']
        self.lock_timeout = lock_timeout
        self._extra = {}
        self._writing = False
        self._loaded = None  # (devices, cloud_hosts) as on disk, inside a write transaction

    def describe(self):
        return self.path

    def close(self):
        pass

    # registry
    def load_registry(self, missing_ok=False):
        if not os.path.exists(self.path):
            if missing_ok:
                self._extra = {}
                if self._writing:
                    self._loaded = ([], [])
                return [], []
            raise FleetError('registry file %s does not exist' % self.path)
        try:
            with open(self.path, 'rb') as handle:
                data = handle.read()
        except (IOError, OSError) as exc:
            raise FleetError('registry file %s cannot be read: %s' % (self.path, exc))
        try:
            doc = parse_registry_text(data.decode('utf-8'))
        except UnicodeDecodeError:
            raise FleetError('registry file %s is not UTF-8' % self.path)
        if doc is None:
            doc = _load_yaml_text(data, self.path, 'registry file')
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise FleetError('registry file %s must be a mapping with "devices:" (and "cloud_hosts:")' % self.path)
        unknown = sorted(set(doc) - TOP_LEVEL_KEYS)
        if unknown:
            raise FleetError('registry file %s: unknown top-level key(s) %s (allowed: devices, cloud_hosts, version)'
                             % (self.path, ', '.join(unknown)))
        self._extra = dict((k, v) for k, v in doc.items() if k not in ('devices', 'cloud_hosts'))
        devices, cloud_hosts = normalize_registry(doc.get('devices'), doc.get('cloud_hosts'), self.path)
        if self._writing:
            self._loaded = (list(devices), list(cloud_hosts))
        return devices, cloud_hosts

    def write_registry(self, devices, cloud_hosts):
        """Replace the whole registry file (keeps a top-level ``version:`` read before)."""
        atomic_write(self.path, dump_registry_text(devices, cloud_hosts, self._extra))
        if self._writing:
            self._loaded = (list(devices), list(cloud_hosts))

    def _current(self):
        if self._loaded is None:
            self.load_registry(missing_ok=True)
        return self._loaded

    def get_device(self, dev_id, for_update=False, missing_ok=False):
        devices = self._loaded[0] if self._loaded is not None else self.load_registry(missing_ok)[0]
        return next((dev for dev in devices if dev['id'] == dev_id), None)

    def get_cloud_host(self, name):
        hosts = self._loaded[1] if self._loaded is not None else self.load_registry(missing_ok=True)[1]
        return next((host for host in hosts if host['name'] == name), None)

    def upsert_device(self, dev):
        self._require_write('upsert_device')
        devices, hosts = self._current()
        self.write_registry(_replaced(devices, 'id', dev), hosts)

    def upsert_cloud_host(self, host):
        self._require_write('upsert_cloud_host')
        devices, hosts = self._current()
        self.write_registry(devices, _replaced(hosts, 'name', host))

    def delete_cloud_host(self, name):
        self._require_write('delete_cloud_host')
        devices, hosts = self._current()
        self.write_registry(devices, [host for host in hosts if host['name'] != name])

    def _require_write(self, what):
        if not self._writing:
            raise FleetError('registry %s: %s outside a write transaction' % (self.path, what))

    # allocation state
    def load_state(self):
        if not os.path.exists(self.alloc_path):
            return alloc_lib.empty_state()
        try:
            with open(self.alloc_path, 'rb') as handle:
                data = handle.read()
        except (IOError, OSError) as exc:
            raise FleetError('allocation file %s cannot be read: %s' % (self.alloc_path, exc))
        if not data.strip():
            return alloc_lib.empty_state()
        try:
            doc = json.loads(data)
        except ValueError:
            doc = _load_yaml_text(data, self.alloc_path, 'allocation file')  # hand-edited into plain YAML
        return state_from_doc(doc, self.alloc_path)

    def get_allocation(self, dev_id):
        return self.load_state()['allocations'].get(dev_id)

    def write_state(self, result, stamp):
        atomic_write(self.alloc_path, dump_state_text(result.state, stamp))

    @contextlib.contextmanager
    def transaction(self, write=True):
        """Exclusive lock for writers; readers rely on atomic renames and take none."""
        if not write:
            yield self
            return
        directory = os.path.dirname(self.path) or '.'
        if not os.path.isdir(directory):
            raise FleetError('registry directory %s does not exist' % directory)
        with file_lock(self.lock_path, self.lock_timeout):
            self._writing, self._loaded = True, None
            try:
                yield self
            finally:
                self._writing, self._loaded = False, None


def _replaced(entries, key, entry):
    """A copy of ``entries`` with the one whose ``key`` equals entry's replaced (or entry appended)."""
    out = list(entries)
    for index, old in enumerate(out):
        if old[key] == entry[key]:
            out[index] = entry
            return out
    out.append(entry)
    return out
