# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-tunnel-guard: the cloud host's referee between a device's tunnel sessions.

It follows sshd's journal and enforces two rules for sessions of the tunnel account:

1. Newest session wins its ports. When a device's link is lost silently (NAT mapping changed,
   mobile network switched), the cloud's sshd keeps the old session, and its reverse-forward
   listeners, until its keep-alives give up (measured 69-88 s with ClientAliveInterval 10 x 3:
   OpenSSH 9.2 re-arms the keep-alive timer at every wake of the session's poll loop, so activity
   on the session's other descriptors stretches it). The device's new session then fails with
   "remote port forwarding failed". sshd logs that failure as "error: bind [127.0.0.1]:PORT:
   Address already in use"; the guard then ends the older tunnel session that holds PORT.
   sshd tries the bind only for a port the new session's key may listen on (permitlisten), and
   each port belongs to exactly one device key, so a session can only ever displace an older
   session of its own key: a stolen key harms only its own device.
2. At most `max_sessions` live sessions per key. "Accepted publickey for <tunnel user> ...
   SHA256:<fp>" names the key; a session beyond the cap is ended at once (the newest goes), so
   one key looping logins holds at most `max_sessions` sessions (2 sshd processes each).

Runs as root (reads other users' /proc/<pid>/fd and signals sshd children). Importable: the
parsing and decisions are plain functions, unit-tested without a journal.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

ACCEPTED_RE = re.compile(r'^Accepted publickey for (?P<user>\S+) from (?P<addr>\S+) port \d+ ssh2: '
                         r'\S+ (?P<fp>SHA256:[A-Za-z0-9+/=]+)')
BIND_RE = re.compile(r'^error: bind \[(?P<addr>[^\]]+)\]:(?P<port>\d+): Address already in use')
PERMITLISTEN_RE = re.compile(r'permitlisten="(?:127\.0\.0\.1|localhost):(\d+)"')
KEY_RE = re.compile(r'(?:^|\s)((?:ssh|ecdsa|sk)-[a-z0-9@.-]+)\s+([A-Za-z0-9+/=]+)')


def parse_event(message):
    """('accepted', user, fingerprint) | ('bind_in_use', address, port) | None."""
    match = ACCEPTED_RE.match(message or '')
    if match:
        return ('accepted', match.group('user'), match.group('fp'))
    match = BIND_RE.match(message or '')
    if match:
        return ('bind_in_use', match.group('addr'), int(match.group('port')))
    return None


def key_fingerprint(blob_b64):
    """OpenSSH's SHA256 fingerprint of a base64 public key blob."""
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return 'SHA256:' + base64.b64encode(digest).decode('ascii').rstrip('=')


def port_owners(text):
    """{port: fingerprint} from an authorized_keys text whose lines carry permitlisten options."""
    owners = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        ports = [int(port) for port in PERMITLISTEN_RE.findall(line)]
        blob = KEY_RE.search(line)
        if not ports or not blob:
            continue
        try:
            fingerprint = key_fingerprint(blob.group(2))
        except (ValueError, TypeError):
            continue
        for port in ports:
            owners[port] = fingerprint
    return owners


def alive(pid, proc_root='/proc'):
    return os.path.exists(os.path.join(proc_root, str(pid)))


class Guard(object):
    """The two rules over sshd's log events; processes are only looked up by pid in /proc (no
    ptrace access needed) and signalled through `kill` (injectable for tests)."""

    def __init__(self, tunnel_user, max_sessions, log, owners=dict, kill=os.kill, proc_root='/proc',
                 takeover_interval=2.0, act_after=0):
        self.tunnel_user = tunnel_user
        self.max_sessions = max_sessions
        self.log = log
        self.owners = owners            # callable: {port: fingerprint} of the authorized keys now
        self.kill = kill
        self.proc_root = proc_root
        self.takeover_interval = takeover_interval
        self.sessions = {}              # fingerprint -> {monitor pid: accepted at (journal usec)}
        self.last_takeover = {}         # port -> journal usec of the last takeover
        self.act_after = act_after      # bind failures logged before this (usec) are history only
        self.latest = {}                # fingerprint -> when its newest session logged in (usec)

    def _live(self, fingerprint):
        live = dict((pid, at) for pid, at in self.sessions.get(fingerprint, {}).items()
                    if alive(pid, self.proc_root))
        if live:
            self.sessions[fingerprint] = live
        else:
            self.sessions.pop(fingerprint, None)
        return live

    def on_accepted(self, pid, user, fingerprint, at):
        if user != self.tunnel_user:
            return None
        live = self._live(fingerprint)
        live[pid] = at
        self.sessions[fingerprint] = live
        self.latest[fingerprint] = max(at, self.latest.get(fingerprint, 0))
        if len(live) <= self.max_sessions:
            return None
        self._end(pid, 'session cap: key %s has %d live sessions (cap %d); ending the newest (sshd %d)'
                  % (fingerprint, len(live), self.max_sessions, pid))
        del live[pid]
        return pid

    def on_bind_in_use(self, address, port, at):
        """A session could not listen on `port`: end every older session of the key that owns it.

        sshd tries the bind only for a port the session's key may listen on, so the failing session
        is the newest one of that key (its login is the latest "Accepted" of the key)."""
        if address not in ('127.0.0.1', 'localhost') or at < self.act_after:
            return None
        fingerprint = self.owners().get(port)
        if fingerprint is None:
            return None
        if at - self.last_takeover.get(port, -1e18) < self.takeover_interval * 1e6:
            return None
        live = self._live(fingerprint)
        newest = self.latest.get(fingerprint, 0)
        ended = []
        for pid, accepted_at in sorted(live.items(), key=lambda item: item[1]):
            if accepted_at < newest:
                self._end(pid, 'port takeover: 127.0.0.1:%d is held by an older session of key %s '
                               '(sshd %d); its newest session wants it' % (port, fingerprint, pid))
                ended.append(pid)
                del self.sessions[fingerprint][pid]
        if ended:
            self.last_takeover[port] = at
        return ended

    def _end(self, pid, why):
        self.log(why)
        try:
            self.kill(pid, signal.SIGTERM)
        except OSError as exc:
            self.log('could not end sshd %d: %s' % (pid, exc))

    def handle(self, entry):
        """One journal entry (journalctl -o json): dispatch on its message."""
        event = parse_event(entry.get('MESSAGE'))
        if event is None:
            return None
        try:
            pid = int(entry.get('_PID'))
            at = int(entry.get('__REALTIME_TIMESTAMP'))
        except (TypeError, ValueError):
            return None
        if event[0] == 'accepted':
            return self.on_accepted(pid, event[1], event[2], at)
        return self.on_bind_in_use(event[1], event[2], at)


class AuthorizedKeys(object):
    """Port owners of the rendered authorized_keys file, re-read when it changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.owners = {}

    def __call__(self):
        try:
            stat = os.stat(self.path)
        except OSError:
            return {}
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime)
        if stamp != self.stamp:
            with open(self.path) as handle:
                self.owners = port_owners(handle.read())
            self.stamp = stamp
        return self.owners


def oldest_tunnel_session(user, proc_root='/proc'):
    """Seconds since the epoch when the oldest live "sshd: <user> [priv]" started, or None."""
    oldest = None
    for name in os.listdir(proc_root):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, name, 'cmdline'), 'rb') as handle:
                cmdline = handle.read().decode('utf-8', 'replace')
        except (IOError, OSError):
            continue
        if cmdline.startswith('sshd: %s [priv]' % user):
            started = os.stat(os.path.join(proc_root, name)).st_mtime
            oldest = started if oldest is None else min(oldest, started)
    return oldest


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog='edgefleet-tunnel-guard', description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--user', default='edgefleet-tunnel', help='the tunnel account')
    parser.add_argument('--authorized-keys', required=True, help="the tunnel account's authorized_keys file")
    parser.add_argument('--max-sessions', type=int, default=3, help='live sessions allowed per key')
    args = parser.parse_args(argv)
    if args.max_sessions < 1:
        parser.error('--max-sessions must be at least 1')

    def log(message):
        sys.stdout.write(message + '\n')
        sys.stdout.flush()

    guard = Guard(args.user, args.max_sessions, log, owners=AuthorizedKeys(args.authorized_keys),
                  act_after=int((time.time() - 5) * 1e6))
    # Sessions opened before this start are learnt from the journal since the oldest live one.
    command = ['journalctl', '--follow', '--output=json', '_COMM=sshd', '_COMM=sshd-session']
    oldest = oldest_tunnel_session(args.user)
    command.insert(1, '--since=@%d' % int(oldest - 5) if oldest else '--lines=0')
    log('following sshd for user %s, at most %d sessions per key' % (args.user, args.max_sessions))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, universal_newlines=True)

    def stop(signum, frame):  # pylint: disable=unused-argument
        # Reap journalctl before exiting: systemd in a container may never hear that a leftover
        # child ended and would wait out its stop timeout.
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    for line in proc.stdout:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry.get('MESSAGE'), str):
            guard.handle(entry)
    return proc.wait() or 1


if __name__ == '__main__':
    raise SystemExit(main())
