# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sticky allocation of cloud host, ports, ids and replica slot for every active device.

Pure logic, no I/O: :func:`allocate` takes the registry (devices, cloud hosts), the policy and
the current allocation state and returns the new state plus the delta a backend must persist.

Rules
* Sticky: an existing allocation is never changed. Adding, disabling or retiring a device only
  touches that device.
* Ports on a cloud host share one space: both tunnel ports of every device, instance-mode
  replica ports and channel-mode instance ports, plus quarantined, reserved and listening
  ports. A port is handed out only when it is in none of those.
* Freed ports rest in quarantine for ``quarantine_days`` before they can be handed out again.
* ``server_id`` and ``gtid_domain_id`` are fleet-wide and never reused: a device keeps its ids
  for ever (also when retired and later re-activated); new ids are ``max + 1``.
* The cloud host is chosen by capacity: the host with the lowest fill ratio after adding the
  device (ties: fewer devices, then name). Draining hosts get no new devices.
* Any error (exhausted ranges, removed cloud host with live devices, corrupt state) raises
  :class:`FleetError` and nothing is returned to persist.
"""

from __future__ import annotations

import calendar
import copy
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import ALLOCATION_KEYS
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    format_port_ranges, ranges_overlap,
)

# The allocation record's keys and their meaning: module_utils/device_record.py.
RECORD_KEYS = ALLOCATION_KEYS
INSTANCE_KEYS = ('cloud_host', 'name', 'mode', 'port', 'datadir', 'server_id', 'created_at')


def iso(now):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))


def parse_iso(text):
    try:
        return calendar.timegm(time.strptime(text, '%Y-%m-%dT%H:%M:%SZ'))
    except (TypeError, ValueError):
        return 0


def empty_state():
    return {'allocations': {}, 'ids': {}, 'instances': {}, 'quarantine': {},
            'counters': {'server_id': 0, 'gtid_domain_id': 0, 'replica_server_id': 0}}


class PortPool(object):
    """Free ports of one cloud host space (ranges minus taken), lowest first."""

    __slots__ = ('ranges', 'taken', '_idx', '_next', 'size')

    def __init__(self, ranges, taken):
        self.ranges = ranges
        self.taken = taken
        self._idx = 0
        self._next = ranges[0][0] if ranges else None
        self.size = sum(hi - lo + 1 for lo, hi in ranges)

    def take(self):
        ranges = self.ranges
        taken = self.taken
        while self._idx < len(ranges):
            lo, hi = ranges[self._idx]
            port = max(self._next, lo)
            while port <= hi:
                if port not in taken:
                    taken.add(port)
                    self._next = port + 1
                    return port
                port += 1
            self._idx += 1
            if self._idx < len(ranges):
                self._next = ranges[self._idx][0]
        return None


class HostPlan(object):
    """Working data for one cloud host during an allocation run."""

    __slots__ = ('name', 'host', 'taken', 'tunnel', 'replica', 'count', 'capacity', 'full', 'channel_instances')

    def __init__(self, host, policy):
        self.name = host['name']
        self.host = host
        self.taken = set()
        self.tunnel = None
        self.replica = None
        self.count = 0
        self.full = bool(host.get('drain'))
        self.channel_instances = {}  # name -> [instance, channel count]
        tunnel_ranges = host.get('tunnel_ports') or policy['tunnel_ports']
        tunnel_size = sum(hi - lo + 1 for lo, hi in tunnel_ranges)
        limits = [tunnel_size // 2]
        cap = host.get('capacity')
        if cap is None:
            cap = policy['capacity']
        if cap is not None:
            limits.append(cap)
        self.capacity = min(limits)


def effective_host(host, policy):
    """Validate one cloud host's port layout against the policy; returns (tunnel, replica, reserved)."""
    name = host['name']
    tunnel = host.get('tunnel_ports') or policy['tunnel_ports']
    replica = host.get('replica_ports') or policy['replica_ports']
    fleet_reserved = policy['reserved_ports']
    reserved = set(fleet_reserved) | set(host.get('reserved_ports') or ())
    if not tunnel:
        raise FleetError('cloud host %s: field "tunnel_ports" is empty' % name)
    overlap = ranges_overlap(tunnel, replica)
    if overlap:
        raise FleetError('cloud host %s: field "tunnel_ports" range %d-%d overlaps field "replica_ports" range %d-%d'
                         % (name, overlap[0][0], overlap[0][1], overlap[1][0], overlap[1][1]))
    for field, ranges in (('tunnel_ports', tunnel), ('replica_ports', replica)):
        for lo, hi in ranges:
            inside = sorted(p for p in fleet_reserved if lo <= p <= hi)
            if inside:
                raise FleetError('cloud host %s: field "%s" range %d-%d contains fleet-wide reserved port(s) %s '
                                 '(allocation policy "reserved_ports"); a cloud host\'s own "reserved_ports" may '
                                 'carve ports out of its ranges instead'
                                 % (name, field, lo, hi, ', '.join(str(p) for p in inside[:5])))
    return tunnel, replica, reserved


