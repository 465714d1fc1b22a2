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


def allocate_locked(tx, registry, policy, check_mode=False, only=None, listening=None, now=None):
    """One allocation run inside an open registry transaction ``tx`` (no commit, no retry).

    What :func:`run_allocation` does under the lock; callers that change the registry and allocate
    in one transaction (the enrollment service) call it directly.
    """
    now = time.time() if now is None else now
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


def run_allocation(registry, policy, check_mode=False, only=None, listening=None, now=None, attempts=5):
    """Allocate/release under the registry's lock; persist unless ``check_mode``.

    Returns ``(result, allocations)`` where ``allocations`` is the full map after the run.
    """
    now = time.time() if now is None else now

    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            return allocate_locked(tx, registry, policy, check_mode=check_mode, only=only, listening=listening,
                                   now=now)

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


def update_device_locked(tx, registry, dev_id, fields, check_mode=False, create=True):
    """:func:`update_device` inside an open registry transaction ``tx`` (no commit, no retry)."""
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


def update_device(registry, dev_id, fields, check_mode=False, attempts=5, create=True):
    """Create or update one device with ``fields`` (keys from UPDATABLE; None = leave unchanged).

    Returns ``(changed, before, after)`` as registry views (dicts, {} when absent).
    """
    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            return update_device_locked(tx, registry, dev_id, fields, check_mode=check_mode, create=create)

    return with_retries(attempt, attempts)


CLOUD_UPDATABLE = ('address', 'capacity', 'tunnel_ports', 'replica_ports', 'reserved_ports', 'drain', 'vars')


def update_cloud_host(registry, name, fields, absent=False, check_mode=False, attempts=5):
    """Create, update or remove one cloud host. Removing a host that still carries allocations fails.

    Returns ``(changed, before, after)`` as registry views.
    """
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
        cloud_host_to_raw, normalize_cloud_host,
    )

    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            devices, hosts = tx.load_registry(missing_ok=True) if tx.kind == 'file' else tx.load_registry()
            current = None
            for host in hosts:
                if host['name'] == name:
                    current = host
            before = cloud_host_to_raw(current) if current else {}
            if absent:
                if current is None:
                    return False, before, {}
                live = sorted(d for d, rec in tx.load_state()['allocations'].items() if rec['cloud_host'] == name)
                if live:
                    raise FleetError('cloud host %s still carries %d allocated device(s): %s%s; retire or disable them '
                                     'and run the allocation first (or set drain: true)'
                                     % (name, len(live), ', '.join(live[:10]), ' ...' if len(live) > 10 else ''))
                if not check_mode:
                    if tx.kind == 'file':
                        tx.write_registry(devices, [h for h in hosts if h['name'] != name])
                    else:
                        tx.delete_cloud_host(name)
                return True, before, {}
            raw = dict(before) if current else {'name': name}
            for key, value in fields.items():
                if value is not None:
                    raw[key] = value
            raw = dict((k, v) for k, v in raw.items() if v not in (None, ''))
            new = normalize_cloud_host(raw)
            changed = new != current
            if changed and not check_mode:
                if tx.kind == 'file':
                    if current is None:
                        hosts.append(new)
                    else:
                        hosts = [new if h['name'] == name else h for h in hosts]
                    tx.write_registry(devices, hosts)
                else:
                    tx.upsert_cloud_host(new)
            return changed, before, cloud_host_to_raw(new)

    return with_retries(attempt, attempts)
