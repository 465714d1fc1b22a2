# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup program's configuration: /etc/edgefleet/backup.json (rendered by the backup role
from roles/backup/templates/backup.json.j2) over the defaults below, checked and completed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.errors import BackupError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.backup.files import read_json

VERSION = '1.0.0'
DEFAULT_CONFIG = '/etc/edgefleet/backup.json'

# The client programs, by name (found on the PATH) unless the configuration names other paths.
DEFAULT_TOOLS = {'mariadb': 'mariadb', 'mariadb-dump': 'mariadb-dump', 'mariabackup': 'mariabackup',
                 'mbstream': 'mbstream', 'zstd': 'zstd', 'restic': 'restic'}

DEFAULTS = {
    'backup_dir': '/var/lib/edgefleet/backup',
    'status_dir': None,                     # <backup_dir>/status
    'log_file': '/var/log/edgefleet-backup.log',
    'lock_file': '/run/lock/edgefleet-backup.lock',
    'lock_wait': 7200,
    'concurrency': 2,
    'min_age': '20h',
    'keep_last': 7,
    'keep_days': 14,
    'databases': ['app'],
    'zstd_level': 6,
    'zstd_threads': 1,
    'checksums': 'dump',                   # dump | server | none (backup_policy.CHECKSUM_METHODS)
    'dump_options': [],
    'login_user': 'root',
    'verify_prefix': 'edgefleet_verify_',
    'verify_socket': None,                  # default: the device's replica instance
    'verify_after_backup': False,
    'first_max_per_run': 4,
    'first_max_lag': 60,                   # seconds a channel may be behind for its first backup
    'file_mode': '0640',
    'dir_mode': '0750',
    'group': None,
    'devices': [],
    'physical': {'enabled': False, 'min_age': '7d', 'keep_last': 2, 'keep_days': 14, 'instances': []},
    'offsite': {'enabled': False},
    'tools': DEFAULT_TOOLS,
}


def load_config(path):
    """The configuration file at ``path``, completed by complete_config()."""
    loaded = read_json(path)
    if loaded is None:
        raise BackupError('configuration %s not found (written by the edgefleet backup role)' % path)
    return complete_config(loaded, path)


def complete_config(loaded, path):
    """``loaded`` (the parsed file ``path``, named in errors) over DEFAULTS, checked, with derived
    values (min_age_s, checksum_method, file_mode_i, dir_mode_i, gid) and each device's
    defaults filled in. Raises BackupError or backup_policy.PolicyError."""
    config = dict(DEFAULTS)
    config.update(loaded)
    for key in ('physical', 'offsite', 'tools'):
        merged = dict(DEFAULTS[key])
        merged.update(loaded.get(key) or {})
        config[key] = merged
    config['status_dir'] = config.get('status_dir') or os.path.join(config['backup_dir'], 'status')
    config['min_age_s'] = P.parse_duration(config['min_age'])
    try:
        config['checksum_method'] = P.checksum_method(config['checksums'])
    except ValueError as exc:
        raise BackupError('configuration %s: %s' % (path, exc))
    P.check_retention_policy(config['keep_last'], config['keep_days'])
    physical = config['physical']
    physical['min_age_s'] = P.parse_duration(physical.get('min_age', '7d'))
    P.check_retention_policy(physical.get('keep_last', 2), physical.get('keep_days', 14))
    config['file_mode_i'] = int(str(config['file_mode']), 8)
    config['dir_mode_i'] = int(str(config['dir_mode']), 8)
    group = config.get('group')
    if group in (None, ''):
        config['gid'] = None
    else:
        import grp  # pylint: disable=import-outside-toplevel
        config['gid'] = grp.getgrnam(group).gr_gid if not str(group).isdigit() else int(group)
    offsite = config['offsite']
    if offsite.get('enabled') and offsite.get('backend', 'sftp') not in P.OFFSITE_BACKENDS:
        raise BackupError('configuration %s: unknown offsite backend %r (choose one of %s)'
                          % (path, offsite.get('backend'), ', '.join(P.OFFSITE_BACKENDS)))
    ids = [d['id'] for d in config['devices']]
    if len(set(ids)) != len(ids):
        raise BackupError('configuration %s lists a device twice' % path)
    for device in config['devices']:
        for key in ('id', 'socket'):
            if not device.get(key):
                raise BackupError('configuration %s: device %r has no %s' % (path, device, key))
        device.setdefault('mode', 'instance')
        device.setdefault('channel', device['id'])
        device.setdefault('instance', device['id'])
        device.setdefault('schema_prefix', device['id'] + '_' if device['mode'] == 'channel' else '')
    return config
