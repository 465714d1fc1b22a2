# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tunnel guard's rules over sshd log events and a fake /proc (pure logic; the lab fault and
security tests use real sshd sessions)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import signal

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.tunnel_guard import (
    Guard, key_fingerprint, parse_event, port_owners,
)

BLOB = base64.b64encode(b'\x00\x00\x00\x0bssh-ed25519' + b'\x01' * 36).decode()
FP = 'SHA256:' + base64.b64encode(hashlib.sha256(base64.b64decode(BLOB)).digest()).decode().rstrip('=')
KEYS = ('# managed\n'
        'restrict,port-forwarding,permitlisten="127.0.0.1:20000",permitlisten="127.0.0.1:20001",'
        'command="/usr/sbin/nologin" ssh-ed25519 %s device01\n' % BLOB)


class Recorder(object):
    def __init__(self):
        self.killed, self.lines = [], []

    def kill(self, pid, sig):
        assert sig == signal.SIGTERM
        self.killed.append(pid)

    def log(self, line):
        self.lines.append(line)


def make_guard(tmp_path, live, act_after=0):
    root = tmp_path / 'proc'
    for pid in live:
        (root / str(pid)).mkdir(parents=True)
    rec = Recorder()
    return Guard('edgefleet-tunnel', 2, rec.log, owners=lambda: port_owners(KEYS), kill=rec.kill,
                 proc_root=str(root), act_after=act_after), rec


def accepted(pid, at, fp=FP, user='edgefleet-tunnel'):
    return {'MESSAGE': 'Accepted publickey for %s from 10.0.0.5 port 4242 ssh2: ED25519 %s' % (user, fp),
            '_PID': str(pid), '__REALTIME_TIMESTAMP': str(at)}


def bind_failed(pid, at, port=20000):
    return {'MESSAGE': 'error: bind [127.0.0.1]:%d: Address already in use' % port, '_PID': str(pid),
            '__REALTIME_TIMESTAMP': str(at)}


def test_parse_events_and_fingerprints():
    assert parse_event(accepted(1, 1)['MESSAGE']) == ('accepted', 'edgefleet-tunnel', FP)
    assert parse_event('error: bind [127.0.0.1]:20000: Address already in use') == ('bind_in_use', '127.0.0.1', 20000)
    assert parse_event('Accepted password for root from 1.2.3.4 port 1 ssh2') is None
    assert parse_event(None) is None
    assert key_fingerprint(BLOB) == FP
    assert port_owners(KEYS) == {20000: FP, 20001: FP}


def test_newest_session_takes_the_port_from_the_stale_one(tmp_path):
    guard, rec = make_guard(tmp_path, live=[10])     # 10: stale holder; 20 already exited
    guard.handle(accepted(10, 1000))
    guard.handle(accepted(20, 5000))
    assert guard.handle(bind_failed(21, 5001)) == [10]
    assert rec.killed == [10] and 'port takeover' in rec.lines[0]


def test_only_sessions_of_the_port_owner_are_touched(tmp_path):
    guard, rec = make_guard(tmp_path, live=[10, 11])
    guard.handle(accepted(10, 1000, fp='SHA256:other'))   # another device's session
    guard.handle(accepted(11, 1000, user='root'))          # root is never counted
    guard.handle(accepted(20, 5000))
    assert guard.handle(bind_failed(21, 5001)) == []
    assert guard.handle(bind_failed(21, 5001, port=29999)) is None   # a port nobody owns
    assert rec.killed == []


def test_history_and_repeats_do_not_act(tmp_path):
    guard, rec = make_guard(tmp_path, live=[10, 30], act_after=4000)
    guard.handle(accepted(10, 1000))
    guard.handle(accepted(20, 2000))
    assert guard.handle(bind_failed(21, 2001)) is None            # logged before the guard started
    guard.handle(accepted(30, 6000))
    assert guard.handle(bind_failed(31, 6001)) == [10]
    assert guard.handle(bind_failed(31, 6002)) is None            # rate limit per port
    assert rec.killed == [10]


def test_sessions_beyond_the_cap_are_ended_newest_first(tmp_path):
    guard, rec = make_guard(tmp_path, live=[31, 32, 33, 41])
    assert guard.handle(accepted(31, 1)) is None
    assert guard.handle(accepted(32, 2)) is None
    assert guard.handle(accepted(41, 3, fp='SHA256:other')) is None
    assert guard.handle(accepted(33, 4)) == 33
    assert rec.killed == [33] and 'session cap' in rec.lines[0]


def test_ended_sessions_free_their_slot(tmp_path):
    guard, rec = make_guard(tmp_path, live=[32, 33])
    guard.handle(accepted(31, 1))       # already gone
    guard.handle(accepted(32, 2))
    assert guard.handle(accepted(33, 3)) is None
    assert rec.killed == []
