# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The signed placement request: what a device signs with its tunnel key and how the service checks it.

A device asks the enrollment service for its current placement (``POST /v1/placement``) with
``{device_id, timestamp, signature}``. ``signature`` is an OpenSSH signature (``ssh-keygen -Y
sign -n edgefleet-placement``) of :func:`message` made with the device's tunnel private key; the
service verifies it with ``ssh-keygen -Y verify`` against the tunnel public key the registry
holds for that id, through an allowed-signers file in a private temporary directory. The
namespace keeps such a signature from being valid for anything else signed with the same key.

Standard library only: the device program (``device_enroll.py``) and the service
(``enrollment.py``) both import this module, and ``ssh-keygen`` (openssh-client) does the
cryptography on both sides.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import subprocess
import tempfile

NAMESPACE = 'edgefleet-placement'
VERSION_LINE = 'edgefleet-placement-v1'
MAX_SKEW = 300
MAX_SIGNATURE = 4096
SSHSIG_MAGIC = b'SSHSIG'
ARMOR_RE = re.compile(r'^-----BEGIN SSH SIGNATURE-----\n([A-Za-z0-9+/=\n]{1,4000})\n-----END SSH SIGNATURE-----\n?$')
PRINCIPAL_RE = re.compile(r'^[a-z][a-z0-9_]{0,31}$')
KEY_LINE_RE = re.compile(r'^[a-z0-9-]{1,64} [A-Za-z0-9+/]+={0,3}$')
TIMEOUT = 10


class SignatureError(Exception):
    """The signature could not be made (device side)."""


def message(device_id, timestamp):
    """The canonical bytes a device signs: version line, device id, timestamp (seconds)."""
    if not PRINCIPAL_RE.fullmatch(str(device_id)):
        raise ValueError('device id %r is not valid' % (device_id,))
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise ValueError('timestamp must be an integer')
    return ('%s\n%s\n%d\n' % (VERSION_LINE, device_id, timestamp)).encode('ascii')


def well_formed(signature):
    """True when ``signature`` is an armored OpenSSH signature (SSHSIG) of a sane size."""
    if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE:
        return False
    match = ARMOR_RE.fullmatch(signature.replace('\r\n', '\n'))
    if not match:
        return False
    try:
        blob = base64.b64decode(match.group(1).replace('\n', ''), validate=True)
    except (binascii.Error, ValueError):
        return False
    return blob.startswith(SSHSIG_MAGIC)


def sign(private_key, device_id, timestamp, ssh_keygen='ssh-keygen'):
    """Sign the placement message with ``private_key`` (a file); returns the armored signature."""
    try:
        proc = subprocess.run([ssh_keygen, '-q', '-Y', 'sign', '-f', private_key, '-n', NAMESPACE],
                              input=message(device_id, timestamp), capture_output=True, timeout=TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SignatureError('ssh-keygen -Y sign failed: %s' % exc)
    if proc.returncode != 0:
        raise SignatureError('ssh-keygen -Y sign with %s failed (%d): %s'
                             % (private_key, proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()[:300]))
    return proc.stdout.decode('ascii')


def verify(public_key, device_id, timestamp, signature, ssh_keygen='ssh-keygen'):
    """True when ``signature`` is ``device_id``'s signature of the placement message at
    ``timestamp``, made with the private half of ``public_key`` ("<type> <base64>")."""
    if not (PRINCIPAL_RE.fullmatch(str(device_id)) and isinstance(public_key, str)
            and KEY_LINE_RE.fullmatch(public_key) and well_formed(signature)):
        return False
    work = tempfile.mkdtemp(prefix='edgefleet-placement-')  # mode 0700: nobody else reads or swaps the files
    try:
        signers = os.path.join(work, 'allowed_signers')
        sig = os.path.join(work, 'signature')
        for path, text in ((signers, '%s namespaces="%s" %s\n' % (device_id, NAMESPACE, public_key)),
                           (sig, signature)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'w', encoding='ascii') as handle:
                handle.write(text)
        try:
            proc = subprocess.run([ssh_keygen, '-Y', 'verify', '-f', signers, '-I', device_id, '-n', NAMESPACE,
                                   '-s', sig], input=message(device_id, timestamp), capture_output=True,
                                  timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
