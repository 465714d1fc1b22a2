"""Remove the iptables rules and chains netavark/CNI left for one subnet.

    python3 netclean.py --subnet 10.231.0.0/24 [--shared] [--check]

Deletes every rule (any table) whose addresses overlap SUBNET, then flushes and
deletes the NETAVARK-*/CNI-* chains those rules jumped to once nothing refers
to them any more. With --shared it also removes netavark's shared chains
(NETAVARK_FORWARD, NETAVARK-HOSTPORT-*, ...) and the jumps to them: pass it
only when no podman container runs (netavark recreates them on demand).
Prints JSON: changed, removed_rules, removed_chains (with --check: what
would go) and remaining (rules that mention SUBNET afterwards). iptables-nft and iptables-legacy both work: everything
goes through iptables-save/iptables.
"""
import argparse
import ipaddress
import json
import re
import shlex
import subprocess
import sys

ADDR = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)(?![\d.])")
OWNED_PREFIXES = ("NETAVARK-", "CNI-")
SHARED = re.compile(r"^(NETAVARK_FORWARD|NETAVARK_INPUT|NETAVARK-HOSTPORT-\w+|NETAVARK_ISOLATION_\w+|NETAVARK-ISOLATION-\w+)$")


def save():
    out = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    tables, table = {}, None
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = {"chains": [], "rules": []}
        elif line.startswith(":") and table:
            tables[table]["chains"].append(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            args = shlex.split(line)
            tables[table]["rules"].append({"chain": args[1], "args": args[2:], "line": line})
    return tables


def in_subnet(rule, net):
    for token in ADDR.findall(rule["line"]):
        try:
            if ipaddress.ip_network(token, strict=False).overlaps(net):
                return True
        except ValueError:
            continue
    return False


def target(rule):
    for flag in ("-j", "-g"):
        if flag in rule["args"]:
            i = rule["args"].index(flag)
            if i + 1 < len(rule["args"]):
                return rule["args"][i + 1]
    return None


def ipt(table, *args):
    subprocess.run(["iptables", "-w", "-t", table, *args], check=True, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnet", required=True)
    ap.add_argument("--shared", action="store_true")
    ap.add_argument("--check", action="store_true")
    opts = ap.parse_args()
    net = ipaddress.ip_network(opts.subnet, strict=False)

    removed_rules, removed_chains = [], []
    tables = save()
    for table, data in tables.items():
        doomed = [r for r in data["rules"] if in_subnet(r, net)]
        chains = {target(r) for r in doomed} | {r["chain"] for r in doomed}
        chains = {c for c in chains if c and c.startswith(OWNED_PREFIXES) and not SHARED.match(c)}
        if opts.shared:
            shared = {c for c in data["chains"] if SHARED.match(c)}
            doomed += [r for r in data["rules"] if target(r) in shared and r not in doomed]
            chains |= shared
        # A chain goes only when every remaining rule referring to it is doomed too.
        kept = [r for r in data["rules"] if r not in doomed]
        chains = {c for c in chains if not any(target(r) == c and r["chain"] not in chains for r in kept)}
        doomed += [r for r in kept if r["chain"] in chains]
        for rule in doomed:
            removed_rules.append(f"{table}: {rule['line']}")
            if not opts.check:
                ipt(table, "-D", rule["chain"], *rule["args"])
        for chain in sorted(chains & set(data["chains"])):
            removed_chains.append(f"{table}: {chain}")
            if not opts.check:
                ipt(table, "-F", chain)
                ipt(table, "-X", chain)

    remaining = [f"{t}: {r['line']}" for t, d in save().items() for r in d["rules"] if in_subnet(r, net)]
    json.dump({"changed": bool(removed_rules or removed_chains) and not opts.check,
               "removed_rules": removed_rules, "removed_chains": removed_chains,
               "remaining": remaining}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
