"""Shared pytest fixtures: real, throwaway MariaDB servers on loopback."""
import pytest

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
