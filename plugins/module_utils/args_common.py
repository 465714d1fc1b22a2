# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument-spec pieces shared by several modules, each documented by one doc fragment (as
kubernetes.core's args_common does). A module builds its spec from these plus its own options:

=====================================  ==========================================================
piece                                  doc fragment (``extends_documentation_fragment``)
=====================================  ==========================================================
mysql_connection_argument_spec()       edgefleet.mysql_backup.mysql_connection (login_*, TLS ...)
replica_sockets_argument_spec()        edgefleet.mysql_backup.replica_sockets
instances_argument_spec()              edgefleet.mysql_backup.replica_instances
channels_argument_spec()               edgefleet.mysql_backup.replica_instances.channels
=====================================  ==========================================================
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (  # noqa: F401 pylint: disable=unused-import
    INSTANCES_EXCLUSIVE, instance_socket_options, mysql_connection_argument_spec,
)


def spec_defaults(spec):
    """The values AnsibleModule would fill in for options not given: how a host program (no
    AnsibleModule there) calls logic written for module params, e.g. module_utils/reseed.py."""
    return dict((name, option.get('default')) for name, option in spec.items())


def replica_sockets_argument_spec():
    """The replica instances of the host a module runs on: their socket directory and one login."""
    return dict(
        socket_dir=dict(type='path', default='/run/mysqld'),
        login_user=dict(type='str', default='root'),
        login_password=dict(type='str', no_log=True),
    )


def channel_options():
    """Suboptions of one wanted replication channel (replication_source)."""
    return dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='running', choices=['running', 'stopped', 'absent']),
        source_host=dict(type='str'),
        source_port=dict(type='int'),
        source_user=dict(type='str'),
        source_password=dict(type='str', no_log=True),
        use_gtid=dict(type='bool', default=True),
        connect_retry=dict(type='int'),
        retry_count=dict(type='int'),
        heartbeat_period=dict(type='float'),
        delay=dict(type='int'),
        ssl=dict(type='bool'),
        ssl_ca=dict(type='str'),
        ssl_capath=dict(type='str'),
        ssl_cert=dict(type='str'),
        ssl_key=dict(type='str', no_log=False),
        ssl_cipher=dict(type='str'),
        ssl_crl=dict(type='str'),
        ssl_verify_server_cert=dict(type='bool'),
        gtid_pos=dict(type='str'),
        gtid_pos_force=dict(type='bool', default=False),
    )


def instances_argument_spec(with_channels=False):
    """``instances``: several servers of the managed host, each through its own socket (refused
    together with login_unix_socket/login_host: see INSTANCES_EXCLUSIVE)."""
    options = instance_socket_options()
    if with_channels:
        options['channels'] = dict(type='list', elements='dict', required=True, options=channel_options())
    return dict(instances=dict(type='list', elements='dict', options=options))


def channels_argument_spec():
    """``channels`` of one server and ``instances`` carrying their own channels (replication_source)."""
    spec = dict(channels=dict(type='list', elements='dict', options=channel_options()))
    spec.update(instances_argument_spec(with_channels=True))
    return spec