def validate_cloud_hosts(cloud_hosts, policy):
    """Check every host and that hosts sharing an address do not share port ranges."""
    by_address = {}
    layouts = {}
    for host in cloud_hosts:
        layouts[host['name']] = effective_host(host, policy)
        if host.get('address'):
            by_address.setdefault(host['address'], []).append(host['name'])
    for address, names in by_address.items():
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                ta, ra, _x = layouts[a]
                tb, rb, _y = layouts[b]
                overlap = ranges_overlap(ta + ra, tb + rb)
                if overlap:
                    raise FleetError('cloud hosts %s and %s share address %s and their port ranges overlap '
                                     '(%d-%d and %d-%d)' % (a, b, address, overlap[0][0], overlap[0][1],
                                                            overlap[1][0], overlap[1][1]))
    return layouts


class AllocationResult(object):
    def __init__(self):
        self.state = None
        self.alloc_add = {}
        self.alloc_del = []
        self.released = {}
        self.ids_add = {}
        self.inst_add = []
        self.inst_del = []
        self.quarantine_add = []
        self.quarantine_del = []
        self.counters_before = {}
        self.counters = {}
        self.changes = []
        self.warnings = []
        self.skipped = []

    @property
    def changed(self):
        return bool(self.alloc_add or self.alloc_del or self.ids_add or self.inst_add or self.inst_del
                    or self.quarantine_add or self.quarantine_del)


def _duplicate_port_error(host, entries):
    """Slow path for a corrupt state: name the two holders of the first duplicated port."""
    seen = {}
    for port, owner in entries:
        if port in seen:
            return FleetError('allocation state is inconsistent: port %d on cloud host %s is held by both %s and %s'
                              % (port, host, seen[port], owner))
        seen[port] = owner
    return FleetError('allocation state is inconsistent on cloud host %s' % host)


def _owners_on(host, allocations, instances, quarantine):
    for dev_id, rec in allocations.items():
        if rec['cloud_host'] == host:
            yield rec['tunnel_mysql_port'], dev_id
            yield rec['tunnel_ssh_port'], dev_id
            if rec['replica_mode'] == 'instance':
                yield rec['replica_port'], dev_id
    for key, inst in instances.items():
        if key[0] == host:
            yield inst['port'], 'instance ' + inst['name']
    for key, entry in quarantine.items():
        if key[0] == host:
            yield key[1], 'quarantine (was %s)' % entry.get('owner')


