"""The throwaway server fixture itself: it must give a real binlogging MariaDB."""
import pytest

pytestmark = pytest.mark.mariadb


def test_server_has_binlog_and_gtid_domain(mariadb):
    version, log_bin, domain = mariadb.execute("SELECT @@version, @@log_bin, @@gtid_domain_id")[0]
    assert "MariaDB" in version
    assert log_bin == 1
    assert domain == 101
