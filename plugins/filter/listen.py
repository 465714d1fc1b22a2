# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which listen settings would bind every address of a cloud host (devices reach that host, so
every listener a role adds must name loopback or an admin address)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

WILDCARD_HOSTS = frozenset(('', '*', '0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0', '[0:0:0:0:0:0:0:0]'))


def _host_of(value):
    """Host part of HOST:PORT, [V6]:PORT or a bare PORT (nginx's ``listen 80`` = every address)."""
    if value.startswith('['):
        return value[:value.find(']') + 1] if ']' in value else value
    if value.isdigit():
        return ''
    return value.rsplit(':', 1)[0] if ':' in value else value


def wildcard_listens(values, with_port=True):
    """The entries of ``values`` that bind every address. With ``with_port`` (default) each entry is
    a listen value (``HOST:PORT``, ``[V6]:PORT``, ``PORT``, ``unix:PATH``, optionally followed by
    nginx parameters such as ``ssl``); without it each entry is a bare address."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise AnsibleFilterError('wildcard_listens expects a list of listen values, got %r' % (values,))
    found = []
    for value in values:
        text = str(value).strip()
        first = text.split()[0] if text else ''
        if with_port and first.startswith('unix:'):
            continue
        host = _host_of(first) if with_port else first
        if host in WILDCARD_HOSTS:
            found.append(value)
    return found


class FilterModule:
    """edgefleet.mysql_backup listen-address filters."""

    def filters(self):
        return {'wildcard_listens': wildcard_listens}
