# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain-text report tables of the playbooks (consistency.yml, demo_check.yml): the rows are
shaped here, one generic filter lays them out in fixed-width columns."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.edgefleet.mysql_backup.plugins.filter.status import status_table_diff
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory


def _sort_key(value):
    # Jinja's sort filter ignores case by default; the tables keep the order it gave them.
    return value.lower() if isinstance(value, str) else value


def _required(record, key, what):
    try:
        return record[key]
    except (KeyError, TypeError):
        raise AnsibleFilterError('%s has no %s: %r' % (what, key, record))


def fixed_width_table(rows, header, widths):
    """Header line and one line per row, each ending in a newline. Every column but the last is
    left-aligned and padded to its width ('%-<width>s') with one space after it; the last column is
    not padded (it holds free text). A longer value pushes the rest of its line to the right."""
    if not isinstance(widths, (list, tuple)) or not all(isinstance(w, int) and w >= 0 for w in widths):
        raise AnsibleFilterError('fixed_width_table widths must be a list of non-negative integers: %r' % (widths,))
    lines = []
    for row in [header] + list(rows):
        if not isinstance(row, (list, tuple)) or len(row) != len(widths) + 1:
            raise AnsibleFilterError('fixed_width_table expects rows of %d values (widths + 1): %r'
                                     % (len(widths) + 1, row))
        lines.append(''.join('%-*s ' % (width, value) for width, value in zip(widths, row)) + '%s' % (row[-1],))
    return ''.join(line + '\n' for line in lines)


def consistency_rows(results):
    """[device, state, GTID position, tables checked, differences or error] per table_checksum
    device result, sorted by device: what playbooks/consistency.yml prints."""
    if not isinstance(results, list):
        raise AnsibleFilterError('consistency_rows expects the list of table_checksum device results')
    rows = []
    for result in results:
        if not isinstance(result, Mapping):
            raise AnsibleFilterError('consistency_rows expects table_checksum device results: %r' % (result,))
        device = _required(result, 'device', 'table_checksum result')
        differing = [status_table_diff(table) for table in result.get('tables') or []
                     if not (isinstance(table, Mapping) and table.get('status') == 'same')]
        rows.append([device, _required(result, 'state', 'table_checksum result'),
                     result.get('gtid_pos') or '-', result.get('tables_checked', 0),
                     '; '.join(differing) or result.get('error') or ''])
    return sorted(rows, key=lambda row: _sort_key(row[0]))


def demo_rows(names, hostvars):
    """[device, cloud host, replica instance, replica port, 'yes'/'NO'] per named device, in the
    given order: whether the row playbooks/demo_check.yml wrote arrived on its replica."""
    rows = []
    for name in names:
        try:
            hv = hostvars[name]
        except KeyError:
            raise AnsibleFilterError('%s is not in the inventory' % name)
        what = 'host %s' % name
        cloud = _required(hv, 'edgefleet_cloud_host', what)
        port = hv.get('edgefleet_replica_port')
        if port is None:  # the fleet inventory keeps it in the cloud host's entry only
            cvars = hostvars[cloud] if cloud in hostvars else {}
            cloud_vars = dict((key, cvars.get(key)) for key in ('edgefleet_cloud_table', 'edgefleet_cloud_address'))
            port = fleet_inventory.device_entry_vars(name, {name: {'edgefleet_cloud_host': cloud},
                                                            cloud: cloud_vars}).get('edgefleet_replica_port')
        if port is None:
            raise AnsibleFilterError('%s has no edgefleet_replica_port (nor an entry on its cloud host %s)'
                                     % (what, cloud))
        rows.append([name, cloud, hv.get('edgefleet_replica_instance', name), port,
                     'yes' if hv.get('demo_arrived', False) else 'NO'])
    return rows


class FilterModule:
    """edgefleet.mysql_backup report table filters."""

    def filters(self):
        return {'fixed_width_table': fixed_width_table, 'consistency_rows': consistency_rows, 'demo_rows': demo_rows}
