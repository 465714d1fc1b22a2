#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: replication_source
short_description: Desired state of many replication channels of one MySQL/MariaDB replica
version_added: 0.1.0
description:
  - Configures, starts, stops and removes the replication channels of one replica server in
    a single call, so one task carries every device replicated into that server.
  - On MariaDB a channel is a named multi-source connection (C(CHANGE MASTER 'name' TO),
    C(SHOW ALL SLAVES STATUS)); on MySQL it is a replication channel
    (C(CHANGE REPLICATION SOURCE TO ... FOR CHANNEL 'name') from 8.0.23, C(CHANGE MASTER TO)
    before). The SQL is chosen from one version table after detecting the server flavor and
    version; MySQL 8.4 never gets a removed C(MASTER)/C(SLAVE) spelling.
  - Compares the wanted options with the live status and changes nothing when they are equal
    (C(changed=false)). A channel that must change is stopped only as far as needed (MariaDB
    needs both threads stopped for C(CHANGE MASTER); MySQL only the thread an option belongs
    to) and restarted afterwards if it should run. Other channels are not touched.
  - GTID auto-positioning is on by default (MariaDB C(MASTER_USE_GTID=slave_pos), MySQL
    C(SOURCE_AUTO_POSITION=1)).
  - On MariaDB, O(channels[].gtid_pos) seeds are merged into the one global
    C(gtid_slave_pos) by GTID domain; positions of other domains are kept. Changing
    C(gtid_slave_pos) needs every replication thread stopped for a moment, so it is done only
    when a seed changes the value, and every channel that was running is started again.
  - Passwords cannot be read back from MariaDB, so by default a password is set only when a
    channel is created (O(update_password=on_create)). See O(update_password).
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.mysql_connection
attributes:
  check_mode:
    support: full
    description: Computes and returns the statements it would run, without running them.
  diff_mode:
    support: full
    description: Shows each channel's configuration and state before and after (passwords masked).
