"""The replication modules load and run as collection modules through real Ansible."""
import json
import os
import subprocess
import time

import pytest

from tests.support.mariadb import mariadb_server

pytestmark = pytest.mark.mariadb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
PASSWORD = 'An5ible-run-pw'


def ansible(module, args, *extra):
    """`ansible localhost -m edgefleet.mysql_backup.<module> -a <json>`; returns (result, out)."""
    env = dict(os.environ,
               PATH=VENV_BIN + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, 'collections'),
               ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               ANSIBLE_LOAD_CALLBACK_PLUGINS='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.json',
               ANSIBLE_PYTHON_INTERPRETER=os.path.join(VENV_BIN, 'python'),
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_LOCALHOST_WARNING='false')
    command = [os.path.join(VENV_BIN, 'ansible'), 'localhost', '-i', 'localhost,', '-c', 'local',
               '-m', 'edgefleet.mysql_backup.' + module, '-a', json.dumps(args)] + list(extra)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=180, check=False)
    output = proc.stdout + proc.stderr
    assert PASSWORD not in output, 'password leaked into ansible output'
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('ansible printed no JSON (rc=%d):\n%s' % (proc.returncode, output))
    result = data['plays'][0]['tasks'][0]['hosts']['localhost']
    return result, output


def test_modules_run_through_ansible():
    with mariadb_server(server_id=321) as source, mariadb_server(server_id=322) as replica:
        source.execute('SET sql_log_bin=0',
                       "CREATE USER repl@'127.0.0.1' IDENTIFIED BY '%s'" % PASSWORD,
                       "GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1'")
        login = {'login_host': '127.0.0.1', 'login_port': replica.port, 'login_user': 'root',
                 'login_password': ''}
        channels = [{'name': 'dev1', 'source_host': '127.0.0.1', 'source_port': source.port,
                     'source_user': 'repl', 'source_password': PASSWORD}]

        planned, output = ansible('replication_source', dict(login, channels=channels),
                                  '--check', '--diff')
        assert planned['changed'] is True, output
        assert replica.execute('SHOW ALL SLAVES STATUS') == ()

        created, output = ansible('replication_source', dict(login, channels=channels))
        assert created['changed'] is True, output
        assert created['channels'][0]['actions'] == ['created', 'started']

        again, output = ansible('replication_source', dict(login, channels=channels))
        assert again['changed'] is False, output

        deadline = time.monotonic() + 20
        while True:
            info, output = ansible('replication_info', dict(login, lag_threshold=60))
            if info['channels'] and info['channels'][0]['health'] == 'ok':
                break
            assert time.monotonic() < deadline, output
            time.sleep(0.5)
        assert info['changed'] is False
        assert info['server']['flavor'] == 'mariadb'
        assert info['channels'][0]['name'] == 'dev1'
        assert info['summary']['ok'] == 1


def test_ansible_doc_is_the_manual():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, 'collections'))
    for module in ('replication_source', 'replication_info'):
        proc = subprocess.run([os.path.join(VENV_BIN, 'ansible-doc'), '--json',
                               'edgefleet.mysql_backup.' + module], capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)['edgefleet.mysql_backup.' + module]
        options = doc['doc']['options']
        for name in ('login_host', 'login_port', 'login_user', 'login_password',
                     'login_unix_socket', 'config_file', 'ca_cert', 'check_hostname'):
            assert name in options, (module, name)
        assert doc['examples'] and doc['return']
