# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # The modules that read a fleet config (allocation, registry): config, requirements, notes.
    # They extend REGISTRY too; the argument spec is module_utils/registry.py fleet_config_argument_spec().
    DOCUMENTATION = r"""
options:
  config:
    description:
      - Path to the fleet config file (the C(*.fleet.yml) inventory source of the
        P(edgefleet.mysql_backup.fleet#inventory) plugin). Its C(registry) and C(allocation)
        keys are used; relative registry paths are relative to that file.
      - "Read on the host the module runs on; run the module on the controller
        (C(delegate_to: localhost) or C(hosts: localhost)) for a file registry."
      - At least one of O(config) and O(registry) is required.
    type: path
requirements:
  - PyYAML (for file registries and config files)
  - PyMySQL (only for a registry of C(type=mysql))
notes:
  - "File registry: writers hold an exclusive C(fcntl) lock on C(.<registry file>.lock) and
    replace files atomically, so concurrent runs (AWX job slices) serialize and readers never
    see half a file."
  - "MySQL registry: writers serialize on a row lock; UNIQUE keys on every port of a cloud
    host, on server_id and on gtid_domain_id make duplicates impossible; conflicts retry."
"""

    # The registry location: the same mapping for the modules and the fleet inventory plugin
    # (module_utils/fleet_config.py normalize_registry_spec() checks it).
    REGISTRY = r"""
options:
  registry:
    description:
      - Where the registry lives. In the modules it replaces the C(registry) of C(config).
      - "C(type: file) (the default): C(path) (required) is the registry YAML file. Relative paths
        are relative to the fleet config file's directory (to the current directory when a module
        gets no C(config)). Allocations are kept in C(alloc_path), default
        C(<path without extension>.alloc.yml); writers lock C(lock_path), default
        C(.<registry file name>.lock) in the same directory."
      - "C(type: mysql): C(database) (required), C(host) (default C(127.0.0.1)), C(port) (default
        C(3306)), C(user), C(password) (default: the environment variable
        E(EDGEFLEET_REGISTRY_PASSWORD)), C(unix_socket), C(defaults_file), C(ssl_ca), C(ssl_cert),
        C(ssl_key), C(table_prefix) (default C(edgefleet_)), C(connect_timeout) (seconds, default
        C(10)), C(lock_timeout) (seconds a writer waits for a row lock; default the allocation
        policy's C(lock_timeout)). The tables are created on first write."
      - Unknown keys are errors.
    type: dict
"""
