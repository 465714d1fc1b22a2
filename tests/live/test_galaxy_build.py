# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as users get it: `ansible-galaxy collection build`, installed into an empty path.

No lab and no database server: the tarball is built from this checkout with galaxy.yml's
build_ignore, installed with `ansible-galaxy collection install` into an empty temporary
collections path, and used from a directory outside the repository with ANSIBLE_COLLECTIONS_PATH
set to that path only (HOME is a fresh directory too, so neither ~/.ansible/collections, where
Molecule leaves a copy of this collection, nor the repository's ansible.cfg or in-place
`collections/` can stand in for the installed copy). Dependencies (community.mysql,
community.general) come from the `ansible` bundle in the venv, as on an execution environment.

What it proves:
- the tarball holds every file of plugins/, roles/, playbooks/, meta/ and docs/ and none of the
  development trees (tests, bench, lab, molecule, scripts, the in-place collections path);
- `ansible-playbook edgefleet.mysql_backup.site --syntax-check` resolves every play, role and
  module of the installed collection (and fails with the collection absent: the negative control);
- `ansible-doc` lists every module and role from the installed copy;
- the installed `allocation` module and `fleet` inventory plugin (with their module_utils)
  allocate and list the shipped example fleet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.support.lab import _plain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
COLLECTION = "edgefleet.mysql_backup"

# Trees that must be in the tarball file by file: what users run.
SHIPPED_TREES = ("plugins", "roles", "playbooks", "meta", "docs")
# Top-level files users need besides those trees.
SHIPPED_FILES = ("README.md", "COPYING", "requirements.yml", "MANIFEST.json", "FILES.json")
# Development-only paths that must never ship.
NEVER_SHIPPED = ("tests", "bench", "lab", "molecule", "scripts", "collections", ".venv", ".cache",
                 ".hypothesis", ".ci", ".git", "inventories/lab", "prometheus/tests", "Makefile",
                 "CONTRIBUTING.md", "pytest.ini", "requirements-dev.txt", "ansible.cfg")
# Every top-level entry the tarball may hold. A new top-level directory fails this test until
# galaxy.yml's build_ignore says whether users need it.
ALLOWED_TOP_LEVEL = set(SHIPPED_TREES) | set(SHIPPED_FILES) | {
    "CHANGELOG.md", "execution-environment.yml", "awx", "prometheus", "inventories"}
# What `ansible-galaxy collection build` leaves out by itself.
BUILD_SKIPS_DIRS = {"__pycache__", ".git", ".tox"}
BUILD_SKIPS_SUFFIXES = (".pyc", ".retry")


def _run(args, env, cwd, check=True):
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError("{0} failed ({1}):\n{2}\n{3}".format(
            " ".join(args), result.returncode, result.stdout[-4000:], result.stderr[-4000:]))
    return result


def _isolated_env(home, collections_path):
    """A user's shell: no ANSIBLE_* or PYTHONPATH from make/pytest, a fresh HOME."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("ANSIBLE_") and key not in ("PYTHONPATH", "MOLECULE_EPHEMERAL_DIRECTORY")}
    env.update({
        "HOME": str(home),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(home / ".ansible-tmp"),
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
        "PYTHONWARNINGS": "ignore",
    })
    return env


def _repository_files(tree):
    """Every file under a tree of the checkout that a build would consider."""
    found = set()
    for base, dirs, files in os.walk(os.path.join(ROOT, tree)):
        dirs[:] = [name for name in dirs if name not in BUILD_SKIPS_DIRS]
        for name in files:
            if name.endswith(BUILD_SKIPS_SUFFIXES):
                continue
            found.add(os.path.relpath(os.path.join(base, name), ROOT))
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball, install it into an empty collections path; return paths and env."""
    work = tmp_path_factory.mktemp("galaxy")
    home, collections_path, outside, dist = (work / "home", work / "collections", work / "outside", work / "dist")
    for path in (home, collections_path, outside, dist):
        path.mkdir()
    env = _isolated_env(home, collections_path)
    _run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist), ROOT],
         env, cwd=str(outside))
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        galaxy = yaml.safe_load(handle)
    tarball = dist / "{namespace}-{name}-{version}.tar.gz".format(**galaxy)
    assert tarball.is_file(), sorted(os.listdir(str(dist)))
    _run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--no-deps",
          "-p", str(collections_path), str(tarball)], env, cwd=str(outside))
    installed_root = collections_path / "ansible_collections" / "edgefleet" / "mysql_backup"
    assert (installed_root / "MANIFEST.json").is_file()
    with tarfile.open(str(tarball)) as archive:
        members = {member.name for member in archive.getmembers() if member.isfile()}
    return {"tarball": tarball, "members": members, "env": env, "outside": outside, "work": work,
            "installed_root": installed_root}


