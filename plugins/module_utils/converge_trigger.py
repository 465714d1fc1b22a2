# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-converge-new: converge devices that enrolled since the last run, with nobody typing.

Run by the ``edgefleet-converge-new.timer`` (and ``.path``) units of the ``enrollment_trigger``
role on the controller, or by hand::

    python -m ansible_collections.edgefleet.mysql_backup.plugins.module_utils.converge_trigger \\
        --project-dir /srv/edgefleet --inventory inventories/prod/prod.fleet.yml

One run: take a lock (a second run exits at once), read the registry and the allocations, pick
the active, allocated devices reached through their tunnel (``reach: tunnel``, what enrollment
writes) that this trigger has not converged yet with their current tunnel key (at most
``--max-devices``, oldest first), pin their SSH host keys (from the registry) in the controller's
known_hosts for ``HostKeyAlias=<device id>``, run ``playbooks/cloud.yml`` on their cloud hosts so
the gateways authorize the new keys, wait until their tunnels listen on the cloud hosts, then run
``site.yml --limit <those devices>,<their cloud hosts>,localhost``. A device counts as converged
when the run reached it without failure; the others are tried again by the next run. State (which
device was converged with which key, failures) is kept in ``<state-dir>/state.json``; the full
ansible output of each run in ``<state-dir>/runs/<time>-<pid>.log`` (the newest ``--keep-logs``). Log lines carry device ids,
counts and durations, never a token, a password or a key.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.reachability import listening_ports
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import read_snapshot

