# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry interface both backends implement (registry_file.py, registry_mysql.py).

Every read and write happens inside ``with registry.transaction(write=...) as tx:``; ``tx`` is
the backend itself. A write transaction is exclusive (file lock, or a row lock in the database)
and commits when the block ends without an exception; a read transaction sees a consistent state
and takes no lock on files. Callers (module_utils/registry_ops.py, enrollment.py, the modules,
the inventory plugin) use only the methods below, so they never ask which backend they hold.

Records are the normalized dicts of module_utils/device_record.py (devices) and
registry_format.py (cloud hosts); the allocation state is module_utils/allocation.py's
``empty_state()`` shape.
"""

from __future__ import annotations


class RetryableConflict(Exception):
    """A concurrent writer won (duplicate key, deadlock): roll back and run again."""


class RegistryBackend(object):
    """What a registry backend provides. ``kind`` names it ('file' or 'mysql') for messages."""

    kind = None

    def describe(self):
        """Where the registry is, for messages (a path or mysql://host:port/database)."""
        raise NotImplementedError

    def close(self):
        """Release connections; the object can be used again (it reconnects)."""

    def transaction(self, write=True):
        """Context manager yielding the backend; see the module docstring."""
        raise NotImplementedError

    # -- registry (inside a transaction)
    def load_registry(self, missing_ok=False):
        """(devices, cloud_hosts) normalized and sorted as stored. ``missing_ok``: a registry that
        does not exist yet reads as empty instead of failing (file backend; a database always
        exists once the connection works)."""
        raise NotImplementedError

    def get_device(self, dev_id, for_update=False, missing_ok=False):
        """The normalized device ``dev_id`` or None; ``for_update`` locks its row (database)."""
        raise NotImplementedError

    def get_cloud_host(self, name):
        """The normalized cloud host ``name`` or None."""
        raise NotImplementedError

    def upsert_device(self, dev):
        """Create or replace one normalized device."""
        raise NotImplementedError

    def upsert_cloud_host(self, host):
        """Create or replace one normalized cloud host."""
        raise NotImplementedError

    def delete_cloud_host(self, name):
        """Remove cloud host ``name`` (callers check first that it carries no allocation)."""
        raise NotImplementedError

    # -- allocation state (inside a transaction)
    def load_state(self):
        """The whole allocation state (allocations, ids, instances, quarantine, counters)."""
        raise NotImplementedError

    def get_allocation(self, dev_id):
        """The allocation record of one device, or None."""
        raise NotImplementedError

    def write_state(self, result, stamp):
        """Persist one allocation run's result (module_utils/allocation.py AllocationResult)."""
        raise NotImplementedError
