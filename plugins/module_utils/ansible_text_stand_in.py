# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for ``ansible.module_utils.common.text.converters`` on hosts without ansible-core.

The cloud hosts' automatic repair (``edgefleet-monitor repair``) runs the replication modules'
logic (module_utils/replication_apply.py), which formats errors with ``to_native``. The
``host_code_files`` filter ships this file to the import's path whenever a shipped module imports
it (see ansible_yaml_stand_in.py for how it stays out of a real ansible-core's way). Python 3
only, as the hosts are: text is ``str``, bytes are UTF-8 unless told otherwise.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def to_bytes(obj, encoding='utf-8', errors='surrogateescape', nonstring='simplerepr'):
    if isinstance(obj, bytes):
        return obj
    if not isinstance(obj, str):
        if nonstring == 'passthru':
            return obj
        if nonstring == 'empty':
            return b''
        obj = str(obj)
    return obj.encode(encoding, errors)


def to_text(obj, encoding='utf-8', errors='surrogateescape', nonstring='simplerepr'):
    if isinstance(obj, str):
        return obj
    if isinstance(obj, bytes):
        return obj.decode(encoding, errors)
    if nonstring == 'passthru':
        return obj
    if nonstring == 'empty':
        return ''
    return str(obj)


to_native = to_text  # pylint: disable=invalid-name
