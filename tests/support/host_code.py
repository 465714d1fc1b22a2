"""A host program laid out as a role ships it, for tests and benches: the host_code filters'
files below a lib dir and the launcher, written as file_set would write them.

    launcher = install_host_program(tmp_path / "lib", "monitor_cli", tmp_path / "edgefleet-monitor")
    subprocess.run([launcher, "--config", ..., "collect"])

The launcher runs /usr/bin/python3 -I (the system Python, its own packages), as on a host.
"""
import os

from ansible_collections.edgefleet.mysql_backup.plugins.filter.host_code import (
    host_code_directories, host_code_files, host_program_launcher,
)

SYSTEM_PYTHON = "/usr/bin/python3"


def install_host_code(lib_dir, modules):
    """Write the tree of `modules` below lib_dir; return lib_dir."""
    lib_dir = os.path.abspath(str(lib_dir))
    for entry in host_code_directories(list(modules), lib_dir):
        os.makedirs(entry["path"], mode=0o755, exist_ok=True)
    for entry in host_code_files(list(modules), lib_dir):
        with open(entry["path"], "w", encoding="utf-8") as handle:
            handle.write(entry["content"])
        os.chmod(entry["path"], int(entry["mode"], 8))
    return lib_dir


def install_host_program(lib_dir, entry, launcher_path, modules=()):
    """Ship `entry` (and `modules`) below lib_dir and write its launcher; return the launcher's path."""
    lib_dir = install_host_code(lib_dir, [entry] + list(modules))
    launcher_path = os.path.abspath(str(launcher_path))
    with open(launcher_path, "w", encoding="utf-8") as handle:
        handle.write(host_program_launcher(entry, lib_dir))
    os.chmod(launcher_path, 0o755)
    return launcher_path
