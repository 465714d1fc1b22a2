# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The names a role puts in the server certificate it makes (enrollment_tls_names,
changestream_tls_names) are checked by the filter subject_alt_names at the role's first task: a name
that is neither an IP address nor a DNS name (a space, a comma or a port in it, a malformed
address) or no name at all stops the role before it creates, installs or writes anything. Each
case runs the role in check mode on this machine."""
import json
import os

import pytest

from tests.badinput.support import VENV_BIN, run

ROLES = {
    "changestream": ({"changestream_capture_password": "c", "changestream_capture_sql_password": "s",
                      "changestream_fanin_password": "f", "changestream_central_password": "p",
                      "changestream_instances": [], "changestream_devices": [], "changestream_fanin_tables": []},
                     "Check the change-stream settings", "Create the programs' group"),
    "enrollment": ({"enrollment_listen_address": "127.0.0.1", "enrollment_cloud_hosts": {}},
                   "Check the enrollment settings", "Install the service's packages"),
}

CASES = {
    "a space": (["cloud01", "cloud 01"], "'cloud 01' is neither an IP address"),
    "a comma": (["cloud01,DNS:evil.example"], "'cloud01,DNS:evil.example' is neither an IP address"),
    "a port": (["10.0.0.5:5671"], "'10.0.0.5:5671' is neither an IP address"),
    "a malformed address": (["10.0.0.256", "cloud01"], "'10.0.0.256' is neither an IP address"),
    "a wildcard not leftmost": (["api.*.example.net"], "'api.*.example.net' is neither an IP address"),
    "no names": ([], "no names given"),
}


def _role(role, names, marker, **extra):
    settings = dict(ROLES[role][0], enrollment_registry={"type": "file", "path": str(marker)},
                    **dict(extra, **{role + "_tls_names": names}))
    return run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
                "-m", "ansible.builtin.include_role", "-a", "name=edgefleet.mysql_backup.%s" % role,
                "-e", json.dumps(settings)])


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_role_refuses_certificate_names(tmp_path, role, case):
    names, message = CASES[case]
    marker = tmp_path / "untouched"
    rc, out = _role(role, names, marker)
    assert rc != 0, out
    flat = " ".join(out.split())
    assert message in flat, out
    first_task, next_task = ROLES[role][1:]
    assert first_task in out, out   # refused by the settings check, the role's first task ...
    assert next_task not in out, out  # ... before anything was planned
    assert not marker.exists()


# A setting the same check tests after the names, made bad: the role still stops at its first task.
LATER = {"changestream": ({"changestream_vhost": "bad vhost"}, "changestream: changestream_amqps_listen must be"),
         "enrollment": ({"enrollment_port": 0}, "enrollment: set enrollment_listen_address")}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_accepts_addresses_and_dns_names(tmp_path, role):
    # good names (IPv4, IPv6, a wildcard, an inventory name with _) pass the names' condition: the
    # check fails on the later one, with its own message
    later, fail_msg = LATER[role]
    rc, out = _role(role, ["10.0.0.5", "fd00::5", "*.edge.example.net", "cloud_01"], tmp_path / "untouched", **later)
    next_task = ROLES[role][2]
    assert rc != 0, out
    assert "subject_alt_names" not in out, out
    assert fail_msg in " ".join(out.split()), out
    assert next_task not in out, out
