# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""edgefleet-device-enroll: a device enrolls itself on first boot (Python 3 standard library only).

Run by edgefleet-enroll.service until /etc/edgefleet/device.yml exists. It

1. generates the device's tunnel key (and SSH host keys when missing) on the device;
2. POSTs {token, device_id, site, labels, tunnel_public_key, host_public_key} to
   <api_url>/v1/enroll over HTTPS, verified against the pinned CA only, hostname checked;
   offline, 5xx and 429 are retried with exponential back-off and full jitter, a permanent 4xx
   stops it with a clear message (exit 78) until an operator fixes the token or the registry;
3. pins the returned cloud host key in /etc/edgefleet/known_hosts, installs the management keys
   for root, renders edgefleet-tunnel.service from the device_tunnel role's own template, starts
   it, and writes /etc/edgefleet/device.yml exactly as the device_tunnel role does, so a later
   site.yml run of that role changes nothing;
4. deletes the token file and records the enrollment (without the token) in enrollment.json.

The token is read from a 0600 file: it is never in argv, the environment or any log line.
No private key leaves the device: only the public halves are sent.

    edgefleet-device-enroll [--config /etc/edgefleet/enroll.json] [--check] [--root DIR]
    edgefleet-device-enroll --refresh [--force]

--refresh (run by edgefleet-enroll-refresh.timer on an enrolled device) follows a failover or a
move by itself: only when the tunnel looks lost (unit not active, no ssh process, restarted since
the last check) or the last successful ask is older than refresh_max_age, it signs
{device_id, timestamp} with the tunnel key (ssh-keygen -Y sign -n edgefleet-placement), POSTs it to
<api_url>/v1/placement, and when the answer differs from what the tunnel uses rewrites
known_hosts, the tunnel unit and device.yml with the first-boot writers and restarts the tunnel.
An equal answer changes nothing. --force asks whatever the tunnel looks like.

Shipped by the device_enroll role (filter host_code_files) below /usr/local/lib/edgefleet and
run by the launcher /usr/local/sbin/edgefleet-device-enroll with Debian's python3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import placement_signature

DEFAULT_CONFIG = "/etc/edgefleet/enroll.json"
EX_PERMANENT = 78          # EX_CONFIG: the unit's RestartPreventExitStatus
EX_TEMPORARY = 75          # EX_TEMPFAIL: gave up for now (max_attempts), systemd restarts later
ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
KEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) "
                    r"[A-Za-z0-9+/]+={0,3}$")
VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RETRY_STATUSES = frozenset((408, 425, 429))   # and every 5xx
MAX_RESPONSE = 256 * 1024

# What the device_tunnel role uses by default (roles/device_tunnel/defaults/main.yml); the role
# that installs this program writes the values it was given into the config file.
TUNNEL_DEFAULTS = {
    "service": "edgefleet-tunnel",
    "remote_user": "edgefleet-tunnel",
    "local_mysql_port": 3306,
    "local_ssh_port": 22,
    "server_alive_interval": 5,
    "server_alive_count": 3,
    "restart_sec": 3,
    "max_backoff": 10,
    "template": "/usr/local/lib/edgefleet/edgefleet-tunnel.service.j2",
}
CONFIG_DEFAULTS = {
    "ca_cert": "/etc/edgefleet/enroll-ca.pem",
    "token_file": "/etc/edgefleet/enroll.token",
    "device_id": "",
    "device_id_from": "hostname",
    "site": "",
    "labels": {},
    "config_dir": "/etc/edgefleet",
    "ssh_dir": "/etc/ssh",
    "root_authorized_keys": "/root/.ssh/authorized_keys",
    "systemd_dir": "/etc/systemd/system",
    "ansible_managed": "Ansible managed",
    "token_after_use": "delete",
    "timeout": 20,
    "retry_initial": 2.0,
    "retry_max": 300.0,
    "max_attempts": 0,
    "start_tunnel": True,
    "state_dir": "/var/lib/edgefleet",
    "refresh_max_age": 86400,
}
REFRESH_STATE = "placement-refresh.json"
# What the device keeps of its placement in enrollment.json (first boot and refresh).
RECORD_KEYS = ("cloud_host", "cloud_address", "cloud_ssh_port", "tunnel_mysql_port", "tunnel_ssh_port",
               "server_id", "gtid_domain_id", "replica_mode")
