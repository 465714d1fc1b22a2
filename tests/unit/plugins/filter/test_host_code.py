# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_code filters: the one way host programs reach their code."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import textwrap

import pytest

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common import yaml as ansible_yaml

from ansible_collections.edgefleet.mysql_backup.plugins.filter import host_code
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import ansible_yaml_stand_in

LIB = '/usr/local/lib/edgefleet-test'
TREE = LIB + '/ansible_collections/edgefleet/mysql_backup/plugins/module_utils'
PKG = host_code.PACKAGE
SYSTEM_PYTHON = '/usr/bin/python3'


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        with open(path, 'w') as handle:
            handle.write(textwrap.dedent(text))
    return str(root)


def install(entries, directories=()):
    """What file_set does with the filters' entries (the tests' lib_dir is a temporary one)."""
    for entry in directories:
        if not os.path.isdir(entry['path']):
            os.mkdir(entry['path'])
    for entry in entries:
        with open(entry['path'], 'w') as handle:
            handle.write(entry['content'])
        os.chmod(entry['path'], int(entry['mode'], 8))


def test_filters_are_registered():
    assert set(host_code.FilterModule().filters()) == {'host_code_files', 'host_code_directories',
                                                       'host_program_launcher'}


def test_a_module_without_collection_imports_is_shipped_alone():
    entries = host_code.host_code_files(['tunnel_guard'], LIB)
    assert [e['path'] for e in entries] == [TREE + '/tunnel_guard.py']
    with open(os.path.join(host_code.MODULE_UTILS, 'tunnel_guard.py')) as handle:
        assert entries[0]['content'] == handle.read()
    assert (entries[0]['owner'], entries[0]['group'], entries[0]['mode']) == ('root', 'root', '0644')


def test_imports_are_followed_transitively():
    paths = [e['path'] for e in host_code.host_code_files(['fleet_status_collect'], LIB)]
    # fleet_status_collect -> consistency -> replication_state -> dialect, and fleet_status.
    for name in ('fleet_status_collect', 'consistency', 'replication_state', 'dialect', 'fleet_status'):
        assert TREE + '/%s.py' % name in paths
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    assert TREE + '/registry.py' not in paths


def test_from_package_import_submodule_is_followed():
    # enrollment: `from ...module_utils import allocation as alloc_lib`
    files, _stand_ins = host_code.resolve(['enrollment'])
    assert 'allocation.py' in files and 'registry_ops.py' in files and 'identifiers.py' in files


def test_ansible_yaml_gets_the_stand_in():
    entries = dict((e['path'], e['content']) for e in host_code.host_code_files(['fleet_config'], LIB))
    stand_in = LIB + '/ansible/module_utils/common/yaml.py'
    with open(os.path.join(host_code.MODULE_UTILS, 'ansible_yaml_stand_in.py')) as handle:
        assert entries[stand_in] == handle.read()
    # No __init__.py above it: a real ansible-core on the host stays the regular package that wins.
    assert not [p for p in entries if p.startswith(LIB + '/ansible/') and p.endswith('__init__.py')]


def test_stand_in_behaves_as_ansible_core():
    text = 'a: 1\nb: [x, "y"]\nc: {d: null}\n'
    assert ansible_yaml_stand_in.HAS_YAML is True
    assert ansible_yaml_stand_in.yaml_load(text) == ansible_yaml.yaml_load(text)
    with pytest.raises(Exception):
        ansible_yaml_stand_in.yaml_load('!!python/object/apply:os.system ["true"]')


def test_module_with_ansible_imports_is_refused(tmp_path):
    # A module's helper (AnsibleModule) has no place on a host without ansible-core.
    root = write_tree(tmp_path, {'prog.py': 'import os\nfrom ansible.module_utils.basic import AnsibleModule\n'})
    with pytest.raises(host_code.HostCodeError, match=r'prog.py line 2 imports ansible.module_utils.basic, which hosts '
                                                      r'do not have \(no ansible-core there\) and which has no stand-in'):
        host_code.resolve(['prog'], root)


