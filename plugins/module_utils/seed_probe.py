# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which new devices hold data to seed: each device's MySQL is asked through its tunnel (on the
cloud host's loopback) which of the seeded schemas exist there, several devices at once.

A device whose schemas exist was written to before its binlog was on (that history is in no
binlog), so its channel must start from a seed; a device without them starts from its first
binlog event; a device that cannot be reached is deferred (its data could not be checked).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from concurrent.futures import ThreadPoolExecutor

SCHEMATA_QUERY = ('SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA '
                  'WHERE SCHEMA_NAME IN ({0}) ORDER BY SCHEMA_NAME')


def schemata_query(databases):
    """(sql, params) listing which of ``databases`` exist (the check account sees only those)."""
    databases = list(databases)
    return SCHEMATA_QUERY.format(', '.join(['%s'] * len(databases))), databases


def one_line(text):
    return ' '.join(str(text).split())


def probe(devices, schemas_of, parallel=8):
    """Ask every device (dicts with ``id`` and ``tunnel_mysql_port``) through ``schemas_of(port)``
    (the existing seeded schemas, or an exception when unreachable), ``parallel`` at once.

    Returns {'seed': {id: [schemas]}, 'empty': [ids], 'unreached': {id: error on one line}}
    ('unreached', not 'unreachable': in a module result Ansible reads that as the host's state)."""
    devices = list(devices)
    out = {'seed': {}, 'empty': [], 'unreached': {}}

    def ask(device):
        try:
            return device['id'], sorted(schemas_of(int(device['tunnel_mysql_port']))), None
        except Exception as exc:  # pylint: disable=broad-except
            return device['id'], None, one_line(exc) or exc.__class__.__name__

    if not devices:
        return out
    with ThreadPoolExecutor(max_workers=max(1, min(int(parallel), len(devices)))) as pool:
        for dev_id, schemas, error in pool.map(ask, devices):
            if error is not None:
                out['unreached'][dev_id] = error
            elif schemas:
                out['seed'][dev_id] = schemas
            else:
                out['empty'].append(dev_id)
    out['empty'].sort()
    return out
