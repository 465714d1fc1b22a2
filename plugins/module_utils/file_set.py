# -*- coding: utf-8 -*-
# Copyright (c) edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A role's directories, files, links and removals checked and applied in one module call.

The cloud-side roles install a dozen small files each (code, configuration, units). As one task
per file, a re-run that changes nothing still pays a remote round trip per file; the
``file_set`` module takes them all at once. This part is the plan: validation of the requested
entries and what differs from what is on disk, with no side effects. Standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

KINDS = ('directories', 'files', 'links', 'absent')
# Larger files are compared and written, but not shown in --diff.
DIFF_LIMIT = 64 * 1024


def _entry_path(kind, entry):
    return entry if kind == 'absent' else (entry or {}).get('path')


def validate(request):
    """Errors in a request {kind: [entries]}: paths must be absolute, normalized and named once;
    files need content, links a source."""
    errors, seen = [], {}
    for kind in KINDS:
        for entry in request.get(kind) or []:
            path = _entry_path(kind, entry)
            if not isinstance(path, str) or not path:
                errors.append('%s: every entry needs a path' % kind)
                continue
            if not os.path.isabs(path) or os.path.normpath(path) != path or path == '/':
                errors.append('%s: %r is not an absolute, normalized path below /' % (kind, path))
            if path in seen:
                errors.append('%r is listed twice (%s and %s)' % (path, seen[path], kind))
            seen[path] = kind
            if kind == 'files' and not isinstance(entry.get('content'), str):
                errors.append('files: %r needs content (a string)' % path)
            if kind == 'links' and not entry.get('src'):
                errors.append('links: %r needs src' % path)
    for path, kind in seen.items():
        parent = os.path.dirname(path)
        while parent not in ('/', ''):
            if seen.get(parent) in ('files', 'links', 'absent'):
                errors.append('%r is below %r, which is in %s' % (path, parent, seen[parent]))
            parent = os.path.dirname(parent)
    return errors


def ordered(request):
    """(kind, entry) in the order they are applied: directories parents first, then files and
    links, then removals deepest first."""
    steps = [('directories', d) for d in sorted(request.get('directories') or [], key=lambda d: d['path'].count('/'))]
    steps += [('files', f) for f in request.get('files') or []]
    steps += [('links', link) for link in request.get('links') or []]
    steps += [('absent', p) for p in sorted(request.get('absent') or [], key=lambda p: -p.count('/'))]
    return steps


def content_differs(path, content):
    """True when the file at ``path`` is missing or its bytes are not ``content`` (UTF-8)."""
    wanted = content.encode('utf-8')
    try:
        if os.path.getsize(path) != len(wanted):
            return True
        with open(path, 'rb') as handle:
            return handle.read() != wanted
    except OSError:
        return True


def content_diff(path, content):
    """A --diff entry for a changed file, or None when either side is too large or not text."""
    before = ''
    if os.path.exists(path):
        try:
            if os.path.getsize(path) > DIFF_LIMIT:
                return None
            with open(path, 'rb') as handle:
                before = handle.read().decode('utf-8')
        except (OSError, UnicodeDecodeError):
            return None
    if len(content) > DIFF_LIMIT:
        return None
    return {'before_header': path, 'after_header': path, 'before': before, 'after': content}