PRIORITY = {"err": 3, "warning": 4, "notice": 5, "info": 6}


class Permanent(Exception):
    """Retrying cannot help (bad token, refused id, bad configuration)."""


class Temporary(Exception):
    """Offline, server busy or failing: retry later."""

    def __init__(self, message, retry_after=None):
        Exception.__init__(self, message)
        self.retry_after = retry_after


def log(level, message):
    """One journal line; the <N> prefix sets its priority (systemd SyslogLevelPrefix)."""
    sys.stderr.write("<%d>edgefleet-device-enroll: %s\n" % (PRIORITY[level], message))
    sys.stderr.flush()


# --------------------------------------------------------------------------- configuration

def load_config(path, root="/"):
    try:
        with open(rooted(root, path), encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as exc:
        raise Permanent("config %s cannot be read: %s" % (path, exc))
    if not isinstance(raw, dict):
        raise Permanent("config %s must be a JSON object" % path)
    unknown = sorted(set(raw) - set(CONFIG_DEFAULTS) - {"api_url", "tunnel"})
    if unknown:
        raise Permanent("config %s: unknown keys %s" % (path, ", ".join(unknown)))
    cfg = dict(CONFIG_DEFAULTS)
    cfg.update(raw)
    cfg["tunnel"] = dict(TUNNEL_DEFAULTS, **(raw.get("tunnel") or {}))
    url = urllib.parse.urlsplit(str(cfg.get("api_url") or ""))
    if url.scheme != "https" or not url.hostname:
        raise Permanent("config %s: api_url must be an https:// URL (plain HTTP is never used), got %r"
                        % (path, cfg.get("api_url")))
    if not isinstance(cfg["labels"], dict) or not all(isinstance(v, str) for v in cfg["labels"].values()):
        raise Permanent("config %s: labels must be a mapping of strings" % path)
    if cfg["token_after_use"] not in ("delete", "keep"):
        raise Permanent("config %s: token_after_use must be delete or keep" % path)
    return cfg


def rooted(root, path):
    """path inside an image tree (--root, for checks before first boot) or the live system."""
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def derive_device_id(cfg, root="/"):
    if cfg["device_id"]:
        dev_id = cfg["device_id"]
    else:
        source = cfg["device_id_from"]
        if source == "hostname":
            raw = socket.gethostname().split(".")[0]
        elif source == "machine-id":
            with open(rooted(root, "/etc/machine-id"), encoding="ascii") as handle:
                raw = "d" + handle.read().strip()[:12]
        elif source.startswith("file:"):
            with open(rooted(root, source[5:]), encoding="utf-8") as handle:
                raw = handle.read().strip()
        else:
            raise Permanent("device_id_from must be hostname, machine-id or file:PATH, got %r" % source)
        dev_id = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if not ID_RE.match(dev_id):
        raise Permanent("device id %r is not valid (^[a-z][a-z0-9_]{0,31}$): set device_id in the config" % dev_id)
    return dev_id


def read_token(cfg, root="/"):
    path = rooted(root, cfg["token_file"])
    try:
        info = os.stat(path)
    except OSError:
        raise Permanent("token file %s is missing: install a new token (see docs/enrollment.md)" % cfg["token_file"])
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Permanent("token file %s is readable by others (mode %o): it must be 0600"
                        % (cfg["token_file"], stat.S_IMODE(info.st_mode)))
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        raise Permanent("token file %s is empty" % cfg["token_file"])
    return token


# --------------------------------------------------------------------------- keys

def public_key(path):
    with open(path, encoding="ascii") as handle:
        return " ".join(handle.read().split()[:2])


def ensure_keys(cfg, dev_id):
    """Tunnel key (generated here, never sent) and, when missing, the SSH host keys."""
    ssh_dir = cfg["ssh_dir"]
    if not os.path.exists(os.path.join(ssh_dir, "ssh_host_ed25519_key.pub")):
        log("notice", "generating the SSH host keys")
        subprocess.run(["ssh-keygen", "-A"], check=True, stdout=subprocess.DEVNULL)
    os.makedirs(cfg["config_dir"], mode=0o750, exist_ok=True)
    os.chmod(cfg["config_dir"], 0o750)
    key = os.path.join(cfg["config_dir"], "tunnel_ed25519")
    if not os.path.exists(key):
        log("notice", "generating the tunnel key %s" % key)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgefleet-tunnel %s" % dev_id,
                        "-f", key], check=True, stdout=subprocess.DEVNULL)
    return public_key(key + ".pub"), public_key(os.path.join(ssh_dir, "ssh_host_ed25519_key.pub"))


