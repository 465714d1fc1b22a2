# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-replicas-sync: reconcile running replica instances with the instances file.

Usage: edgefleet-replicas-sync INSTANCES_FILE CONFIG_FILE STATE_DIR

Starts (and enables) every listed instance, restarts a running instance only when its own
[mariadbd.<name>] section (or the instances' unit drop-in) changed since it was last started,
and stops and disables instances that are no longer listed. Prints one line per action; prints
nothing when all is in order.

Shipped by the replica role (filter host_code_files) and run by the launcher
/usr/local/sbin/edgefleet-replicas-sync with the system python3. The parsing and the decision
are plain functions; main() does the systemctl calls.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import subprocess
import sys

# The unit drop-in of every instance (replica role): a change there (how the instance reads its
# group, its datadir) reaches running instances only by a restart, so it is in every digest.
UNIT_DROPIN = "/etc/systemd/system/mariadb@.service.d/50-edgefleet.conf"
SECTION_RE = re.compile(r"^\[(.+)\]\s*$")
UNIT_RE = re.compile(r"^mariadb@(.+)\.service$")


def wanted_instances(text):
    """Instance names of the instances file: one per line, '#' comments and blank lines skipped."""
    return sorted({line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")})


def section_digests(config_text, unit_text):
    """Digest of each [mariadbd.<name>] group (and of the unit drop-in), so one instance's change
    restarts only it. Comment lines and indentation do not count. The digests are the applied
    stamps kept on the host: their form must not change, or every instance restarts once."""
    digests, current, lines = {}, None, []
    for line in config_text.splitlines() + ["[end]"]:
        match = SECTION_RE.match(line)
        if match:
            if current:
                digests[current] = hashlib.sha256("\n".join(lines + ["[unit]", unit_text]).encode()).hexdigest()
            name = match.group(1)
            current = name.split(".", 1)[1] if name.startswith("mariadbd.") else None
            lines = []
        elif current and not line.startswith("#"):
            lines.append(line.strip())
    return digests


def unit_instances(listing):
    """Instance names in `systemctl list-units` / `list-unit-files` output (mariadb@<name>.service)."""
    names = set()
    for line in listing.splitlines():
        unit = line.split()[0] if line.split() else ""
        match = UNIT_RE.match(unit)
        if match and not match.group(1).startswith("*"):
            names.add(match.group(1))
    return names


def action(active, enabled, applied, digest):
    """What a listed instance needs: 'start' (and enable), 'restart' (its configuration changed
    since it was started), 'enable', or None."""
    if not active:
        return "start"
    if applied != digest:
        return "restart"
    if not enabled:
        return "enable"
    return None


def systemctl(*args, check=True):
    return subprocess.run(["systemctl"] + list(args), check=check, capture_output=True, text=True)


def read_text(path, missing=None):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        if missing is None:
            raise
        return missing


def known_units():
    listed = systemctl("list-units", "--all", "--plain", "--no-legend", "mariadb@*.service").stdout
    files = systemctl("list-unit-files", "--plain", "--no-legend", "--state=enabled",
                      "mariadb@*.service", check=False).stdout
    return unit_instances(listed + files)


def reconcile(instances_path, config_path, state_dir):
    wanted = wanted_instances(read_text(instances_path))
    digests = section_digests(read_text(config_path), read_text(UNIT_DROPIN, missing=""))
    missing = [name for name in wanted if name not in digests]
    if missing:
        raise SystemExit("no [mariadbd.<name>] section in %s for: %s" % (config_path, ", ".join(missing)))
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    for name in wanted:
        unit = "mariadb@%s.service" % name
        stamp = os.path.join(state_dir, "%s.config-sha256" % name)
        applied = read_text(stamp, missing="").strip()
        active = systemctl("is-active", "--quiet", unit, check=False).returncode == 0
        enabled = systemctl("is-enabled", "--quiet", unit, check=False).returncode == 0
        todo = action(active, enabled, applied, digests[name])
        if todo == "start":
            systemctl("enable", "--now", "--quiet", unit)
            sys.stdout.write("started %s\n" % name)
        elif todo == "restart":
            systemctl("restart", unit)
            sys.stdout.write("restarted %s (configuration changed)\n" % name)
        elif todo == "enable":
            systemctl("enable", "--quiet", unit)
            sys.stdout.write("enabled %s\n" % name)
        with open(stamp, "w", encoding="utf-8") as handle:
            handle.write(digests[name] + "\n")
    for name in sorted(known_units() - set(wanted)):
        systemctl("disable", "--now", "--quiet", "mariadb@%s.service" % name)
        sys.stdout.write("stopped %s (no longer allocated here)\n" % name)


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 3:
        raise SystemExit(__doc__)
    reconcile(*args)
    return 0