def test_unknown_module_and_bad_names_are_refused():
    with pytest.raises(AnsibleFilterError, match='no module no_such_thing in plugins/module_utils'):
        host_code.host_code_files(['no_such_thing'], LIB)
    with pytest.raises(AnsibleFilterError, match='not a dotted module name'):
        host_code.host_code_files(['../etc/passwd'], LIB)
    with pytest.raises(AnsibleFilterError, match='list of module names'):
        host_code.host_code_files('tunnel_guard', LIB)


@pytest.mark.parametrize('lib_dir', ['relative/lib', '/usr/lib/', '/usr/../lib', '/usr/lib x', "/usr/l'ib", '/'])
def test_lib_dir_must_be_safe_in_a_launcher(lib_dir):
    with pytest.raises(AnsibleFilterError, match='lib_dir'):
        host_code.host_code_files(['tunnel_guard'], lib_dir)
    with pytest.raises(AnsibleFilterError, match='lib_dir'):
        host_code.host_program_launcher('tunnel_guard', lib_dir)


def test_relative_imports_and_packages(tmp_path):
    root = write_tree(tmp_path, {
        'top.py': 'VALUE = 1\n',
        'unused.py': 'X = 1\n',
        'app/__init__.py': 'from .shared import helper\n',
        'app/shared.py': 'def helper():\n    return 1\n',
        'app/sub/cli.py': '''
            from . import peer
            from .. import shared
            from ...top import VALUE
            def main():
                from .late import later
                return later()
            ''',
        'app/sub/peer.py': 'import json\n',
        'app/sub/late.py': 'def later():\n    return 0\n',
    })
    files, stand_ins = host_code.resolve(['app.sub.cli'], root)
    # app/sub has no __init__.py: a namespace package, nothing to ship for it.
    assert files == ['app/__init__.py', 'app/shared.py', 'app/sub/cli.py', 'app/sub/late.py',
                     'app/sub/peer.py', 'top.py']
    assert stand_ins == {}


def test_absolute_imports_of_the_collection(tmp_path):
    root = write_tree(tmp_path, {
        'a.py': 'import %s.b\nfrom %s import c\nfrom %s.d import thing\n' % (PKG, PKG, PKG),
        'b.py': '', 'c.py': '', 'd.py': 'thing = 1\n',
    })
    assert host_code.resolve(['a'], root)[0] == ['a.py', 'b.py', 'c.py', 'd.py']


@pytest.mark.parametrize('source,message', [
    ('from %s.missing import x\n' % PKG, 'imports %s.missing, which is not in plugins/module_utils' % PKG),
    ('from %s import missing\n' % PKG, 'imports missing from %s, which is not a module' % PKG),
    ('from .... import x\n', 'relative import beyond plugins/module_utils'),
    ('import ansible_collections.community.mysql.plugins.module_utils.mysql\n', 'which hosts do not have'),
    ('from ansible.module_utils.common.yaml import yaml_dump\n', 'yaml_dump from ansible.module_utils.common.yaml; '
                                                                 'its host stand-in ansible_yaml_stand_in.py does not define it'),
])
def test_imports_no_host_can_satisfy_fail_with_their_line(tmp_path, source, message):
    with open(os.path.join(host_code.MODULE_UTILS, 'ansible_yaml_stand_in.py')) as handle:
        stand_in = handle.read()
    root = write_tree(tmp_path, {'prog.py': 'import os\n' + source, 'ansible_yaml_stand_in.py': stand_in})
    with pytest.raises(host_code.HostCodeError) as caught:
        host_code.resolve(['prog'], root)
    assert 'line 2' in str(caught.value) and message in str(caught.value)


def test_directories_hold_every_file_parents_first():
    directories = host_code.host_code_directories(['enrollment'], LIB)
    paths = [d['path'] for d in directories]
    assert paths[0] == LIB and paths == sorted(paths, key=lambda p: (p.count('/'), p))
    assert TREE in paths and LIB + '/ansible/module_utils/common' in paths
    for entry in host_code.host_code_files(['enrollment'], LIB):
        assert os.path.dirname(entry['path']) in paths
    assert all((d['owner'], d['group'], d['mode']) == ('root', 'root', '0755') for d in directories)