def allocate(devices, cloud_hosts, policy, state, now=None, listening=None, copy_state=True, only=None):
    """Compute the allocation for ``devices``. See the module docstring for the rules.

    ``devices``: normalized device dicts (id, status, replica_mode, ...), ids unique.
    ``cloud_hosts``: normalized cloud host dicts (name, capacity, tunnel_ports, ...).
    ``state``: dict as returned by :func:`empty_state` (not modified when ``copy_state``).
    ``listening``: optional {cloud host: iterable of ports seen listening} never handed out.
    ``only``: optional set of device ids; other devices are neither allocated nor released.
    """
    now = time.time() if now is None else now
    stamp = iso(now)
    result = AllocationResult()
    state = copy.deepcopy(state) if copy_state else state
    allocations = state['allocations']
    ids = state['ids']
    instances = state['instances']
    quarantine = state['quarantine']
    counters = state.setdefault('counters', {})
    result.counters_before = dict(counters)
    listening = listening or {}
    free_disabled = policy['free_disabled']
    default_mode = policy['replica_mode']

    layouts = validate_cloud_hosts(cloud_hosts, policy)
    plans = dict((host['name'], HostPlan(host, policy)) for host in cloud_hosts)
    by_id = dict((dev['id'], dev) for dev in devices)

    # 1. one pass over the allocations: ports held, counts, what must be released, what is stranded
    held = dict((name, []) for name in plans)
    counts = dict((name, 0) for name in plans)
    channel_use = {}
    stranded = {}
    to_release = []
    for dev_id, rec in allocations.items():
        host = rec['cloud_host']
        dev = by_id.get(dev_id)
        keep = dev is not None and (dev['status'] == 'active' or (dev['status'] == 'disabled' and not free_disabled))
        if not keep and (only is None or dev_id in only):
            to_release.append(dev_id)
        lst = held.get(host)
        if lst is None:
            if keep:
                stranded.setdefault(host, []).append(dev_id)
            continue
        lst.append(rec['tunnel_mysql_port'])
        lst.append(rec['tunnel_ssh_port'])
        mode = rec['replica_mode']
        if mode == 'instance':
            lst.append(rec['replica_port'])
        if keep or (only is not None and dev_id not in only):
            counts[host] += 1
            if mode == 'channel':
                key = (host, rec['replica_instance'])
                channel_use[key] = channel_use.get(key, 0) + 1
            if dev is not None and (dev['replica_mode'] or default_mode) != mode:
                result.warnings.append('device %s: field "replica_mode" says %s but it is allocated in %s mode; '
                                       'allocations are sticky, retire and re-register the device to move it'
                                       % (dev_id, dev['replica_mode'] or default_mode, mode))
    if stranded:
        host = sorted(stranded)[0]
        names = sorted(stranded[host])
        raise FleetError('cloud host %s was removed from the registry but %d device(s) still live on it: %s%s; '
                         'retire or disable them first (or put the host back with drain: true)'
                         % (host, len(names), ', '.join(names[:10]), ' ...' if len(names) > 10 else ''))

    # 2. channel instances and quarantine
    for key, inst in list(instances.items()):
        plan = plans.get(key[0])
        if plan is None:
            del instances[key]
            result.inst_del.append(key)
            continue
        held[key[0]].append(inst['port'])
        plan.channel_instances[inst['name']] = [inst, channel_use.pop(key, 0)]
    if channel_use:
        key = sorted(channel_use)[0]
        raise FleetError('allocation state is inconsistent: channel instance %s on %s is used but not recorded'
                         % (key[1], key[0]))
    quarantine_seconds = policy['quarantine_days'] * 86400.0
    for key, entry in list(quarantine.items()):
        lst = held.get(key[0])
        if lst is None or parse_iso(entry.get('released_at')) + quarantine_seconds <= now:
            del quarantine[key]
            result.quarantine_del.append(key)
            if lst is not None:
                result.changes.append({'action': 'unquarantine', 'cloud_host': key[0], 'port': key[1]})
            continue
        lst.append(key[1])
    for name, plan in plans.items():
        lst = held[name]
        taken = set(lst)
        if len(taken) != len(lst):
            raise _duplicate_port_error(name, _owners_on(name, allocations, instances, quarantine))
        tunnel, replica, reserved = layouts[name]
        taken.update(reserved)
        taken.update(listening.get(name) or ())
        plan.taken = taken
        plan.count = counts[name]
        plan.tunnel = PortPool(tunnel, taken)
        plan.replica = PortPool(replica, taken)

    # 3. release allocations of devices that are no longer active (their ports stay taken: quarantine)
    for dev_id in sorted(to_release):
        rec = allocations.pop(dev_id)
        dev = by_id.get(dev_id)
        result.alloc_del.append(dev_id)
        result.released[dev_id] = rec
        if dev is None:
            result.warnings.append('device %s has an allocation but is no longer in the registry: released as if retired'
                                   % dev_id)
        ports = [rec['tunnel_mysql_port'], rec['tunnel_ssh_port']]
        if rec['replica_mode'] == 'instance':
            ports.append(rec['replica_port'])
        if rec['cloud_host'] in plans:
            for port in ports:
                entry = {'released_at': stamp, 'owner': dev_id}
                quarantine[(rec['cloud_host'], port)] = entry
                result.quarantine_add.append((rec['cloud_host'], port, entry))
        result.changes.append({'action': 'release', 'device': dev_id, 'cloud_host': rec['cloud_host'],
                               'ports': ports, 'status': dev['status'] if dev else 'missing'})

    # 5. fleet-wide id counters (never reused)
    last_server = max(counters.get('server_id') or 0, policy['server_id_base'] - 1)
    last_domain = max(counters.get('gtid_domain_id') or 0, policy['gtid_domain_id_base'] - 1)
    last_replica = max(counters.get('replica_server_id') or 0, policy['replica_server_id_base'] - 1)
    if ids:
        sids = [pair['server_id'] for pair in ids.values()]
        dids = [pair['gtid_domain_id'] for pair in ids.values()]
        if len(set(sids)) != len(sids) or len(set(dids)) != len(dids):
            raise FleetError('allocation state is inconsistent: two devices share a server_id or gtid_domain_id')
        last_server = max(last_server, *sids)
        last_domain = max(last_domain, *dids)
    rsids = [rec['replica_server_id'] for rec in allocations.values() if rec['replica_mode'] == 'instance']
    rsids.extend(inst['server_id'] for inst in instances.values())
    if rsids:
        last_replica = max(last_replica, *rsids)

    # 6. allocate active devices that have no allocation
    plan_list = sorted(plans.values(), key=lambda p: p.name)
    cpi = policy['channels_per_instance']
    datadir_base = policy['replica_datadir_base']
    prefix = policy['channel_instance_prefix']
    pending = sorted(dev['id'] for dev in devices if dev['status'] == 'active' and dev['id'] not in allocations
                     and (only is None or dev['id'] in only))
    for dev_id in pending:
        dev = by_id[dev_id]
        mode = dev.get('replica_mode') or policy['replica_mode']
        pair = ids.get(dev_id)
        rec = None
        while rec is None:
            plan = _choose_host(plan_list)
            if plan is None:
                raise FleetError(_exhausted_message(dev_id, plans, layouts))
            rec = _place(dev_id, mode, plan, cpi, datadir_base, prefix, stamp, result, instances, last_replica)
            if rec is None:
                plan.full = True
        if rec['replica_server_id'] > last_replica:
            last_replica = rec['replica_server_id']
        if last_replica > 4294967295:
            raise FleetError('device %s: replica server_id space exhausted' % dev_id)
        if pair is None:
            last_server += 1
            last_domain += 1
            if last_server >= policy['replica_server_id_base']:
                raise FleetError('device %s: field "server_id" would reach replica_server_id_base (%d): '
                                 'server id space exhausted' % (dev_id, policy['replica_server_id_base']))
            if last_domain > 4294967295:
                raise FleetError('device %s: field "gtid_domain_id" space exhausted' % dev_id)
            pair = {'server_id': last_server, 'gtid_domain_id': last_domain}
            ids[dev_id] = pair
            result.ids_add[dev_id] = pair
        rec['server_id'] = pair['server_id']
        rec['gtid_domain_id'] = pair['gtid_domain_id']
        allocations[dev_id] = rec
        result.alloc_add[dev_id] = rec
        plan.count += 1
        result.changes.append({'action': 'allocate', 'device': dev_id, 'cloud_host': plan.name,
                               'tunnel_mysql_port': rec['tunnel_mysql_port'],
                               'tunnel_ssh_port': rec['tunnel_ssh_port'],
                               'replica_mode': mode, 'replica_instance': rec['replica_instance']})

    for plan in plans.values():
        if plan.count > plan.capacity and not plan.host.get('drain'):
            result.warnings.append('cloud host %s carries %d devices, above its capacity %d (allocations are sticky: '
                                   'nothing is moved)' % (plan.name, plan.count, plan.capacity))

    counters['server_id'] = last_server
    counters['gtid_domain_id'] = last_domain
    counters['replica_server_id'] = last_replica
    result.counters = dict(counters)
    result.state = state
    return result


