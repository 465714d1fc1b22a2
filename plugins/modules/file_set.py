#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: file_set
short_description: Directories, files, links and removals of a role in one call
version_added: 0.1.0
description:
  - Makes a set of directories, files with given content, symbolic links and removals true on
    the managed host in a single module call, with owner, group and mode for each.
  - The cloud-side roles install a dozen small files each (code, configuration, systemd units);
    as one task per file an unchanged re-run still pays one remote round trip per file. With this
    module it pays one per role. Render templates and read files on the controller with the
    C(ansible.builtin.template) and C(ansible.builtin.file) lookups and pass the text as
    O(files[].content).
  - Files are replaced atomically (written next to the destination, then renamed); a file whose
    content and attributes already match is not touched.
  - Applied in this order - O(directories) parents first, then O(files), O(links), and O(absent)
    deepest first. Every path must be absolute and normalized and may be named only once, and
    nothing may be listed below a file, a link or a removed path; such a request fails before
    anything is changed.
  - Not for secrets; the content is part of the module arguments (use M(ansible.builtin.copy)
    with C(no_log) for a password file).
author:
  - edgefleet maintainers (@edgefleet)
attributes:
  check_mode:
    description: Reports what would change and changes nothing.
    support: full
  diff_mode:
    description: Shows the content of changed text files up to 64 KiB, created and removed paths, and link targets.
    support: full
options:
  directories:
    description: Directories to create (with missing parents) and whose attributes to set.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      owner: {description: Owner name., type: str}
      group: {description: Group name., type: str}
      mode: {description: Mode as an octal string such as C("0755")., type: raw}
  files:
    description: Regular files with exactly this content.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path; its directory must exist or be listed in O(directories)., type: path, required: true}
      content: {description: The whole content (UTF-8 text)., type: str, required: true}
      owner: {description: Owner name., type: str}
      group: {description: Group name., type: str}
      mode: {description: Mode as an octal string such as C("0644")., type: raw}
  links:
    description: Symbolic links. A link pointing elsewhere is replaced; a file or directory in its place is an error.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: Absolute path of the link., type: path, required: true}
      src: {description: What the link points to., type: str, required: true}
  absent:
    description: Files or links that must not exist (a directory here is an error).
    type: list
    elements: path
    default: []
'''

EXAMPLES = r'''
- name: Install the collector, its configuration and units
  edgefleet.mysql_backup.file_set:
    directories:
      - {path: /usr/local/lib/edgefleet, owner: root, group: root, mode: "0755"}
    files:
      - path: /usr/local/lib/edgefleet/collect.py
        content: "{{ lookup('ansible.builtin.file', 'collect.py') }}"
        mode: "0644"
      - path: /etc/systemd/system/edgefleet-status.service
        content: "{{ lookup('ansible.builtin.template', 'edgefleet-status.service.j2') }}"
        mode: "0644"
    links:
      - {path: /etc/nginx/sites-enabled/edgefleet-status, src: /etc/nginx/sites-available/edgefleet-status}
    absent: [/etc/nginx/sites-enabled/default]
  register: installed
  notify: Reload systemd units
'''

RETURN = r'''
changed_paths:
  description: The paths that were (or in check mode would be) created, changed or removed, in order.
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/edgefleet-status.service]
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.file_set import (
    content_diff, content_differs, ordered, validate,
)

ATTRIBUTES = dict(owner=dict(type='str'), group=dict(type='str'), mode=dict(type='raw'))


def file_args(path, entry):
    return dict(path=path, owner=entry.get('owner'), group=entry.get('group'), mode=entry.get('mode'),
                secontext=[None, None, None, None], attributes=None)


def apply_directory(module, entry, diffs):
    path = entry['path']
    created = False
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg='%s exists and is not a directory' % path)
    if not os.path.isdir(path):
        created = True
        diffs.append({'before_header': path, 'after_header': path, 'before': '(absent)\n', 'after': '(directory)\n'})
        if module.check_mode:
            return True
        os.makedirs(path)
    return module.set_fs_attributes_if_different(file_args(path, entry), created)


def apply_file(module, entry, diffs, planned_dirs):
    path, content = entry['path'], entry['content']
    parent = os.path.dirname(path)
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        module.fail_json(msg='%s exists and is not a regular file' % path)
    if not os.path.isdir(parent):
        if module.check_mode and parent in planned_dirs:
            diffs.append({'before_header': path, 'after_header': path, 'before': '', 'after': content})
            return True
        module.fail_json(msg='the directory of %s does not exist (list it in directories)' % path)
    changed = content_differs(path, content)
    if changed:
        diff = content_diff(path, content)
        if diff:
            diffs.append(diff)
        if module.check_mode:
            return True
        handle, temp = tempfile.mkstemp(dir=parent, prefix='.%s.' % os.path.basename(path))
        try:
            with os.fdopen(handle, 'wb') as out:
                out.write(content.encode('utf-8'))
                out.flush()
                os.fsync(out.fileno())
            module.atomic_move(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    return module.set_fs_attributes_if_different(file_args(path, entry), changed)


def apply_link(module, entry, diffs):
    path, src = entry['path'], entry['src']
    if os.path.islink(path):
        current = os.readlink(path)
        if current == src:
            return False
    elif os.path.lexists(path):
        module.fail_json(msg='%s exists and is not a symbolic link' % path)
    else:
        current = '(absent)'
    diffs.append({'before_header': path, 'after_header': path, 'before': '-> %s\n' % current, 'after': '-> %s\n' % src})
    if not module.check_mode:
        temp = '%s.edgefleet-new' % path
        if os.path.lexists(temp):
            os.unlink(temp)
        os.symlink(src, temp)
        os.rename(temp, path)
    return True


def apply_absent(module, path, diffs):
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg='%s is a directory; absent removes files and links only' % path)
    diffs.append({'before_header': path, 'after_header': path, 'before': '(present)\n', 'after': '(absent)\n'})
    if not module.check_mode:
        os.unlink(path)
    return True


def main():
    entry = dict(type='list', elements='dict', default=[])
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(entry, options=dict(path=dict(type='path', required=True), **ATTRIBUTES)),
            files=dict(entry, options=dict(path=dict(type='path', required=True),
                                           content=dict(type='str', required=True), **ATTRIBUTES)),
            links=dict(entry, options=dict(path=dict(type='path', required=True), src=dict(type='str', required=True))),
            absent=dict(type='list', elements='path', default=[]),
        ),
        supports_check_mode=True,
    )
    request = dict((kind, module.params[kind]) for kind in ('directories', 'files', 'links', 'absent'))
    errors = validate(request)
    if errors:
        module.fail_json(msg='file_set: %s' % '; '.join(errors), errors=errors)
    planned_dirs = set(d['path'] for d in request['directories'])
    changed_paths, diffs = [], []
    for kind, item in ordered(request):
        if kind == 'directories':
            changed = apply_directory(module, item, diffs)
        elif kind == 'files':
            changed = apply_file(module, item, diffs, planned_dirs)
        elif kind == 'links':
            changed = apply_link(module, item, diffs)
        else:
            changed = apply_absent(module, item, diffs)
        if changed:
            changed_paths.append(item if kind == 'absent' else item['path'])
    result = dict(changed=bool(changed_paths), changed_paths=changed_paths)
    if module._diff:  # pylint: disable=protected-access
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