def test_tarball_ships_what_users_run_and_no_development_trees(installed):
    members = installed["members"]
    top_level = {name.split("/", 1)[0] for name in members}
    for name in SHIPPED_FILES:
        assert name in members, name
    missing = set()
    for tree in SHIPPED_TREES:
        expected = _repository_files(tree)
        assert expected, tree
        missing |= expected - members
    assert not missing, "not in the tarball: {0}".format(sorted(missing))
    for path in NEVER_SHIPPED:
        leaked = sorted(name for name in members if name == path or name.startswith(path + "/"))
        assert not leaked, "development files in the tarball: {0}".format(leaked[:10])
    unexpected = top_level - ALLOWED_TOP_LEVEL
    assert not unexpected, "decide in galaxy.yml build_ignore whether users need {0}".format(sorted(unexpected))
    # The manifest carries galaxy.yml's dependencies, which the roles' modules need.
    manifest = json.loads((installed["installed_root"] / "MANIFEST.json").read_text(encoding="utf-8"))
    assert set(manifest["collection_info"]["dependencies"]) == {"community.mysql", "community.general"}


def test_site_syntax_check_from_outside_the_repository(installed):
    outside = installed["outside"]
    inventory = outside / "hosts.ini"
    inventory.write_text("[devices]\ndevice01\n\n[cloud]\ncloud01\n", encoding="utf-8")
    result = _run([os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), COLLECTION + ".site",
                   "--syntax-check"], installed["env"], cwd=str(outside))
    assert str(installed["installed_root"] / "playbooks" / "site.yml") in result.stdout, result.stdout
    assert not os.path.realpath(str(outside)).startswith(ROOT + os.sep)

    # Negative control: the same command with an empty collections path cannot find the playbook,
    # so the pass above came from the installed copy and nothing else.
    empty = installed["work"] / "empty-collections"
    empty.mkdir(exist_ok=True)
    env = dict(installed["env"], ANSIBLE_COLLECTIONS_PATH=str(empty))
    refused = _run([os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), COLLECTION + ".site",
                    "--syntax-check"], env, cwd=str(outside), check=False)
    assert refused.returncode != 0
    assert "could not be found" in refused.stdout + refused.stderr


def test_ansible_doc_lists_every_module_and_role(installed):
    env, outside = installed["env"], str(installed["outside"])
    modules = json.loads(_run([os.path.join(BIN, "ansible-doc"), "-t", "module", "-l", COLLECTION, "-j"],
                              env, cwd=outside).stdout)
    roles = json.loads(_run([os.path.join(BIN, "ansible-doc"), "-t", "role", "-l", COLLECTION, "-j"],
                            env, cwd=outside).stdout)
    expected_modules = {COLLECTION + "." + name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                        if name.endswith(".py") and not name.startswith("_")}
    expected_roles = {COLLECTION + "." + name for name in os.listdir(os.path.join(ROOT, "roles"))
                      if os.path.isdir(os.path.join(ROOT, "roles", name))}
    assert expected_modules and set(modules) == expected_modules
    assert expected_roles and set(roles) == expected_roles


def test_installed_allocation_and_inventory_plugin_work(installed):
    """The shipped example fleet, allocated by the installed module and listed by the installed plugin."""
    env, outside = installed["env"], installed["outside"]
    fleet_dir = outside / "fleet"
    fleet_dir.mkdir()
    example = installed["installed_root"] / "inventories" / "examples" / "basic"
    for name in ("basic.fleet.yml", "registry.yml"):
        (fleet_dir / name).write_text((example / name).read_text(encoding="utf-8"), encoding="utf-8")
    config = fleet_dir / "basic.fleet.yml"
    _run([os.path.join(BIN, "ansible-playbook"), "-i", str(config), COLLECTION + ".allocate",
          "-e", "edgefleet_fleet_config=" + str(config)], env, cwd=str(outside))
    listed = json.loads(_run([os.path.join(BIN, "ansible-inventory"), "-i", str(config), "--list"],
                             env, cwd=str(outside)).stdout)
    hostvars = _plain(listed["_meta"]["hostvars"])
    active = sorted(listed["status_active"]["hosts"])
    assert active, listed.keys()
    ports = [(hostvars[device]["edgefleet_cloud_host"], hostvars[device]["edgefleet_tunnel_mysql_port"])
             for device in active]
    assert all(port for cloud, port in ports), ports
    assert len(set(ports)) == len(ports), ports
