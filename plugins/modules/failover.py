#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: failover
short_description: Declare a cloud host lost and re-home its devices on the surviving cloud hosts
version_added: 0.2.0
description:
  - The registry side of C(playbooks/failover.yml). In one registry transaction, without contacting
    the lost host, marks O(host) lost (C(drain=true), so the allocator never picks it again, and
    C(vars.edgefleet_lost={at, devices}), the failover's record of which devices came from it) and
    moves every active device still allocated on it to the surviving cloud hosts by capacity.
  - A moved device keeps its C(server_id), C(gtid_domain_id), replica mode, channel name and
    schema prefix; it gets new tunnel ports and a new replica placement on its new host.
  - The fleet inventory puts a host marked lost in the group C(lost_cloud) instead of C(cloud), so
    C(site.yml) no longer targets it.
  - "Idempotent and resumable: the mark is written before the allocation, and a host already marked
    lost is finished again (no change when nothing is left on it)."
  - "Refused, nothing written: an unknown host; a host whose sshd still answers (O(alive)) unless
    O(force) or it is already marked lost; no surviving capacity (no other non-draining cloud host,
    or not enough room on them)."
author:
  - edgefleet maintainers (@edgefleet)
extends_documentation_fragment:
  - edgefleet.mysql_backup.fleet_config
  - edgefleet.mysql_backup.fleet_config.registry
options:
  host:
    description: The cloud host that is gone for good.
    type: str
    required: true
  alive:
    description: Whether the host's sshd answered just now (the playbook probes it). A live host is refused.
    type: bool
    default: false
  force:
    description: Fail over a host even though it answered (O(alive)). Make sure it never comes back as it was.
    type: bool
    default: false
notes:
  - Supports check mode (the plan, nothing written) and diff.
"""

EXAMPLES = r"""
- name: Re-home the devices of cloud01 (gone for good)
  edgefleet.mysql_backup.failover:
    config: "{{ edgefleet_fleet_config }}"
    host: cloud01
"""

RETURN = r"""
lost:
  description: The lost mark recorded on the host (C(at), when it was declared lost; C(devices), every device moved off it).
  returned: success
  type: dict
  sample: {at: "2026-12-06T10:02:11Z", devices: [device03, device04]}
moved:
  description: Devices this run moved (or would move in check mode), with their old and new allocation records.
  returned: success
  type: dict
changes:
  description: One entry per moved device (action C(move), from_host, to_host, ports, instances).
  returned: success
  type: list
  elements: dict
already_lost:
  description: Whether the host was marked lost by an earlier run (this run finishes it).
  returned: success
  type: bool
registry:
  description: The registry that was read (and written).
  returned: success
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.identifiers import FleetError
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import (
    HAS_PYMYSQL, PYMYSQL_IMPORT_ERROR, fleet_config_argument_spec, open_registry,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import lost_mark, run_failover


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fleet_config_argument_spec(),
            host=dict(type='str', required=True),
            alive=dict(type='bool', default=False),
            force=dict(type='bool', default=False),
        ),
        required_one_of=[('config', 'registry')],
        supports_check_mode=True,
    )
    registry = None
    try:
        spec, policy, _raw = resolve(module.params['config'], module.params['registry'], None)
        if spec['type'] == 'mysql' and not HAS_PYMYSQL:
            module.fail_json(msg=missing_required_lib('PyMySQL'), exception=str(PYMYSQL_IMPORT_ERROR))
        if spec.get('password'):
            module.no_log_values.add(spec['password'])
        registry = open_registry(spec, policy['lock_timeout'])
        with registry.transaction(write=False) as tx:
            already = lost_mark(tx.get_cloud_host(module.params['host'])) is not None
        result, mark, changed = run_failover(registry, policy, module.params['host'], alive=module.params['alive'],
                                             force=module.params['force'], check_mode=module.check_mode)
    except FleetError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='failover failed: %s' % exc, exception=traceback.format_exc())
    finally:
        if registry is not None:
            registry.close()
    for warning in result.warnings:
        module.warn(warning)
    output = dict(
        changed=changed,
        lost=mark,
        already_lost=already,
        moved=dict((dev_id, {'from': result.released[dev_id], 'to': result.alloc_add[dev_id]})
                   for dev_id in result.alloc_add),
        changes=result.changes,
        registry=registry.describe(),
    )
    if module._diff:
        output['diff'] = {'before': {'lost': already, 'moved': []},
                          'after': {'lost': True, 'moved': sorted(result.alloc_add)}}
    module.exit_json(**output)


if __name__ == '__main__':
    main()
