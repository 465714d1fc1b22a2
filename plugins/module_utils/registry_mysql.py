# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MySQL/MariaDB backend of the registry: devices register themselves.

Tables (see :func:`_ddl`) with the prefix of the registry spec. Allocation runs serialize on a
row lock; a ``ports`` table with ``PRIMARY KEY (cloud_host, port)`` and UNIQUE
server_id/gtid_domain_id make duplicates impossible even for a writer that skips the lock;
conflicts roll back and raise RetryableConflict (registry.with_retries runs them again). The
interface is registry_backend.RegistryBackend.
"""

from __future__ import annotations

import contextlib
import json

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import format_port_ranges
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import allocation as alloc_lib
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.device_record import normalize_device
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.mysql_connection import connect_pymysql
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_backend import (
    RegistryBackend, RetryableConflict,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_format import (
    normalize_cloud_host, normalize_registry,
)

try:
    import pymysql
    HAS_PYMYSQL = True
    PYMYSQL_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the host
    pymysql = None
    HAS_PYMYSQL = False
    PYMYSQL_IMPORT_ERROR = _exc

SCHEMA_VERSION = 1


def _ddl(p):
    return [
        """CREATE TABLE IF NOT EXISTS `{p}devices` (
  id VARCHAR(32) NOT NULL PRIMARY KEY,
  site VARCHAR(63) NULL,
  status ENUM('active','disabled','retired') NOT NULL DEFAULT 'active',
  address VARCHAR(255) NULL,
  labels TEXT NULL,
  vars MEDIUMTEXT NULL,
  replica_mode VARCHAR(16) NULL,
  reach VARCHAR(16) NULL,
  ssh_public_key TEXT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}cloud_hosts` (
  name VARCHAR(32) NOT NULL PRIMARY KEY,
  address VARCHAR(255) NULL,
  capacity INT UNSIGNED NULL,
  tunnel_ports VARCHAR(255) NULL,
  replica_ports VARCHAR(255) NULL,
  reserved_ports VARCHAR(1024) NULL,
  drain TINYINT(1) NOT NULL DEFAULT 0,
  vars TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}device_ids` (
  device_id VARCHAR(32) NOT NULL PRIMARY KEY,
  server_id INT UNSIGNED NOT NULL,
  gtid_domain_id INT UNSIGNED NOT NULL,
  UNIQUE KEY uq_server_id (server_id),
  UNIQUE KEY uq_gtid_domain_id (gtid_domain_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}allocations` (
  device_id VARCHAR(32) NOT NULL PRIMARY KEY,
  cloud_host VARCHAR(32) NOT NULL,
  tunnel_mysql_port SMALLINT UNSIGNED NOT NULL,
  tunnel_ssh_port SMALLINT UNSIGNED NOT NULL,
  server_id INT UNSIGNED NOT NULL,
  gtid_domain_id INT UNSIGNED NOT NULL,
  replica_mode VARCHAR(16) NOT NULL,
  replica_instance VARCHAR(64) NOT NULL,
  replica_port SMALLINT UNSIGNED NOT NULL,
  replica_datadir VARCHAR(255) NOT NULL,
  replica_server_id INT UNSIGNED NOT NULL,
  channel_name VARCHAR(64) NOT NULL,
  schema_prefix VARCHAR(64) NOT NULL,
  allocated_at VARCHAR(20) NOT NULL,
  UNIQUE KEY uq_tunnel_mysql (cloud_host, tunnel_mysql_port),
  UNIQUE KEY uq_tunnel_ssh (cloud_host, tunnel_ssh_port),
  UNIQUE KEY uq_alloc_server_id (server_id),
  UNIQUE KEY uq_alloc_domain_id (gtid_domain_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}ports` (
  cloud_host VARCHAR(32) NOT NULL,
  port SMALLINT UNSIGNED NOT NULL,
  kind ENUM('tunnel_mysql','tunnel_ssh','replica','instance','quarantine') NOT NULL,
  owner VARCHAR(64) NOT NULL,
  released_at VARCHAR(20) NULL,
  PRIMARY KEY (cloud_host, port),
  KEY k_owner (owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}instances` (
  cloud_host VARCHAR(32) NOT NULL,
  name VARCHAR(64) NOT NULL,
  mode VARCHAR(16) NOT NULL,
  port SMALLINT UNSIGNED NOT NULL,
  datadir VARCHAR(255) NOT NULL,
  server_id INT UNSIGNED NOT NULL,
  created_at VARCHAR(20) NOT NULL,
  PRIMARY KEY (cloud_host, name),
  UNIQUE KEY uq_instance_port (cloud_host, port),
  UNIQUE KEY uq_instance_server_id (server_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
        """CREATE TABLE IF NOT EXISTS `{p}meta` (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  value BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ]


RETRYABLE_MYSQL_ERRORS = (1062, 1213, 1205)  # duplicate key, deadlock, lock wait timeout


class MySQLRegistry(RegistryBackend):
    """Registry and allocation state in MySQL/MariaDB tables (see :func:`_ddl`)."""

    kind = 'mysql'

    def __init__(self, spec, lock_timeout=60.0):
        if not HAS_PYMYSQL:
            raise FleetError('the mysql registry needs the PyMySQL Python library')
        self.spec = spec
        self.p = spec['table_prefix']
        self.lock_timeout = int(spec.get('lock_timeout') or lock_timeout)
        self.conn = None
        self.use_lock = True
        self.conflicts = 0
        self._schema_checked = False

    def describe(self):
        return 'mysql://%s:%s/%s' % (self.spec.get('host'), self.spec.get('port'), self.spec.get('database'))

    def connect(self):
        if self.conn is not None:
            return self.conn
        spec = self.spec
        # ssl={...}: with a CA the server certificate and host name are verified.
        ssl = dict((k[4:], spec[k]) for k in ('ssl_ca', 'ssl_cert', 'ssl_key') if spec.get(k))
        try:
            self.conn = connect_pymysql(host=spec.get('host'), port=spec.get('port'), user=spec.get('user'),
                                        password=spec.get('password') or '', database=spec['database'],
                                        unix_socket=spec.get('unix_socket') or None,
                                        defaults_file=spec.get('defaults_file') or None,
                                        tls={'ssl': ssl} if ssl else None, autocommit=False,
                                        connect_timeout=spec.get('connect_timeout', 10))
        except pymysql.MySQLError as exc:
            raise FleetError('registry %s is unreachable: %s' % (self.describe(), exc))
        with self.conn.cursor() as cur:
            cur.execute('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
            cur.execute('SET SESSION innodb_lock_wait_timeout = %s', (self.lock_timeout,))
        return self.conn

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        self._schema_checked = False

    def ensure_schema(self):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for stmt in _ddl(self.p):
                    cur.execute(stmt.format(p=self.p))
                cur.execute('INSERT IGNORE INTO `{p}meta` (name, value) VALUES (%s, %s), (%s, 0), (%s, 0), (%s, 0), '
                            '(%s, 0)'.format(p=self.p),
                            ('schema_version', SCHEMA_VERSION, 'lock', 'server_id', 'gtid_domain_id', 'replica_server_id'))
            conn.commit()
        except pymysql.MySQLError as exc:
            conn.rollback()
            raise FleetError('registry %s: cannot create tables: %s' % (self.describe(), exc))

    def _query(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql.format(p=self.p), args)
            return cur.fetchall()

    def _many(self, sql, rows):
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.format(p=self.p), rows)

    def _schema_ready(self):
        """True when the tables exist (checked once per connection, without DDL)."""
        if not self._schema_checked:
            try:
                rows = self._query("SELECT value FROM `{p}meta` WHERE name = 'schema_version'")
                self.conn.rollback()
            except pymysql.MySQLError as exc:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                if exc.args and exc.args[0] == 1146:
                    return False
                raise FleetError('registry %s: %s' % (self.describe(), exc))
            if not rows:
                return False
            self._schema_checked = True
        return True

    @contextlib.contextmanager
    def transaction(self, write=True):
        conn = self.connect()
        if write and not self._schema_ready():
            self.ensure_schema()
            self._schema_checked = True
        try:
            conn.begin()
            if write and self.use_lock:
                self._query('SELECT value FROM `{p}meta` WHERE name = %s FOR UPDATE', ('lock',))
            yield self
            if write:
                conn.commit()
            else:
                conn.rollback()
        except pymysql.MySQLError as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            if exc.args and exc.args[0] in RETRYABLE_MYSQL_ERRORS:
                self.conflicts += 1
                raise RetryableConflict(str(exc))
            if exc.args and exc.args[0] == 1146:
                raise FleetError('registry %s has no edgefleet tables yet (run the registry or allocation module '
                                 'once to create them): %s' % (self.describe(), exc))
            raise FleetError('registry %s: %s' % (self.describe(), exc))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise

    # registry
    def load_registry(self, missing_ok=False):
        rows = self._query('SELECT id, site, status, address, labels, vars, replica_mode, reach, ssh_public_key '
                           'FROM `{p}devices` ORDER BY id')
        devices = []
        for row in rows:
            raw = {'id': row[0], 'status': row[2]}
            if row[1] is not None:
                raw['site'] = row[1]
            if row[3] is not None:
                raw['address'] = row[3]
            if row[4]:
                raw['labels'] = _json_field(row[4], row[0], 'labels')
            if row[5]:
                raw['vars'] = _json_field(row[5], row[0], 'vars')
            if row[6]:
                raw['replica_mode'] = row[6]
            if row[7]:
                raw['reach'] = row[7]
            if row[8]:
                raw['ssh_public_key'] = row[8]
            devices.append(raw)
        hosts = [_cloud_host_raw(row) for row in self._query(
            'SELECT name, address, capacity, tunnel_ports, replica_ports, reserved_ports, drain, '
            'vars FROM `{p}cloud_hosts` ORDER BY name')]
        return normalize_registry(devices, hosts, self.describe())

    def get_device(self, dev_id, for_update=False, missing_ok=False):
        rows = self._query('SELECT id FROM `{p}devices` WHERE id = %s' + (' FOR UPDATE' if for_update else ''),
                           (dev_id,))
        if not rows:
            return None
        devices, _hosts = self._load_one(dev_id)
        return devices

    def _load_one(self, dev_id):
        row = self._query('SELECT id, site, status, address, labels, vars, replica_mode, reach, ssh_public_key '
                          'FROM `{p}devices` WHERE id = %s', (dev_id,))[0]
        raw = {'id': row[0], 'status': row[2], 'site': row[1], 'address': row[3],
               'labels': _json_field(row[4], row[0], 'labels') if row[4] else None,
               'vars': _json_field(row[5], row[0], 'vars') if row[5] else None,
               'replica_mode': row[6] or None, 'reach': row[7] or None, 'ssh_public_key': row[8] or None}
        return normalize_device(raw), None

    def upsert_device(self, dev):
        self._query('INSERT INTO `{p}devices` (id, site, status, address, labels, vars, replica_mode, reach, '
                    'ssh_public_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE '
                    'site = VALUES(site), status = VALUES(status), address = VALUES(address), labels = VALUES(labels), '
                    'vars = VALUES(vars), replica_mode = VALUES(replica_mode), reach = VALUES(reach), '
                    'ssh_public_key = VALUES(ssh_public_key)',
                    (dev['id'], dev['site'], dev['status'], dev['address'],
                     json.dumps(dev['labels'], sort_keys=True) if dev['labels'] else None,
                     json.dumps(dev['vars'], sort_keys=True) if dev['vars'] else None,
                     dev['replica_mode'], dev['reach'], dev['ssh_public_key']))

    def upsert_cloud_host(self, host):
        def ranges(value):
            return ','.join(format_port_ranges(value)) if value else None
        self._query('INSERT INTO `{p}cloud_hosts` (name, address, capacity, tunnel_ports, replica_ports, '
                    'reserved_ports, drain, vars) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE '
                    'address = VALUES(address), capacity = VALUES(capacity), tunnel_ports = VALUES(tunnel_ports), '
                    'replica_ports = VALUES(replica_ports), reserved_ports = VALUES(reserved_ports), '
                    'drain = VALUES(drain), vars = VALUES(vars)',
                    (host['name'], host['address'], host['capacity'], ranges(host['tunnel_ports']),
                     ranges(host['replica_ports']),
                     ','.join(str(p) for p in host['reserved_ports']) or None, 1 if host['drain'] else 0,
                     json.dumps(host['vars'], sort_keys=True) if host['vars'] else None))

    def delete_cloud_host(self, name):
        self._query('DELETE FROM `{p}cloud_hosts` WHERE name = %s', (name,))

    def get_cloud_host(self, name):
        rows = self._query('SELECT name, address, capacity, tunnel_ports, replica_ports, reserved_ports, drain, vars '
                           'FROM `{p}cloud_hosts` WHERE name = %s', (name,))
        return _cloud_host_from_row(rows[0]) if rows else None

    def get_allocation(self, dev_id):
        cols = alloc_lib.RECORD_KEYS
        rows = self._query('SELECT %s FROM `{p}allocations` WHERE device_id = %%s' % ', '.join(('device_id',) + cols[1:]),
                           (dev_id,))
        return dict(zip(cols, rows[0])) if rows else None

    # allocation state
    def load_state(self):
        state = alloc_lib.empty_state()
        cols = alloc_lib.RECORD_KEYS
        rows = self._query('SELECT device_id, cloud_host, tunnel_mysql_port, tunnel_ssh_port, server_id, gtid_domain_id, '
                           'replica_mode, replica_instance, replica_port, replica_datadir, replica_server_id, '
                           'channel_name, schema_prefix, allocated_at FROM `{p}allocations`')
        allocations = state['allocations']
        for row in rows:
            allocations[row[0]] = dict(zip(cols, row))
        ids = state['ids']
        for row in self._query('SELECT device_id, server_id, gtid_domain_id FROM `{p}device_ids`'):
            ids[row[0]] = {'server_id': row[1], 'gtid_domain_id': row[2]}
        for row in self._query('SELECT cloud_host, name, mode, port, datadir, server_id, created_at FROM `{p}instances`'):
            state['instances'][(row[0], row[1])] = dict(zip(alloc_lib.INSTANCE_KEYS, row))
        for row in self._query("SELECT cloud_host, port, owner, released_at FROM `{p}ports` WHERE kind = 'quarantine'"):
            state['quarantine'][(row[0], row[1])] = {'released_at': row[3], 'owner': row[2]}
        for row in self._query("SELECT name, value FROM `{p}meta` WHERE name IN "
                               "('server_id', 'gtid_domain_id', 'replica_server_id')"):
            state['counters'][row[0]] = int(row[1])
        return state

    def write_state(self, result, stamp):
        """Persist the delta of one allocation run (inside the open transaction)."""
        if result.quarantine_del:
            self._many("DELETE FROM `{p}ports` WHERE cloud_host = %s AND port = %s AND kind = 'quarantine'",
                       list(result.quarantine_del))
        for key in result.inst_del:
            self._query('DELETE FROM `{p}instances` WHERE cloud_host = %s AND name = %s', key)
            self._query("DELETE FROM `{p}ports` WHERE cloud_host = %s AND owner = %s AND kind = 'instance'",
                        (key[0], 'instance:' + key[1]))
        if result.alloc_del:
            self._many('DELETE FROM `{p}allocations` WHERE device_id = %s', [(d,) for d in result.alloc_del])
            self._many("DELETE FROM `{p}ports` WHERE owner = %s AND kind IN ('tunnel_mysql', 'tunnel_ssh', 'replica')",
                       [(d,) for d in result.alloc_del])
        if result.quarantine_add:
            self._many("INSERT INTO `{p}ports` (cloud_host, port, kind, owner, released_at) "
                       "VALUES (%s, %s, 'quarantine', %s, %s)",
                       [(h, port, e['owner'], e['released_at']) for h, port, e in result.quarantine_add])
        if result.ids_add:
            self._many('INSERT INTO `{p}device_ids` (device_id, server_id, gtid_domain_id) VALUES (%s, %s, %s)',
                       [(d, v['server_id'], v['gtid_domain_id']) for d, v in result.ids_add.items()])
        if result.inst_add:
            self._many('INSERT INTO `{p}instances` (cloud_host, name, mode, port, datadir, server_id, created_at) '
                       'VALUES (%s, %s, %s, %s, %s, %s, %s)',
                       [tuple(i[k] for k in alloc_lib.INSTANCE_KEYS) for i in result.inst_add])
            self._many("INSERT INTO `{p}ports` (cloud_host, port, kind, owner) VALUES (%s, %s, 'instance', %s)",
                       [(i['cloud_host'], i['port'], 'instance:' + i['name']) for i in result.inst_add])
        if result.alloc_add:
            recs = list(result.alloc_add.values())
            self._many('INSERT INTO `{p}allocations` (device_id, cloud_host, tunnel_mysql_port, tunnel_ssh_port, '
                       'server_id, gtid_domain_id, replica_mode, replica_instance, replica_port, replica_datadir, '
                       'replica_server_id, channel_name, schema_prefix, allocated_at) '
                       'VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)',
                       [tuple(r[k] for k in alloc_lib.RECORD_KEYS) for r in recs])
            ports = []
            for r in recs:
                ports.append((r['cloud_host'], r['tunnel_mysql_port'], 'tunnel_mysql', r['id']))
                ports.append((r['cloud_host'], r['tunnel_ssh_port'], 'tunnel_ssh', r['id']))
                if r['replica_mode'] == 'instance':
                    ports.append((r['cloud_host'], r['replica_port'], 'replica', r['id']))
            self._many('INSERT INTO `{p}ports` (cloud_host, port, kind, owner) VALUES (%s, %s, %s, %s)', ports)
        changed_counters = [(v, k) for k, v in result.counters.items() if result.counters_before.get(k) != v]
        self._many('UPDATE `{p}meta` SET value = %s WHERE name = %s', changed_counters)


def _json_field(text, owner, field):
    try:
        return json.loads(text)
    except ValueError:
        raise FleetError('device %s: field "%s" in the registry table is not valid JSON' % (owner, field))


def _cloud_host_raw(row):
    """A cloud host entry (registry form) from its table row."""
    raw = {'name': row[0], 'address': row[1], 'capacity': row[2], 'drain': bool(row[6])}
    for i, key in ((3, 'tunnel_ports'), (4, 'replica_ports'), (5, 'reserved_ports')):
        if row[i]:
            raw[key] = [part.strip() for part in row[i].split(',') if part.strip()]
    if row[7]:
        raw['vars'] = _json_field(row[7], row[0], 'vars')
    return raw


def _cloud_host_from_row(row):
    return normalize_cloud_host(_cloud_host_raw(row))
