# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-converge-new: which devices a run picks, pinned host keys, recap parsing, the lock,
and one whole run against a real file registry with scripted ansible commands (the lab test
tests/live/test_enrollment_lab.py runs it against the real lab)."""

from __future__ import annotations

import json
import os
import stat
import textwrap

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import converge_trigger as trigger

HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILgbF2VaDdIMbvLkmD/1sBp590HMPdYmL3PIOBCNXPoY'
TUNNEL_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKE9OBKE0WyuFN93zHXzj12U7urru3dysirqfOMLgzk+'
CLOUDS = [{'name': 'cloud01'}]


def dev(dev_id, **over):
    base = {'id': dev_id, 'status': 'active', 'reach': 'tunnel', 'address': None, 'ssh_public_key': TUNNEL_KEY,
            'vars': {'edgefleet_host_public_key': HOST_KEY}}
    base.update(over)
    return base


def alloc(*ids):
    return dict((i, {'cloud_host': 'cloud01', 'tunnel_ssh_port': 20001 + 2 * n}) for n, i in enumerate(ids))


def test_pending_picks_enrolled_tunnel_devices_not_converged_with_their_key():
    devices = [dev('a'), dev('b', reach='address', address='10.0.0.1'), dev('c', status='retired'),
               dev('d', ssh_public_key=None), dev('e'), dev('f'), dev('g')]
    allocations = alloc('a', 'b', 'c', 'd', 'e', 'f')
    state = {'converged': {'e': {'ssh_public_key': TUNNEL_KEY}, 'f': {'ssh_public_key': 'ssh-ed25519 OLD'}},
             'failed': {}}
    out = trigger.pending(devices, CLOUDS, allocations, state)
    # b: reached by address; c: retired; d: pre-registered, no key yet; e: done; g: no allocation;
    # f: converged with an older key (rotation) -> again
    assert [d['id'] for d in out] == ['a', 'f']
    assert out[0]['host_public_key'] == HOST_KEY and out[0]['tunnel_ssh_port'] == 20001
    assert [d['id'] for d in trigger.pending(devices, [], allocations, state)] == []


def test_failed_devices_wait_before_the_next_try():
    state = {'converged': {}, 'failed': {'a': {'count': 1, 'at': 1000}}}
    assert trigger.pending([dev('a')], CLOUDS, alloc('a'), state, now=1100) == []
    assert len(trigger.pending([dev('a')], CLOUDS, alloc('a'), state, now=1400)) == 1


def test_known_hosts_pins_by_device_id_and_keeps_other_lines():
    batch = [{'id': 'a', 'host_public_key': HOST_KEY}, {'id': 'b', 'host_public_key': None}]
    text = trigger.known_hosts_text(batch, 'a ssh-ed25519 OLD\nz ssh-ed25519 ZZZ\n')
    assert text == 'z ssh-ed25519 ZZZ\na %s\n' % HOST_KEY
    assert trigger.host_public_key({'vars': {'edgefleet_host_public_key': 'command="x" nope'}}) is None


def test_parse_recap():
    out = textwrap.dedent("""\
        PLAY RECAP *********
        cloud01                    : ok=40   changed=3    unreachable=0    failed=0    skipped=9
        enr01                      : ok=25   changed=12   unreachable=0    failed=1    skipped=2
        """)
    assert trigger.parse_recap(out) == {'cloud01': dict(ok=40, changed=3, unreachable=0, failed=0),
                                        'enr01': dict(ok=25, changed=12, unreachable=0, failed=1)}


def test_second_run_does_not_overlap(tmp_path):
    with trigger.run_lock(str(tmp_path / 'lock')):
        with pytest.raises(trigger.Busy):
            with trigger.run_lock(str(tmp_path / 'lock')):
                pass
    with trigger.run_lock(str(tmp_path / 'lock')):
        pass


def fake(path, body):
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_one_run_converges_online_devices_and_remembers_them(tmp_path, capsys):
    """A real file registry; ansible commands are scripts that log their argv and answer."""
    (tmp_path / 'registry.yml').write_text(
        'devices:\n'
        '  - {id: enr01, status: active, reach: tunnel, ssh_public_key: "%s", vars: {edgefleet_host_public_key: "%s"}}\n'
        '  - {id: enr02, status: active, reach: tunnel, ssh_public_key: "%s"}\n'
        'cloud_hosts:\n  - {name: cloud01, address: 10.0.0.1}\n' % (TUNNEL_KEY, HOST_KEY, TUNNEL_KEY))
    (tmp_path / 'test.fleet.yml').write_text('plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: registry.yml}\n')
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_allocation
    spec, policy, dummy = resolve(str(tmp_path / 'test.fleet.yml'))
    run_allocation(open_registry(spec), policy)
    allocations = json.loads((tmp_path / 'registry.alloc.yml').read_text())['allocations']
    port1 = allocations['enr01']['tunnel_ssh_port']
    calls = tmp_path / 'calls'
    playbook = fake(tmp_path / 'ansible-playbook', 'echo "$@" >> %s\n'
                    'echo "enr01 : ok=20 changed=5 unreachable=0 failed=0 skipped=1"\n'
                    'echo "cloud01 : ok=9 changed=1 unreachable=0 failed=0 skipped=1"\n' % calls)
    adhoc = fake(tmp_path / 'ansible', 'echo "cloud01 | CHANGED | rc=0 | (stdout) LISTEN 0 128 127.0.0.1:%d 0.0.0.0:*"\n'
                 % port1)
    args = ['--project-dir', str(tmp_path), '--inventory', 'test.fleet.yml', '--state-dir', str(tmp_path / 'st'),
            '--known-hosts', str(tmp_path / 'known_hosts'), '--tunnel-wait', '0', '--ansible-playbook', playbook,
            '--ansible', adhoc]
    assert trigger.main(args) == 0
    lines = calls.read_text().splitlines()
    assert lines == ['-i test.fleet.yml playbooks/cloud.yml --limit cloud01',
                     '-i test.fleet.yml site.yml --limit enr01,cloud01,localhost']
    assert (tmp_path / 'known_hosts').read_text() == 'enr01 %s\n' % HOST_KEY
    state = json.loads((tmp_path / 'st' / 'state.json').read_text())
    assert list(state['converged']) == ['enr01']
    out = capsys.readouterr().out
    assert 'tunnel not up yet after 0s: enr02' in out and 'converged 1 of 2' in out
    assert TUNNEL_KEY.split()[1] not in out
    # next run: only enr02 is left (its tunnel is still down: no site.yml run)
    assert trigger.main(args) == 0
    assert calls.read_text().splitlines()[2:] == ['-i test.fleet.yml playbooks/cloud.yml --limit cloud01']
    logs = sorted(os.listdir(str(tmp_path / 'st' / 'runs')))
    assert len(logs) == 2 and 'site.yml --limit enr01,cloud01,localhost' in (tmp_path / 'st' / 'runs' / logs[0]).read_text()
