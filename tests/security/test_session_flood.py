# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One device key floods the gateway with sessions (issue 15.3).

A stolen (or buggy) device key opens tunnel sessions in a loop, 40 in about 10 s, each held open.
Meanwhile every other device's tunnel ssh is killed and must come back: each reconnects within
30 s, the cloud host's admin SSH keeps answering, and the flooding key never holds more than
`tunnel_gateway_max_sessions_per_key` sessions (the tunnel guard ends the newest beyond the cap),
counted as established connections from the flooding device's address after the loop.
"""
import time

import pytest

from tests.faults.harness import sh
from tests.runner.lab import lab_lock
from tests.support.lab import devices, hostvars
from tests.support.tunnel import KNOWN_HOSTS, TUNNEL_KEY, TUNNEL_USER, admin_client

pytestmark = pytest.mark.lab

FLOOD_SESSIONS = 40
FLOOD_SECONDS = 10
CAP = 3              # tunnel_gateway_max_sessions_per_key default
RECONNECT_GOAL = 30


def _established_from(cloud, address):
    out = sh(cloud, f"ss -Htn state established '( sport = :22 and dst {address} )'").stdout
    return len([line for line in out.splitlines() if line.strip()])


def _tunnel_up(cloud, port):
    return bool(sh(cloud, f"ss -Htln '( sport = :{port} )'").stdout.strip())


def test_one_key_flooding_sessions_harms_nobody_else():
    names = devices()
    if len(names) < 2:
        pytest.fail("the flood test needs two lab devices (make lab-site starts two)")
    attacker, victims = names[0], names[1:]
    hv = hostvars(attacker)
    cloud, address = hv["edgefleet_cloud_host"], hv["ansible_host"]
    flood = (f"for i in $(seq {FLOOD_SESSIONS}); do "
             f"setsid timeout 90 ssh -i {TUNNEL_KEY} -o IdentitiesOnly=yes -o BatchMode=yes "
             f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes -o ConnectTimeout=10 "
             f"-N {TUNNEL_USER}@{hv['edgefleet_cloud_address']} </dev/null >/dev/null 2>&1 & "
             f"sleep {FLOOD_SECONDS / FLOOD_SESSIONS:.2f}; done")
    with lab_lock():
        guard_since = sh(cloud, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        try:
            sh(attacker, f"nohup bash -c '{flood}' >/dev/null 2>&1 &")
            time.sleep(FLOOD_SECONDS / 2)
            killed_at = time.monotonic()
            for victim in victims:
                sh(victim, "pkill -KILL -x ssh || true")
            back = {}
            admin_ok = []
            deadline = killed_at + 90
            while time.monotonic() < deadline and len(back) < len(victims):
                for victim in victims:
                    vhv = hostvars(victim)
                    if victim not in back and _tunnel_up(vhv["edgefleet_cloud_host"],
                                                         vhv["edgefleet_tunnel_mysql_port"]) \
                            and _tunnel_up(vhv["edgefleet_cloud_host"], vhv["edgefleet_tunnel_ssh_port"]):
                        back[victim] = round(time.monotonic() - killed_at, 1)
                admin_ok.append(admin_client(cloud).attempt("", remote="true", timeout=15).rc == 0)
                time.sleep(1)
            time.sleep(max(0.0, killed_at + FLOOD_SECONDS / 2 + 3 - time.monotonic()))
            held = _established_from(cloud, address)
            guard_log = sh(cloud, f"journalctl -u edgefleet-tunnel-guard --since '{guard_since}' --no-pager").stdout
        finally:
            sh(attacker, f"pkill -f '[s]sh -i {TUNNEL_KEY} .* -N {TUNNEL_USER}@' || true")
        attacker_tunnel = _tunnel_up(cloud, hv["edgefleet_tunnel_mysql_port"])
    print(f"\nsession flood: {FLOOD_SESSIONS} sessions in {FLOOD_SECONDS} s from {attacker}; held after the "
          f"loop {held} (cap {CAP}, the device's own tunnel included); victims back after {back}; "
          f"admin ssh ok {sum(admin_ok)}/{len(admin_ok)}; sessions ended by the guard "
          f"{guard_log.count('session cap')}")
    assert set(back) == set(victims), f"tunnels not back within 90 s: {sorted(set(victims) - set(back))}"
    assert max(back.values()) < RECONNECT_GOAL, back
    assert admin_ok and all(admin_ok), f"admin ssh failed during the flood ({admin_ok.count(False)} times)"
    assert held <= CAP, f"the flooding key holds {held} sessions (cap {CAP})"
    assert "session cap" in guard_log, "the guard ended no session: the flood never reached the cap"
    assert attacker_tunnel, f"{attacker}'s own tunnel did not survive its key's flood"
