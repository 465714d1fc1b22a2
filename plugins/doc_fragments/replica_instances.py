# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # One home for the docs of the replication modules' repeated options; their argument specs
    # are module_utils/args_common.py (instances_argument_spec, channels_argument_spec).
    # (ansible-test wants each variant as one string literal, so the instances option is written
    # in both; keep the two copies equal.)

    # replication_info: several servers of the managed host in one call.
    DOCUMENTATION = r'''
options:
  instances:
    description:
      - Several servers of the managed host in one call (a cloud host's replica instances), each
        through its own unix socket and otherwise with the same login options. The result is then
        RV(instances), one entry per server in the order given, instead of the single server's keys.
      - This is how the replication role calls the module, one task for all instances of a host.
      - Cannot be combined with O(login_unix_socket) or O(login_host) (each instance has its socket).
    type: list
    elements: dict
    suboptions:
      name:
        description: A name for the server (the replica instance), returned with its result. Unique.
        type: str
        required: true
      login_unix_socket:
        description: The server's unix socket.
        type: str
        required: true
'''

    # replication_source: the channels of one server, and instances that each carry their own
    # channels (the channel suboptions are written once, under a YAML anchor).
    CHANNELS = r'''
options:
  channels:
    description:
      - The channels of this replica. Channels not listed are left alone unless
        O(prune_unlisted=true).
      - Options left unset are not compared; a new channel gets the server default for them.
      - SQL option names below are given in MariaDB spelling (C(MASTER_...)); MySQL 8.0.23 and
        later use C(SOURCE_...) for the same options.
      - Exactly one of O(channels) and O(instances) is required.
    type: list
    elements: dict
    suboptions: &channel_options
      name:
        description:
          - Channel (MariaDB connection) name, case-insensitive as on the server.
          - V('') (the empty string) is the default, unnamed channel. Any other name has 1-64 characters
            from C(A-Z a-z 0-9 _ . -), does not start with C(.) or C(-), and is not a group replication
            channel (C(group_replication_applier), C(group_replication_recovery)).
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
          - Password of the replication user on the source. Never logged; masked in the returned
            C(queries) and in the diff.
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
        description:
          - Seconds between reconnection attempts (MariaDB and MySQL before 8.0.23
            C(MASTER_CONNECT_RETRY), MySQL 8.0.23 and later C(SOURCE_CONNECT_RETRY)).
        type: int
      retry_count:
        description:
          - Reconnection attempts before the IO thread gives up. MySQL C(SOURCE_RETRY_COUNT)
            (C(MASTER_RETRY_COUNT) before 8.0.23); MariaDB 12.0 and later C(MASTER_RETRY_COUNT) per
            connection.
          - Older MariaDB only has the server-wide C(master_retry_count) server option; setting this
            fails there (set that option instead, for example in the replica role's
            C(replica_extra_settings)).
        type: int
      heartbeat_period:
        description: Heartbeat interval in seconds (C(MASTER_HEARTBEAT_PERIOD) / C(SOURCE_HEARTBEAT_PERIOD)).
        type: float
      delay:
        description: Seconds the replica stays behind the source on purpose (C(MASTER_DELAY) / C(SOURCE_DELAY)).
        type: int
      ssl:
        description:
          - Use TLS between this replica and the source (C(MASTER_SSL)). The C(ssl*) suboptions are
            the replica-to-source TLS, stored in the channel; they are not the TLS of this module's own
            login connection (O(ca_cert), O(client_cert), O(client_key), whose aliases are C(ssl_ca),
            C(ssl_cert), C(ssl_key) at the top level).
        type: bool
      ssl_ca:
        description: CA file, on the replica host, that signed the source's certificate (C(MASTER_SSL_CA)).
        type: str
      ssl_capath:
        description: CA directory on the replica host (C(MASTER_SSL_CAPATH)).
        type: str
      ssl_cert:
        description: Certificate file, on the replica host, the replica presents to the source (C(MASTER_SSL_CERT)).
        type: str
      ssl_key:
        description: Key file of that certificate on the replica host (a path, not the key itself; C(MASTER_SSL_KEY)).
        type: str
      ssl_cipher:
        description: Allowed TLS ciphers (C(MASTER_SSL_CIPHER)).
        type: str
      ssl_crl:
        description: Certificate revocation list file on the replica host (C(MASTER_SSL_CRL)).
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
            yet, or when C(gtid_pos_force=true). Otherwise a running channel's progress is never
            rewound; the returned C(gtid_seed_skipped) says so.
        type: str
      gtid_pos_force:
        description: Apply C(gtid_pos) even if the domain already has another position.
        type: bool
        default: false
  instances:
    description:
      - Several servers of the managed host in one call (a cloud host's replica instances), each
        through its own unix socket and otherwise with the same login options. The result is then
        RV(instances), one entry per server in the order given, instead of the single server's keys.
      - This is how the replication role calls the module, one task for all instances of a host.
      - Cannot be combined with O(login_unix_socket) or O(login_host) (each instance has its socket).
    type: list
    elements: dict
    suboptions:
      name:
        description: A name for the server (the replica instance), returned with its result. Unique.
        type: str
        required: true
      login_unix_socket:
        description: The server's unix socket.
        type: str
        required: true
      channels:
        description: The channels of this server, with the suboptions of the top-level O(channels).
        type: list
        elements: dict
        required: true
        suboptions: *channel_options
'''