def test_launcher_text():
    text = host_code.host_program_launcher('tunnel_guard', LIB)
    assert text.startswith('#!/bin/sh\n') and text.endswith('\n')
    assert "exec /usr/bin/python3 -I -c '" in text
    assert 'sys.path.insert(0, "%s")' % LIB in text
    assert 'from %s.tunnel_guard import main; sys.exit(main())' % PKG in text


def test_launcher_with_user_and_environment():
    text = host_code.host_program_launcher('tunnel_guard', LIB, 'edgefleet-enroll',
                                           {'EDGEFLEET_B': "it's", 'EDGEFLEET_A': '/etc/x.json'})
    lines = text.splitlines()
    assert lines[3:8] == ['if [ "$(id -u)" = 0 ]; then', '  exec /usr/sbin/runuser -u edgefleet-enroll -- "$0" "$@"',
                          'fi', 'export EDGEFLEET_A=/etc/x.json', "export EDGEFLEET_B='it'\"'\"'s'"]
    assert lines[8].startswith('exec /usr/bin/python3 -I -c ')
    # Without them the launcher is the plain one.
    assert host_code.host_program_launcher('tunnel_guard', LIB, None, {}) == host_code.host_program_launcher(
        'tunnel_guard', LIB)
    for user, env in (('root; rm', None), (None, {'PYTHONPATH': '/tmp'}), (None, {'a b': 'x'}), (None, ['X'])):
        with pytest.raises(AnsibleFilterError):
            host_code.host_program_launcher('tunnel_guard', LIB, user, env)


def test_launcher_refuses_unknown_module_and_module_without_main():
    with pytest.raises(AnsibleFilterError, match='no module nope'):
        host_code.host_program_launcher('nope', LIB)
    with pytest.raises(AnsibleFilterError, match='defines no main'):
        host_code.host_program_launcher('dialect', LIB)


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason='needs the system python3')
def test_launcher_runs_main_with_argv_and_exit_code(tmp_path):
    lib = str(tmp_path / 'lib')
    install(host_code.host_code_files(['tunnel_guard'], lib), host_code.host_code_directories(['tunnel_guard'], lib))
    # Stand in for the guard's main() to see what the launcher hands over.
    with open(lib + TREE[len(LIB):] + '/tunnel_guard.py', 'w') as handle:
        handle.write('import os, sys\ndef main():\n'
                     '    print(repr(sys.argv), sys.flags.isolated, os.getcwd() in sys.path, os.environ["EDGEFLEET_TEST"])\n'
                     '    return 3\n')
    launcher = str(tmp_path / 'edgefleet-guard')
    install([{'path': launcher, 'mode': '0755',
              'content': host_code.host_program_launcher('tunnel_guard', lib, environment={'EDGEFLEET_TEST': 'a b'})}])
    proc = subprocess.run([launcher, '--user', 'a b'], capture_output=True, text=True, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH='/nonexistent'), check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "[%r, '--user', 'a b'] 1 False a b\n" % launcher


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason='needs the system python3')
def test_shipped_tree_imports_without_ansible_core(tmp_path):
    """The enrollment logic imports fleet_config and registry (ansible.module_utils.common.yaml):
    from the shipped tree alone, with the system python3 in isolated mode, it imports and parses YAML."""
    lib = str(tmp_path / 'lib')
    install(host_code.host_code_files(['enrollment'], lib), host_code.host_code_directories(['enrollment'], lib))
    code = ('import sys; sys.path.insert(0, %r); '
            'from %s import enrollment, fleet_config; '
            'from ansible.module_utils.common import yaml; '
            'print(yaml.__file__.startswith(%r), yaml.yaml_load("a: [1]"))' % (lib, PKG, lib))
    proc = subprocess.run([SYSTEM_PYTHON, '-I', '-c', code], capture_output=True, text=True, check=False)
    if 'No module named \'yaml\'' in proc.stderr:
        pytest.skip('the system python3 has no PyYAML')
    assert proc.returncode == 0, proc.stderr
    # The stand-in, unless the system python3 has a real ansible-core (which then wins).
    assert proc.stdout.split(' ', 1)[1] == "{'a': [1]}\n"