options:
  channels:
    description:
      - The channels of this replica. Channels not listed are left alone unless
        O(prune_unlisted=true).
      - Options left unset are not compared; a new channel gets the server default for them.
      - Required unless O(instances) is given.
    type: list
    elements: dict
    suboptions: &channel_options
      name:
        description:
          - Channel (MariaDB connection) name. 1-64 characters from C(A-Z a-z 0-9 _ . -),
            not starting with C(.) or C(-); V('') is the default channel.
          - Names are case-insensitive, as they are on the server.
        type: str
        required: true
      state:
        description:
          - V(running) creates or updates the channel and makes sure both threads run.
          - V(stopped) creates or updates the channel and makes sure both threads are stopped.
          - V(absent) stops the channel and deletes it (C(RESET SLAVE 'name' ALL) / C(RESET
            REPLICA ALL FOR CHANNEL)). Its domain's position in C(gtid_slave_pos) is kept.
        type: str
        choices: [running, stopped, absent]
        default: running
      source_host:
        description:
          - Host of the source server (for a device behind a reverse tunnel, V(127.0.0.1)).
          - Required to create a channel.
        type: str
      source_port:
        description:
          - Port of the source server (for a tunnelled device, its allocated tunnel port).
        type: int
      source_user:
        description: Replication user on the source.
        type: str
      source_password:
        description:
          - Password of O(channels[].source_user). Never logged; masked in RV(queries) and
            in the diff.
          - Set on creation; on existing channels only as O(update_password) says.
        type: str
      use_gtid:
        description:
          - Position by GTID (MariaDB C(MASTER_USE_GTID=slave_pos), MySQL
            C(SOURCE_AUTO_POSITION=1)). V(false) means C(MASTER_USE_GTID=no) /
            C(SOURCE_AUTO_POSITION=0).
          - A MariaDB channel using C(current_pos) is changed to C(slave_pos) when V(true).
        type: bool
        default: true
      connect_retry:
        description: Seconds between reconnection attempts (C(MASTER_CONNECT_RETRY)).
        type: int
      retry_count:
        description:
          - Reconnection attempts before the IO thread gives up (C(SOURCE_RETRY_COUNT)).
          - MySQL, and MariaDB 12.0 and later; older MariaDB only has the server-wide
            C(master_retry_count) option, and setting this fails there.
        type: int
      heartbeat_period:
        description: Heartbeat interval in seconds (C(MASTER_HEARTBEAT_PERIOD)).
        type: float
      delay:
        description: Seconds the replica stays behind the source on purpose (C(MASTER_DELAY)).
        type: int
      ssl:
        description: Use TLS to the source (C(MASTER_SSL)).
        type: bool
      ssl_ca:
        description: CA file on the replica host for the source's certificate.
        type: str
      ssl_capath:
        description: CA directory on the replica host.
        type: str
      ssl_cert:
        description: Client certificate file on the replica host.
        type: str
      ssl_key:
        description: Client key file on the replica host (a path, not the key itself).
        type: str
      ssl_cipher:
        description: Allowed TLS ciphers.
        type: str
      ssl_crl:
        description: Certificate revocation list file on the replica host.
        type: str
      ssl_verify_server_cert:
        description: Verify the source certificate's host name (C(MASTER_SSL_VERIFY_SERVER_CERT)).
        type: bool
      gtid_pos:
        description:
          - MariaDB only. GTID position(s) to start this channel from, C(domain-server-seqno)
            with one entry per domain, comma separated (for example the position recorded by
            C(mariadb-dump --gtid --master-data=2) on the device).
          - Merged into the global C(gtid_slave_pos) by domain; other domains are kept.
          - Applied when the channel is created in this call, when the domain has no position
            yet, or when O(channels[].gtid_pos_force=true). Otherwise a running channel's
            progress is never rewound; RV(channels[].gtid_seed_skipped) says so.
        type: str
      gtid_pos_force:
        description: Apply O(channels[].gtid_pos) even if the domain already has another position.
        type: bool
        default: false
  prune_unlisted:
    description:
      - Remove every channel of the server that is not in O(channels) (retired devices), so
        one call carries the whole fleet of an instance. Includes the default channel V('').
    type: bool
    default: false
  update_password:
    description:
      - V(on_create) sets O(channels[].source_password) only when a channel is created. A
        password rotation then needs V(always) once (or the channel recreated).
      - V(always) sets the password of every listed channel on every run. MariaDB cannot show
        the stored password, so this changes (and briefly stops) every channel each run.
        On MySQL 8 the stored password is read from C(mysql.slave_master_info) when the login
        user may, and only channels whose password differs are changed, whichever value is set.
    type: str
    choices: [always, on_create]
    default: on_create
  lock_timeout:
    description:
      - Seconds to wait for the server-wide named lock (C(GET_LOCK)) that keeps two runs (for
        example AWX job slices) from changing the same replica at once. Taken before the
        status is read, held until the module ends. Not taken in check mode.
    type: int
    default: 60
  start_wait:
    description:
      - After starting channels, wait up to this many seconds until each is connected and
        applying, or shows its first error (a stopped thread, or a failed connection attempt),
        then report each started channel's RV(channels[].health). V(0) does not wait.
      - Channels whose source is unreachable (device offline) use the full wait and are
        reported V(connecting).
      - A channel that fails right away (bad password, purged binlogs, ...) gives a warning;
        the module does not fail, since replication itself was configured as asked.
    type: float
    default: 5.0
  instances:
    description:
      - Several servers of the managed host in one call (a cloud host's replica instances), each
        through its own unix socket with its own O(instances[].channels), and otherwise the same
        options. Each server is compared, planned and changed as with O(channels); the result is
        then RV(instances).
      - All channels of all instances are validated before any server is touched. When a server
        fails, the servers before it keep their changes and are reported in the failure.
    type: list
    elements: dict
    suboptions:
      name:
        description: A name for the server, returned with its result.
        type: str
        required: true
      login_unix_socket:
        description: The server's unix socket.
        type: str
        required: true
      channels:
        description: The channels of this server, as O(channels).
        type: list
        elements: dict
        required: true
        suboptions: *channel_options
notes:
  - Every server in the topology needs a unique C(server_id); on MariaDB every source needs its
    own C(gtid_domain_id), because C(gtid_slave_pos) holds one position per domain.
  - Two channels cannot point at the same host and port.
  - A started channel that connects later (device offline) is reported V(connecting); use
    M(edgefleet.mysql_backup.replication_info) to follow it.
seealso:
  - module: edgefleet.mysql_backup.replication_info
  - name: MariaDB CHANGE MASTER TO
    description: Options of MariaDB multi-source connections.
    link: https://mariadb.com/kb/en/change-master-to/
  - name: MySQL CHANGE REPLICATION SOURCE TO
    description: Options of MySQL replication channels.
    link: https://dev.mysql.com/doc/refman/8.4/en/change-replication-source-to.html
'''

EXAMPLES = r'''
- name: Replicate every device of this replica instance (one task for the whole fleet)
  edgefleet.mysql_backup.replication_source:
    login_unix_socket: /run/mysqld/mysqld.sock
    prune_unlisted: true
    channels:
      - name: dev1
        source_host: 127.0.0.1
        source_port: 33001
        source_user: repl_dev1
        source_password: "{{ vault_repl_password_dev1 }}"
      - name: dev2
        source_host: 127.0.0.1
        source_port: 33002
        source_user: repl_dev2
        source_password: "{{ vault_repl_password_dev2 }}"
        heartbeat_period: 10
        connect_retry: 30

- name: Seed a new MariaDB channel at the position of the dump just loaded
  edgefleet.mysql_backup.replication_source:
    channels:
      - name: dev3
        source_host: 127.0.0.1
        source_port: 33003
        source_user: repl_dev3
        source_password: "{{ vault_repl_password_dev3 }}"
        gtid_pos: "3-3-1842"

- name: Pause one channel, retire another
  edgefleet.mysql_backup.replication_source:
    channels:
      - name: dev1
        state: stopped
      - name: dev9
        state: absent

- name: Rotate replication passwords
  edgefleet.mysql_backup.replication_source:
    update_password: always
    channels: "{{ replica_channels }}"
  no_log: true
'''

RETURN = r'''
channels:
  description: What happened to each channel that was listed, pruned or briefly restarted.
  returned: without O(instances)
  type: list
  elements: dict
  contains:
    name:
      description: Channel name.
      type: str
      sample: dev1
    action:
      description:
        - The main action; one of V(created), V(changed), V(started), V(stopped), V(removed),
          V(unchanged).
      type: str
      sample: changed
    actions:
      description: Every action in order (a new running channel is V([created, started])).
      type: list
      elements: str
      sample: [created, started]
    changed:
      description: Whether this channel changed (including a GTID seed).
      type: bool
    changed_options:
      description: Options that were changed on an existing channel.
      type: list
      elements: str
      sample: [source_port]
    pruned:
      description: Present on removed channels; V(true) when removed because unlisted.
      type: bool
      returned: when removed
    restarted:
      description: The channel was stopped and started again to set C(gtid_slave_pos).
      type: bool
      returned: when restarted
    gtid_seeded:
      description: GTIDs this channel's O(channels[].gtid_pos) put into C(gtid_slave_pos).
      type: list
      elements: str
      returned: when seeded
    gtid_seed_skipped:
      description: Why a seed was not applied (the domain already has a position).
      type: list
      elements: str
      returned: when skipped
    health:
      description:
        - For channels started by this run, their state after O(start_wait), as in
          M(edgefleet.mysql_backup.replication_info) (V(ok), V(connecting), V(error), ...).
      type: str
      returned: when the channel was started and O(start_wait) > 0
    diagnosis:
      description: Explanation when RV(channels[].health) is not V(ok).
      type: str
      returned: when there is something to say
  sample:
    - {name: dev1, action: unchanged, actions: [], changed: false, changed_options: []}
    - {name: dev2, action: created, actions: [created, started], changed: true,
       changed_options: []}
queries:
  description: Statements run (or, in check mode, that would run), passwords masked.
  returned: without O(instances)
  type: list
  elements: str
  sample:
    - "CHANGE MASTER 'dev2' TO MASTER_HOST='127.0.0.1', MASTER_PORT=33002, MASTER_USER='repl_dev2', MASTER_PASSWORD='********', MASTER_USE_GTID=slave_pos"
    - "START REPLICA 'dev2'"
gtid_slave_pos:
  description: MariaDB C(gtid_slave_pos) before and after, when any O(channels[].gtid_pos) was given.
  returned: when a gtid_pos seed was given on MariaDB
  type: dict
  contains:
    before:
      description: Value before this run.
      type: str
    after:
      description: Value after this run (merged by domain).
      type: str
    changed:
      description: Whether the value changed.
      type: bool
  sample: {before: "1-1-40", after: "1-1-40,3-3-1842", changed: true}
server:
  description: The detected server and the version-table row used.
  returned: without O(instances)
  type: dict
  sample: {flavor: mariadb, version: 10.11.19, dialect: mariadb-10.5}
instances:
  description:
    - With O(instances), per server in the order given, its C(name), C(changed) and the
      RV(channels), RV(queries), RV(server) and RV(gtid_slave_pos) above.
  returned: with O(instances)
  type: list
  elements: dict
  sample: [{name: multi-01, changed: false, channels: [], queries: [], server: {flavor: mariadb}}]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    INSTANCES_EXCLUSIVE, instance_socket_options, mysql_connection_argument_spec, open_session,
    require_pymysql,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_apply import (
    InstanceFailure, ServerFailure, configure_instances, configure_server, validate_request,
)


CHANNEL_SPEC = dict(
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


def argument_spec():
    spec = mysql_connection_argument_spec()
    spec.update(
        channels=dict(type='list', elements='dict', options=CHANNEL_SPEC),
        instances=dict(type='list', elements='dict', options=dict(
            instance_socket_options(),
            channels=dict(type='list', elements='dict', required=True, options=CHANNEL_SPEC),
        )),
        prune_unlisted=dict(type='bool', default=False),
        update_password=dict(type='str', default='on_create', choices=['always', 'on_create'],
                             no_log=False),
        lock_timeout=dict(type='int', default=60),
        start_wait=dict(type='float', default=5.0),
    )
    return spec


def run_module():
    module = AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True,
        required_one_of=[('channels', 'instances')],
        mutually_exclusive=[('channels', 'instances')] + INSTANCES_EXCLUSIVE,
    )
    require_pymysql(module)
    params = module.params
    errors = validate_request(params['channels'], params['instances'])
    if errors:
        module.fail_json(msg='invalid channels: ' + '; '.join(errors), errors=errors)

    def connect(server_params):
        # looked up at call time, so tests can replace this module's open_session
        return open_session(server_params)

    if params['instances'] is None:
        try:
            result, before, after = configure_server(params, params['channels'], module.check_mode, module.warn,
                                                     connect)
        except ServerFailure as exc:
            module.fail_json(msg=to_native(exc), **exc.details)
        if module._diff:
            result['diff'] = {'before': before, 'after': after}
        module.exit_json(**result)

    try:
        results, diffs = configure_instances(params, params['instances'], module.check_mode, module.warn, connect)
    except InstanceFailure as exc:
        module.fail_json(msg=to_native(exc), **exc.result)
    final = dict(changed=any(result['changed'] for result in results), instances=results)
    if module._diff:
        final['diff'] = diffs
    module.exit_json(**final)


def main():
    run_module()


if __name__ == '__main__':
    main()