def _choose_host(plan_list):
    best = None
    best_key = None
    for plan in plan_list:
        if plan.full or plan.count >= plan.capacity:
            continue
        key = ((plan.count + 1) / float(plan.capacity), plan.count)
        if best is None or key < best_key:
            best, best_key = plan, key
    return best


def _place(dev_id, mode, plan, cpi, datadir_base, prefix, stamp, result, instances, last_replica):
    """Take ports on ``plan`` for one device; None when the host has no room (nothing kept)."""
    taken = plan.taken
    mysql_port = plan.tunnel.take()
    ssh_port = plan.tunnel.take() if mysql_port is not None else None
    if ssh_port is None:
        if mysql_port is not None:
            taken.discard(mysql_port)
        return None
    rec = {'id': dev_id, 'cloud_host': plan.name, 'tunnel_mysql_port': mysql_port, 'tunnel_ssh_port': ssh_port,
           'server_id': None, 'gtid_domain_id': None, 'replica_mode': mode}
    if mode == 'instance':
        port = plan.replica.take()
        if port is None:
            taken.discard(mysql_port)
            taken.discard(ssh_port)
            return None
        rec.update(replica_instance=dev_id, replica_port=port, replica_datadir='%s/%s' % (datadir_base, dev_id),
                   replica_server_id=last_replica + 1, channel_name=dev_id, schema_prefix='')
    else:
        slot = None
        for name in sorted(plan.channel_instances):
            candidate = plan.channel_instances[name]
            if candidate[1] < cpi:
                slot = candidate
                break
        if slot is None:
            port = plan.replica.take()
            if port is None:
                taken.discard(mysql_port)
                taken.discard(ssh_port)
                return None
            index = len(plan.channel_instances) + 1
            name = '%s%02d' % (prefix, index)
            while name in plan.channel_instances:
                index += 1
                name = '%s%02d' % (prefix, index)
            inst = {'cloud_host': plan.name, 'name': name, 'mode': 'channel', 'port': port,
                    'datadir': '%s/%s' % (datadir_base, name), 'server_id': last_replica + 1, 'created_at': stamp}
            instances[(plan.name, name)] = inst
            result.inst_add.append(inst)
            result.changes.append({'action': 'create_instance', 'cloud_host': plan.name, 'instance': name, 'port': port})
            slot = [inst, 0]
            plan.channel_instances[name] = slot
        slot[1] += 1
        inst = slot[0]
        rec.update(replica_instance=inst['name'], replica_port=inst['port'], replica_datadir=inst['datadir'],
                   replica_server_id=inst['server_id'], channel_name=dev_id, schema_prefix=dev_id + '_')
    rec['allocated_at'] = stamp
    return rec


