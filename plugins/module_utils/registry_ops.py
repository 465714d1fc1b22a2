# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operations on a registry, for both backends through one interface (registry_backend.py):
an allocation run, a move (rebalance, drain), creating/updating a device or a cloud host.

The modules (allocation, registry), the enrollment service and the benches call these; each runs
in one registry transaction and is retried when a concurrent writer wins (MySQL backend).
"""

from __future__ import annotations

import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import (
    device_diff_view, normalize_device,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import with_retries
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_format import (
    cloud_host_to_raw, normalize_cloud_host,
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


def run_move(registry, policy, move_ids=None, move_from=None, move_to=None, check_mode=False, listening=None,
             now=None, attempts=5):
    """Move devices under the registry's lock; persist unless ``check_mode``. Returns (result, allocations).

    ``move_ids``: devices to move; ``move_from``: every active device of that cloud host (a
    drain); ``move_to``: the target cloud host (None: the allocator picks).
    """
    now = time.time() if now is None else now

    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            devices, hosts = tx.load_registry()
            state = tx.load_state()
            ids = list(move_ids or [])
            warnings = []
            if move_from is not None:
                source = [h for h in hosts if h['name'] == move_from]
                if not source:
                    raise FleetError('cloud host %s: not in the registry %s (field "move_from")'
                                     % (move_from, registry.describe()))
                if not source[0].get('drain'):
                    warnings.append('cloud host %s does not drain (drain: true in the registry): new devices may '
                                    'be placed on it again' % move_from)
                ids.extend(alloc_lib.devices_on(state, devices, move_from))
                kept = sorted(d for d, rec in state['allocations'].items()
                              if rec['cloud_host'] == move_from and d not in ids)
                if kept:
                    warnings.append('cloud host %s keeps %d allocation(s) of devices that are not active: %s '
                                    '(retire them, or activate them and drain again)'
                                    % (move_from, len(kept), ', '.join(kept[:10])))
            result = alloc_lib.move(devices, hosts, policy, state, ids, target=move_to, now=now,
                                    listening=listening, copy_state=False)
            result.warnings[:0] = warnings
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


def update_device_locked(tx, registry, dev_id, fields, check_mode=False, create=True):
    """:func:`update_device` inside an open registry transaction ``tx`` (no commit, no retry)."""
    current = tx.get_device(dev_id, for_update=not check_mode, missing_ok=create)
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
    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            current = tx.get_cloud_host(name)
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
                tx.upsert_cloud_host(new)
            return changed, before, cloud_host_to_raw(new)

    return with_retries(attempt, attempts)


def lost_mark(host):
    """The failover record a cloud host carries in its registry ``vars`` (``edgefleet_lost``), or None."""
    return ((host or {}).get('vars') or {}).get('edgefleet_lost') or None


def run_failover(registry, policy, lost, alive=False, force=False, check_mode=False, now=None, attempts=5):
    """Declare cloud host ``lost`` gone for good and move its active devices onto the surviving hosts.

    One registry transaction, never contacting the lost host: the host is marked lost (``drain:
    true``, so the allocator never picks it again, and ``vars.edgefleet_lost = {at, devices}``, the
    failover's journal: which devices came from it), then every active device still allocated on
    it gets a new placement by capacity on the other, non-draining hosts (sticky server_id and
    gtid_domain_id, new ports; see :func:`allocation.move`). The mark is written before the
    allocation, so an interrupted run is finished by the next one. A host already marked lost is
    finished again (nothing changes when nothing is left to move).

    Refusals (:class:`FleetError`, nothing written): an unknown host; ``alive`` (its sshd answered)
    unless ``force`` or it is already marked lost; no surviving host, or not enough capacity.
    Returns ``(result, mark, changed)``: the move result, the lost mark, whether anything changed.
    """
    now = time.time() if now is None else now
    stamp = alloc_lib.iso(now)

    def attempt():
        with registry.transaction(write=not check_mode) as tx:
            devices, hosts = tx.load_registry()
            state = tx.load_state()
            host = next((h for h in hosts if h['name'] == lost), None)
            if host is None:
                raise FleetError('cloud host %s: not in the registry %s (field "failover_host")'
                                 % (lost, registry.describe()))
            mark = lost_mark(host)
            if alive and not force and mark is None:
                raise FleetError('cloud host %s still answers SSH: it is not lost. Fail over only a host that is gone '
                                 'for good (or pass failover_force=true after making sure it can never come back '
                                 'with its old tunnels and replicas); to move devices off a live host use '
                                 'rebalance.yml -e drain_host=%s' % (lost, lost))
            ids = alloc_lib.devices_on(state, devices, lost)
            survivors = [h['name'] for h in hosts if h['name'] != lost and not h.get('drain')]
            if ids and not survivors:
                raise FleetError('no surviving capacity for the %d device(s) of lost cloud host %s: no other cloud host '
                                 'takes devices (add one to the registry, or set drain: false on one)'
                                 % (len(ids), lost))
            view = [dict(h, drain=True) if h['name'] == lost else h for h in hosts]
            try:
                result = alloc_lib.move(devices, view, policy, state, ids, target=None, now=now, copy_state=False)
            except FleetError as exc:
                raise FleetError('no surviving capacity for the devices of lost cloud host %s: %s' % (lost, exc))
            known = list((mark or {}).get('devices') or [])
            new_mark = {'at': (mark or {}).get('at') or stamp, 'devices': sorted(set(known) | set(ids))}
            raw = cloud_host_to_raw(host)
            raw['drain'] = True
            raw['vars'] = dict(raw.get('vars') or {}, edgefleet_lost=new_mark)
            new_host = normalize_cloud_host(raw)
            changed = bool(result.changed) or new_host != host
            if not check_mode:
                if new_host != host:  # the mark first: a run interrupted after it is finished by the next
                    tx.upsert_cloud_host(new_host)
                if result.changed:
                    tx.write_state(result, stamp)
            return result, new_mark, changed

    return with_retries(attempt, attempts)
