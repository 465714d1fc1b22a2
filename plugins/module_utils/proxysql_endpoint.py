# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ProxySQL read endpoint for the fleet: rows for ProxySQL's admin tables rendered from the
allocation, and the one batch of admin SQL that brings ProxySQL there. Pure logic (no I/O)
except :func:`read_current` and :func:`apply_statements`, which take an open DB-API connection;
the module ``edgefleet.mysql_backup.proxysql_endpoint`` wires them together.

* ``mysql_servers``: one backend per replica instance, in its own hostgroup. The hostgroup id is
  derived from the instance's allocated (fleet-unique, stable) replica ``server_id``:
  ``hostgroup_base + server_id - server_id_base``.
* routing ``schema``: one query rule (``mysql_query_rules``, matched on ``schemaname``) or one
  fast-routing row per frontend user (``mysql_query_rules_fast_routing``) for every device schema
  (``<schema_prefix><db>``), pointing at the hostgroup of the instance that carries the device.
* routing ``user``: one frontend user per device (``mysql_users``) whose ``default_hostgroup`` is
  its instance (for instance mode, where every device keeps its own schema names).

Managed rows carry ``comment = '<marker>:...'``; rows without the marker belong to someone else
and are never touched. Only tables whose managed rows differ are rewritten, then each changed
table is loaded to runtime and saved to disk exactly once.
"""


from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

SERVER_COLUMNS = ('hostgroup_id', 'hostname', 'port', 'status', 'weight', 'max_connections',
                  'max_replication_lag', 'use_ssl', 'comment')
RULE_COLUMNS = ('rule_id', 'active', 'username', 'schemaname', 'match_digest', 'destination_hostgroup',
                'apply', 'comment')
FAST_ROUTING_COLUMNS = ('username', 'schemaname', 'flagIN', 'destination_hostgroup', 'comment')
USER_COLUMNS = ('username', 'password', 'active', 'default_hostgroup', 'default_schema',
                'transaction_persistent', 'max_connections', 'comment')
TABLES = {
    'servers': ('mysql_servers', SERVER_COLUMNS, 'MYSQL SERVERS'),
    'rules': ('mysql_query_rules', RULE_COLUMNS, 'MYSQL QUERY RULES'),
    'fast_routing': ('mysql_query_rules_fast_routing', FAST_ROUTING_COLUMNS, 'MYSQL QUERY RULES'),
    'users': ('mysql_users', USER_COLUMNS, 'MYSQL USERS'),
}
ORDER = ('servers', 'rules', 'fast_routing', 'users')
# Everything rendered into SQL is checked against this: identifiers, host names, addresses,
# comments, RE2 patterns built here. Passwords are checked separately (no quote, no backslash).
SAFE_TEXT = re.compile(r'^[A-Za-z0-9_.:@%$*\[\]()|?^`\\/ -]*$')
SAFE_NAME = re.compile(r'^[A-Za-z0-9_$-]{1,64}$')
MAX_HOSTGROUP = 2147483647


class ProxySQLConfigError(Exception):
    """Input that cannot be rendered into a safe, unambiguous ProxySQL configuration."""


def _fail(msg):
    raise ProxySQLConfigError('proxysql: ' + msg)


def _int(value, what):
    try:
        return int(value)
    except (TypeError, ValueError):
        _fail('%s must be an integer, got %r' % (what, value))


def hostgroup_for(server_id, hostgroup_base, server_id_base):
    hostgroup = _int(hostgroup_base, 'proxysql_hostgroup_base') + _int(server_id, 'replica server_id') - \
        _int(server_id_base, 'proxysql_server_id_base')
    if not 0 < hostgroup <= MAX_HOSTGROUP:
        _fail('replica server_id %s gives hostgroup %d, outside 1..%d: set proxysql_server_id_base to the '
              "allocation's replica_server_id_base" % (server_id, hostgroup, MAX_HOSTGROUP))
    return hostgroup


def proxysql_desired(clouds, databases, routing='schema', rules_table='query_rules', route_users=None,
                     hostgroup_base=1000, server_id_base=2000000000, rule_id_base=10000, max_connections=10,
                     max_replication_lag=0, marker='edgefleet', user_prefix='r_', user_password=None,
                     route_qualified=False):
    """Desired managed rows: {'servers': [...], 'rules': [...], 'fast_routing': [...], 'users': [...]}.

    ``clouds``: [{'name', 'backend_host', 'instances': [...], 'devices': [...]}] with the fleet
    inventory's ``edgefleet_cloud_instances`` / ``edgefleet_cloud_devices`` of each cloud host.
    """
    if routing not in ('schema', 'user'):
        _fail('proxysql_routing must be schema or user, got %r' % routing)
    if rules_table not in ('query_rules', 'fast_routing'):
        _fail('proxysql_rules_table must be query_rules or fast_routing, got %r' % rules_table)
    if not SAFE_NAME.match(str(marker)):
        _fail('proxysql_comment_marker %r: letters, digits, _ - only' % marker)
    route_users = list(route_users or [])
    if routing == 'schema' and rules_table == 'fast_routing' and not route_users:
        _fail('fast routing needs proxysql_route_users (mysql_query_rules_fast_routing matches a username)')
    for name in route_users + list(databases or []):
        if not SAFE_NAME.match(str(name)):
            _fail('name %r is not a plain identifier' % (name,))
    servers, rules, fast, users = [], [], [], []
    hostgroups = {}
    routes = {}
    for cloud in sorted(clouds or [], key=lambda c: c['name']):
        host = str(cloud.get('backend_host') or '')
        if not host or not SAFE_TEXT.match(host) or "'" in host:
            _fail('cloud host %s: backend address %r is missing or unsafe' % (cloud['name'], host))
        for inst in sorted(cloud.get('instances') or [], key=lambda i: i['name']):
            hostgroup = hostgroup_for(inst.get('server_id'), hostgroup_base, server_id_base)
            if hostgroup in hostgroups:
                _fail('hostgroup %d is used by %s and %s/%s'
                      % (hostgroup, hostgroups[hostgroup], cloud['name'], inst['name']))
            hostgroups[hostgroup] = '%s/%s' % (cloud['name'], inst['name'])
            servers.append({'hostgroup_id': hostgroup, 'hostname': host, 'port': _int(inst['port'], 'instance port'),
                            'status': 'ONLINE', 'weight': 1, 'max_connections': _int(max_connections, 'max_connections'),
                            'max_replication_lag': _int(max_replication_lag, 'max_replication_lag'), 'use_ssl': 0,
                            'comment': '%s:%s:%s' % (marker, cloud['name'], inst['name'])})
            routes[(cloud['name'], inst['name'])] = hostgroup
        for dev in sorted(cloud.get('devices') or [], key=lambda d: d['id']):
            if not SAFE_NAME.match(str(dev['id'])):
                _fail('device id %r is not a plain identifier' % (dev['id'],))
            key = (cloud['name'], dev['replica_instance'])
            if key not in routes:
                _fail('device %s: replica instance %s is not among the instances of %s' % (dev['id'], key[1], key[0]))
            hostgroup = routes[key]
            if routing == 'user':
                if not user_password:
                    _fail('routing user needs proxysql_user_password')
                users.append({'username': '%s%s' % (user_prefix, dev['id']), 'password': user_password, 'active': 1,
                              'default_hostgroup': hostgroup,
                              'default_schema': (dev.get('schema_prefix') or '') + databases[0] if databases else None,
                              'transaction_persistent': 1, 'max_connections': _int(max_connections, 'max_connections'),
                              'comment': '%s:%s' % (marker, dev['id'])})
                continue
            for db in databases:
                schema = (dev.get('schema_prefix') or '') + db
                if len(schema) > 64:
                    _fail('device %s: schema %s is longer than 64 characters' % (dev['id'], schema))
                if rules_table == 'fast_routing':
                    for user in route_users:
                        fast.append({'username': user, 'schemaname': schema, 'flagIN': 0,
                                     'destination_hostgroup': hostgroup,
                                     'comment': '%s:%s:%s' % (marker, dev['id'], db)})
                else:
                    rules.append({'schemaname': schema, 'destination_hostgroup': hostgroup,
                                  'comment': '%s:%s:%s' % (marker, dev['id'], db)})
                if route_qualified:
                    rules.append({'schemaname': None, 'destination_hostgroup': hostgroup,
                                  'match_digest': '(^|[^A-Za-z0-9_$])`?%s`?\\.' % schema,
                                  'comment': '%s:%s:%s:qualified' % (marker, dev['id'], db)})
    # one schema (or one user) must lead to exactly one place
    seen = {}
    for row in rules + fast:
        key = (row.get('username'), row.get('schemaname'), row.get('match_digest'))
        if key in seen and seen[key] != row['destination_hostgroup']:
            _fail('schema %s would route to hostgroups %d and %d: replicas in instance mode keep the source schema '
                  'names, so a shared endpoint needs channel mode (unique <device>_<db> schemas) or '
                  'proxysql_routing: user' % (row.get('schemaname') or row.get('match_digest'), seen[key],
                                              row['destination_hostgroup']))
        seen[key] = row['destination_hostgroup']
    names = [u['username'] for u in users]
    if len(names) != len(set(names)):
        _fail('two devices map to the same ProxySQL user name')
    rule_id = _int(rule_id_base, 'proxysql_rule_id_base')
    numbered = []
    for row in rules:
        numbered.append(dict(row, rule_id=rule_id, active=1, username=None, apply=1,
                             match_digest=row.get('match_digest')))
        rule_id += 1
    for row in users:
        if "'" in row['password'] or '\\' in row['password']:
            _fail('proxysql_user_password must not contain quotes or backslashes')
    return {'servers': servers, 'rules': numbered, 'fast_routing': fast, 'users': users}


def _norm(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def _key(table, row):
    columns = TABLES[table][1]
    return tuple(_norm(row.get(col)) for col in columns)


def _literal(value):
    if value is None:
        return 'NULL'
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def proxysql_plan(desired, current, marker='edgefleet', load_to_runtime=True, save_to_disk=True, chunk=200):
    """The admin statements from ``current`` managed rows to ``desired`` (none when equal).

    ``current``: {'servers': rows, 'rules': rows, 'fast_routing': rows, 'users': rows, 'foreign_rule_ids':
    [...], 'foreign_users': [...], 'foreign_servers': [...]} as read from the admin interface.
    Returns {'changed': [tables], 'statements': [...], 'summary': {...}, 'secret': bool}.
    """
    current = current or {}
    conflicts = []
    foreign_ids = set(_norm(x) for x in current.get('foreign_rule_ids') or [])
    for row in desired.get('rules') or []:
        if _norm(row['rule_id']) in foreign_ids:
            conflicts.append('rule_id %s is used by a query rule this role does not manage' % row['rule_id'])
    foreign_users = set(_norm(x) for x in current.get('foreign_users') or [])
    for row in desired.get('users') or []:
        if _norm(row['username']) in foreign_users:
            conflicts.append('user %s exists in mysql_users without the %s marker' % (row['username'], marker))
    foreign_servers = set(tuple(_norm(v) for v in x) for x in current.get('foreign_servers') or [])
    for row in desired.get('servers') or []:
        if (_norm(row['hostgroup_id']), _norm(row['hostname']), _norm(row['port'])) in foreign_servers:
            conflicts.append('server %s:%s in hostgroup %s exists without the %s marker'
                             % (row['hostname'], row['port'], row['hostgroup_id'], marker))
    if conflicts:
        _fail('; '.join(conflicts[:5]))
    statements = []
    changed = []
    summary = {}
    loads = []
    for table in ORDER:
        name, columns, load = TABLES[table]
        want = desired.get(table) or []
        have = current.get(table) or []
        want_keys = sorted(_key(table, r) for r in want)
        have_keys = sorted(_key(table, r) for r in have)
        summary[table] = {'rows': len(want), 'before': len(have),
                          'added': len(set(want_keys) - set(have_keys)),
                          'removed': len(set(have_keys) - set(want_keys))}
        if want_keys == have_keys:
            continue
        changed.append(table)
        statements.append("DELETE FROM %s WHERE comment LIKE '%s:%%'" % (name, marker))
        for start in range(0, len(want), max(1, int(chunk))):
            part = want[start:start + int(chunk)]
            statements.append('INSERT INTO %s (%s) VALUES %s' % (
                name, ', '.join(columns),
                ', '.join('(' + ', '.join(_literal(row.get(col)) for col in columns) + ')' for row in part)))
        if load not in loads:
            loads.append(load)
    for load in loads:
        if load_to_runtime:
            statements.append('LOAD %s TO RUNTIME' % load)
        if save_to_disk:
            statements.append('SAVE %s TO DISK' % load)
    return {'changed': changed, 'statements': statements, 'summary': summary, 'secret': 'users' in changed}


OPTIONS = ('routing', 'rules_table', 'route_users', 'hostgroup_base', 'server_id_base', 'rule_id_base',
           'max_connections', 'max_replication_lag', 'marker', 'user_prefix', 'user_password', 'route_qualified')
PLAN_OPTIONS = ('marker', 'load_to_runtime', 'save_to_disk', 'chunk')


def run(request):
    """The whole computation for one role run: desired rows, then the plan against ``current``."""
    options = request.get('options') or {}
    unknown = sorted(set(options) - set(OPTIONS) - set(PLAN_OPTIONS))
    if unknown:
        _fail('unknown option(s) %s' % ', '.join(unknown))
    desired = proxysql_desired(request.get('clouds') or [], request.get('databases') or [],
                               **dict((k, options[k]) for k in OPTIONS if k in options))
    plan = proxysql_plan(desired, request.get('current') or {},
                         **dict((k, options[k]) for k in PLAN_OPTIONS if k in options))
    return {'plan': plan, 'counts': dict((table, len(rows)) for table, rows in desired.items())}


def read_queries(marker='edgefleet'):
    """(key, SQL) pairs that read the managed rows and the rows of others from the admin interface.

    The marker is checked by :func:`proxysql_desired` (letters, digits, ``_``, ``-``), so it is safe
    inside the LIKE pattern."""
    if not SAFE_NAME.match(str(marker)):
        _fail('proxysql_comment_marker %r: letters, digits, _ - only' % marker)
    mine = "comment LIKE '%s:%%'" % marker
    others = "comment NOT LIKE '%s:%%'" % marker
    queries = [(table, 'SELECT %s FROM %s WHERE %s' % (', '.join(TABLES[table][1]), TABLES[table][0], mine))
               for table in ORDER]
    queries += [
        ('foreign_rule_ids', 'SELECT rule_id FROM mysql_query_rules WHERE comment IS NULL OR ' + others),
        ('foreign_users', 'SELECT username FROM mysql_users WHERE ' + others),
        ('foreign_servers', 'SELECT hostgroup_id, hostname, port FROM mysql_servers WHERE ' + others),
    ]
    return queries


def current_from_rows(rows_by_query):
    """The ``current`` argument of :func:`proxysql_plan` from the dict rows of :func:`read_queries`."""
    current = dict((table, list(rows_by_query.get(table) or [])) for table in ORDER)
    current['foreign_rule_ids'] = [row['rule_id'] for row in rows_by_query.get('foreign_rule_ids') or []]
    current['foreign_users'] = [row['username'] for row in rows_by_query.get('foreign_users') or []]
    current['foreign_servers'] = [[row['hostgroup_id'], row['hostname'], row['port']]
                                  for row in rows_by_query.get('foreign_servers') or []]
    return current


def clouds_from_hosts(clouds, backend_hosts=None):
    """Cloud host descriptions for :func:`proxysql_desired`: ``backend_host`` is the address from
    ``backend_hosts`` (cloud host name -> address), else the host's ``address`` (its inventory
    ``ansible_host``), else its name."""
    backend_hosts = backend_hosts or {}
    described = []
    for cloud in clouds or []:
        name = cloud['name']
        described.append({'name': name,
                          'backend_host': backend_hosts.get(name) or cloud.get('address') or name,
                          'instances': list(cloud.get('instances') or []),
                          'devices': list(cloud.get('devices') or [])})
    return described


def read_current(connection, marker='edgefleet'):
    """Rows ProxySQL has (managed and foreign), read over an open DB-API connection whose cursor
    returns dict rows."""
    rows = {}
    for key, sql in read_queries(marker):
        with connection.cursor() as cursor:
            cursor.execute(sql)
            rows[key] = list(cursor.fetchall())
    return current_from_rows(rows)


def apply_statements(connection, statements):
    """Run the plan's statements in order on one connection (the admin interface has no
    transactions; LOAD/SAVE come last, once per changed table)."""
    for statement in statements:
        with connection.cursor() as cursor:
            cursor.execute(statement)


def masked(statements, secret):
    """Statements to show: those writing mysql_users (passwords) are reduced to their head."""
    if not secret:
        return list(statements)
    return [s if not s.startswith('INSERT INTO mysql_users ') else 'INSERT INTO mysql_users (...) VALUES ********'
            for s in statements]
