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
  - edgefleet.mysql_backup.replica_instances.channels
attributes:
  check_mode:
    support: full
    description: Computes and returns the statements it would run, without running them.
  diff_mode:
    support: full
    description: Shows each channel's configuration and state before and after (passwords masked).
options:
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
notes:
  - "Refused combinations: O(channels) with O(instances) (give exactly one), and O(instances)
    with O(login_unix_socket) or O(login_host) (each instance names its own socket)."
  - With O(instances), all channels of all instances are validated before any server is
    touched. When a server fails, the servers before it keep their changes and are reported in
    the failure (C(instances)), with C(instance) naming the one that failed.
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

- name: Every replica instance of a cloud host in one task (as the replication role calls it)
  edgefleet.mysql_backup.replication_source:
    login_user: root
    prune_unlisted: true
    instances:
      - name: multi-01
        login_unix_socket: /run/mysqld/edgefleet-multi-01.sock
        channels:
          - {name: dev1, source_host: 127.0.0.1, source_port: 33001, source_user: repl_dev1,
             source_password: "{{ vault_repl_password_dev1 }}"}
      - name: kiosk01
        login_unix_socket: /run/mysqld/edgefleet-kiosk01.sock
        channels:
          - {name: kiosk01, source_host: 127.0.0.1, source_port: 33011, source_user: repl_kiosk01,
             source_password: "{{ vault_repl_password_kiosk01 }}"}
  register: replication_result

- name: Replicate from a source over TLS (the ssl_* suboptions are files on the replica host)
  edgefleet.mysql_backup.replication_source:
    login_unix_socket: /run/mysqld/mysqld.sock
    channels:
      - name: dev4
        source_host: 192.0.2.14
        source_port: 3306
        source_user: repl_dev4
        source_password: "{{ vault_repl_password_dev4 }}"
        ssl: true
        ssl_ca: /etc/mysql/tls/fleet-ca.pem
        ssl_verify_server_cert: true

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

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.args_common import (
    INSTANCES_EXCLUSIVE, channels_argument_spec, mysql_connection_argument_spec,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import (
    open_session, require_pymysql,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.replication_apply import (
    InstanceFailure, ServerFailure, configure_instances, configure_server, validate_request,
)


def argument_spec():
    spec = mysql_connection_argument_spec()
    spec.update(channels_argument_spec())
    spec.update(
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
