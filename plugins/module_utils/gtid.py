# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MariaDB GTID positions: the one parser and formatter.

A position such as ``gtid_slave_pos`` is a comma-separated list of ``domain-server-seqno``
GTIDs, at most one per replication domain (MariaDB prints long lists with ``,\\n``).
:func:`parse_gtid_pos` maps it to ``{domain: Gtid(domain, server_id, seq_no)}``;
:func:`format_gtid_pos` writes such a map back, domains in ascending order, so that equal
positions compare equal as text.

Used by replication (seeds, applied positions), the consistency check and the backups (a
backup's position, restore). Standard library only: host programs import it too.
"""

from __future__ import annotations

import collections
import re

_GTID_RE = re.compile(r'^(\d+)-(\d+)-(\d+)$')


class Gtid(collections.namedtuple('Gtid', 'domain server_id seq_no')):
    """One GTID; a tuple ``(domain, server_id, seq_no)``."""

    __slots__ = ()

    def __str__(self):
        return '%d-%d-%d' % self


class GtidError(ValueError):
    """A text that is not a GTID position; the message names the part."""


def parse_gtid_pos(text):
    """'0-1-10,5-5-7' -> {0: Gtid(0, 1, 10), 5: Gtid(5, 5, 7)}; '' or None -> {}.

    Raises :class:`GtidError` (a ValueError) on a malformed GTID or a domain named twice.
    """
    positions = {}
    for part in (text or '').replace('\n', ',').split(','):
        part = part.strip()
        if not part:
            continue
        match = _GTID_RE.match(part)
        if not match:
            raise GtidError('invalid GTID %r in position %r (expected domain-server-seqno)' % (part, text))
        gtid = Gtid(*(int(number) for number in match.groups()))
        if gtid.domain in positions:
            raise GtidError('GTID position %r names domain %d twice' % (text, gtid.domain))
        positions[gtid.domain] = gtid
    return positions


def format_gtid_pos(positions):
    """{domain: (domain, server_id, seq_no)} -> 'd-s-n,...' in ascending domain order."""
    return ','.join('%d-%d-%d' % tuple(positions[domain]) for domain in sorted(positions))


def merge_gtid_pos(current, seeds):
    """Return ``current`` with each domain of ``seeds`` set; other domains are untouched."""
    merged = dict(current)
    merged.update(seeds)
    return merged
