# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-device-enroll (plugins/module_utils/device_enroll.py) against a real HTTPS server on loopback.

A throwaway CA (openssl) signs a certificate for 127.0.0.1 / localhost; a stdlib HTTPS server
answers /v1/enroll as the API contract says. Checks: the happy path writes exactly what the
device_tunnel role writes (unit rendered from that role's own template, known_hosts, device.yml),
deletes the token and sends no private key; TLS is verified against the pinned CA only and the
hostname is checked; 5xx/429/offline are retried with back-off, 4xx stops (exit 78); the token
never appears in the program's output; a token file readable by others and plain HTTP are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import device_enroll as enroll

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TUNNEL_TEMPLATE = os.path.join(ROOT, 'roles', 'device_tunnel', 'templates', 'edgefleet-tunnel.service.j2')
KNOWN_HOSTS_TEMPLATE = os.path.join(ROOT, 'roles', 'device_tunnel', 'templates', 'known_hosts.j2')
TOKEN = 'efe1.abcdef123456.' + 'S3cr3t' * 6
CLOUD_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILgbF2VaDdIMbvLkmD/1sBp590HMPdYmL3PIOBCNXPoY'
MGMT_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKE9OBKE0WyuFN93zHXzj12U7urru3dysirqfOMLgzk+ ops@controller'

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None or shutil.which('ssh-keygen') is None,
                                reason='needs openssl and ssh-keygen')


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """CA, a server cert for 127.0.0.1/localhost, and a second CA the device does not trust."""
    d = tmp_path_factory.mktemp('pki')

    def run(*args):
        subprocess.run(['openssl'] + list(args), cwd=d, check=True, capture_output=True)
    for name in ('ca', 'other'):
        run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
            '-subj', '/CN=edgefleet test %s' % name, '-keyout', '%s.key' % name, '-out', '%s.pem' % name)
    (d / 'ext.cnf').write_text('subjectAltName=IP:127.0.0.1\n')
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=enroll',
        '-keyout', 'server.key', '-out', 'server.csr')
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
        '-days', '2', '-extfile', 'ext.cnf', '-out', 'server.pem')
    return d


