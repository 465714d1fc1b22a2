# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared unit-test helpers: run a module's main() with module args, and a file-registry fleet."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

# Two active lab devices and one cloud host.
LAB = """devices:
  - {id: device01, site: lab, status: active, address: 10.231.0.11, labels: {lab: "true"}}
  - {id: device02, site: lab, status: active, address: 10.231.0.12, labels: {lab: "true"}}
cloud_hosts:
  - {name: cloud01, address: 10.231.0.201}
"""

FLEET_CONFIG = 'plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: registry.yml}\n'


class ModuleExit(Exception):
    """Raised in place of exit_json / fail_json so main() stops there."""


def run_main(mocker, module, args, exit_defaults=None):
    """Run module.main() with args; return the exit_json/fail_json dict (fail_json adds
    failed=True and msg). exit_defaults: keys exit_json results get unless the module sets them."""
    results = {}

    def exit_json(self, **kwargs):
        results.update(exit_defaults or {})
        results.update(kwargs)
        raise ModuleExit()

    def fail_json(self, msg, **kwargs):
        results.update(kwargs, failed=True, msg=msg)
        raise ModuleExit()

    mocker.patch.object(basic.AnsibleModule, 'exit_json', exit_json)
    mocker.patch.object(basic.AnsibleModule, 'fail_json', fail_json)
    with patch_module_args(args):
        with pytest.raises(ModuleExit):
            module.main()
    return results


def write_fleet(directory, registry_text, policy=''):
    """Write registry.yml and lab.fleet.yml (file registry, then policy) in directory;
    return the config's path."""
    with open(str(directory / 'registry.yml'), 'w') as handle:
        handle.write(registry_text)
    config = directory / 'lab.fleet.yml'
    with open(str(config), 'w') as handle:
        handle.write(FLEET_CONFIG + policy)
    return config
