# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ``ansible.module_utils.common.yaml`` on hosts without ansible-core.

Host programs run the collection's module_utils with the system python3, and some of those
(fleet_config, registry) take ``HAS_YAML`` and ``yaml_load`` from ansible-core. The
``host_code_files`` filter ships this file as ``<lib_dir>/ansible/module_utils/common/yaml.py``
whenever a shipped module imports that module, and refuses to ship a module that imports a name
this file does not define. The directories above it get no ``__init__.py``: wherever a real
ansible-core is installed, its regular package wins over this namespace portion.

Same behaviour as ansible-core's version for these names: PyYAML's C loader when present,
the pure Python safe loader otherwise.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    import yaml as _yaml
except ImportError:
    HAS_YAML = False
    yaml_load = None  # pylint: disable=invalid-name
else:
    HAS_YAML = True
    try:
        from yaml import CSafeLoader as _SafeLoader
    except ImportError:
        from yaml import SafeLoader as _SafeLoader

    def yaml_load(stream):
        """Parse one YAML document with a safe loader (what ansible-core's yaml_load does)."""
        return _yaml.load(stream, Loader=_SafeLoader)  # nosec - a safe loader
