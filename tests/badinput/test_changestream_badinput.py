# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The changestream role refuses bad input before it creates, installs or writes anything: a broker
listener on every address or a bare port, a management listener on every address, a missing
password, a fan-in table without its primary key, a consumer without a password. Each case runs the
role in check mode on this machine and stops at one of its first (read-only) tasks."""
import json
import os

import pytest

from tests.badinput.support import VENV_BIN, run

GOOD = {"changestream_capture_password": "c", "changestream_capture_sql_password": "s",
        "changestream_fanin_password": "f", "changestream_central_password": "p",
        "changestream_instances": [], "changestream_devices": [],
        "changestream_fanin_tables": [{"source": "app.t", "table": "t", "columns": "id INT NOT NULL",
                                       "primary_key": ["id"]}]}


def _role(settings):
    return run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
                "-m", "ansible.builtin.include_role", "-a", "name=edgefleet.mysql_backup.changestream",
                "-e", json.dumps(dict(GOOD, **settings))])


LISTEN_MESSAGE = "never a wildcard such as 0.0.0.0, :: or a bare port"
CASES = {
    "AMQPS on every address": ({"changestream_amqps_listen": ["0.0.0.0:5671"]}, LISTEN_MESSAGE),
    "AMQPS on every IPv6 address": ({"changestream_amqps_listen": ["127.0.0.1:5671", "[::]:5671"]}, LISTEN_MESSAGE),
    "AMQPS on a bare port": ({"changestream_amqps_listen": ["5671"]}, LISTEN_MESSAGE),
    "management on every address": ({"changestream_management_listen": "0.0.0.0:15672"}, LISTEN_MESSAGE),
    "no capture password": ({"changestream_capture_password": ""}, "set changestream_capture_password"),
    "consumer without password": ({"changestream_consumers": [{"name": "bi"}]}, "a password for every consumer"),
    "fan-in table without its key": ({"changestream_fanin_tables": [{"source": "app.t", "table": "t",
                                                                     "columns": "id INT"}]},
                                     "fan-in table app.t needs primary_key"),
    "fan-in table not db.table": ({"changestream_fanin_tables": [{"source": "t", "table": "t", "columns": "id INT",
                                                                  "primary_key": ["id"]}]},
                                  "needs source: <db>.<table>"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_changestream_role_refuses(case):
    settings, message = CASES[case]
    rc, out = _role(settings)
    assert rc != 0, out
    assert message in " ".join(out.split()), out
    # stopped before any user, file or package: nothing was even planned
    assert "Create the programs' group" not in out, out