STATE_FORMAT = 'edgefleet.mysql_backup.converge_trigger'
KEY_RE = re.compile(r'^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}$')
RECAP_RE = re.compile(r'^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)


class Busy(Exception):
    """Another run holds the lock."""


def log(message):
    sys.stdout.write('edgefleet-converge-new: %s\n' % message)
    sys.stdout.flush()


# --------------------------------------------------------------------------- registry view

def host_public_key(dev):
    """The device's SSH host key as enrollment stored it (registry field or device var)."""
    for value in (dev.get('host_public_key'), (dev.get('vars') or {}).get('edgefleet_host_public_key')):
        if isinstance(value, str) and KEY_RE.match(' '.join(value.split()[:2])):
            return ' '.join(value.split()[:2])
    return None


def load_fleet(config_path):
    """(devices, cloud_hosts, allocations) from the fleet config's registry."""
    spec, policy, dummy = resolve(config_path)
    devices, clouds, state = read_snapshot(spec, policy['lock_timeout'])
    return devices, clouds, state.get('allocations') or {}


def pending(devices, clouds, allocations, state, reach=('tunnel',), now=None, retry_failed_after=300):
    """Devices to converge, in registry order: active, allocated on a known cloud host, with a
    tunnel key (enrolled), reached as ``reach`` says, and not converged yet with that key. A device that failed is
    tried again once ``retry_failed_after`` seconds have passed."""
    now = time.time() if now is None else now
    cloud_names = set(c['name'] for c in clouds)
    done = state.get('converged') or {}
    failed = state.get('failed') or {}
    out = []
    for dev in devices:
        rec = allocations.get(dev['id'])
        if dev.get('status') != 'active' or rec is None or rec.get('cloud_host') not in cloud_names:
            continue
        if not dev.get('ssh_public_key'):   # pre-registered, not enrolled yet: nothing to converge
            continue
        if (dev.get('reach') or 'auto') not in reach and not ('auto' in reach and not dev.get('address')):
            continue
        seen = done.get(dev['id'])
        if seen and seen.get('ssh_public_key') == (dev.get('ssh_public_key') or ''):
            continue
        fail = failed.get(dev['id'])
        if fail and now - fail.get('at', 0) < retry_failed_after:
            continue
        out.append({'id': dev['id'], 'cloud_host': rec['cloud_host'], 'tunnel_ssh_port': rec['tunnel_ssh_port'],
                    'ssh_public_key': dev.get('ssh_public_key') or '', 'host_public_key': host_public_key(dev)})
    return out


def known_hosts_text(devices, existing=''):
    """Pinned host keys for HostKeyAlias=<device id>: lines of other names are kept, the lines of
    these devices replaced."""
    ids = set(d['id'] for d in devices if d['host_public_key'])
    kept = [line for line in existing.splitlines() if line.strip() and line.split()[0] not in ids]
    return ''.join(line + '\n' for line in kept + ['%s %s' % (d['id'], d['host_public_key'])
                                                   for d in devices if d['host_public_key']])


def parse_recap(stdout):
    out = {}
    for match in RECAP_RE.finditer(stdout or ''):
        out[match.group(1)] = dict(ok=int(match.group(2)), changed=int(match.group(3)),
                                   unreachable=int(match.group(4)), failed=int(match.group(5)))
    return out


# --------------------------------------------------------------------------- files

def load_state(path):
    try:
        with open(path) as handle:
            doc = json.load(handle)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return {'format': STATE_FORMAT, 'converged': {}, 'failed': {}}
        raise
    doc.setdefault('converged', {})
    doc.setdefault('failed', {})
    return doc


def run_log(state_dir, keep):
    """A new log file under <state_dir>/runs for this run's ansible output; the oldest beyond
    ``keep`` are removed."""
    runs = os.path.join(state_dir, 'runs')
    os.makedirs(runs, mode=0o700, exist_ok=True)
    names = sorted(n for n in os.listdir(runs) if n.endswith('.log'))
    for name in names[:max(0, len(names) - keep + 1)]:
        os.unlink(os.path.join(runs, name))
    now = time.time()
    path = os.path.join(runs, '%s.%06d-%d.log' % (time.strftime('%Y%m%dT%H%M%S', time.gmtime(now)),
                                                  int(now % 1 * 1e6), os.getpid()))
    open(path, 'w').close()
    return path


@contextlib.contextmanager
def run_lock(path):
    handle = open(path, 'a')
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise Busy(path)
            raise
        yield
    finally:
        handle.close()


# --------------------------------------------------------------------------- ansible

class Runner(object):
    """ansible-playbook / ansible in the project directory; output appended to a log file."""

    def __init__(self, args, logfile):
        self.args = args
        self.logfile = logfile
        self.env = dict(os.environ)
        self.env.setdefault('ANSIBLE_FORCE_COLOR', '0')
        self.env['ANSIBLE_NOCOLOR'] = '1'

    def run(self, argv, timeout):
        started = time.time()
        try:
            proc = subprocess.run(argv, cwd=self.args.project_dir, env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            rc, out = -1, (exc.output or '') + '\n[timed out after %ss]\n' % timeout
        with open(self.logfile, 'a') as handle:
            handle.write('### %s (rc=%s, %.1f s)\n%s\n' % (' '.join(argv), rc, time.time() - started, out))
        return rc, out

    def playbook(self, playbook, limit):
        return self.run([self.args.ansible_playbook, '-i', self.args.inventory, playbook, '--limit', ','.join(limit)]
                        + self.args.extra_arg, self.args.playbook_timeout)

    def listening(self, clouds):
        """{cloud: set(ports)} from one ad-hoc `ss -Htln` per cloud host."""
        rc, out = self.run([self.args.ansible, '-i', self.args.inventory, ','.join(sorted(clouds)), '-o',
                            '-m', 'ansible.builtin.command', '-a', 'ss -Htln'], 120)
        found = {}
        for line in out.splitlines():
            match = re.match(r'^(\S+) \| (?:CHANGED|SUCCESS) \| rc=0 \| \(stdout\) (.*)$', line)
            if match:
                found[match.group(1)] = listening_ports(match.group(2).split('\\n'))
        return found


def wait_for_tunnels(runner, batch, timeout, interval=3.0):
    """Devices of batch whose SSH back-channel listens on their cloud host (polls until timeout)."""
    deadline = time.time() + timeout
    clouds = set(d['cloud_host'] for d in batch)
    while True:
        ports = runner.listening(clouds)
        online = [d for d in batch if d['tunnel_ssh_port'] in ports.get(d['cloud_host'], ())]
        if len(online) == len(batch) or time.time() >= deadline:
            return online
        time.sleep(interval)


# --------------------------------------------------------------------------- one run

def converge_once(args):
    os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
    state_path = os.path.join(args.state_dir, 'state.json')
    with run_lock(os.path.join(args.state_dir, 'lock')):
        state = load_state(state_path)
        config = os.path.join(args.project_dir, args.inventory)
        devices, clouds, allocations = load_fleet(config)
        todo = pending(devices, clouds, allocations, state, reach=tuple(args.reach.split(',')),
                       retry_failed_after=args.retry_failed_after)
        if not todo:
            if args.verbose:
                log('nothing new (%d devices in the registry)' % len(devices))
            return 0, []
        batch = todo[:args.max_devices]
        log('%d new device(s) to converge%s: %s' % (
            len(todo), ' (this run takes %d, --max-devices)' % len(batch) if len(batch) < len(todo) else '',
            ', '.join(d['id'] for d in batch)))
        if args.known_hosts:
            try:
                with open(args.known_hosts) as handle:
                    existing = handle.read()
            except (IOError, OSError):
                existing = ''
            atomic_write(args.known_hosts, known_hosts_text(batch, existing), 0o644)
            missing = [d['id'] for d in batch if not d['host_public_key']]
            if missing:
                log('no host key in the registry for %s: ssh will refuse them (StrictHostKeyChecking)'
                    % ', '.join(missing))
        logfile = run_log(args.state_dir, args.keep_logs)
        runner = Runner(args, logfile)
        clouds_of_batch = sorted(set(d['cloud_host'] for d in batch))
        started = time.time()
        phases = []
        if args.prepare_playbook:
            rc, out = runner.playbook(args.prepare_playbook, clouds_of_batch)
            phases.append('%s %.0f s' % (os.path.basename(args.prepare_playbook), time.time() - started))
            if rc != 0:
                log('%s failed on %s (rc=%s); see %s' % (args.prepare_playbook, ','.join(clouds_of_batch), rc, logfile))
                return 1, []
        mark = time.time()
        online = wait_for_tunnels(runner, batch, args.tunnel_wait)
        phases.append('tunnels %.0f s' % (time.time() - mark))
        offline = [d['id'] for d in batch if d not in online]
        if offline:
            log('tunnel not up yet after %ds: %s (tried again next run)' % (args.tunnel_wait, ', '.join(offline)))
        converged = []
        rc = 0
        if online:
            limit = [d['id'] for d in online] + sorted(set(d['cloud_host'] for d in online)) + ['localhost']
            mark = time.time()
            rc, out = runner.playbook(args.playbook, limit)
            phases.append('%s %.0f s' % (os.path.basename(args.playbook), time.time() - mark))
            recap = parse_recap(out)
            now = time.time()
            for dev in online:
                res = recap.get(dev['id'])
                if res and res['ok'] > 0 and not res['failed'] and not res['unreachable']:
                    converged.append(dev['id'])
                    state['converged'][dev['id']] = {'ssh_public_key': dev['ssh_public_key'], 'at': int(now)}
                    state['failed'].pop(dev['id'], None)
                else:
                    fail = state['failed'].setdefault(dev['id'], {'count': 0})
                    fail.update(count=fail['count'] + 1, at=int(now), rc=rc)
            state['format'] = STATE_FORMAT
            atomic_write(state_path, json.dumps(state, indent=1, sort_keys=True) + '\n', 0o600)
        failed = [d['id'] for d in online if d['id'] not in converged]
        log('converged %d of %d in %.0f s: %s%s (%s; %s rc=%s)' % (
            len(converged), len(batch), time.time() - started, ', '.join(converged) or '-',
            '; failed: %s' % ', '.join(failed) if failed else '', ', '.join(phases), args.playbook, rc))
        return (0 if not failed else 1), converged


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='edgefleet-converge-new', description=__doc__.split('\n\n', maxsplit=1)[0])
    p.add_argument('--project-dir', default=os.getcwd(), help='directory holding site.yml (the collection root)')
    p.add_argument('--inventory', required=True, help='fleet config (*.fleet.yml), relative to --project-dir or absolute')
    p.add_argument('--playbook', default='site.yml')
    p.add_argument('--prepare-playbook', default='playbooks/cloud.yml',
                   help='run on the cloud hosts first so they authorize the new tunnel keys ("" skips it)')
    p.add_argument('--state-dir', default='/var/lib/edgefleet-trigger')
    p.add_argument('--known-hosts', default='', help='known_hosts the inventory pins devices with (HostKeyAlias=<id>)')
    p.add_argument('--max-devices', type=int, default=20, help='cap on devices per run')
    p.add_argument('--reach', default='tunnel', help='comma list of registry reach values to pick up')
    p.add_argument('--tunnel-wait', type=int, default=60, help='seconds to wait for new tunnels to listen')
    p.add_argument('--retry-failed-after', type=int, default=300)
    p.add_argument('--playbook-timeout', type=int, default=3600)
    p.add_argument('--loop', type=float, default=0, help='keep running, one pass every N seconds')
    p.add_argument('--ansible-playbook', default='ansible-playbook')
    p.add_argument('--ansible', default='ansible')
    p.add_argument('--extra-arg', action='append', default=[], help='passed to ansible-playbook (repeatable)')
    p.add_argument('--keep-logs', type=int, default=20, help='run logs kept under <state-dir>/runs')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args(argv)
    if args.max_devices < 1:
        p.error('--max-devices must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    while True:
        try:
            rc, dummy = converge_once(args)
        except Busy:
            log('another run holds %s/lock; nothing to do' % args.state_dir)
            rc = 0
        except Exception as exc:  # a broken registry must not kill the --loop; the unit logs it
            log('run failed: %s: %s' % (type(exc).__name__, exc))
            rc = 1
        if not args.loop:
            return rc
        time.sleep(args.loop)


if __name__ == '__main__':
    raise SystemExit(main())
