# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The enrollment API (Flask): POST /v1/enroll, POST /v1/placement, GET /v1/health, GET /v1/devices.

Run by gunicorn with the TLS-only worker (worker.py): ``gunicorn -c gunicorn.conf.py
'ansible_collections.edgefleet.mysql_backup.plugins.module_utils.enrollment_service.app:create_app()'``.
Nothing here logs a request body or a header.
"""
from __future__ import annotations

import logging
import math
import time

try:
    from flask import Flask, Response, json, request
    from werkzeug.exceptions import HTTPException
except ImportError:  # Ansible and its sanity import test; the host has Debian's python3-flask
    HAS_FLASK = False
else:
    HAS_FLASK = True

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import enrollment

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.enrollment_service.settings import Settings

LOG = logging.getLogger('edgefleet_enroll')
VERSION = 1


def _json(doc, status, headers=None):
    resp = Response(json.dumps(doc, sort_keys=True) + '\n', status=status, mimetype='application/json')
    resp.headers['Cache-Control'] = 'no-store'
    for key, val in (headers or {}).items():
        resp.headers[key] = val
    return resp


def _error(status, code, message, headers=None):
    return _json({'error': code, 'message': message}, status, headers)


DRAIN_LIMIT = 1024 * 1024


def _drain(length, stream=None):
    """Read (and drop) up to 1 MiB of a refused body, so the client reads the 413 instead of a reset."""
    left = min(length, DRAIN_LIMIT)
    stream = stream or request.environ.get('wsgi.input')
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                break
            left -= len(chunk)
    except (OSError, ValueError):
        pass


def create_app(config_path=None, settings=None):
    if not HAS_FLASK:
        raise ImportError('the enrollment service needs Flask (Debian: python3-flask)')
    settings = settings or Settings(config_path)
    limiter = settings.limiter()
    placement_limiter, device_limiter = settings.placement_limiters()
    app = Flask('edgefleet_enroll')
    app.config['MAX_CONTENT_LENGTH'] = settings.max_body
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False
    started = time.time()

    @app.before_request
    def only_tls():
        if request.scheme != 'https':
            return _error(400, 'plain_http', 'this service speaks HTTPS only; use https://')
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc):
        codes = {404: 'not_found', 405: 'method_not_allowed', 413: 'body_too_large', 400: 'bad_request'}
        message = {413: 'the request body is larger than %d bytes' % settings.max_body}.get(exc.code, exc.description)
        return _error(exc.code, codes.get(exc.code, 'http_%d' % exc.code), message)

    @app.errorhandler(Exception)
    def internal_error(exc):  # never echo internals (or anything from the request) to the client
        LOG.error('internal error %s on %s %s', type(exc).__name__, request.method, request.path)
        return _error(500, 'internal_error', 'internal error; see the service log')

    @app.get('/v1/health')
    def health():
        try:
            with settings.registry().transaction(write=False):
                pass
            registry = 'ok'
        except FleetError:
            settings.registry().close()
            registry = 'unreachable'
        doc = {'status': 'ok' if registry == 'ok' else 'degraded', 'registry': registry, 'api_version': VERSION,
               'uptime_seconds': int(time.time() - started)}
        return _json(doc, 200 if registry == 'ok' else 503)

    def admitted_body(client_limiter, cap, what, path):
        """(data, None) for a client within its rate and a body of at most ``cap`` bytes, else
        (None, the refusal). A refused body is drained so the client reads the answer, not a reset."""
        client = request.remote_addr or '-'
        allowed, scope, wait = client_limiter.check(client)
        if not allowed:
            LOG.warning('refused client=%s code=rate_limited scope=%s%s', client, scope, path)
            return None, _error(429, 'rate_limited', 'too many %s requests (%s limit); retry after %d s'
                                % (what, 'per-client' if scope == 'client' else 'global', math.ceil(wait)),
                                {'Retry-After': str(max(1, math.ceil(wait)))})
        length = request.content_length
        if length is not None and length > cap:
            LOG.info('refused client=%s code=body_too_large%s', client, path)
            _drain(length)
            return None, _error(413, 'body_too_large', 'the request body is larger than %d bytes' % cap)
        data = request.stream.read(cap + 1)
        if len(data) > cap:
            LOG.info('refused client=%s code=body_too_large%s', client, path)
            _drain(DRAIN_LIMIT, request.stream)
            return None, _error(413, 'body_too_large', 'the request body is larger than %d bytes' % cap)
        return data, None

    @app.post('/v1/enroll')
    def enroll():
        client = request.remote_addr or '-'
        data, refusal = admitted_body(limiter, settings.max_body, 'enrollment', '')
        if refusal is not None:
            return refusal
        try:
            doc = enrollment.parse_body(data)
            req = enrollment.validate_request(doc)
            status, outcome, token_id, resp = enrollment.enroll(settings.registry(), settings.policy,
                                                                settings.service, req)
        except enrollment.EnrollError as exc:
            LOG.info('refused client=%s code=%s status=%d: %s', client, exc.code, exc.status, exc.message[:300])
            return _error(exc.status, exc.code, exc.message)
        except FleetError as exc:
            settings.registry().close()
            LOG.error('registry error client=%s: %s', client, str(exc)[:300])
            return _error(503, 'registry_error', 'the registry could not complete the enrollment; retry later')
        LOG.info('enrolled device=%s outcome=%s token_id=%s client=%s cloud_host=%s', resp['device_id'], outcome,
                 token_id, client, resp['cloud_host'])
        return _json(resp, status)

    def charge_device(device_id):
        allowed, _scope, wait = device_limiter.check(device_id)
        return allowed, wait

    @app.post('/v1/placement')
    def placement():
        # Read-only: the device's current placement, for a request signed with its tunnel key.
        client = request.remote_addr or '-'
        data, refusal = admitted_body(placement_limiter, enrollment.MAX_PLACEMENT_BODY, 'placement', ' path=/v1/placement')
        if refusal is not None:
            return refusal
        try:
            if not data:
                raise enrollment.EnrollError(400, 'empty_body', 'the request body is empty: send a JSON object with '
                                             'device_id, timestamp and signature')
            req = enrollment.validate_placement_request(enrollment.parse_body(data))
            resp = enrollment.placement(settings.registry(), settings.service, req,
                                        max_skew=settings.placement_max_skew, charge=charge_device)
        except enrollment.PlacementRateLimited as exc:
            LOG.warning('refused client=%s code=rate_limited scope=device path=/v1/placement', client)
            return _error(exc.status, exc.code, exc.message, {'Retry-After': str(max(1, math.ceil(exc.retry_after)))})
        except enrollment.EnrollError as exc:
            # Never the claimed id or the reason of a 403: the log must not tell which ids exist.
            LOG.info('refused client=%s code=%s status=%d path=/v1/placement', client, exc.code, exc.status)
            return _error(exc.status, exc.code, exc.message)
        except FleetError as exc:
            settings.registry().close()
            LOG.error('registry error client=%s path=/v1/placement: %s', client, str(exc)[:300])
            return _error(503, 'registry_error', 'the registry could not be read; retry later')
        LOG.info('placement device=%s client=%s cloud_host=%s', resp['device_id'], client, resp['cloud_host'])
        return _json(resp, 200)

    @app.get('/v1/devices')
    def devices():
        try:
            ok = enrollment.check_operator(settings.registry(), request.headers.get('Authorization'))
        except FleetError as exc:
            settings.registry().close()
            LOG.error('registry error on /v1/devices: %s', str(exc)[:300])
            return _error(503, 'registry_error', 'the registry is unreachable; retry later')
        if not ok:
            LOG.info('refused client=%s code=unauthorized path=/v1/devices', request.remote_addr)
            return _error(401, 'unauthorized', 'the operator listing needs "Authorization: Bearer <operator '
                          'credential>" (edgefleet-enroll operator create)', {'WWW-Authenticate': 'Bearer'})
        return _json({'devices': enrollment.device_listing(settings.registry())}, 200)

    return app
