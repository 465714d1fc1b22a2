# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-device-enroll --refresh: when the device asks for its placement (decide_refresh, pure)
and what an answer rewrites (apply_placement on a device tree; no systemd: start_tunnel off).
The program against the real service: tests/live/test_placement_live.py."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import device_enroll as enroll

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TUNNEL_TEMPLATE = os.path.join(ROOT, 'roles', 'device_tunnel', 'templates', 'edgefleet-tunnel.service.j2')
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILgbF2VaDdIMbvLkmD/1sBp590HMPdYmL3PIOBCNXPoY'
DAY = 86400.0
UP = {'active': 'active', 'invocation': 'a1', 'main_pid': '100', 'children': ['101:5000']}


def test_unit_not_active_asks():
    for state in ('inactive', 'failed', 'activating', None):
        ask, reason = enroll.decide_refresh(dict(UP, active=state), {'observed': UP}, 1000.0, DAY)
        assert ask and 'tunnel unit is' in reason


def test_no_ssh_process_asks():
    ask, reason = enroll.decide_refresh(dict(UP, children=[]), {'observed': UP}, 1000.0, DAY)
    assert ask and 'no ssh process' in reason


@pytest.mark.parametrize('change', [{'children': ['102:5100']}, {'invocation': 'b2'}, {'main_pid': '200'},
                                    {'children': ['101:5000', '103:5200']}])
def test_reconnected_or_restarted_since_the_last_check_asks(change):
    ask, reason = enroll.decide_refresh(dict(UP, **change), {'observed': UP, 'last_ok_at': 990.0}, 1000.0, DAY)
    assert ask and 'since the last check' in reason


def test_a_steady_tunnel_does_not_ask_until_the_last_ask_is_a_day_old():
    state = {'observed': dict(UP), 'last_ok_at': 1000.0, 'first_seen_at': 10.0}
    assert enroll.decide_refresh(UP, state, 1000.0 + DAY - 1, DAY)[0] is False
    ask, reason = enroll.decide_refresh(UP, state, 1000.0 + DAY, DAY)
    assert ask and 'last placement check was 86400 s ago' in reason


def test_first_check_records_and_never_asked_devices_age_from_their_first_check():
    ask, reason = enroll.decide_refresh(UP, {'first_seen_at': 500.0}, 600.0, DAY)
    assert not ask and reason.startswith('first check')
    assert enroll.decide_refresh(UP, {'observed': UP, 'first_seen_at': 500.0}, 500.0 + DAY, DAY)[0]


def test_list_and_tuple_children_compare_equal():
    # the state file holds JSON lists; the observation may hold tuples
    saved = json.loads(json.dumps({'observed': UP, 'last_ok_at': 999.0}))
    assert enroll.decide_refresh(dict(UP, children=('101:5000',)), saved, 1000.0, DAY)[0] is False


@pytest.fixture
def tree(tmp_path):
    etc = tmp_path / 'etc'
    units = tmp_path / 'systemd'
    etc.mkdir()
    units.mkdir()
    shutil.copy(TUNNEL_TEMPLATE, str(tmp_path / 'tunnel.j2'))
    cfg = dict(enroll.CONFIG_DEFAULTS, api_url='https://enroll.example', config_dir=str(etc), systemd_dir=str(units),
               start_tunnel=False, tunnel=dict(enroll.TUNNEL_DEFAULTS, template=str(tmp_path / 'tunnel.j2')))
    return cfg, tmp_path


def answer(**over):
    doc = {'device_id': 'kiosk7', 'site': 'berlin', 'cloud_host': 'cloud01', 'cloud_address': '10.231.0.201',
           'cloud_ssh_port': 22, 'cloud_host_keys': [KEY], 'tunnel_user': 'edgefleet-tunnel',
           'tunnel_mysql_port': 20004, 'tunnel_ssh_port': 20005, 'server_id': 1002, 'gtid_domain_id': 1002,
           'replica_mode': 'instance', 'management_public_keys': []}
    doc.update(over)
    return doc


def stamps(path):
    return dict((str(p), (p.stat().st_ino, p.stat().st_mtime_ns)) for p in sorted(path.rglob('*')) if p.is_file())


def test_apply_placement_writes_what_differs_and_nothing_else(tree):
    cfg, tmp = tree
    first = enroll.apply_placement(cfg, 'kiosk7', answer(), [KEY], 'berlin')
    assert sorted(os.path.basename(p) for p in first) == ['device.yml', 'edgefleet-tunnel.service',
                                                          'enrollment.json', 'known_hosts']
    before = stamps(tmp)
    assert enroll.apply_placement(cfg, 'kiosk7', answer(), [KEY], 'berlin') == []
    assert stamps(tmp) == before
    moved = enroll.apply_placement(cfg, 'kiosk7', answer(cloud_host='cloud02', cloud_address='10.231.0.202',
                                                         tunnel_mysql_port=21000, tunnel_ssh_port=21001),
                                   [KEY], 'berlin')
    assert sorted(os.path.basename(p) for p in moved) == ['edgefleet-tunnel.service', 'enrollment.json',
                                                          'known_hosts']
    unit = (tmp / 'systemd' / 'edgefleet-tunnel.service').read_text()
    assert '-R 127.0.0.1:21000:127.0.0.1:3306' in unit and 'edgefleet-tunnel@10.231.0.202' in unit
    assert (tmp / 'etc' / 'known_hosts').read_text() == '# Ansible managed\n10.231.0.202 %s\n' % KEY
    record = json.loads((tmp / 'etc' / 'enrollment.json').read_text())
    assert record['cloud_host'] == 'cloud02' and oct((tmp / 'etc' / 'enrollment.json').stat().st_mode & 0o777) == '0o600'


def test_refresh_of_a_device_that_has_not_enrolled_asks_nobody(tree, capsys):
    cfg, dummy = tree
    assert enroll.refresh(cfg, force=True) == 0
    assert 'not enrolled yet' in capsys.readouterr().err