# --------------------------------------------------------------------------- HTTPS

def tls_context(ca_file):
    """Only the pinned CA; the certificate chain and the hostname are always verified."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise Permanent("CA certificate %s cannot be loaded: %s" % (ca_file, exc))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not (ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED):
        raise AssertionError("the TLS context must verify the certificate and the hostname")
    return ctx


def post_enroll(cfg, body, endpoint="/v1/enroll"):
    """One attempt; returns the response object or raises Permanent / Temporary."""
    url = urllib.parse.urlsplit(cfg["api_url"])
    path = (url.path.rstrip("/") or "") + endpoint
    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=cfg["timeout"],
                                       context=tls_context(cfg["ca_cert"]))
    data = json.dumps(body).encode("utf-8")
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json",
                                                       "Accept": "application/json",
                                                       "User-Agent": "edgefleet-device-enroll/1"})
        resp = conn.getresponse()
        payload = resp.read(MAX_RESPONSE + 1)
        status, retry_after = resp.status, resp.getheader("Retry-After")
    except ssl.SSLCertVerificationError as exc:
        # Wrong CA, wrong name, or a clock not set yet on first boot: retried, loudly.
        raise Temporary("TLS verification of %s failed: %s" % (url.hostname, exc.verify_message or exc))
    except (OSError, http.client.HTTPException) as exc:
        raise Temporary("cannot reach %s: %s" % (cfg["api_url"], exc))
    finally:
        conn.close()
    try:
        doc = json.loads(payload.decode("utf-8")) if payload and len(payload) <= MAX_RESPONSE else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    what = "%s %s" % (doc.get("error") or "", doc.get("message") or "")
    if status in (200, 201):
        return doc
    if status in RETRY_STATUSES or status >= 500:
        try:
            after = float(retry_after) if retry_after else None
        except ValueError:
            after = None
        raise Temporary("server answered %d %s" % (status, what.strip()), after)
    what_refused = "enrollment" if endpoint == "/v1/enroll" else endpoint
    raise Permanent("%s refused: HTTP %d %s" % (what_refused, status, what.strip()))


def enroll_with_retries(cfg, body, sleep=time.sleep, rand=random.random):
    """Exponential back-off with full jitter: retry n waits U(0.5, 1) * min(max, initial * 2**n)."""
    attempt = 0
    while True:
        try:
            return post_enroll(cfg, body)
        except Temporary as exc:
            attempt += 1
            if cfg["max_attempts"] and attempt >= cfg["max_attempts"]:
                raise
            delay = min(float(cfg["retry_max"]), float(cfg["retry_initial"]) * 2 ** min(attempt - 1, 30))
            delay = delay * (0.5 + rand() / 2)
            if exc.retry_after:
                delay = max(delay, min(float(exc.retry_after), float(cfg["retry_max"])))
            log("warning", "attempt %d: %s; retrying in %.1f s" % (attempt, exc, delay))
            sleep(delay)


def check_response(doc, dev_id):
    def need(key, kind):
        value = doc.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Permanent("enrollment answer lacks a valid %r" % key)
        return value
    if need("device_id", str) != dev_id:
        raise Permanent("enrollment answer is for device %r, not %r" % (doc.get("device_id"), dev_id))
    for key in ("tunnel_mysql_port", "tunnel_ssh_port", "cloud_ssh_port"):
        if not 0 < need(key, int) < 65536:
            raise Permanent("enrollment answer: %s out of range" % key)
    address = need("cloud_address", str)
    if not re.match(r"^[A-Za-z0-9.:_-]+$", address):
        raise Permanent("enrollment answer: cloud_address %r is not a host name or address" % address)
    if not ID_RE.match(need("tunnel_user", str).replace("-", "_")):
        raise Permanent("enrollment answer: tunnel_user is not a valid user name")
    need("cloud_host", str)
    keys = [" ".join(str(k).split()[:2]) for k in need("cloud_host_keys", list)]
    if not keys or not all(KEY_RE.match(k) for k in keys):
        raise Permanent("enrollment answer: cloud_host_keys must be a non-empty list of public keys")
    mgmt = [str(k).strip() for k in doc.get("management_public_keys") or []]
    if any("\n" in k or not KEY_RE.match(" ".join(k.split()[:2])) for k in mgmt):
        raise Permanent("enrollment answer: management_public_keys must be public keys")
    return keys, mgmt


# --------------------------------------------------------------------------- files the tunnel needs

def write_file(path, text, mode):
    """Atomic replace with the given mode, owner root (what the device_tunnel role writes)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".edgefleet-device-enroll.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def render_template(text, values):
    """The device_tunnel role's unit template holds only {{ name }} substitutions; anything else
    (a filter, a tag) is refused so the role and this program cannot silently differ."""
    if "{%" in text or "{#" in text:
        raise Permanent("tunnel template uses Jinja tags this program does not render")

    def sub(match):
        name = match.group(1)
        if name not in values:
            raise Permanent("tunnel template uses {{ %s }}, which this program does not know" % name)
        return str(values[name])
    out = VAR_RE.sub(sub, text)
    if "{{" in out:
        raise Permanent("tunnel template uses Jinja expressions this program does not render")
    return out


