# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The placement request's signature: canonical message, armor check, ssh-keygen sign/verify
(real ssh-keygen), and the service-side decision of enrollment.placement on a file registry."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import enrollment, placement_signature as ps
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import registry_ops
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy, normalize_registry_spec,
)

pytestmark = pytest.mark.skipif(shutil.which('ssh-keygen') is None, reason='needs ssh-keygen')


@pytest.fixture
def key(tmp_path):
    path = str(tmp_path / 'k')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', path], check=True)
    with open(path + '.pub') as handle:
        return path, ' '.join(handle.read().split()[:2])


def test_message_is_canonical():
    assert ps.message('kiosk1', 1700000000) == b'edgefleet-placement-v1\nkiosk1\n1700000000\n'
    for bad in (('Kiosk', 1), ('k\n1', 1), ('kiosk1', '1'), ('kiosk1', True), ('kiosk1', 1.5)):
        with pytest.raises(ValueError):
            ps.message(*bad)


def test_sign_and_verify_round_trip(key):
    path, pub = key
    sig = ps.sign(path, 'kiosk1', 1000)
    assert ps.well_formed(sig)
    assert ps.verify(pub, 'kiosk1', 1000, sig)
    assert not ps.verify(pub, 'kiosk1', 1001, sig)      # another timestamp
    assert not ps.verify(pub, 'kiosk2', 1000, sig)      # another id
    other = ps.sign(path, 'kiosk1', 1000).replace('A', 'B', 1)
    assert not ps.verify(pub, 'kiosk1', 1000, other)


def test_other_namespace_and_key_are_refused(key, tmp_path):
    path, pub = key
    proc = subprocess.run(['ssh-keygen', '-q', '-Y', 'sign', '-f', path, '-n', 'file'],
                          input=ps.message('kiosk1', 5), capture_output=True, check=True)
    assert not ps.verify(pub, 'kiosk1', 5, proc.stdout.decode())
    other = str(tmp_path / 'o')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', other], check=True)
    assert not ps.verify(pub, 'kiosk1', 5, ps.sign(other, 'kiosk1', 5))


@pytest.mark.parametrize('bad', [None, 1, '', 'x' * 5000, '-----BEGIN SSH SIGNATURE-----\n!!\n-----END SSH SIGNATURE-----\n',
                                 '-----BEGIN SSH SIGNATURE-----\nQUJD\n-----END SSH SIGNATURE-----\n'])
def test_malformed_signatures(bad):
    assert not ps.well_formed(bad)


def test_verify_refuses_odd_keys_and_ids_without_running_anything(key):
    path, pub = key
    sig = ps.sign(path, 'kiosk1', 7)
    assert not ps.verify('ssh-ed25519 AAAA x" evil', 'kiosk1', 7, sig)
    assert not ps.verify(pub, 'kiosk1 *', 7, sig)


def test_sign_with_a_missing_key_fails_clearly(tmp_path):
    with pytest.raises(ps.SignatureError, match='ssh-keygen -Y sign'):
        ps.sign(str(tmp_path / 'none'), 'kiosk1', 1)


@pytest.fixture
def registry(tmp_path, key):
    path = tmp_path / 'registry.yml'
    path.write_text('devices: []\ncloud_hosts: []\n')
    reg = open_registry(normalize_registry_spec({'type': 'file', 'path': str(path)}, str(tmp_path)))
    registry_ops.update_cloud_host(reg, 'cloud01', {'address': '192.0.2.10', 'tunnel_ports': '20000-20099'})
    registry_ops.update_device(reg, 'kiosk1', {'site': 'berlin', 'reach': 'tunnel', 'ssh_public_key': key[1]})
    registry_ops.run_allocation(reg, normalize_policy({'tunnel_ports': '20000-29999'}))
    return reg


CONFIG = {'cloud_hosts': {'cloud01': {'address': None, 'ssh_port': 22,
                                      'host_keys': ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILgbF2VaDdIMbvLkmD/1sBp590HMPdYmL3PIOBCNXPoY']}},
          'management_public_keys': [], 'tunnel_user': 'edgefleet-tunnel'}


def req(path, dev='kiosk1', stamp=None):
    stamp = int(time.time()) if stamp is None else stamp
    return {'device_id': dev, 'timestamp': stamp, 'signature': ps.sign(path, dev, stamp)}


def test_placement_answers_with_the_registry_address_and_spends_the_device_allowance(registry, key):
    charged = []
    doc = enrollment.placement(registry, CONFIG, req(key[0]), charge=lambda d: (charged.append(d) or (True, 0)))
    assert doc['cloud_host'] == 'cloud01' and doc['cloud_address'] == '192.0.2.10' and charged == ['kiosk1']


def test_clock_skew_is_checked_before_anything_is_looked_up(registry, key):
    calls = []
    with pytest.raises(enrollment.EnrollError) as err:
        enrollment.placement(registry, CONFIG, req(key[0], stamp=int(time.time()) - 400),
                             verify=lambda *a: calls.append(a))
    assert err.value.code == 'clock_skew' and calls == []


def test_refusals_verify_once_and_never_charge(registry, key, tmp_path):
    other = str(tmp_path / 'o')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', other], check=True)
    registry_ops.update_device(registry, 'kiosk2', {'site': 'berlin', 'status': 'retired', 'ssh_public_key': key[1]})
    for request in (req(other, 'kiosk9'), req(other), req(key[0], 'kiosk2')):
        verified = []

        def verify(*args):
            verified.append(args)
            return ps.verify(*args)
        with pytest.raises(enrollment.EnrollError) as err:
            enrollment.placement(registry, CONFIG, request, verify=verify,
                                 charge=lambda d: pytest.fail('a refused request spent an allowance'))
        assert (err.value.status, err.value.code, err.value.message) == (403, 'not_authorized',
                                                                         enrollment.NOT_AUTHORIZED)
        assert len(verified) == 1


def test_over_the_device_allowance(registry, key):
    with pytest.raises(enrollment.PlacementRateLimited) as err:
        enrollment.placement(registry, CONFIG, req(key[0]), charge=lambda d: (False, 42.2))
    assert err.value.status == 429 and err.value.retry_after == 42.2
