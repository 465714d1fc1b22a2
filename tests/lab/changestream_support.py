# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change stream switched on for the lab's cloud01 for the length of a `with` block, and the
lab put back exactly as `site.yml` leaves it afterwards. Used by the change stream's own lab test
(tests/lab/test_changestream_lab.py) and by the fault suite's `--with-changestream` run (the
replication path must lose nothing with the stream on: issue 20).

The role is converged with the Molecule scenario's converge playbook and an inventory of the
caller's (cloud01 in the `changestream` group, fresh passwords, in a 0600 file); afterwards the
scenario's cleanup playbook removes it and `site.yml` must change nothing.
"""
import contextlib
import os
import secrets
import time

import yaml

from tests.runner import lab

CLOUD = "cloud01"
CONVERGE = "molecule/changestream/converge.yml"
CLEANUP = "molecule/changestream/cleanup.yml"
PASSWORDS = ("capture", "fanin", "capture_sql", "central")


def playbook(path, inventories, check=True):
    args = ["ansible-playbook"]
    for inventory in inventories:
        args += ["-i", inventory]
    return lab.run(args + [path], check=check)


@contextlib.contextmanager
def change_stream_on(work_dir, fanin_tables, consumers=(), figures=None):
    """Converge the change stream on cloud01 (fan-in of `fanin_tables`, read-only `consumers`:
    a list of {name, password}); yields the path of the inventory that puts cloud01 in the
    `changestream` group (pass it with the lab's own to any playbook run meanwhile). On leaving:
    cleanup.yml, then `site.yml` must be a no-op (AssertionError otherwise)."""
    figures = {} if figures is None else figures
    passwords = {name: secrets.token_hex(16) for name in PASSWORDS}
    inventory = os.path.join(str(work_dir), "changestream.yml")
    with open(os.open(inventory, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        yaml.safe_dump({"changestream": {"hosts": {CLOUD: {}}, "vars": {
            "changestream_capture_password": passwords["capture"],
            "changestream_fanin_password": passwords["fanin"],
            "changestream_capture_sql_password": passwords["capture_sql"],
            "changestream_central_password": passwords["central"],
            "changestream_consumers": list(consumers),
            "changestream_fanin_tables": list(fanin_tables),
        }}}, handle)
    inventories = [lab.INVENTORY, inventory]
    try:
        started = time.monotonic()
        playbook(CONVERGE, inventories)
        figures["converge_s"] = time.monotonic() - started
        yield inventory
    finally:
        started = time.monotonic()
        try:
            playbook(CLEANUP, inventories)
            figures["cleanup_s"] = time.monotonic() - started
            started = time.monotonic()
            again = playbook("site.yml", [lab.INVENTORY])
            changed = lab.recap_changes(again.stdout)
            if changed:
                changed = {"hosts": changed, "tasks": lab.changed_tasks(again.stdout)}
            figures["site_after_s"] = time.monotonic() - started
            print("\nchange stream removed: cleanup.yml %.0f s, then site.yml %.0f s, changed: %s"
                  % (figures["cleanup_s"], figures["site_after_s"], changed or "nothing"))
        finally:
            os.unlink(inventory)
        assert not changed, "site.yml is not a no-op after the change stream's cleanup: %s" % changed