def _exhausted_message(dev_id, plans, layouts):
    if not plans:
        return 'device %s: no cloud host is registered (add cloud_hosts to the registry)' % dev_id
    parts = []
    for name in sorted(plans):
        plan = plans[name]
        tunnel, replica, _r = layouts[name]
        if plan.host.get('drain'):
            why = 'draining'
        elif plan.count >= plan.capacity:
            why = 'capacity %d reached' % plan.capacity
        else:
            why = 'port range exhausted (tunnel_ports %s, replica_ports %s)' % (
                ','.join(format_port_ranges(tunnel)), ','.join(format_port_ranges(replica)))
        parts.append('%s: %s' % (name, why))
    return 'device %s: no cloud host can take it: %s' % (dev_id, '; '.join(parts))


def instances_by_host(state, active_ids=None):
    """Replica instances per cloud host: {host: [{name, mode, port, datadir, server_id, channels}]}."""
    out = {}
    for inst in state['instances'].values():
        out.setdefault(inst['cloud_host'], {})[inst['name']] = {
            'name': inst['name'], 'mode': 'channel', 'port': inst['port'], 'datadir': inst['datadir'],
            'server_id': inst.get('server_id'), 'channels': []}
    for dev_id in sorted(state['allocations']):
        if active_ids is not None and dev_id not in active_ids:
            continue
        rec = state['allocations'][dev_id]
        host = out.setdefault(rec['cloud_host'], {})
        if rec['replica_mode'] == 'instance':
            host[rec['replica_instance']] = {
                'name': rec['replica_instance'], 'mode': 'instance', 'port': rec['replica_port'],
                'datadir': rec['replica_datadir'], 'server_id': rec.get('replica_server_id'), 'channels': [dev_id]}
        else:
            inst = host.get(rec['replica_instance'])
            if inst is not None:
                inst['channels'].append(dev_id)
    return dict((h, [insts[n] for n in sorted(insts)]) for h, insts in out.items())


