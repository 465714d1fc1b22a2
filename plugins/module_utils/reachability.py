# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which devices can be reached right now, found without a task per device.

A device reached through its reverse tunnel (reach ``tunnel``) is online when its SSH
back-channel port listens on its cloud host: autossh holds that listener only while its session
is up, and the gateway's keep-alives free a dead one within seconds. A device reached by address
(reach ``address``) is online when its SSH port accepts a TCP connection from the controller.
Everything else (reach ``none``, an unknown cloud host) is offline. Standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
from concurrent.futures import ThreadPoolExecutor

REACHES = ('tunnel', 'address', 'none')


def listening_ports(lines):
    """Ports in listening state from ``ss -Htln`` lines (local address is the 4th column)."""
    ports = set()
    for line in lines or []:
        fields = line.split()
        if len(fields) < 4:
            continue
        port = fields[3].rpartition(':')[2]
        if port.isdigit():
            ports.add(int(port))
    return ports


def device_error(device):
    """Why a device record cannot be classified, or None."""
    if not isinstance(device, dict) or not device.get('name'):
        return 'every device needs a name'
    reach = device.get('reach') or 'none'
    if reach not in REACHES:
        return 'device %s: reach must be one of %s, not %r' % (device['name'], ', '.join(REACHES), reach)
    if reach == 'address' and not device.get('host'):
        return 'device %s: reach is address but it has no host' % device['name']
    return None


def tcp_open(host, port, timeout):
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


def classify(devices, listening, timeout=3.0, workers=256, probe=tcp_open):
    """Split devices into online and offline.

    ``listening`` maps a cloud host to the ports listening there (None: that host could not be
    asked, so its tunnel devices count as offline). Address probes run concurrently.
    Returns (online names, {offline name: reason}), names sorted.
    """
    online, offline, to_probe = [], {}, []
    for device in devices:
        name, reach = device['name'], device.get('reach') or 'none'
        if reach == 'tunnel':
            cloud = device.get('cloud_host') or ''
            ports = listening.get(cloud)
            if ports is None:
                offline[name] = 'cloud host %s not asked or unreachable' % (cloud or '(none)')
            elif int(device.get('tunnel_ssh_port') or 0) in ports:
                online.append(name)
            else:
                offline[name] = 'tunnel down (port %s not listening on %s)' % (device.get('tunnel_ssh_port'), cloud)
        elif reach == 'address':
            to_probe.append(device)
        else:
            offline[name] = 'no way to reach it (no address, no allocation)'
    if to_probe:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(to_probe)))) as pool:
            answers = pool.map(lambda d: probe(d['host'], d.get('port') or 22, timeout), to_probe)
            for device, is_open in zip(to_probe, answers):
                if is_open:
                    online.append(device['name'])
                else:
                    offline[device['name']] = 'no answer on %s:%s' % (device['host'], device.get('port') or 22)
    return sorted(online), dict(sorted(offline.items()))
