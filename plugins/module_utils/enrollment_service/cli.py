# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-enroll: operator commands of the enrollment service.

  edgefleet-enroll token create [--max-uses N] [--expires 7d] [--site S]... [--label k=v]...
                                [--device-id ID] [--note TEXT] [--output FILE] [--json]
  edgefleet-enroll token list [--json]
  edgefleet-enroll token revoke TOKEN_ID
  edgefleet-enroll operator create NAME [--output FILE]
  edgefleet-enroll operator list
  edgefleet-enroll operator revoke NAME
  edgefleet-enroll device allow-rotation DEVICE_ID [--expires 24h]
  edgefleet-enroll devices [--json]
  edgefleet-enroll known-hosts [--output FILE]
  edgefleet-enroll init

A new token or operator credential is printed once (or written to --output, mode 0600) and only its
sha256 is stored. No command takes a secret as an argument: tokens are revoked by their public id.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import enrollment

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.enrollment_service.settings import Settings


def _stamp(value):
    if value is None:
        return '-'
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(value))


def _write_secret(path, text):
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text + '\n')
    else:
        sys.stdout.write(text + '\n')


def _labels(items):
    out = {}
    for item in items or []:
        if '=' not in item:
            raise FleetError('--label %r must be key=value' % item)
        key, val = item.split('=', 1)
        out[key] = val
    return out


def cmd_token_create(settings, args):
    token, view = enrollment.create_token(
        settings.registry(), max_uses=args.max_uses, expires_in=args.expires, sites=args.site,
        labels=_labels(args.label), device_id=args.device_id, note=args.note)
    if args.json:
        doc = dict(view, token=token)
        _write_secret(args.output, json.dumps(doc, sort_keys=True))
    else:
        _write_secret(args.output, token)
    if args.output:
        sys.stdout.write('token %s written to %s\n' % (view['id'], args.output))
    else:
        sys.stderr.write('token id %s: max uses %d, expires %s (shown once; store it now)\n'
                         % (view['id'], view['max_uses'], _stamp(view['expires_at'])))
    return 0


def _listing(rows, as_json, layout, header, cells):
    """Rows as JSON, or as a fixed-width table: `layout` formats `header` and `cells(row)`."""
    if as_json:
        sys.stdout.write(json.dumps(rows, sort_keys=True, indent=1) + '\n')
        return 0
    sys.stdout.write(layout % header)
    for row in rows:
        sys.stdout.write(layout % cells(row))
    return 0


def _token_scope(tok):
    scope = ','.join(tok['sites']) or '*'
    if tok['labels']:
        scope += ' ' + ','.join('%s=%s' % kv for kv in sorted(tok['labels'].items()))
    if tok.get('note'):
        scope += ' ' + tok['note']
    return scope


def cmd_token_list(settings, args):
    return _listing(
        enrollment.list_tokens(settings.registry()), args.json, '%-12s %-9s %-9s %-20s %-20s %-14s %s\n',
        ('ID', 'STATE', 'USES', 'CREATED', 'EXPIRES', 'DEVICE', 'SITES / LABELS / NOTE'),
        lambda tok: (tok['id'], tok['state'], '%d/%d' % (tok['uses'], tok['max_uses']), _stamp(tok['created_at']),
                     _stamp(tok['expires_at']), tok['device_id'] or '*', _token_scope(tok)))


def cmd_token_revoke(settings, args):
    changed = enrollment.revoke_token(settings.registry(), args.token_id)
    sys.stdout.write('token %s %s\n' % (args.token_id, 'revoked' if changed else 'was already revoked'))
    return 0


def cmd_operator_create(settings, args):
    credential = enrollment.create_operator(settings.registry(), args.name)
    _write_secret(args.output, credential)
    if args.output:
        sys.stdout.write('operator credential %s written to %s\n' % (args.name, args.output))
    return 0


def cmd_operator_list(settings, _args):
    for op in enrollment.list_operators(settings.registry()):
        sys.stdout.write('%s %s\n' % (op['name'], _stamp(op['created_at'])))
    return 0


def cmd_operator_revoke(settings, args):
    changed = enrollment.revoke_operator(settings.registry(), args.name)
    sys.stdout.write('operator %s %s\n' % (args.name, 'revoked' if changed else 'did not exist'))
    return 0


def cmd_allow_rotation(settings, args):
    enrollment.allow_rotation(settings.registry(), args.device_id, args.expires)
    sys.stdout.write('device %s may enroll with new keys once within %s\n' % (args.device_id, args.expires))
    return 0


