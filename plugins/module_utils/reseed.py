# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-seed one device's channel on its replica instance, as a host program.

The steps of roles/replication tasks/seed.yml (used by playbooks/resync.yml) for the cloud hosts'
automatic repair (module_utils/auto_repair.py), with the same parts: the replication_source
module's logic for the channel (replication_apply.configure_server: replica lock, GTID position
merged by domain so the other channels of the instance keep theirs) and dump_load.copy_schemas
for the dump through the tunnel and the load (schemas replaced only after the whole dump
succeeded). An existing channel is started again if anything fails.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import dump_load
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.args_common import (
    channel_options, mysql_connection_argument_spec, spec_defaults,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import open_session
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_apply import (
    ServerFailure, configure_server,
)


class ReseedError(Exception):
    """The re-seed failed; the message says at which step and whether the channel runs again."""


def server_params(socket_path, lock_timeout=60, start_wait=5.0):
    """replication_source's params for the replica instance at ``socket_path`` (root, no option file)."""
    params = spec_defaults(mysql_connection_argument_spec())
    params.update(login_unix_socket=socket_path, login_user='root', config_file=None,
                  prune_unlisted=False, update_password='on_create', lock_timeout=lock_timeout,
                  start_wait=start_wait)
    return params


def channel(name, **options):
    """One channel as replication_source's ``channels`` option would carry it."""
    spec = spec_defaults(channel_options())
    spec.update(options, name=name)
    return spec


def reseed_channel(device_id, socket_path, channel_name, databases, rename_prefix, dump_login, work_dir,
                   warn=None, connect=open_session):
    """Stop the channel, dump the device (``dump_login``: login_host/port/user/password of its
    tunnel) into ``work_dir``, replace its schemas on the replica, set the dump's GTID position and
    start the channel. Returns {'gtid_pos', 'loaded_bytes'}; raises ReseedError."""
    warn = warn or (lambda message: None)
    params = server_params(socket_path)
    step = 'stop the channel'
    try:
        configure_server(params, [channel(channel_name, state='stopped')], False, warn, connect)
        step = 'dump the device and load its schemas'
        if not os.path.isdir(work_dir):
            os.makedirs(work_dir, 0o700)
        loaded = dump_load.copy_schemas(
            'seed', databases, os.path.join(work_dir, '%s.sql' % device_id), dump=dump_login,
            load={'login_unix_socket': socket_path, 'login_user': 'root'},
            rename_prefix=rename_prefix, replace=True, keep=False)
        step = 'set the GTID position and start the channel'
        position = {'gtid_pos': loaded['gtid_pos'], 'gtid_pos_force': True} if loaded.get('gtid_pos') else {}
        configure_server(params, [channel(channel_name, state='running', **position)], False, warn, connect)
    except (ServerFailure, dump_load.DumpLoadError, OSError) as exc:
        restarted = step != 'stop the channel' and _start_again(params, channel_name, warn, connect)
        raise ReseedError('re-seeding %s (channel %r) failed at "%s": %s; %s' % (
            device_id, channel_name, step, exc, 'the channel was started again (the replica data may be partial '
            'until a re-seed succeeds)' if restarted else 'the channel may be stopped'))
    return {'gtid_pos': loaded.get('gtid_pos') or '', 'loaded_bytes': loaded.get('loaded_bytes') or 0}


def _start_again(params, channel_name, warn, connect):
    try:
        configure_server(params, [channel(channel_name, state='running')], False, warn, connect)
        return True
    except ServerFailure:
        return False