def tunnel_values(cfg, dev_id, doc):
    t = cfg["tunnel"]
    key = os.path.join(cfg["config_dir"], "tunnel_ed25519")
    return {
        "ansible_managed": cfg["ansible_managed"],
        "device_tunnel_device_id": dev_id,
        "device_tunnel_cloud_host": doc["cloud_host"],
        "device_tunnel_cloud_address": doc["cloud_address"],
        "device_tunnel_cloud_port": doc["cloud_ssh_port"],
        "device_tunnel_mysql_port": doc["tunnel_mysql_port"],
        "device_tunnel_ssh_port": doc["tunnel_ssh_port"],
        "device_tunnel_local_mysql_port": t["local_mysql_port"],
        "device_tunnel_local_ssh_port": t["local_ssh_port"],
        "device_tunnel_remote_user": doc.get("tunnel_user") or t["remote_user"],
        "device_tunnel_server_alive_interval": t["server_alive_interval"],
        "device_tunnel_server_alive_count": t["server_alive_count"],
        "device_tunnel_restart_sec": t["restart_sec"],
        "device_tunnel_max_backoff": t["max_backoff"],
        "device_tunnel_key_path": key,
        "device_tunnel_known_hosts_path": os.path.join(cfg["config_dir"], "known_hosts"),
    }


def known_hosts_text(cfg, address, port, keys):
    """Same lines as roles/device_tunnel/templates/known_hosts.j2. That role pins the cloud host's
    ed25519 key, so the ed25519 keys of the answer are pinned (all keys if it has none)."""
    pinned = [k for k in keys if k.startswith("ssh-ed25519 ")] or keys
    host = address if int(port) == 22 else "[%s]:%s" % (address, port)
    return "# %s\n" % cfg["ansible_managed"] + "".join("%s %s\n" % (host, k) for k in pinned)


# PyYAML's implicit resolvers (YAML 1.1) for what an id or site ([a-z0-9_]) can look like: such a
# value is quoted by to_nice_yaml, everything else is written plain.
YAML_NOT_STR = re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
                          r"|~|null|Null|NULL|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
                          r"|[-+]?0x[0-9a-fA-F_]+)$")
YAML_PLAIN = re.compile(r"^[a-z0-9_]+$")


def yaml_scalar(value):
    """A string as to_nice_yaml writes it (plain when PyYAML would read it back as this string)."""
    if value and YAML_PLAIN.match(value) and not YAML_NOT_STR.match(value):
        return value
    return "'%s'" % value.replace("'", "''")


def device_yml_text(dev_id, site):
    """Byte for byte what roles/device_tunnel writes (keys sorted, as to_nice_yaml does)."""
    return ("# Managed by edgefleet.mysql_backup\nid: %s\nname: %s\nsite: %s\n"
            % (yaml_scalar(dev_id), yaml_scalar(dev_id), yaml_scalar(site)))


def install_management_keys(path, keys):
    if not keys:
        return 0
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    present = set(" ".join(line.split()[:2]) for line in lines if line.strip())
    added = [k for k in keys if " ".join(k.split()[:2]) not in present]
    if added:
        write_file(path, "".join(line + "\n" for line in lines + added), 0o600)
    return len(added)


