# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How host programs reach their code: one way for every role.

A host program (the backup command, the status collector, the tunnel guard, the enrollment
service, ...) is a module under ``plugins/module_utils`` with a ``main()``. A role ships it with
the modules it imports into one tree on the host::

    <lib_dir>/ansible_collections/edgefleet/mysql_backup/plugins/module_utils/<module>.py

(the import path of the collection, so the code runs unchanged on the controller, in tests and
on the host) and puts a launcher in /usr/local/sbin that imports it with the system python3:

    file_set:
      directories: "{{ ['backup.cli'] | edgefleet.mysql_backup.host_code_directories(lib) }}"
      files: "{{ ['backup.cli'] | edgefleet.mysql_backup.host_code_files(lib) + [launcher] }}"

The modules a program needs are found by reading its imports (``ast``), transitively, so no role
keeps a list of files that can drift from the code.
"""

from __future__ import annotations

import ast
import os
import re
import shlex

from ansible.errors import AnsibleFilterError

PACKAGE = 'ansible_collections.edgefleet.mysql_backup.plugins.module_utils'
# Where the collection's module_utils are on the host, below lib_dir.
HOST_PACKAGE_DIR = PACKAGE.replace('.', '/')
# plugins/module_utils of this very collection (the repository or the installed collection).
MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils')

# ansible-core modules a host program may import although hosts have no ansible-core: each is
# replaced by a small module_utils file of this collection, shipped to the path the import
# names. Any other ansible.* import is refused (ansible.module_utils.basic is for modules).
STAND_INS = {
    'ansible.module_utils.common.yaml': 'ansible_yaml_stand_in.py',
    'ansible.module_utils.common.text.converters': 'ansible_text_stand_in.py',
}

FILE_ATTRIBUTES = {'owner': 'root', 'group': 'root', 'mode': '0644'}
DIRECTORY_ATTRIBUTES = {'owner': 'root', 'group': 'root', 'mode': '0755'}
DOTTED_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$')
# The launcher embeds lib_dir in shell and Python text: no character that needs quoting.
LIB_DIR_RE = re.compile(r'^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$')
USER_RE = re.compile(r'^[a-z_][a-z0-9_-]*$')
ENV_NAME_RE = re.compile(r'^[A-Z_][A-Z0-9_]*$')


class HostCodeError(Exception):
    """A module cannot be shipped: unknown name, or an import no host can satisfy."""


def _module_file(root, name):
    """Path relative to ``root`` of module ``name`` (a file, or a package's __init__.py), or None."""
    parts = name.split('.')
    for rel in (os.path.join(*parts) + '.py', os.path.join(*(parts + ['__init__.py']))):
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    return None


def _is_package(rel):
    return os.path.basename(rel) == '__init__.py'


def _defined_names(tree):
    """Names a module defines at top level (assignments, defs, classes, imports), in any branch."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
    return names


def _imports(tree, name, rel):
    """(dotted module, [imported names] or None, line) of every import in the module, including
    imports inside functions and try blocks (they run on the host too). Relative imports are
    made absolute."""
    package = name if _is_package(rel) else name.rpartition('.')[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.') if package else []
                if node.level - 1 > len(base):
                    raise HostCodeError('%s line %d: relative import beyond plugins/module_utils'
                                        % (rel, node.lineno))
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
                yield PACKAGE + ('.' + target if target else ''), [a.name for a in node.names], node.lineno
            else:
                yield node.module, [a.name for a in node.names], node.lineno


def resolve(modules, root=MODULE_UTILS):
    """The files the host needs to import ``modules``: (collection files, stand-ins).

    Collection files: paths relative to plugins/module_utils of the modules, every collection
    module they import (transitively) and the __init__.py of their parent packages (importing a
    module runs them). Stand-ins: {path below lib_dir: stand-in file relative to root}.
    """
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise HostCodeError('expected a list of module names, got %r' % (modules,))
    wanted, files, stand_ins, parsed = [], set(), {}, {}
    for name in modules:
        if not isinstance(name, str) or not DOTTED_RE.match(name):
            raise HostCodeError('%r is not a dotted module name (such as backup.cli)' % (name,))
        if _module_file(root, name) is None:
            raise HostCodeError('no module %s in plugins/module_utils (looked for %s.py and %s/__init__.py)'
                                % (name, name.replace('.', '/'), name.replace('.', '/')))
        wanted.append((name, None))
    while wanted:
        name, importer = wanted.pop()
        rel = _module_file(root, name)
        if rel is None:
            raise HostCodeError('%s imports %s.%s, which is not in plugins/module_utils' % (importer, PACKAGE, name))
        if rel in files:
            continue
        files.add(rel)
        parts = name.split('.')
        for depth in range(1, len(parts)):
            # Parent packages: their __init__.py runs first; without one it is a namespace package.
            if _module_file(root, '.'.join(parts[:depth])):
                wanted.append(('.'.join(parts[:depth]), rel))
        with open(os.path.join(root, rel), encoding='utf-8') as handle:
            tree = ast.parse(handle.read(), filename=rel)
        for module, names, line in _imports(tree, name, rel):
            where = '%s line %d' % (rel, line)
            if module == PACKAGE or module.startswith(PACKAGE + '.'):
                inner = module[len(PACKAGE) + 1:]
                if inner and _module_file(root, inner):
                    wanted.append((inner, where))
                elif inner and not os.path.isdir(os.path.join(root, *inner.split('.'))):
                    # (a directory without __init__.py is a namespace package: nothing to ship)
                    raise HostCodeError('%s imports %s, which is not in plugins/module_utils' % (where, module))
                for imported in names or []:
                    # `from ...module_utils import allocation`: a submodule, or a name of the module.
                    sub = '%s.%s' % (inner, imported) if inner else imported
                    if _module_file(root, sub):
                        wanted.append((sub, where))
                    elif not inner:
                        raise HostCodeError('%s imports %s from %s, which is not a module of plugins/module_utils'
                                            % (where, imported, PACKAGE))
            elif module == 'ansible' or module.startswith('ansible.') or module.startswith('ansible_collections'):
                if module not in STAND_INS:
                    raise HostCodeError(
                        '%s imports %s, which hosts do not have (no ansible-core there) and which has no '
                        'stand-in (host_code STAND_INS knows %s)' % (where, module, ', '.join(sorted(STAND_INS))))
                stand_in = STAND_INS[module]
                if stand_in not in parsed:
                    with open(os.path.join(root, stand_in), encoding='utf-8') as handle:
                        parsed[stand_in] = _defined_names(ast.parse(handle.read(), filename=stand_in))
                missing = sorted(set(names or []) - parsed[stand_in])
                if missing:
                    raise HostCodeError('%s imports %s from %s; its host stand-in %s does not define it'
                                        % (where, ', '.join(missing), module, stand_in))
                stand_ins[module.replace('.', '/') + '.py'] = stand_in
            # Anything else is the standard library or a package of the host's python3
            # (PyMySQL, PyYAML, Flask): the role installs those with apt.
    return sorted(files), stand_ins


def _check_lib_dir(lib_dir):
    if not isinstance(lib_dir, str) or not LIB_DIR_RE.match(lib_dir) or os.path.normpath(lib_dir) != lib_dir:
        raise AnsibleFilterError('lib_dir must be an absolute, normalized path of letters, digits and ._/- '
                                 '(it is written into a shell launcher), got %r' % (lib_dir,))


def _resolve_or_fail(modules, filter_name):
    try:
        return resolve(modules)
    except HostCodeError as exc:
        raise AnsibleFilterError('%s: %s' % (filter_name, exc)) from exc


def _shipped(modules, lib_dir, filter_name):
    """(target path, source path) of every file host_code_files ships, without reading them."""
    _check_lib_dir(lib_dir)
    files, stand_ins = _resolve_or_fail(modules, filter_name)
    shipped = [('%s/%s/%s' % (lib_dir, HOST_PACKAGE_DIR, rel.replace(os.sep, '/')), rel) for rel in files]
    shipped += [('%s/%s' % (lib_dir, target), stand_in) for target, stand_in in sorted(stand_ins.items())]
    return shipped


def host_code_files(modules, lib_dir):
    """file_set entries of the modules, what they import and their stand-ins, below lib_dir."""
    entries = []
    for path, source in _shipped(modules, lib_dir, 'host_code_files'):
        with open(os.path.join(MODULE_UTILS, source), encoding='utf-8') as handle:
            entries.append(dict(FILE_ATTRIBUTES, path=path, content=handle.read()))
    return sorted(entries, key=lambda entry: entry['path'])


def host_code_directories(modules, lib_dir):
    """file_set directory entries for host_code_files: lib_dir and every directory below it that
    holds a shipped file, parents first. Only the paths: the files' contents are not read."""
    directories = set([lib_dir])
    for path, _source in _shipped(modules, lib_dir, 'host_code_directories'):
        parent = os.path.dirname(path)
        while parent != lib_dir:
            directories.add(parent)
            parent = os.path.dirname(parent)
    return [dict(DIRECTORY_ATTRIBUTES, path=path) for path in sorted(directories, key=lambda p: (p.count('/'), p))]


def host_program_launcher(entry, lib_dir, run_as=None, environment=None, python=None):
    """Text of a /bin/sh launcher that runs ``<entry>.main()`` from lib_dir with /usr/bin/python3 -I
    (or ``python``, e.g. a virtualenv's interpreter for a program with third-party packages).

    Isolated mode: no PYTHON* variables, no user site, no script or working directory on
    sys.path: the program sees the shipped tree and the system's packages only. The module is
    imported, not run as a script, so Python keeps its compiled form; argv[0] is the launcher's
    own path, so usage messages name the command. ``run_as``: started by root, the launcher runs
    itself again as this user (runuser), so what the program writes belongs to that user.
    ``environment``: variables exported for the program (its own settings, not PYTHON*).
    """
    _check_lib_dir(lib_dir)
    if not isinstance(entry, str) or not DOTTED_RE.match(entry):
        raise AnsibleFilterError('host_program_launcher: %r is not a dotted module name (such as backup.cli)'
                                 % (entry,))
    rel = _module_file(MODULE_UTILS, entry)
    if rel is None:
        raise AnsibleFilterError('host_program_launcher: no module %s in plugins/module_utils' % entry)
    with open(os.path.join(MODULE_UTILS, rel), encoding='utf-8') as handle:
        if not any(isinstance(node, ast.FunctionDef) and node.name == 'main'
                   for node in ast.parse(handle.read(), filename=rel).body):
            raise AnsibleFilterError('host_program_launcher: %s defines no main() at top level' % rel)
    lines = ['#!/bin/sh',
             '# Managed by edgefleet.mysql_backup: runs main() of the collection module %s' % entry,
             '# from %s with the system Python in isolated mode.' % lib_dir]
    if run_as:
        if not isinstance(run_as, str) or not USER_RE.match(run_as):
            raise AnsibleFilterError('host_program_launcher: run_as must be a user name, got %r' % (run_as,))
        lines += ['if [ "$(id -u)" = 0 ]; then',
                  '  exec /usr/sbin/runuser -u %s -- "$0" "$@"' % run_as,
                  'fi']
    if not isinstance(environment or {}, dict):
        raise AnsibleFilterError('host_program_launcher: environment must be a mapping, got %r' % (environment,))
    for name, value in sorted((environment or {}).items()):
        if not ENV_NAME_RE.match(str(name)) or str(name).startswith('PYTHON'):
            raise AnsibleFilterError('host_program_launcher: %r is not a variable name the launcher sets '
                                     '(PYTHON* are ignored in isolated mode)' % (name,))
        lines.append('export %s=%s' % (name, shlex.quote(str(value))))
    code = ('import sys; sys.path.insert(0, "%s"); del sys.argv[0]; '
            'from %s.%s import main; sys.exit(main())' % (lib_dir, PACKAGE, entry))
    if python is not None:
        _check_lib_dir(python)
    lines.append("exec %s -I -c '%s' \"$0\" \"$@\"" % (python or '/usr/bin/python3', code))
    return '\n'.join(lines) + '\n'


class FilterModule:
    """edgefleet.mysql_backup filters that ship host programs."""

    def filters(self):
        return {
            'host_code_files': host_code_files,
            'host_code_directories': host_code_directories,
            'host_program_launcher': host_program_launcher,
        }
