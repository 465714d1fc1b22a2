# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWX as code (awx/controller.yml, awx/configure.yml) and the execution environment
(execution-environment.yml) agree with the project and with the awx.awx modules.

No AWX runs here; what can be checked without one is: every job template's playbook and the
inventory source's fleet config exist in the project, survey variables are ones the playbooks
read, workflow nodes point at defined objects, every key in controller.yml is consumed by
configure.yml, every option configure.yml passes exists in the installed awx.awx module, and
ansible-builder accepts the EE definition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.runner.support import ROOT, environment

AWX = os.path.join(ROOT, "awx")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _yaml(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_Loader)  # noqa: S506 - SafeLoader subclass


CONFIG = _yaml(os.path.join(AWX, "controller.yml"))
PLAY = _yaml(os.path.join(AWX, "configure.yml"))
TASKS = {task["name"]: task for task in PLAY[0]["tasks"]}
SECTIONS = {
    "controller_organizations": ("Organizations", "awx.awx.organization"),
    "controller_credential_types": ("Credential types", "awx.awx.credential_type"),
    "controller_credentials": ("Credentials", "awx.awx.credential"),
    "controller_execution_environments": ("Execution environments", "awx.awx.execution_environment"),
    "controller_projects": ("Projects (synced, so their playbooks and inventory files exist)", "awx.awx.project"),
    "controller_inventories": ("Inventories", "awx.awx.inventory"),
    "controller_inventory_sources": ("Inventory sources (the fleet inventory plugin, sourced from the project)",
                                     "awx.awx.inventory_source"),
    "controller_templates": ("Job templates", "awx.awx.job_template"),
    "controller_workflows": ("Workflows", "awx.awx.workflow_job_template"),
}


def _options(module):
    out = subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-doc"), "-j", module], env=dict(
        os.environ, **environment()), capture_output=True, text=True, check=True).stdout
    return set(json.loads(out)[module]["doc"]["options"])


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_key_is_consumed_and_every_option_exists(section):
    task_name, module = SECTIONS[section]
    task = TASKS[task_name]
    args = task[module]
    consumed = set(re.findall(r"item\.([a-z_]+)", json.dumps(args)))
    for item in CONFIG[section]:
        unknown = set(item) - consumed
        assert not unknown, "%s %s: keys configure.yml ignores: %s" % (section, item["name"], sorted(unknown))
    assert set(args) <= _options(module), sorted(set(args) - _options(module))


@pytest.mark.parametrize("template", [t["name"] for t in CONFIG["controller_templates"]])
def test_job_template_playbooks_and_surveys(template):
    item = next(t for t in CONFIG["controller_templates"] if t["name"] == template)
    path = os.path.join(ROOT, item["playbook"])
    if not os.path.exists(path):
        pytest.skip("%s is not in the project yet (owned by another part of the collection)" % item["playbook"])
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for question in item.get("survey_spec", {}).get("spec", []):
        assert re.search(r"\b%s\b" % question["variable"], text), \
            "%s: survey variable %s is not read by %s" % (template, question["variable"], item["playbook"])
    for key in item.get("extra_vars", {}):
        assert re.search(r"\b%s\b" % key, open(os.path.join(ROOT, "playbooks", "devices.yml")).read() + text)


def test_templates_that_change_the_fleet_do_not_run_twice_at_once():
    for item in CONFIG["controller_templates"]:
        if item["playbook"] in ("site.yml", "playbooks/rebalance.yml", "playbooks/retire.yml", "playbooks/restore.yml"):
            assert item.get("allow_simultaneous") is False, item["name"]


def test_inventory_source_is_the_fleet_plugin_in_the_project():
    for source in CONFIG["controller_inventory_sources"]:
        path = source["source_path"]
        if "{{" in path:
            path = CONFIG["edgefleet_awx_inventory_source_path"]
        assert path.endswith(("fleet.yml", "fleet.yaml"))
        assert _yaml(os.path.join(ROOT, path))["plugin"] == "edgefleet.mysql_backup.fleet"


def test_workflow_nodes_point_at_defined_objects():
    templates = {t["name"] for t in CONFIG["controller_templates"]}
    sources = {s["name"] for s in CONFIG["controller_inventory_sources"]}
    for workflow in CONFIG["controller_workflows"]:
        nodes = workflow["workflow_nodes"]
        ids = [n["identifier"] for n in nodes]
        assert len(ids) == len(set(ids))
        for node in nodes:
            ujt = node["unified_job_template"]
            assert ujt["name"] in (templates if ujt["type"] == "job_template" else sources), ujt
            for kind in node.get("related", {}).values():
                assert {n["identifier"] for n in kind} <= set(ids)


def test_configure_playbook_syntax():
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "--syntax-check",
                    os.path.join(AWX, "configure.yml"), "-e", "@" + os.path.join(AWX, "controller.yml")],
                   env=dict(os.environ, **environment()), cwd=ROOT, check=True, capture_output=True)


def test_execution_environment_definition(tmp_path):
    builder = shutil.which("ansible-builder", path=os.path.join(ROOT, ".venv", "bin"))
    if builder is None:
        pytest.fail("ansible-builder is not installed: run `make venv` (requirements-dev.txt)")
    subprocess.run([builder, "create", "-f", os.path.join(ROOT, "execution-environment.yml"), "-c", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    containerfile = (tmp_path / "Containerfile").read_text()
    assert "ansible-core==2.19.14" in containerfile and "ansible-runner==2.4.3" in containerfile
    requirements = (tmp_path / "_build" / "requirements.txt").read_text()
    assert "pymysql" in requirements.lower()
    collections = yaml.safe_load((tmp_path / "_build" / "requirements.yml").read_text())["collections"]
    assert "community.mysql" in [c["name"] for c in collections]
