# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device registry (single source of truth) and its allocation state: open one, read one.

One interface (registry_backend.RegistryBackend), two backends:

* registry_file.FileRegistry - a YAML file for GitOps, allocations in a JSON-formatted file next
  to it, an fcntl lock and atomic writes;
* registry_mysql.MySQLRegistry - tables in MySQL/MariaDB (devices register themselves), row
  locks and UNIQUE keys, conflicts retried.

Where the rest lives: the device entry and its checks in device_record.py, cloud host entries
and the file text forms in registry_format.py, operations on a registry (allocation run, move,
device and cloud host updates) in registry_ops.py.

The names below stay importable from here for existing callers (modules, inventory plugin,
enrollment service, tests).
"""

from __future__ import annotations

import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_backend import (  # noqa: F401
    RegistryBackend, RetryableConflict,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_file import (  # noqa: F401
    FileRegistry, file_lock,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_mysql import (  # noqa: F401
    HAS_PYMYSQL, PYMYSQL_IMPORT_ERROR, RETRYABLE_MYSQL_ERRORS, SCHEMA_VERSION, MySQLRegistry,
)
# Re-exported: the registry's record and file formats (their homes are the modules named).
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write  # noqa: F401
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import (  # noqa: F401
    DEVICE_FIELDS, check_address, check_public_key, device_diff_view, device_to_raw, normalize_device,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_format import (  # noqa: F401
    CLOUD_FIELDS, FORMAT_NAME, cloud_host_to_raw, dump_registry_text, dump_state_text, normalize_cloud_host,
    normalize_registry, parse_registry_text, state_from_doc, state_to_doc,
)

__all__ = [
    # this module
    'BACKENDS', 'fleet_config_argument_spec', 'open_registry', 'read_snapshot', 'with_retries',
    # the interface and its backends
    'RegistryBackend', 'RetryableConflict', 'FileRegistry', 'file_lock', 'MySQLRegistry', 'HAS_PYMYSQL',
    'PYMYSQL_IMPORT_ERROR', 'RETRYABLE_MYSQL_ERRORS', 'SCHEMA_VERSION',
    # records and formats
    'atomic_write', 'DEVICE_FIELDS', 'check_address', 'check_public_key', 'device_diff_view', 'device_to_raw',
    'normalize_device', 'CLOUD_FIELDS', 'FORMAT_NAME', 'cloud_host_to_raw', 'dump_registry_text',
    'dump_state_text', 'normalize_cloud_host', 'normalize_registry', 'parse_registry_text', 'state_from_doc',
    'state_to_doc',
]

BACKENDS = {'file': FileRegistry, 'mysql': MySQLRegistry}


def fleet_config_argument_spec():
    """``config`` and ``registry`` options of the modules that use a registry (documented by the
    doc fragments edgefleet.mysql_backup.fleet_config and edgefleet.mysql_backup.fleet_config.registry).
    ``registry`` may carry a password: the modules add it to no_log_values once resolved."""
    return dict(
        config=dict(type='path'),
        registry=dict(type='dict', no_log=False),
    )


def open_registry(spec, lock_timeout=60.0):
    """The backend for a resolved registry ``spec`` (fleet_config.resolve): ``spec['type']``."""
    return BACKENDS[spec['type']](spec, lock_timeout)


def read_snapshot(spec, lock_timeout=60.0):
    """(devices, cloud_hosts, state) read in one read-only transaction of the registry ``spec``."""
    registry = open_registry(spec, lock_timeout)
    try:
        with registry.transaction(write=False) as tx:
            devices, cloud_hosts = tx.load_registry()
            return devices, cloud_hosts, tx.load_state()
    finally:
        registry.close()


def with_retries(func, attempts=5):
    """Run ``func()`` again when a concurrent writer made it conflict (DB backend)."""
    for attempt in range(attempts):
        try:
            return func()
        except RetryableConflict as exc:
            if attempt == attempts - 1:
                raise FleetError('gave up after %d conflicting concurrent writes: %s' % (attempts, exc))
            time.sleep(0.05 * (attempt + 1))
    return None  # pragma: no cover
