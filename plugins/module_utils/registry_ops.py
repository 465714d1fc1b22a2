# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operations shared by the modules: an allocation run, registering/retiring a device."""

from __future__ import annotations

import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    normalize_device, device_diff_view, with_retries,
)


def run_allocation(registry, policy, check_mode=False, only=None, listening=None, now=None, attempts=5):
    """Allocate/release under the registry's lock; persist unless ``check_mode``.

    Returns ``(result, allocations)`` where ``allocations`` is the full map after the run.
    """
    now = time.time() if now is None else now

    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            devices, hosts = tx.load_registry()
            state = tx.load_state()
            if only is not None:
                known = set(d['id'] for d in devices)
                missing = sorted(set(only) - known)
                if missing:
                    raise FleetError('device %s: not in the registry %s (field "devices")'
                                     % (missing[0], registry.describe()))
            result = alloc_lib.allocate(devices, hosts, policy, state, now=now, listening=listening,
                                        copy_state=False, only=set(only) if only is not None else None)
            if result.changed and not check_mode:
                tx.write_state(result, alloc_lib.iso(now))
            return result

    result = with_retries(attempt, attempts)
    return result, result.state['allocations']


def allocation_diff(result):
    before = {}
    after = {}
    for dev_id, rec in result.released.items():
        before[dev_id] = rec
    for dev_id, rec in result.alloc_add.items():
        after[dev_id] = rec
    return {'before': {'allocations': before}, 'after': {'allocations': after}}


UPDATABLE = ('site', 'status', 'address', 'labels', 'vars', 'replica_mode', 'reach', 'ssh_public_key')


def update_device(registry, dev_id, fields, check_mode=False, attempts=5, create=True):
    """Create or update one device with ``fields`` (keys from UPDATABLE; None = leave unchanged).

    Returns ``(changed, before, after)`` as registry views (dicts, {} when absent).
    """
    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            if tx.kind == 'file':
                devices, hosts = tx.load_registry(missing_ok=create)
                current = None
                for dev in devices:
                    if dev['id'] == dev_id:
                        current = dev
                        break
            else:
                current = tx.get_device(dev_id, for_update=not check_mode)
            if current is None and not create:
                raise FleetError('device %s: not in the registry %s' % (dev_id, registry.describe()))
            raw = dict(device_diff_view(current)) if current else {'id': dev_id}
            for key, value in fields.items():
                if value is None:
                    continue
                raw[key] = value
            raw = dict((k, v) for k, v in raw.items() if v not in (None, ''))
            new = normalize_device(raw)
            changed = current != new
            if changed and not check_mode:
                if tx.kind == 'file':
                    if current is None:
                        devices.append(new)
                    else:
                        devices = [new if d['id'] == dev_id else d for d in devices]
                    tx.write_registry(devices, hosts)
                else:
                    tx.upsert_device(new)
            return changed, device_diff_view(current), device_diff_view(new)

    return with_retries(attempt, attempts)
