# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/role-docs: the README is rendered from argument_specs (defaults as defaults/main.yml
has them), and the check finds every kind of disagreement between argument_specs and defaults."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_LOADER = importlib.machinery.SourceFileLoader('role_docs', os.path.join(ROOT, 'scripts', 'role-docs'))
_SPEC = importlib.util.spec_from_loader('role_docs', _LOADER)
role_docs = importlib.util.module_from_spec(_SPEC)
_LOADER.exec_module(role_docs)

SPECS = """---
argument_specs:
  main:
    short_description: Demo role
    description: [Does C(one) thing with O(demo_port).]
    options:
      demo_port: {type: int, default: 3306, description: Port.}
      demo_host: {type: str, description: Host.}
      demo_user: {type: str, default: admin, description: User.}
      demo_packages: {type: list, elements: str, description: Packages.}
      demo_secret: {type: str, no_log: true, description: Secret.}
      demo_only_spec: {type: int, default: 5, description: Only documented.}
      demo_list:
        type: list
        elements: dict
        default: []
        description: Items.
        options:
          name: {type: str, required: true, description: Item name.}
"""
DEFAULTS = """---
demo_port: "3306"
demo_host: "{{ edgefleet_host }}"
demo_user: admin
demo_packages: [a, b]
demo_secret: "{{ vault_secret }}"
demo_list: []
demo_undocumented: 1
"""


def make_role(tmp_path, specs=SPECS, defaults=DEFAULTS):
    role = tmp_path / 'demo'
    (role / 'meta').mkdir(parents=True)
    (role / 'defaults').mkdir()
    (role / 'meta' / 'argument_specs.yml').write_text(specs)
    (role / 'defaults' / 'main.yml').write_text(defaults)
    return str(role)


def test_every_kind_of_mismatch_is_found(tmp_path):
    problems = role_docs.defaults_mismatches(make_role(tmp_path))
    text = '\n'.join(problems)
    assert 'demo_port (entry point main): argument_specs default `3306`, defaults/main.yml `"3306"`' not in text
    assert any(p.startswith('demo_port') and 'argument_specs default `3306`' in p for p in problems)
    assert any(p.startswith('demo_packages') and 'argument_specs gives no default' in p for p in problems)
    assert any(p.startswith('demo_only_spec') and 'does not set it' in p for p in problems)
    assert any(p.startswith('demo_undocumented') and 'in no entry point' in p for p in problems)
    # Jinja defaults without a spec default, and equal plain values, are fine
    assert not any(p.startswith(('demo_host', 'demo_secret', 'demo_user', 'demo_list')) for p in problems)
    assert len(problems) == 4


def test_jinja_defaults_compare_as_text(tmp_path):
    specs = SPECS.replace('demo_host: {type: str, description: Host.}',
                          'demo_host: {type: str, default: "", description: Host.}')
    problems = role_docs.defaults_mismatches(make_role(tmp_path, specs=specs))
    assert any(p.startswith('demo_host') and '{{ edgefleet_host }}' in p for p in problems)
    specs = SPECS.replace('demo_host: {type: str, description: Host.}',
                          'demo_host: {type: str, default: "{{ edgefleet_host }}", description: Host.}')
    assert not any(p.startswith('demo_host') for p in role_docs.defaults_mismatches(make_role(tmp_path / 'b', specs=specs)))


def test_readme_shows_the_real_defaults_and_markup(tmp_path):
    text = role_docs.render('demo', make_role(tmp_path))
    assert text.startswith('# Role `edgefleet.mysql_backup.demo`')
    assert 'Does `one` thing with `demo_port`.' in text
    assert '| `demo_host` | str | `{{ edgefleet_host }}` | Host. |' in text
    assert '| `demo_packages` | list of str | `[a, b]` | Packages. |' in text
    assert '| `demo_list[].name` | str | *required* | Item name. |' in text
    assert 'Secret (keep it in vault).' in text
