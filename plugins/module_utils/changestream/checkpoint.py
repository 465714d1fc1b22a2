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

    def advance(self, gtid_text, domains=None):
        """Move past the transaction `gtid_text`; only when its domain is in `domains` (the
        capture's devices) if that is given."""
        gtid = list(parse_gtid_pos(gtid_text).values())[0]
        if domains is not None and gtid.domain not in domains:
            return
        current = self.positions.get(gtid.domain)
        if current is None or gtid.seq_no > current.seq_no:
            self.positions[gtid.domain] = Gtid(*gtid)

    def text(self):
        return format_gtid_pos(self.positions)

    def covers(self, gtid_text):
        """True when the transaction `gtid_text` is at or before this position in its domain
        (confirmed already, or older than what was confirmed: not published again)."""
        gtid = list(parse_gtid_pos(gtid_text).values())[0]
        current = self.positions.get(gtid.domain)
        return current is not None and gtid.seq_no <= current.seq_no

    def start_position(self, binlog_pos, device_domains=None):
        """(position text to ask the replica for, {domain: why it was left out}, {domain: why it is
        asked from the replica's current position}).

        `binlog_pos` is the replica's ``@@gtid_binlog_pos`` (the last GTID of each domain its
        binlog has; what the monitor compares with too). MariaDB refuses a whole position
        (error 1236) when one of its domains is not in the binlog as asked, which would stop the
        stream of every device on the replica for one device's sake. So two kinds of domain are
        left out, the replica then sends their transactions from its oldest binlog, and the
        capture skips those the checkpoint covers (`covers`):
        - a domain the binlog no longer has (``FLUSH BINARY LOGS DELETE_DOMAIN_ID`` after its
          device moved away): nothing more of it can come;
        - a domain whose history restarted (the binlog's last sequence number is below the
          checkpoint's: the device was re-imaged and its replica re-seeded). Its transactions up
          to the checkpoint's number are skipped as covered; the monitor shows the device stalled
          until its new history passes that number (docs/changestream.md, Limits).
        A domain whose checkpoint the binlog has purged is still asked for, so it is refused,
        never skipped.

        `device_domains` (the GTID domains of this replica's devices; None: every domain is one):
        a domain of the binlog that is no device's and has no checkpoint (a device that moved away
        before this capture started, a stray writer) is asked from its last transaction in the
        binlog, so its history is not read (and dead-lettered) again at every start. The checkpoint
        holds device domains only (`Capture.advance`), so a device that joins this replica later is
        read from the oldest binlog once the capture knows it."""
        held = parse_gtid_pos(binlog_pos or '')
        kept, left_out, from_now = {}, {}, {}
        for domain, gtid in self.positions.items():
            if domain not in held:
                left_out[domain] = 'no longer in the replica binlog (device moved away)'
            elif held[domain].seq_no < gtid.seq_no:
                left_out[domain] = ('history restarted: the replica binlog is at %d, the stream at %d'
                                    % (held[domain].seq_no, gtid.seq_no))
            else:
                kept[domain] = gtid
        if device_domains is not None:
            for domain, gtid in held.items():
                if domain not in self.positions and domain not in device_domains:
                    kept[domain] = gtid
                    from_now[domain] = 'no device of this replica: asked from %s, its older transactions are not read' % (
                        format_gtid_pos({domain: gtid}),)
        return format_gtid_pos(kept), left_out, from_now

    def save(self):
        atomic_write(self.path, json.dumps({'gtid_pos': self.text()}, sort_keys=True) + '\n', mode=0o640)
