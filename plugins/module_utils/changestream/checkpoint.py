# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capture's position: one GTID per domain, the last transaction the broker confirmed.

Written with :func:`atomic_file.atomic_write` only after publisher confirms, so a crash leaves
the previous position and the capture re-reads (and re-publishes, with the same event ids) what
followed it. Read back as a MariaDB ``slave_connect_state`` (``format_gtid_pos``).
"""

from __future__ import annotations

import json

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.atomic_file import atomic_write
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.gtid import (
    Gtid, format_gtid_pos, parse_gtid_pos,
)


class Checkpoint:
    """Positions per domain; `advance` after a confirmed transaction, `save` to make it durable."""

    def __init__(self, path, positions=None):
        self.path = path
        self.positions = dict(positions or {})

    @classmethod
    def load(cls, path, initial=''):
        """The saved position, or `initial` (a GTID position text) when there is no file yet."""
        try:
            with open(path, encoding='utf-8') as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return cls(path, parse_gtid_pos(initial))
        return cls(path, parse_gtid_pos(data.get('gtid_pos', '')))

    def advance(self, gtid_text):
        gtid = list(parse_gtid_pos(gtid_text).values())[0]
        current = self.positions.get(gtid.domain)
        if current is None or gtid.seq_no > current.seq_no:
            self.positions[gtid.domain] = Gtid(*gtid)

    def text(self):
        return format_gtid_pos(self.positions)

    def save(self):
        atomic_write(self.path, json.dumps({'gtid_pos': self.text()}, sort_keys=True) + '\n', mode=0o640)
