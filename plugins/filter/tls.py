# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The subject alt names of a server certificate a role makes with openssl (the enrollment
service's and the change-stream broker's, roles/*/tasks/tls.yml).

A configured name is an IP address (IPv4, or IPv6 such as ``::1``) or a DNS name (optionally a
``*.`` wildcard in front). The result is what the roles wrote before this filter, byte for byte:
the IP addresses first, then the DNS names, each in the order given, each as given (never
normalized, so the ``server.ext`` file and the certificate stay as they are). What is neither is
refused with the offending name, before openssl sees it: a comma, a space or a newline would
otherwise add fields to the extension file.
"""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

# Names that can only be meant as an IP address (digits and dots, or a colon): an invalid one is
# refused rather than written as a DNS name.
IP_LIKE_RE = re.compile(r'^[0-9.]+\Z|:')
# DNS labels of letters, digits, '-' and '_' (inventory names may carry '_'), dot-separated,
# optionally behind one leading '*.' wildcard label.
DNS_RE = re.compile(r'(\*\.)?[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*')
DNS_MAX = 253


def _is_ip(name):
    if '%' in name:  # a scoped IPv6 address (fe80::1%eth0): no certificate can carry the zone
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _kind(name):
    """'IP' or 'DNS' for one configured name; AnsibleFilterError for anything else."""
    if not isinstance(name, str):
        raise AnsibleFilterError('subject_alt_names: %r is not a string (an IP address or a DNS name)' % (name,))
    if _is_ip(name):
        return 'IP'
    if IP_LIKE_RE.search(name) or len(name) > DNS_MAX or not DNS_RE.fullmatch(name):
        raise AnsibleFilterError('subject_alt_names: %r is neither an IP address (IPv4 such as 10.0.0.5, IPv6 such '
                                 'as fd00::5, without brackets, port or zone) nor a DNS name (labels of letters, '
                                 'digits, - and _ separated by dots, optionally *. in front)' % (name,))
    return 'DNS'


def subject_alt_names(names):
    """['IP:<address>', ..., 'DNS:<name>', ...] of a certificate's configured names: the IP
    addresses first, then the DNS names, each in input order and as given. The list must not be
    empty (the roles use its first name as the certificate's CN)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise AnsibleFilterError('subject_alt_names expects a list of IP addresses and DNS names, got %r' % (names,))
    if not names:
        raise AnsibleFilterError('subject_alt_names: no names given (a certificate needs at least one; '
                                 'the first is its CN)')
    kinds = [(_kind(name), name) for name in names]
    return (['IP:%s' % name for kind, name in kinds if kind == 'IP']
            + ['DNS:%s' % name for kind, name in kinds if kind == 'DNS'])


class FilterModule:
    """edgefleet.mysql_backup TLS certificate filters."""

    def filters(self):
        return {'subject_alt_names': subject_alt_names}