def move(devices, cloud_hosts, policy, state, move_ids, target=None, now=None, listening=None, copy_state=True):
    """Move allocated active devices to another cloud host (rebalance one device, drain a host).

    Each moved device gets, on its new cloud host, two new tunnel ports and a new replica
    placement (instance mode: a new replica port and replica server id, same instance name and
    datadir path; channel mode: a slot on one of the target's shared instances). It keeps its
    ``server_id``, ``gtid_domain_id``, replica mode, channel name and schema prefix. Its old ports
    rest in quarantine on the old host. No other device changes.

    ``target``: the cloud host to move to; None picks by capacity among the hosts that are not
    the device's current host and do not drain. A device already on ``target`` is left alone, so
    repeating a move is a no-op. All or nothing: any error raises :class:`FleetError` and no
    result is returned to persist.
    """
    now = time.time() if now is None else now
    stamp = iso(now)
    state = copy.deepcopy(state) if copy_state else state
    by_id = dict((dev['id'], dev) for dev in devices)
    host_names = set(host['name'] for host in cloud_hosts)
    if target is not None:
        if target not in host_names:
            raise FleetError('cloud host %s: not in the registry (field "move_to")' % target)
        for host in cloud_hosts:
            if host['name'] == target and host.get('drain'):
                raise FleetError('cloud host %s drains (drain: true in the registry): it takes no devices '
                                 '(field "move_to")' % target)
    allocations = state['allocations']
    groups = {}
    skipped = []
    for dev_id in sorted(set(move_ids)):
        dev = by_id.get(dev_id)
        if dev is None:
            raise FleetError('device %s: not in the registry (field "move")' % dev_id)
        if dev['status'] != 'active':
            raise FleetError('device %s is %s: only active devices are moved (field "move")' % (dev_id, dev['status']))
        rec = allocations.get(dev_id)
        if rec is None:
            raise FleetError('device %s has no allocation yet: run the allocation first (field "move")' % dev_id)
        if rec['cloud_host'] == target:
            skipped.append(dev_id)
            continue
        groups.setdefault(rec['cloud_host'], []).append(dev_id)

    combined = AllocationResult()
    combined.state = state
    combined.counters_before = dict(state.get('counters') or {})
    combined.counters = dict(combined.counters_before)
    for source in sorted(groups):
        ids = groups[source]
        old = {}
        for dev_id in ids:
            rec = allocations.pop(dev_id)
            old[dev_id] = rec
            ports = [rec['tunnel_mysql_port'], rec['tunnel_ssh_port']]
            if rec['replica_mode'] == 'instance':
                ports.append(rec['replica_port'])
            if source in host_names:
                for port in ports:
                    entry = {'released_at': stamp, 'owner': dev_id}
                    state['quarantine'][(source, port)] = entry
                    combined.quarantine_add.append((source, port, entry))
        # a move keeps the replica mode it was allocated with (a mode change needs a re-seed)
        pinned = [dict(dev, replica_mode=old[dev['id']]['replica_mode']) if dev['id'] in old else dev
                  for dev in devices]
        view = []
        for host in cloud_hosts:
            host = dict(host)
            if host['name'] == source or (target is not None and host['name'] != target):
                host['drain'] = True
            view.append(host)
        try:
            step = allocate(pinned, view, policy, state, now=now, listening=listening, copy_state=False,
                            only=set(ids))
        except FleetError as exc:
            raise FleetError('cannot move %s away from cloud host %s: %s' % (', '.join(ids), source, exc))
        combined.inst_add.extend(step.inst_add)
        combined.inst_del.extend(step.inst_del)
        combined.quarantine_del.extend(step.quarantine_del)
        combined.warnings.extend(w for w in step.warnings if w not in combined.warnings)
        combined.counters = dict(step.counters)
        for change in step.changes:
            if change['action'] != 'allocate':
                combined.changes.append(change)
                continue
            dev_id = change['device']
            before = old[dev_id]
            after = step.alloc_add[dev_id]
            combined.changes.append({
                'action': 'move', 'device': dev_id, 'from_host': source, 'to_host': after['cloud_host'],
                'from_ports': [before['tunnel_mysql_port'], before['tunnel_ssh_port']],
                'to_ports': [after['tunnel_mysql_port'], after['tunnel_ssh_port']],
                'replica_mode': after['replica_mode'], 'from_instance': before['replica_instance'],
                'to_instance': after['replica_instance']})
        for dev_id in ids:
            combined.alloc_del.append(dev_id)
            combined.released[dev_id] = old[dev_id]
            combined.alloc_add[dev_id] = step.alloc_add[dev_id]
    combined.skipped = skipped
    return combined


def devices_on(state, devices, cloud_host):
    """Ids of the active devices allocated on ``cloud_host`` (what a drain moves), sorted."""
    active = set(dev['id'] for dev in devices if dev['status'] == 'active')
    return sorted(dev_id for dev_id, rec in state['allocations'].items()
                  if rec['cloud_host'] == cloud_host and dev_id in active)
