# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Child processes of the backup program, and how a stop signal ends them.

Every child (mariadb, mariadb-dump, zstd, mariabackup, restic) is registered while it runs. A
SIGTERM (systemctl stop, the unit's timeout) or SIGINT sets STOPPING and terminates them all, so
every worker unwinds through its finally blocks (partial files removed, SQL threads resumed);
after that only cleanup commands start.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import os
import queue
import shutil
import subprocess
import tempfile
import threading

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.log import log

# Block size of every copy and digest, and the pipe size asked for (1 MiB).
CHUNK = 1 << 20

_PROCS = set()
_PROCS_LOCK = threading.Lock()
STOPPING = threading.Event()


class Worker:
    """One call on its own thread; result() waits for it and returns or raises what it did.
    (concurrent.futures would do, but its import costs ~6 ms of every run.)"""

    def __init__(self, function, *args):
        self._outcome = {}
        self._thread = threading.Thread(target=self._call, args=(function, args), daemon=True)
        self._thread.start()

    def _call(self, function, args):
        try:
            self._outcome['value'] = function(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            self._outcome['error'] = exc

    def wait(self):
        self._thread.join()

    def result(self):
        self.wait()
        if 'error' in self._outcome:
            raise self._outcome['error']
        return self._outcome['value']


def register(proc):
    """Track ``proc`` so that a stop signal terminates it; returns it."""
    with _PROCS_LOCK:
        _PROCS.add(proc)
    return proc


def unregister(proc):
    with _PROCS_LOCK:
        _PROCS.discard(proc)


def reap(*procs):
    """Kill whichever of ``procs`` still runs (an error or a stop unwinds) and forget them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unregister(proc)


def read_errors(errors):
    """The text a subprocess wrote into the temporary file ``errors``."""
    errors.seek(0)
    return errors.read().decode('utf-8', 'replace').strip()


def on_signal(signum, _frame):
    """Signal handler (SIGTERM, SIGINT): stop starting work and terminate every child."""
    STOPPING.set()
    with _PROCS_LOCK:
        for proc in list(_PROCS):
            with contextlib.suppress(OSError):
                proc.terminate()
    log('received signal %d: stopping (running work is unwound, partial files removed)' % signum)


def run_cmd(args, input_bytes=None, env=None, check=True, timeout=None, cleanup=False):
    """Run a command; return CompletedProcess with text stdout/stderr. Once a stop signal
    arrived only ``cleanup`` commands (resuming SQL threads, dropping scratch schemas) run."""
    if STOPPING.is_set() and not cleanup:
        raise BackupError('stopping')
    proc = register(subprocess.Popen(args, stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    try:
        out, err = proc.communicate(input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise BackupError('%s timed out after %ss' % (args[0], timeout))
    finally:
        unregister(proc)
    result = subprocess.CompletedProcess(args, proc.returncode, out.decode('utf-8', 'replace'),
                                         err.decode('utf-8', 'replace'))
    if check and proc.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-1500:]
        raise BackupError('%s failed (exit %d): %s' % (os.path.basename(args[0]), proc.returncode, detail))
    return result


def tool_version(args):
    """First line of what ``args`` (a tool's --version) prints, or None."""
    try:
        out = run_cmd(args, check=False, timeout=30)
    except (OSError, BackupError):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def binary_identity(command):
    """[path, inode, size, mtime] of the executable ``command`` names (None if not found)."""
    path = shutil.which(command)
    if path is None:
        return None
    info = os.stat(path)
    return [os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns]


# ---------------------------------------------------------------------------------------
# Streaming a child's output (dumps into zstd, re-dumps into digests)
# ---------------------------------------------------------------------------------------

class Discard:
    """A writer that keeps nothing (re-dumps read only for their digests)."""

    def write(self, block):
        return len(block)


def _digest_worker(digest, blocks, failed):
    """Feed ``digest`` from a queue until None: SHA-256 releases the GIL, so the digest runs on
    another core while the main thread keeps zstd fed. Keeps draining after an error (recorded
    in ``failed``) so the producer never blocks."""
    while True:
        block = blocks.get()
        if block is None:
            return
        if not failed:
            try:
                digest.feed(block)
            except Exception as exc:  # pylint: disable=broad-except
                failed.append(exc)


def widen_pipe(pipe):
    """Let ``pipe`` hold CHUNK bytes instead of 64 KiB: the dump, this process and zstd then
    run side by side instead of in lock step (best effort: pipe-max-size may be lower)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


def stream_into(writer, args, counter, digest=None):
    """Copy the stdout of ``args`` into ``writer`` (and ``digest``); return the process' stderr text."""
    blocks, worker = None, None
    if digest is not None:
        blocks, failed = queue.Queue(maxsize=16), []
        worker = threading.Thread(target=_digest_worker, args=(digest, blocks, failed), daemon=True)
        worker.start()
    with tempfile.TemporaryFile() as errors:
        proc = register(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL))
        try:
            widen_pipe(proc.stdout)
            # read1: whatever the pipe holds now (not a full CHUNK), so zstd never waits for
            # a block to fill while the dump waits for room in its pipe.
            # The digest thread gets CHUNK-sized pieces: its cost is per piece, and a pipe read
            # may return a few KiB.
            pending, pending_size = [], 0
            for block in iter(lambda: proc.stdout.read1(CHUNK), b''):
                writer.write(block)
                counter[0] += len(block)
                if blocks is not None:
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size >= CHUNK:
                        blocks.put(b''.join(pending))
                        pending, pending_size = [], 0
            if pending:
                blocks.put(b''.join(pending))
            proc.stdout.close()
            rc = proc.wait()
        finally:
            reap(proc)
            if worker is not None:
                blocks.put(None)
                worker.join()
        text = read_errors(errors)
    if worker is not None and failed:
        raise BackupError('computing the table digests failed: %s' % failed[0])
    if rc != 0:
        raise BackupError('%s failed (exit %d): %s' % (os.path.basename(args[0]), rc, text[-1500:]))
    return text
