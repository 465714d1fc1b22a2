# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""gunicorn's threaded worker, hardened for a port that untrusted devices reach.

Compared with the stock gthread worker of gunicorn 20.1 (Debian 12):

* a deadline (HANDSHAKE_TIMEOUT) on the TLS handshake and on every read and write of a request:
  stock gthread has none, so a client that sends half a request holds a worker thread until it
  goes away (measured: 4 threads, 6 such clients, a health check still unanswered after 20 s;
  with this worker the threads are free again after the deadline);
* an SSLContext with TLS 1.2 as the floor instead of the deprecated ``ssl.wrap_socket``;
* a plain-HTTP request on the TLS port gets a JSON 400 ``plain_http`` instead of a reset.
"""
from __future__ import annotations

import errno
import socket
import ssl

try:
    from gunicorn.workers.gthread import TConn, ThreadWorker
except ImportError:  # Ansible and its sanity import test; the host has Debian's gunicorn
    HAS_GUNICORN = False
    TConn = ThreadWorker = object
else:
    HAS_GUNICORN = True

HANDSHAKE_TIMEOUT = 10.0
TLS_RECORD_HANDSHAKE = b'\x16'
PLAIN_HTTP_BODY = (b'{"error": "plain_http", "message": "this port speaks HTTPS only: use https:// '
                   b'(plain HTTP is refused)"}\n')
PLAIN_HTTP_RESPONSE = (b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(PLAIN_HTTP_BODY)) + PLAIN_HTTP_BODY


class PlainHTTP(Exception):
    """The client spoke plain text to the TLS port."""


def server_context(certfile, keyfile):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


class TLSConn(TConn):
    context = None

    def init(self):
        if self.parser is not None:
            self.sock.setblocking(True)
            return
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        first = self.sock.recv(1, socket.MSG_PEEK)
        if not first:
            raise PlainHTTP('closed')
        if first != TLS_RECORD_HANDSHAKE:
            try:
                self.sock.sendall(PLAIN_HTTP_RESPONSE)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            raise PlainHTTP('plain')
        self.sock = self.context.wrap_socket(self.sock, server_side=True)
        # the same deadline for every read and write of the request (slow clients cannot pin a thread)
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        from gunicorn.http import RequestParser
        self.parser = RequestParser(self.cfg, self.sock, self.client)


class TLSOnlyThreadWorker(ThreadWorker):
    """gthread with deadlines, a TLS 1.2+ context and a plain-HTTP answer (see the module docstring)."""

    def init_process(self):
        TLSConn.context = server_context(self.cfg.certfile, self.cfg.keyfile)
        super().init_process()

    def accept(self, server, listener):
        try:
            sock, client = listener.accept()
            conn = TLSConn(self.cfg, sock, client, server)
            self.nr_conns += 1
            self.enqueue_req(conn)
        except EnvironmentError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise

    def enqueue_req(self, conn):
        future = self.tpool.submit(self._init_and_handle, conn)
        self._wrap_future(future, conn)

    def _init_and_handle(self, conn):
        try:
            conn.init()
        except PlainHTTP as exc:
            if str(exc) == 'plain':
                self.log.warning('refused plain HTTP on the TLS port from %s', _peer(conn.client))
            return (False, conn)
        except (ssl.SSLError, OSError) as exc:
            self.log.info('TLS handshake with %s failed: %s', _peer(conn.client), type(exc).__name__)
            return (False, conn)
        return self.handle(conn)


def _peer(client):
    if isinstance(client, (tuple, list)) and client:
        return str(client[0])
    return str(client)
