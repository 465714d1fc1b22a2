# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a device's replication channel may change on its replica instance.

MariaDB applies a channel's events with every privilege. The per-channel replication filters are
the only fence between one device's binlog and the rest of a shared instance, so each channel gets
`replicate_wild_do_table` patterns that match exactly its own schemas and nothing else:

- channel mode: `<prefix><db>.%` for each database the device replicates (after
  `replicate_rewrite_db`); events for any other schema (a neighbour's `<other>_<db>`, `mysql`,
  a new `CREATE DATABASE`) are ignored, and account statements (GRANT, CREATE USER, ...) are
  ignored because MariaDB checks them against the filters as writes to `mysql.*`;
- instance mode: `replicate_wild_ignore_table = mysql.%` only: the device may keep any schema on
  its own instance but cannot create users or change grants of the cloud host's server.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.consistency import schema_map_for

# LIKE metacharacters in a wild table pattern, plus the escape character itself.
_LIKE_SPECIAL = ('\\', '_', '%')


class IsolationError(ValueError):
    pass


def like_literal(name):
    """A LIKE pattern that matches exactly `name`."""
    out = []
    for char in name:
        if char in _LIKE_SPECIAL:
            out.append('\\')
        out.append(char)
    return ''.join(out)


def channel_schemas(device, databases):
    """The schema names a device's events land in on its replica instance."""
    return [replica for dummy, replica in schema_map_for(databases, device.get('schema_prefix'))]


def wild_do_tables(device, databases):
    """`replicate_wild_do_table` values of a channel-mode device (one per schema)."""
    return ['%s.%%' % like_literal(schema) for schema in channel_schemas(device, databases)]


def instance_filters(devices, databases, mode):
    """{channel name: {option: [values]}} for the channels of one replica instance.

    Refuses two channels of one instance that would write the same schema: with
    `<device>_<db>` prefixes, device `a` with database `b_x` and device `a_b` with database `x`
    both land in `a_b_x`, and then neither filter would keep the other out.
    """
    if mode != 'channel':
        return dict((device['channel_name'], {'replicate_wild_ignore_table': ['mysql.%']})
                    for device in devices)
    owners = {}
    filters = {}
    for device in sorted(devices, key=lambda d: d['id']):
        for schema in channel_schemas(device, databases):
            other = owners.setdefault(schema.lower(), device['id'])
            if other != device['id']:
                raise IsolationError(
                    'devices %s and %s would both replicate into schema %s on one shared replica '
                    'instance; rename a database or put one of them in instance mode'
                    % (other, device['id'], schema))
        filters[device['channel_name']] = {'replicate_wild_do_table': wild_do_tables(device, databases)}
    return filters
