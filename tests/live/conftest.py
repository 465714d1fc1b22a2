"""Shared pytest fixtures: real, throwaway MariaDB servers on loopback."""
import itertools

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import normalize_registry_spec

from tests.support.mariadb import mariadb_server


@pytest.fixture(scope="session")
def mariadb():
    """One private MariaDB server for the whole session (tests use their own schemas)."""
    with mariadb_server(server_id=101) as server:
        yield server


@pytest.fixture
def mariadb_pair():
    """A fresh source and replica pair for replication tests; torn down after each test."""
    with mariadb_server(server_id=201) as source, mariadb_server(server_id=202) as replica:
        yield source, replica


_registry_schemas = itertools.count()


@pytest.fixture
def registry_spec(mariadb):
    """A MySQL registry spec on a fresh, empty schema of the session server."""
    name = 'efreg_%d' % next(_registry_schemas)
    mariadb.execute('DROP DATABASE IF EXISTS %s' % name, 'CREATE DATABASE %s' % name)
    return normalize_registry_spec({'type': 'mysql', 'host': mariadb.host, 'port': mariadb.port, 'user': 'root',
                                    'password': '', 'database': name})