def systemctl(*args):
    subprocess.run(["systemctl"] + list(args), check=True)


def apply(cfg, dev_id, doc, host_keys, mgmt):
    cdir = cfg["config_dir"]
    t = cfg["tunnel"]
    write_file(os.path.join(cdir, "known_hosts"),
               known_hosts_text(cfg, doc["cloud_address"], doc["cloud_ssh_port"], host_keys), 0o644)
    added = install_management_keys(cfg["root_authorized_keys"], mgmt)
    with open(t["template"], encoding="utf-8") as handle:
        unit = render_template(handle.read(), tunnel_values(cfg, dev_id, doc))
    write_file(os.path.join(cfg["systemd_dir"], t["service"] + ".service"), unit, 0o644)
    if cfg["start_tunnel"]:
        systemctl("daemon-reload")
        systemctl("enable", t["service"] + ".service")
        # restart, not start: after a key rotation a running tunnel must pick up the new key
        systemctl("restart", t["service"] + ".service")
    record = {"device_id": dev_id, "site": doc.get("site", cfg["site"]), "api_url": cfg["api_url"],
              "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for key in RECORD_KEYS:
        record[key] = doc.get(key)
    write_file(os.path.join(cdir, "enrollment.json"), json.dumps(record, indent=2, sort_keys=True) + "\n", 0o600)
    # Last: its presence is the unit's "enrolled" condition.
    write_file(os.path.join(cdir, "device.yml"), device_yml_text(dev_id, doc.get("site") or cfg["site"] or ""), 0o644)
    if cfg["token_after_use"] == "delete":
        try:
            os.unlink(cfg["token_file"])
        except FileNotFoundError:
            pass
    return added


# --------------------------------------------------------------------------- placement refresh

def decide_refresh(observed, state, now, max_age):
    """Whether to ask the service for the placement now: (ask, reason). Pure.

    ``observed``: the tunnel unit now ({active, invocation, main_pid, children}: ``children`` are
    "pid:start time" of autossh's ssh processes); ``state``: what the last run kept ({observed,
    last_ok_at, first_seen_at}). Asks when the unit is not active, when it has no ssh process
    (autossh between two failed attempts), when the unit or its ssh process changed since the last
    check (a tunnel that is up keeps one ssh process for as long as it stays connected), or when
    the last successful ask (or, never asked, the first check) is at least ``max_age`` seconds old.
    """
    if observed.get("active") != "active":
        return True, "the tunnel unit is %s" % (observed.get("active") or "unknown")
    if not observed.get("children"):
        return True, "the tunnel has no ssh process (autossh is between connection attempts)"
    previous = state.get("observed")
    if previous is not None and tunnel_identity(previous) != tunnel_identity(observed):
        return True, "the tunnel restarted or reconnected since the last check"
    since = state.get("last_ok_at") or state.get("first_seen_at")
    if since is not None and now - since >= max_age:
        return True, "the last placement check was %d s ago" % (now - since)
    if previous is None:
        return False, "first check: the tunnel is up; its state is recorded"
    return False, "the tunnel is up and has not reconnected since the last check"


def tunnel_identity(observed):
    return (observed.get("invocation"), observed.get("main_pid"), tuple(observed.get("children") or ()))


def _proc_start(pid):
    """(parent pid, start time in clock ticks) of a process, from /proc/<pid>/stat."""
    with open("/proc/%s/stat" % pid, encoding="ascii", errors="replace") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[19]


def observe_tunnel(service):
    """The tunnel unit as systemd and /proc show it now (see decide_refresh)."""
    proc = subprocess.run(["systemctl", "show", "-p", "ActiveState", "-p", "InvocationID", "-p", "MainPID",
                           service + ".service"], capture_output=True, text=True, check=False)
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    main_pid = props.get("MainPID") or "0"
    children = []
    if main_pid != "0":
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                ppid, start = _proc_start(name)
            except (OSError, IndexError, ValueError):
                continue
            if str(ppid) == main_pid:
                children.append("%s:%s" % (name, start))
    return {"active": props.get("ActiveState") or "unknown", "invocation": props.get("InvocationID") or "",
            "main_pid": main_pid, "children": sorted(children)}


def read_state(cfg):
    try:
        with open(os.path.join(cfg["state_dir"], REFRESH_STATE), encoding="utf-8") as handle:
            doc = json.load(handle)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(cfg, state):
    os.makedirs(cfg["state_dir"], mode=0o755, exist_ok=True)
    write_file(os.path.join(cfg["state_dir"], REFRESH_STATE), json.dumps(state, indent=1, sort_keys=True) + "\n",
               0o644)


def enrolled_id(cfg):
    """The device id of /etc/edgefleet/device.yml (written at enrollment or by device_tunnel), or None."""
    try:
        with open(os.path.join(cfg["config_dir"], "device.yml"), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    match = re.search(r"^id: '?([a-z][a-z0-9_]{0,31})'?$", text, re.M)
    if not match:
        raise Permanent("%s has no valid id line" % os.path.join(cfg["config_dir"], "device.yml"))
    return match.group(1)


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def apply_placement(cfg, dev_id, doc, host_keys, site):
    """Make known_hosts, the tunnel unit and device.yml what the answer says, with the first-boot
    writers (atomic replace, same text as the device_tunnel role); restart the tunnel when its unit
    or pinned keys changed. Files already equal are not touched. Returns the rewritten paths."""
    cdir = cfg["config_dir"]
    t = cfg["tunnel"]
    with open(t["template"], encoding="utf-8") as handle:
        unit = render_template(handle.read(), tunnel_values(cfg, dev_id, doc))
    unit_path = os.path.join(cfg["systemd_dir"], t["service"] + ".service")
    wanted = [
        (os.path.join(cdir, "known_hosts"),
         known_hosts_text(cfg, doc["cloud_address"], doc["cloud_ssh_port"], host_keys), 0o644),
        (unit_path, unit, 0o644),
        (os.path.join(cdir, "device.yml"), device_yml_text(dev_id, site or ""), 0o644),
    ]
    changed = []
    for path, text, mode in wanted:
        if _read(path) != text:
            write_file(path, text, mode)
            changed.append(path)
    record_path = os.path.join(cdir, "enrollment.json")
    try:
        record = json.loads(_read(record_path) or "{}")
    except ValueError:
        record = {}
    placed = dict((key, doc.get(key)) for key in RECORD_KEYS)
    if any(record.get(key) != val for key, val in placed.items()):
        record.update(placed, device_id=dev_id, api_url=cfg["api_url"],
                      placed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_file(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o600)
        changed.append(record_path)
    if cfg["start_tunnel"] and (unit_path in changed or os.path.join(cdir, "known_hosts") in changed):
        if unit_path in changed:
            systemctl("daemon-reload")
        systemctl("restart", t["service"] + ".service")
    return changed


def refresh(cfg, force=False, now=None):
    """One --refresh run; returns the exit status."""
    now = time.time() if now is None else now
    dev_id = enrolled_id(cfg)
    if dev_id is None:
        log("info", "not enrolled yet (no %s): nothing to refresh" % os.path.join(cfg["config_dir"], "device.yml"))
        return 0
    service = cfg["tunnel"]["service"]
    state = read_state(cfg)
    state.setdefault("first_seen_at", now)
    observed = observe_tunnel(service) if cfg["start_tunnel"] else None
    if force:
        ask, reason = True, "asked to (--force)"
    elif observed is None:
        ask, reason = False, "start_tunnel is off: the tunnel is not managed here (use --force)"
    else:
        ask, reason = decide_refresh(observed, state, now, float(cfg["refresh_max_age"]))
    state.update(observed=observed, checked_at=now)
    if not ask:
        write_state(cfg, state)
        log("info", "placement not asked: %s" % reason)
        return 0
    log("notice", "asking %s for the placement of %s: %s" % (cfg["api_url"], dev_id, reason))
    key = os.path.join(cfg["config_dir"], "tunnel_ed25519")
    try:
        stamp = int(time.time())
        body = {"device_id": dev_id, "timestamp": stamp,
                "signature": placement_signature.sign(key, dev_id, stamp)}
        doc = post_enroll(cfg, body, "/v1/placement")
        host_keys, dummy_mgmt = check_response(doc, dev_id)
    except placement_signature.SignatureError as exc:
        write_state(cfg, state)
        log("err", "cannot sign the placement request: %s" % exc)
        return EX_PERMANENT
    except (Permanent, Temporary) as exc:
        write_state(cfg, state)
        log("err" if isinstance(exc, Permanent) else "warning", "placement not refreshed: %s" % exc)
        return EX_PERMANENT if isinstance(exc, Permanent) else EX_TEMPORARY
    changed = apply_placement(cfg, dev_id, doc, host_keys, doc.get("site") or cfg["site"])
    state["last_ok_at"] = now
    if changed and cfg["start_tunnel"]:
        state["observed"] = observe_tunnel(service)  # our own restart is not a reconnect to report next time
    write_state(cfg, state)
    where = "%s (%s:%s), tunnel ports %s/%s" % (doc["cloud_host"], doc["cloud_address"], doc["cloud_ssh_port"],
                                                doc["tunnel_mysql_port"], doc["tunnel_ssh_port"])
    if changed:
        log("notice", "placement changed: now %s; rewrote %s%s" % (
            where, ", ".join(changed), "; %s restarted" % service if cfg["start_tunnel"] else ""))
    else:
        log("info", "placement unchanged: %s; nothing rewritten" % where)
    return 0


# --------------------------------------------------------------------------- main

def check(cfg, root):
    """--check: the installed artefacts are complete (used by the role's tests, no network)."""
    dev_id = derive_device_id(cfg, root)
    read_token(cfg, root)
    tls_context(rooted(root, cfg["ca_cert"]))
    with open(rooted(root, cfg["tunnel"]["template"]), encoding="utf-8") as handle:
        render_template(handle.read(), tunnel_values(cfg, dev_id, {
            "cloud_host": "c", "cloud_address": "192.0.2.1", "cloud_ssh_port": 22,
            "tunnel_mysql_port": 1, "tunnel_ssh_port": 2}))
    return dev_id


def main(argv=None):
    parser = argparse.ArgumentParser(description="Enroll this device with the edgefleet enrollment API.")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--check", action="store_true", help="validate the installed artefacts, contact nobody")
    parser.add_argument("--root", default="/", help="with --check: an image tree instead of /")
    parser.add_argument("--refresh", action="store_true",
                        help="enrolled device: ask for the current placement when the tunnel looks lost and "
                             "switch the tunnel when it changed")
    parser.add_argument("--force", action="store_true", help="with --refresh: ask whatever the tunnel looks like")
    args = parser.parse_args(argv)
    if args.force and not args.refresh:
        parser.error("--force goes with --refresh")
    try:
        cfg = load_config(args.config, args.root)
        if args.refresh:
            return refresh(cfg, args.force)
        if args.check:
            dev_id = check(cfg, args.root)
            sys.stdout.write("ok: device %s would enroll at %s\n" % (dev_id, cfg["api_url"]))
            return 0
        identity = os.path.join(cfg["config_dir"], "device.yml")
        if os.path.exists(identity):
            log("info", "%s exists: this device is enrolled already" % identity)
            return 0
        dev_id = derive_device_id(cfg)
        token = read_token(cfg)
        tunnel_key, host_key = ensure_keys(cfg, dev_id)
        body = {"token": token, "device_id": dev_id, "tunnel_public_key": tunnel_key,
                "host_public_key": host_key}
        if cfg["site"]:
            body["site"] = cfg["site"]
        if cfg["labels"]:
            body["labels"] = cfg["labels"]
        log("notice", "enrolling device %s at %s" % (dev_id, cfg["api_url"]))
        doc = enroll_with_retries(cfg, body)
        del body, token
        host_keys, mgmt = check_response(doc, dev_id)
        added = apply(cfg, dev_id, doc, host_keys, mgmt)
        log("notice", "enrolled as %s: cloud host %s (%s:%s), tunnel ports %s/%s, %s mode, %d management key(s) "
                      "added; %s started" % (dev_id, doc["cloud_host"], doc["cloud_address"], doc["cloud_ssh_port"],
                                             doc["tunnel_mysql_port"], doc["tunnel_ssh_port"],
                                             doc.get("replica_mode"), added, cfg["tunnel"]["service"]))
        return 0
    except Permanent as exc:
        log("err", "%s. Not retrying: fix this, then `systemctl restart edgefleet-enroll`." % exc)
        return EX_PERMANENT
    except Temporary as exc:
        log("err", "giving up for now: %s" % exc)
        return EX_TEMPORARY
