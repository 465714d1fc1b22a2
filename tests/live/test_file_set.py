"""The file_set module through real ansible-playbook on this machine's filesystem (a temp dir):
create, unchanged re-run, check mode, --diff, attribute-only changes, links, removals, refusals."""
import json
import os
import stat
import subprocess
import textwrap

import pytest

from tests.live.support import ROOT, VENV_BIN, ansible_env

PLAYBOOK = textwrap.dedent('''\
    - name: file_set
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Install the set
          edgefleet.mysql_backup.file_set:
            directories:
              - {path: "{{ base }}/lib/code", mode: "0755"}
              - {path: "{{ base }}/private", mode: "{{ private_mode | default('0750') }}"}
            # Built the way the roles build it: a Jinja loop producing a list of dicts.
            files: >-
              {% set out = [] %}{% for name in names %}{%
                 set _ = out.append({'path': base ~ '/lib/code/' ~ name, 'mode': '0644',
                                     'content': 'print("' ~ name ~ '")\\n'}) %}{%
               endfor %}{% set _ = out.append({'path': base ~ '/private/settings.json', 'mode': '0640',
                                                'content': {'devices': names} | to_json ~ '\\n'}) %}{{ out }}
            links: [{path: "{{ base }}/current", src: "{{ base }}/lib/code"}]
            absent: ["{{ base }}/old.conf"]
          register: result

        - name: Report
          ansible.builtin.debug:
            var: result
    ''')


def playbook(tmp_path, *extra, names=('a.py', 'b.py'), **variables):
    """Run the playbook; returns (file_set result, changed count from the recap, output)."""
    path = tmp_path / 'play.yml'
    path.write_text(PLAYBOOK)
    extra_vars = dict(variables, base=str(tmp_path / 'root'), names=list(names))
    proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                           str(path), '-e', json.dumps(extra_vars)] + list(extra),
                          capture_output=True, text=True, env=ansible_env(), cwd=ROOT, timeout=180, check=False)
    output = proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    result = data['plays'][0]['tasks'][0]['hosts']['localhost']
    return result, data['stats']['localhost']['changed'], output


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_then_changes_nothing(tmp_path):
    base = tmp_path / 'root'
    base.mkdir()
    (base / 'old.conf').write_text('stale\n')

    planned, changed, output = playbook(tmp_path, '--check', '--diff')
    assert planned['changed'] is True and changed == 1, output
    assert not (base / 'lib').exists() and (base / 'old.conf').exists(), 'check mode wrote something'
    assert str(base / 'lib' / 'code' / 'a.py') in planned['changed_paths']
    assert any(d.get('after') == 'print("a.py")\n' for d in planned['diff']), planned['diff']

    made, changed, output = playbook(tmp_path)
    assert made['changed'] is True and changed == 1, output
    assert (base / 'lib' / 'code' / 'a.py').read_text() == 'print("a.py")\n'
    assert json.loads((base / 'private' / 'settings.json').read_text()) == {'devices': ['a.py', 'b.py']}
    assert mode(base / 'private' / 'settings.json') == 0o640 and mode(base / 'private') == 0o750
    assert mode(base / 'lib' / 'code' / 'b.py') == 0o644
    assert os.readlink(base / 'current') == str(base / 'lib' / 'code')
    assert not (base / 'old.conf').exists()
    assert not [p for p in (base / 'lib' / 'code').iterdir() if p.name.startswith('.')], 'temp file left'

    again, changed, output = playbook(tmp_path, '--diff')
    assert again['changed'] is False and again['changed_paths'] == [] and changed == 0, output


def test_changes_only_what_differs(tmp_path):
    base = tmp_path / 'root'
    playbook(tmp_path)
    before = os.stat(base / 'lib' / 'code' / 'a.py').st_ino

    result, _changed, output = playbook(tmp_path, names=('a.py', 'b.py', 'c.py'))
    assert result['changed_paths'] == [str(base / 'lib' / 'code' / 'c.py'), str(base / 'private' / 'settings.json')], output
    assert os.stat(base / 'lib' / 'code' / 'a.py').st_ino == before, 'an unchanged file was rewritten'

    # Attributes alone: a directory mode, in check mode first.
    planned, _changed, output = playbook(tmp_path, '--check', names=('a.py', 'b.py', 'c.py'), private_mode='0700')
    assert planned['changed_paths'] == [str(base / 'private')] and mode(base / 'private') == 0o750, output
    done, _changed, output = playbook(tmp_path, names=('a.py', 'b.py', 'c.py'), private_mode='0700')
    assert done['changed_paths'] == [str(base / 'private')] and mode(base / 'private') == 0o700, output

    # A link pointing elsewhere is repointed.
    os.unlink(base / 'current')
    os.symlink('/nonexistent', base / 'current')
    fixed, _changed, output = playbook(tmp_path, names=('a.py', 'b.py', 'c.py'), private_mode='0700')
    assert fixed['changed_paths'] == [str(base / 'current')], output
    assert os.readlink(base / 'current') == str(base / 'lib' / 'code')


@pytest.mark.parametrize('setup, message', [
    (lambda base: (base / 'old.conf').mkdir(parents=True), 'is a directory; absent removes files and links only'),
    (lambda base: (base / 'current').mkdir(parents=True), 'exists and is not a symbolic link'),
    (lambda base: (base / 'lib' / 'code' / 'a.py').mkdir(parents=True), 'exists and is not a regular file'),
])
def test_refuses_to_clobber(tmp_path, setup, message):
    setup(tmp_path / 'root')
    result, _changed, output = playbook(tmp_path)
    assert result.get('failed') is True and message in result['msg'], output
