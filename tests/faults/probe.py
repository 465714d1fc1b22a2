#!/usr/bin/env python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery probe of the fault suite (runs ON the cloud host, next to the replicas).

    probe.py SINCE TIMEOUT SOCKET:SCHEMA:RUN [...]

Polls every target every 0.2 s until its replica holds a row of RUN written on the device at or
after SINCE (epoch seconds): the first moment replication works end to end again after a fault.
Prints one JSON object {"SOCKET:SCHEMA:RUN": epoch seen or null}. Survives the replica being
down or restarting (reconnects).
"""
import json
import sys
import time

import pymysql


def main(since, timeout, targets):
    deadline = time.time() + timeout
    seen = dict.fromkeys(targets)
    conns = {}
    while time.time() < deadline and any(value is None for value in seen.values()):
        for target in targets:
            if seen[target] is not None:
                continue
            socket, schema, run = target.split(":", 2)
            try:
                if target not in conns:
                    conns[target] = pymysql.connect(unix_socket=socket, user="root", autocommit=True,
                                                    connect_timeout=2, read_timeout=5)
                with conns[target].cursor() as cur:
                    cur.execute("SELECT UNIX_TIMESTAMP(MAX(written_at)) FROM `%s`.fault_writes "
                                "WHERE run = %%s" % schema.replace("`", ""), (run,))
                    newest = cur.fetchone()[0]
                if newest is not None and float(newest) >= since:
                    seen[target] = time.time()
            except (pymysql.err.MySQLError, OSError):
                conns.pop(target, None)
        time.sleep(0.2)
    print(json.dumps(seen))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
