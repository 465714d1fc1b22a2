# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-replicas-sync (module_utils/replicas_sync.py): parsing, digests, decisions, and a
reconcile run against a stand-in systemctl."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import types

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import replicas_sync as rs

CONFIG = """# Managed by edgefleet
[mariadbd]
skip-name-resolve

[mariadbd.r1]
port = 3401
# a comment
  datadir = /var/lib/edgefleet/replicas/r1

[mariadbd.r2]
port = 3402
"""


def test_wanted_instances_skips_comments_and_blanks():
    assert rs.wanted_instances("# header\nr2\n\n  r1  \nr2\n#r3\n") == ["r1", "r2"]


def test_digest_form_is_kept():
    # The digest of r2 exactly as the program has always stamped it (a changed form would restart
    # every running instance once after an upgrade).
    expected = hashlib.sha256("\n".join(["port = 3402", "[unit]", "UNIT"]).encode()).hexdigest()
    assert rs.section_digests(CONFIG, "UNIT")["r2"] == expected


def test_digests_per_instance():
    base = rs.section_digests(CONFIG, "UNIT")
    assert set(base) == {"r1", "r2"}
    # Comments and indentation do not count; another instance's change does not touch r1.
    same = rs.section_digests(CONFIG.replace("# a comment\n", "# other\n").replace("  datadir", "datadir")
                              .replace("3402", "3499"), "UNIT")
    assert same["r1"] == base["r1"] and same["r2"] != base["r2"]
    # The unit drop-in is in every digest.
    changed_unit = rs.section_digests(CONFIG, "UNIT2")
    assert changed_unit["r1"] != base["r1"] and changed_unit["r2"] != base["r2"]


def test_unit_instances_from_systemctl_listings():
    listing = ("mariadb@r1.service loaded active running MariaDB\n"
               "mariadb@r2.service enabled enabled\n"
               "mariadb@*.service\n"
               "mariadb.service loaded inactive dead\n\n")
    assert rs.unit_instances(listing) == {"r1", "r2"}


@pytest.mark.parametrize("active,enabled,applied,expected", [
    (False, False, "", "start"),
    (False, True, "d", "start"),
    (True, True, "old", "restart"),
    (True, False, "old", "restart"),
    (True, False, "d", "enable"),
    (True, True, "d", None),
])
def test_action(active, enabled, applied, expected):
    assert rs.action(active, enabled, applied, "d") == expected


class FakeSystemd:
    """systemctl as the program sees it: units active/enabled, calls recorded."""

    def __init__(self, active, enabled, extra_units=()):
        self.active, self.enabled, self.calls = set(active), set(enabled), []
        self.extra = list(extra_units)

    def __call__(self, *args, check=True):
        self.calls.append(args)
        rc, out = 0, ""
        unit_name = args[-1].split("@")[-1].replace(".service", "") if args else ""
        if args[0] == "is-active":
            rc = 0 if unit_name in self.active else 3
        elif args[0] == "is-enabled":
            rc = 0 if unit_name in self.enabled else 1
        elif args[0] == "list-units":
            out = "".join("mariadb@%s.service loaded active running x\n" % n for n in sorted(self.active) + self.extra)
        return types.SimpleNamespace(returncode=rc, stdout=out)


def test_reconcile_starts_restarts_stops(tmp_path, monkeypatch, capsys):
    instances, config, state = tmp_path / "instances", tmp_path / "replicas.cnf", tmp_path / "state"
    instances.write_text("# header\nr1\nr2\n")
    config.write_text(CONFIG)
    monkeypatch.setattr(rs, "UNIT_DROPIN", str(tmp_path / "no-dropin"))
    fake = FakeSystemd(active=["r1"], enabled=["r1"], extra_units=["gone"])
    monkeypatch.setattr(rs, "systemctl", fake)
    rs.main([str(instances), str(config), str(state)])
    assert capsys.readouterr().out == ("restarted r1 (configuration changed)\nstarted r2\n"
                                       "stopped gone (no longer allocated here)\n")
    assert ("enable", "--now", "--quiet", "mariadb@r2.service") in fake.calls
    assert ("disable", "--now", "--quiet", "mariadb@gone.service") in fake.calls
    digests = rs.section_digests(CONFIG, "")
    assert (state / "r1.config-sha256").read_text() == digests["r1"] + "\n"
    # Second run: all in order, nothing printed.
    fake2 = FakeSystemd(active=["r1", "r2"], enabled=["r1", "r2"])
    monkeypatch.setattr(rs, "systemctl", fake2)
    rs.main([str(instances), str(config), str(state)])
    assert capsys.readouterr().out == ""
    assert not [c for c in fake2.calls if c[0] in ("enable", "restart", "disable")]


def test_reconcile_refuses_an_instance_without_section(tmp_path, monkeypatch):
    instances, config = tmp_path / "instances", tmp_path / "replicas.cnf"
    instances.write_text("r1\nr9\n")
    config.write_text(CONFIG)
    monkeypatch.setattr(rs, "systemctl", FakeSystemd([], []))
    with pytest.raises(SystemExit, match=r"no \[mariadbd.<name>\] section in .* for: r9"):
        rs.main([str(instances), str(config), str(tmp_path / "state")])


def test_usage():
    with pytest.raises(SystemExit, match="Usage: edgefleet-replicas-sync"):
        rs.main(["only-one"])