def cmd_devices(settings, args):
    return _listing(
        enrollment.device_listing(settings.registry()), args.json, '%-20s %-10s %-9s %-12s %-6s %-6s %s\n',
        ('DEVICE', 'SITE', 'STATUS', 'CLOUD', 'MYSQL', 'SSH', 'TUNNEL KEY'),
        lambda dev: (dev['device_id'], dev['site'] or '-', dev['status'], dev['cloud_host'] or '-',
                     dev['tunnel_mysql_port'] or '-', dev['tunnel_ssh_port'] or '-',
                     dev['tunnel_key_fingerprint'] or '-'))


def cmd_known_hosts(settings, args):
    registry = settings.registry()
    with registry.transaction(write=False) as tx:
        devices = tx.load_registry()[0]
    text = enrollment.known_hosts_text(devices)
    if args.output:
        try:
            with open(args.output, encoding='utf-8') as handle:
                same = handle.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            atomic_write(args.output, text, mode=0o644)
        state = 'unchanged' if same else 'written'
        sys.stdout.write('%s %s (%d host keys)\n' % (args.output, state, text.count('\n')))
    else:
        sys.stdout.write(text)
    return 0


def cmd_init(settings, _args):
    enrollment.ensure_schema(settings.registry())
    sys.stdout.write('enrollment state ready in %s\n' % settings.registry().describe())
    return 0


def parser():
    top = argparse.ArgumentParser(prog='edgefleet-enroll', description=__doc__.split('\n\n', maxsplit=1)[0])
    top.add_argument('--config', help='service config (default $EDGEFLEET_ENROLL_CONFIG or %s)'
                     % '/etc/edgefleet/enrollment.json')
    sub = top.add_subparsers(dest='group', required=True)
    token = sub.add_parser('token', help='enrollment tokens').add_subparsers(dest='action', required=True)
    create = token.add_parser('create', help='create a token (printed once)')
    create.add_argument('--max-uses', type=int, default=1)
    create.add_argument('--expires', default='7d', help='lifetime: 90m, 12h, 7d, 2w (default 7d)')
    create.add_argument('--site', action='append', help='allowed site (repeat; default: any)')
    create.add_argument('--label', action='append', help='required label key=value (repeat)')
    create.add_argument('--device-id', help='bind the token to one device id')
    create.add_argument('--note', help='free text shown by token list')
    create.add_argument('--output', help='write the token to this file (mode 0600) instead of stdout')
    create.add_argument('--json', action='store_true', help='print the token and its record as JSON')
    create.set_defaults(func=cmd_token_create)
    lst = token.add_parser('list', help='list tokens (never their secret)')
    lst.add_argument('--json', action='store_true')
    lst.set_defaults(func=cmd_token_list)
    revoke = token.add_parser('revoke', help='revoke a token by its id')
    revoke.add_argument('token_id')
    revoke.set_defaults(func=cmd_token_revoke)
    oper = sub.add_parser('operator', help='operator credentials for GET /v1/devices').add_subparsers(
        dest='action', required=True)
    ocreate = oper.add_parser('create', help='create or replace a credential (printed once)')
    ocreate.add_argument('name')
    ocreate.add_argument('--output')
    ocreate.set_defaults(func=cmd_operator_create)
    oper.add_parser('list').set_defaults(func=cmd_operator_list)
    orevoke = oper.add_parser('revoke')
    orevoke.add_argument('name')
    orevoke.set_defaults(func=cmd_operator_revoke)
    dev = sub.add_parser('device', help='per-device operator actions').add_subparsers(dest='action', required=True)
    rot = dev.add_parser('allow-rotation', help='let the next enrollment of a device replace its keys (one-shot)')
    rot.add_argument('device_id')
    rot.add_argument('--expires', default='24h')
    rot.set_defaults(func=cmd_allow_rotation)
    devs = sub.add_parser('devices', help='list devices with allocations and key fingerprints')
    devs.add_argument('--json', action='store_true')
    devs.set_defaults(func=cmd_devices)
    kh = sub.add_parser('known-hosts', help='known_hosts lines "<device id> <host key>" (HostKeyAlias)')
    kh.add_argument('--output')
    kh.set_defaults(func=cmd_known_hosts)
    sub.add_parser('init', help='create the enrollment table (MySQL registry)').set_defaults(func=cmd_init)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        settings = Settings(args.config)
        return args.func(settings, args)
    except FleetError as exc:
        sys.stderr.write('edgefleet-enroll: %s\n' % exc)
        return 2
