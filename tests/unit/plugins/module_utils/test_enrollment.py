# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Enrollment logic: key parsing, request validation, tokens, rate limits, and the enroll
transaction on a file registry (idempotent repeat, rotation, rollback leaves files untouched)."""

from __future__ import annotations

import base64
import os
import struct

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import enrollment as E
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import (
    normalize_policy, normalize_registry_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import update_device


def _string(data):
    return struct.pack('>I', len(data)) + data


def _line(ktype, *parts):
    blob = _string(ktype.encode()) + b''.join(_string(p) for p in parts)
    return '%s %s comment' % (ktype, base64.b64encode(blob).decode())


def ed25519(seed=1):
    return _line('ssh-ed25519', bytes([seed]) * 32)


def rsa(bits):
    n = (1 << (bits - 1)) | 1
    return _line('ssh-rsa', b'\x01\x00\x01', b'\x00' + n.to_bytes(bits // 8, 'big'))


def ecdsa256():
    return _line('ecdsa-sha2-nistp256', b'nistp256', b'\x04' + b'\x02' * 64)


@pytest.mark.parametrize('line', [ed25519(), rsa(3072), rsa(4096), ecdsa256()])
def test_accepted_keys_drop_the_comment(line):
    out = E.parse_public_key(line, 'tunnel_public_key')
    assert out == ' '.join(line.split()[:2])


@pytest.mark.parametrize('line,code,words', [
    (rsa(1024), 'weak_key', '1024 bits'),
    (rsa(2048), 'weak_key', '2048 bits'),
    ('ssh-dss AAAAB3NzaC1kc3MAAACBAP', 'weak_key', 'DSA'),
    (_line('sk-ssh-ed25519@openssh.com', b'x' * 32, b'ssh:'), 'weak_key', 'security-key'),
    ('hello', 'invalid_public_key', 'not an OpenSSH public key'),
    ('ssh-ed25519 @@@', 'invalid_public_key', 'not an OpenSSH public key'),
    (_line('ssh-ed25519', b'short'), 'invalid_public_key', '32 bytes'),
    ('ssh-ed25519 ' + ecdsa256().split()[1], 'invalid_public_key', 'the key blob says'),
    ('ssh-ed25519 AAAA', 'invalid_public_key', 'blob'),
    (_line('ecdsa-sha2-nistp256', b'nistp384', b'\x04' + b'\x02' * 64), 'invalid_public_key', 'malformed'),
    (None, 'invalid_public_key', 'must be a string'),
])
def test_refused_keys_name_the_field(line, code, words):
    with pytest.raises(E.EnrollError) as err:
        E.parse_public_key(line, 'host_public_key')
    assert err.value.code == code and err.value.status == 400
    assert words in err.value.message and 'host_public_key' in err.value.message


def _req(**over):
    doc = {'token': 'efe1.%s.%s' % ('a' * 12, 'b' * 43), 'device_id': 'dev1', 'site': 'berlin',
           'labels': {'hw': 'rpi4'}, 'tunnel_public_key': ed25519(1), 'host_public_key': ed25519(2)}
    doc.update(over)
    return dict((k, v) for k, v in doc.items() if v is not None)


def test_validate_request_normalizes():
    req = E.validate_request(_req())
    assert req['device_id'] == 'dev1' and req['labels'] == {'hw': 'rpi4'}
    assert req['tunnel_public_key'].count(' ') == 1


@pytest.mark.parametrize('over,code,words', [
    ({'device_id': 'Dev-1'}, 'invalid_device_id', 'field "device_id"'),
    ({'device_id': 'cloud_x'}, 'invalid_device_id', 'reserved'),
    ({'site': 'Ber lin'}, 'invalid_site', 'field "site"'),
    ({'labels': ['x']}, 'invalid_labels', 'field "labels"'),
    ({'labels': {'hw': 'a b'}}, 'invalid_labels', 'labels.hw'),
    ({'labels': dict(('k%d' % i, 'v') for i in range(40))}, 'invalid_labels', 'at most 32'),
    ({'token': None}, 'missing_field', 'token'),
    ({'token': 'x' * 300}, 'invalid_token', 'field "token"'),
    ({'extra': 1}, 'unknown_field', "'extra'"),
    ({'host_public_key': ed25519(1)}, 'invalid_public_key', 'same key'),
])
def test_validate_request_refuses(over, code, words):
    with pytest.raises(E.EnrollError) as err:
        E.validate_request(_req(**over))
    assert err.value.code == code and words in err.value.message


@pytest.mark.parametrize('data,status,code', [
    (b'', 400, 'empty_body'), (b'{', 400, 'malformed_json'), (b'[1]', 400, 'malformed_json'),
    (b'\xff\xfe', 400, 'invalid_encoding'), (b'{}' + b' ' * E.MAX_BODY, 413, 'body_too_large'),
])
def test_parse_body(data, status, code):
    with pytest.raises(E.EnrollError) as err:
        E.parse_body(data)
    assert (err.value.status, err.value.code) == (status, code)


def test_tokens_are_stored_hashed_and_compared_by_digest():
    token_id, token = E.new_token()
    assert E.TOKEN_RE.fullmatch(token) and token.split('.')[1] == token_id
    rec = E.make_token_record(token, max_uses=3, expires_in='2h', sites=['b', 'a'], labels={'hw': 'x'}, now=100.0)
    assert token not in repr(rec) and rec['hash'] == E.hash_secret(token)
    assert rec['sites'] == ['a', 'b'] and rec['expires_at'] == 100.0 + 7200
    assert E.secret_matches(rec['hash'], token)
    assert not E.secret_matches(rec['hash'], token[:-1] + 'x')
    assert not E.secret_matches(None, token)
    assert E.token_view(rec, now=101)['state'] == 'valid' and 'hash' not in E.token_view(rec)
    assert E.token_view(rec, now=100.0 + 7200)['state'] == 'expired'
    assert E.token_view(dict(rec, uses=3), now=101)['state'] == 'exhausted'
    assert E.token_view(dict(rec, revoked_at=101), now=101)['state'] == 'revoked'


@pytest.mark.parametrize('kwargs,words', [
    ({'max_uses': 0}, 'max_uses'), ({'max_uses': True}, 'max_uses'), ({'sites': ['Bad Site']}, 'site'),
    ({'device_id': 'X'}, 'id'), ({'expires_in': 'soon'}, 'duration'), ({'note': 'a\nb'}, 'note'),
])
def test_bad_token_settings(kwargs, words):
    with pytest.raises(FleetError, match=words):
        E.make_token_record(E.new_token()[1], **kwargs)


@pytest.mark.parametrize('text,seconds', [('90s', 90), ('30m', 1800), ('12h', 43200), ('7d', 604800),
                                          ('2w', 1209600), (5, 5), ('1.5h', 5400)])
def test_parse_duration(text, seconds):
    assert E.parse_duration(text) == seconds


def test_rate_limiter_per_client_then_global():
    now = [0.0]
    lim = E.RateLimiter(1, 2, 10, 3, clock=lambda: now[0])
    assert lim.check('a')[0] and lim.check('a')[0]
    allowed, scope, wait = lim.check('a')
    assert not allowed and scope == 'client' and 0 < wait <= 1
    assert lim.check('b')[0]
    allowed, scope, _wait = lim.check('c')
    assert not allowed and scope == 'global'
    assert lim.clients['c'][0] == 2.0  # a global refusal does not spend the client's allowance
    now[0] = 1.0
    assert lim.check('a')[0]


def test_operator_credential_check(tmp_path):
    reg = _file_registry(tmp_path)
    cred = E.create_operator(reg, 'ops')
    assert E.check_operator(reg, 'Bearer ' + cred)
    assert not E.check_operator(reg, 'Bearer ' + cred[:-1] + ('a' if cred[-1] != 'a' else 'b'))
    assert not E.check_operator(reg, cred) and not E.check_operator(reg, None)
    assert E.revoke_operator(reg, 'ops') and not E.check_operator(reg, 'Bearer ' + cred)
    state = open(E.state_path(reg)).read()
    assert cred not in state and oct(os.stat(E.state_path(reg)).st_mode & 0o777) == '0o600'


CONFIG = E.normalize_service_config({'cloud_hosts': {'c1': {'host_keys': [ed25519(9)], 'ssh_port': 2222}},
                                     'management_public_keys': [ed25519(8)]})


def _file_registry(tmp_path, clouds='  - {name: c1, address: 192.0.2.1}\n'):
    path = tmp_path / 'registry.yml'
    path.write_text('devices: []\ncloud_hosts:\n' + clouds)
    return open_registry(normalize_registry_spec({'type': 'file', 'path': str(path)}))


def _files(tmp_path):
    return dict((name, (tmp_path / name).read_bytes()) for name in sorted(os.listdir(str(tmp_path)))
                if not name.endswith('.lock'))


def test_enroll_repeat_rotation_and_refusals(tmp_path):
    reg = _file_registry(tmp_path)
    policy = normalize_policy({})
    token, _view = E.create_token(reg, max_uses=2, sites=['berlin'])
    req = E.validate_request(_req(token=token, site=None))
    status, outcome, _tid, first = E.enroll(reg, policy, CONFIG, req)
    assert (status, outcome) == (201, 'created')
    assert first['site'] == 'berlin' and first['cloud_ssh_port'] == 2222 and first['cloud_address'] == '192.0.2.1'
    assert first['management_public_keys'] == [' '.join(ed25519(8).split()[:2])]
    status, outcome, _tid, again = E.enroll(reg, policy, CONFIG, req)
    assert (status, outcome, again) == (200, 'repeated', first)
    assert E.list_tokens(reg)[0]['uses'] == 1
    with reg.transaction(write=False) as tx:
        devices = tx.load_registry()[0]
    assert devices[0]['reach'] == 'tunnel' and devices[0]['vars'][E.HOST_KEY_VAR] == req['host_public_key']
    assert E.known_hosts_text(devices) == 'dev1 %s\n' % req['host_public_key']
    other = dict(req, tunnel_public_key=' '.join(ed25519(5).split()[:2]))
    before = _files(tmp_path)
    with pytest.raises(E.EnrollError) as err:
        E.enroll(reg, policy, CONFIG, other)
    assert err.value.code == 'key_mismatch' and _files(tmp_path) == before
    E.allow_rotation(reg, 'dev1')
    status, outcome, _tid, rotated = E.enroll(reg, policy, CONFIG, other)
    assert (status, outcome) == (200, 'rotated') and rotated['tunnel_mysql_port'] == first['tunnel_mysql_port']
    before = _files(tmp_path)
    with pytest.raises(E.EnrollError) as err:
        E.enroll(reg, policy, CONFIG, dict(req, device_id='dev2'))
    assert err.value.code == 'token_exhausted' and _files(tmp_path) == before
    update_device(reg, 'dev1', {'status': 'disabled'})
    with pytest.raises(E.EnrollError) as err:
        E.enroll(reg, policy, CONFIG, other)
    assert err.value.code == 'device_disabled'


def test_enroll_rolls_back_every_file_when_the_cloud_host_is_not_configured(tmp_path):
    reg = _file_registry(tmp_path, clouds='  - {name: c2, address: 192.0.2.2}\n')
    token, _view = E.create_token(reg, max_uses=5)
    before = _files(tmp_path)
    with pytest.raises(E.EnrollError) as err:
        E.enroll(reg, normalize_policy({}), CONFIG, E.validate_request(_req(token=token)))
    assert err.value.code == 'cloud_host_not_configured' and err.value.status == 503
    assert _files(tmp_path) == before  # device row, allocation and token use all undone


def test_token_scope(tmp_path):
    reg = _file_registry(tmp_path)
    policy = normalize_policy({})
    token, _view = E.create_token(reg, max_uses=5, sites=['a', 'b'], labels={'hw': 'rpi4'}, device_id='dev1')
    cases = [(_req(token=token, site=None), 'missing_field'), (_req(token=token, site='c'), 'token_site_mismatch'),
             (_req(token=token, site='a', device_id='dev2'), 'token_device_mismatch'),
             (_req(token=token, site='a', labels={'hw': 'x86'}), 'token_label_mismatch')]
    for doc, code in cases:
        with pytest.raises(E.EnrollError) as err:
            E.enroll(reg, policy, CONFIG, E.validate_request(doc))
        assert err.value.code == code
    req = E.validate_request(_req(token=token, site='a', labels={}))
    status, _outcome, _tid, doc = E.enroll(reg, policy, CONFIG, req)
    assert status == 201 and doc['site'] == 'a'
    with reg.transaction(write=False) as tx:
        assert tx.load_registry()[0][0]['labels'] == {'hw': 'rpi4'}  # the token's label is applied


def test_claiming_a_device_registered_without_keys(tmp_path):
    """An operator registered the device (register.yml, allocated, no keys yet): enrollment claims it, 201,
    and its allocation stays where it was."""
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_allocation
    reg = _file_registry(tmp_path)
    policy = normalize_policy({})
    update_device(reg, 'other', {'site': 'berlin'})
    update_device(reg, 'dev1', {'site': 'berlin'})
    _result, allocations = run_allocation(reg, policy)
    token, _view = E.create_token(reg, max_uses=1)
    status, outcome, _tid, doc = E.enroll(reg, policy, CONFIG, E.validate_request(_req(token=token)))
    assert (status, outcome) == (201, 'claimed')
    assert doc['tunnel_mysql_port'] == allocations['dev1']['tunnel_mysql_port']
    assert doc['server_id'] == allocations['dev1']['server_id']


def test_no_capacity_is_a_503_and_writes_nothing(tmp_path):
    reg = _file_registry(tmp_path, clouds='  - {name: c1, address: 192.0.2.1, tunnel_ports: "20000-20001"}\n')
    policy = normalize_policy({})
    token, _view = E.create_token(reg, max_uses=5)
    assert E.enroll(reg, policy, CONFIG, E.validate_request(_req(token=token)))[0] == 201
    before = _files(tmp_path)
    other = _req(token=token, device_id='dev2', tunnel_public_key=ed25519(3), host_public_key=ed25519(4))
    with pytest.raises(E.EnrollError) as err:
        E.enroll(reg, policy, CONFIG, E.validate_request(other))
    assert (err.value.status, err.value.code) == (503, 'no_capacity') and 'dev2' in err.value.message
    assert _files(tmp_path) == before