class Api(object):
    """Answers /v1/enroll with a scripted list of (status, body, headers); records requests."""

    def __init__(self, pki):
        self.script = []
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get('Content-Length') or 0)
                api.requests.append((self.path, json.loads(self.rfile.read(length))))
                status, body, headers = api.script.pop(0) if api.script else (500, {'error': 'x'}, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = HTTPServer(('127.0.0.1', 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(pki / 'server.pem'), str(pki / 'server.key'))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(pki):
    server = Api(pki)
    yield server
    server.close()


def answer(device_id='kiosk7', **over):
    doc = {'device_id': device_id, 'site': 'berlin', 'cloud_host': 'cloud01', 'cloud_address': '10.231.0.201',
           'cloud_ssh_port': 22, 'cloud_host_keys': [CLOUD_KEY, 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ'],
           'tunnel_user': 'edgefleet-tunnel', 'tunnel_mysql_port': 20004, 'tunnel_ssh_port': 20005,
           'server_id': 1002, 'gtid_domain_id': 1002, 'replica_mode': 'instance',
           'management_public_keys': [MGMT_KEY]}
    doc.update(over)
    return doc


@pytest.fixture
def device(tmp_path, pki, api):
    """A device tree: config, 0600 token, CA, ssh host key; returns (config path, dirs)."""
    etc = tmp_path / 'etc' / 'edgefleet'
    ssh = tmp_path / 'etc' / 'ssh'
    for d in (etc, ssh, tmp_path / 'systemd', tmp_path / 'root'):
        d.mkdir(parents=True)
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(ssh / 'ssh_host_ed25519_key')],
                   check=True)
    shutil.copy(str(pki / 'ca.pem'), str(etc / 'enroll-ca.pem'))
    token = etc / 'enroll.token'
    token.write_text(TOKEN + '\n')
    token.chmod(0o600)
    shutil.copy(TUNNEL_TEMPLATE, str(tmp_path / 'tunnel.j2'))
    cfg = {'api_url': 'https://127.0.0.1:%d' % api.port, 'ca_cert': str(etc / 'enroll-ca.pem'),
           'token_file': str(token), 'device_id': 'kiosk7', 'site': 'berlin', 'labels': {'hw': 'rpi4'},
           'config_dir': str(etc), 'ssh_dir': str(ssh), 'systemd_dir': str(tmp_path / 'systemd'),
           'root_authorized_keys': str(tmp_path / 'root' / '.ssh' / 'authorized_keys'),
           'start_tunnel': False, 'retry_initial': 0.01, 'retry_max': 0.05, 'timeout': 5,
           'tunnel': {'template': str(tmp_path / 'tunnel.j2')}}
    path = tmp_path / 'enroll.json'
    path.write_text(json.dumps(cfg))
    return str(path), tmp_path


# --------------------------------------------------------------------------- the same files as device_tunnel

def jinja_render(path, values):
    jinja2 = pytest.importorskip('jinja2')
    # the template module's defaults: trim_blocks, trailing newline kept
    env = jinja2.Environment(keep_trailing_newline=True, trim_blocks=True, undefined=jinja2.StrictUndefined)
    with open(path) as handle:
        return env.from_string(handle.read()).render(**values)


def test_unit_rendered_by_the_program_equals_the_role_template():
    cfg = enroll.load_config.__globals__['CONFIG_DEFAULTS'].copy()
    cfg['tunnel'] = dict(enroll.TUNNEL_DEFAULTS)
    values = enroll.tunnel_values(cfg, 'kiosk7', answer())
    with open(TUNNEL_TEMPLATE) as handle:
        ours = enroll.render_template(handle.read(), values)
    assert ours == jinja_render(TUNNEL_TEMPLATE, values)
    assert 'IdentityFile=/etc/edgefleet/tunnel_ed25519' in ours and '-R 127.0.0.1:20004:127.0.0.1:3306' in ours


def test_known_hosts_and_identity_match_the_role():
    cfg = {'ansible_managed': 'Ansible managed'}
    for port in (22, 2222):
        expected = jinja_render(KNOWN_HOSTS_TEMPLATE, {
            'ansible_managed': 'Ansible managed', 'device_tunnel_pinned_keys': [CLOUD_KEY],
            'device_tunnel_cloud_address': '10.231.0.201', 'device_tunnel_cloud_port': port})
        assert enroll.known_hosts_text(cfg, '10.231.0.201', port, [CLOUD_KEY, 'ssh-rsa AAAA']) == expected
    yaml = pytest.importorskip('yaml')
    for site in ('lab', '', 'yes', 'on', 'null', '2024', '09', '0x1f', '0b101', '1_000', '007', '1e3', 'a_b', '_x'):
        nice = yaml.dump({'id': 'kiosk7', 'name': 'kiosk7', 'site': site}, default_flow_style=False,
                         allow_unicode=True, indent=2, sort_keys=True)
        assert enroll.device_yml_text('kiosk7', site) == '# Managed by edgefleet.mysql_backup\n' + nice


def test_template_with_unknown_jinja_is_refused():
    with pytest.raises(enroll.Permanent):
        enroll.render_template('{{ x | upper }}', {'x': 1})
    with pytest.raises(enroll.Permanent):
        enroll.render_template('{% if x %}y{% endif %}', {'x': 1})
    with pytest.raises(enroll.Permanent):
        enroll.render_template('{{ nope }}', {})


# --------------------------------------------------------------------------- enrollment over real TLS

def test_enrolls_writes_the_tunnel_files_and_deletes_the_token(device, api, capsys):
    path, tree = device
    api.script = [(201, answer(), {})]
    assert enroll.main(['--config', path]) == 0
    (url, body), = api.requests
    assert url == '/v1/enroll' and body['token'] == TOKEN and body['device_id'] == 'kiosk7'
    assert body['labels'] == {'hw': 'rpi4'} and body['site'] == 'berlin'
    assert body['tunnel_public_key'].startswith('ssh-ed25519 ') and body['host_public_key'].startswith('ssh-ed25519 ')
    assert 'PRIVATE' not in json.dumps(body)
    etc = tree / 'etc' / 'edgefleet'
    assert (etc / 'device.yml').read_text() == '# Managed by edgefleet.mysql_backup\nid: kiosk7\nname: kiosk7\nsite: berlin\n'
    assert (etc / 'known_hosts').read_text() == '# Ansible managed\n10.231.0.201 %s\n' % CLOUD_KEY
    assert oct((etc / 'tunnel_ed25519').stat().st_mode & 0o777) == '0o600'
    assert (etc / 'tunnel_ed25519.pub').read_text().split()[:2] == body['tunnel_public_key'].split()
    assert not (etc / 'enroll.token').exists()
    unit = (tree / 'systemd' / 'edgefleet-tunnel.service').read_text()
    assert '-R 127.0.0.1:20005:127.0.0.1:22' in unit and 'edgefleet-tunnel@10.231.0.201' in unit
    assert (tree / 'root' / '.ssh' / 'authorized_keys').read_text() == MGMT_KEY + '\n'
    record = json.loads((etc / 'enrollment.json').read_text())
    assert record['tunnel_ssh_port'] == 20005 and TOKEN not in json.dumps(record)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and 'enrolled as kiosk7' in out.err
    # enrolled: a second start does nothing and contacts nobody
    assert enroll.main(['--config', path]) == 0 and len(api.requests) == 1


def test_retries_offline_5xx_and_429_then_enrolls(device, api, capsys):
    path, dummy = device
    api.script = [(503, {'error': 'unavailable', 'message': 'db down'}, {}),
                  (429, {'error': 'rate_limited', 'message': 'slow down'}, {'Retry-After': '0'}),
                  (201, answer(), {})]
    assert enroll.main(['--config', path]) == 0
    assert len(api.requests) == 3
    err = capsys.readouterr().err
    assert 'attempt 1: server answered 503' in err and 'attempt 2: server answered 429' in err


def test_backoff_is_exponential_with_jitter_and_capped():
    cfg = {'retry_initial': 2.0, 'retry_max': 60.0, 'max_attempts': 8}
    delays = []
    calls = {'n': 0}

    def fail(dummy_cfg, dummy_body):
        calls['n'] += 1
        raise enroll.Temporary('offline')
    original = enroll.post_enroll
    enroll.post_enroll = fail
    try:
        with pytest.raises(enroll.Temporary):
            enroll.enroll_with_retries(cfg, {}, sleep=delays.append, rand=lambda: 1.0)
        lows = []
        with pytest.raises(enroll.Temporary):
            enroll.enroll_with_retries(cfg, {}, sleep=lows.append, rand=lambda: 0.0)
    finally:
        enroll.post_enroll = original
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    assert lows == [d / 2 for d in delays]


def test_offline_api_is_retried(device, capsys):
    path, dummy = device
    cfg = json.loads(open(path).read())
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    cfg.update(api_url='https://127.0.0.1:%d' % port, max_attempts=3)
    open(path, 'w').write(json.dumps(cfg))
    assert enroll.main(['--config', path]) == enroll.EX_TEMPORARY
    err = capsys.readouterr().err
    assert err.count('cannot reach') >= 3 and TOKEN not in err


@pytest.mark.parametrize('status,code', [(401, 'token_revoked'), (403, 'token_site_mismatch'),
                                         (409, 'key_mismatch'), (400, 'invalid_device_id')])
def test_permanent_refusal_stops_with_exit_78(device, api, capsys, status, code):
    path, tree = device
    api.script = [(status, {'error': code, 'message': 'field "token": nope'}, {})]
    assert enroll.main(['--config', path]) == enroll.EX_PERMANENT
    assert len(api.requests) == 1
    err = capsys.readouterr().err
    assert 'HTTP %d %s' % (status, code) in err and 'Not retrying' in err and TOKEN not in err
    assert not (tree / 'etc' / 'edgefleet' / 'device.yml').exists()
    assert (tree / 'etc' / 'edgefleet' / 'enroll.token').exists()


def test_untrusted_ca_is_never_accepted(device, api, pki, capsys):
    path, tree = device
    shutil.copy(str(pki / 'other.pem'), str(tree / 'etc' / 'edgefleet' / 'enroll-ca.pem'))
    cfg = json.loads(open(path).read())
    cfg['max_attempts'] = 2
    open(path, 'w').write(json.dumps(cfg))
    api.script = [(201, answer(), {})] * 2
    assert enroll.main(['--config', path]) == enroll.EX_TEMPORARY
    assert api.requests == []      # the token was never sent
    assert 'TLS verification of 127.0.0.1 failed' in capsys.readouterr().err


def test_hostname_is_verified(device, api, capsys):
    path, dummy = device
    cfg = json.loads(open(path).read())
    cfg.update(api_url='https://localhost:%d' % api.port, max_attempts=1)
    open(path, 'w').write(json.dumps(cfg))
    # localhost reaches the same loopback server, but the certificate names only IP 127.0.0.1
    assert enroll.main(['--config', path]) == enroll.EX_TEMPORARY
    assert api.requests == []
    assert "Hostname mismatch" in capsys.readouterr().err


def test_plain_http_and_loose_token_file_are_refused(device, capsys):
    path, tree = device
    cfg = json.loads(open(path).read())
    open(path, 'w').write(json.dumps(dict(cfg, api_url='http://127.0.0.1:1')))
    assert enroll.main(['--config', path]) == enroll.EX_PERMANENT
    assert 'must be an https:// URL' in capsys.readouterr().err
    open(path, 'w').write(json.dumps(cfg))
    os.chmod(cfg['token_file'], 0o644)
    assert enroll.main(['--config', path]) == enroll.EX_PERMANENT
    assert 'readable by others' in capsys.readouterr().err


def test_answer_for_another_device_or_with_bad_keys_is_refused(device, api):
    path, tree = device
    api.script = [(200, answer(device_id='other'), {}), (200, answer(cloud_host_keys=['not a key']), {}),
                  (200, answer(management_public_keys=['ssh-ed25519 AAAA\ncommand="x" ssh-ed25519 AAAA']), {})]
    for dummy in range(3):
        assert enroll.main(['--config', path]) == enroll.EX_PERMANENT
    assert not (tree / 'etc' / 'edgefleet' / 'device.yml').exists()
    assert not (tree / 'root' / '.ssh' / 'authorized_keys').exists()


def test_no_insecure_tls_anywhere_in_the_program():
    with open(enroll.__file__) as handle:
        text = handle.read()
    for bad in ('CERT_NONE', 'check_hostname = False', '_create_unverified_context', 'verify=False'):
        assert bad not in text
