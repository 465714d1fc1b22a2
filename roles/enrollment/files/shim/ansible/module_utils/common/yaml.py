# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two names the collection's module_utils take from ansible.module_utils.common.yaml.

Installed by the enrollment role on hosts that run the service without ansible-core (Debian's
python3-yaml only). The directories above this file have no __init__.py, so wherever a real
ansible-core is installed its regular package wins over this namespace portion.
"""
from __future__ import annotations

try:
    import yaml as _yaml
except ImportError:  # pragma: no cover
    HAS_YAML = False
    yaml_load = None
else:
    HAS_YAML = True
    try:
        from yaml import CSafeLoader as _SafeLoader
    except ImportError:  # pragma: no cover
        from yaml import SafeLoader as _SafeLoader

    def yaml_load(stream):
        return _yaml.load(stream, Loader=_SafeLoader)  # nosec - a safe loader
