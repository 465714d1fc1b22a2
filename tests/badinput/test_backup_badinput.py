# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup role refuses bad offsite settings before it installs or writes anything: an
unknown backend, an S3 store without credentials, an http:// endpoint, an SFTP target without a
pinned host key. Each case runs the role in check mode on this machine and stops at its first
(read-only) task. (A store refusing the credentials is tested against a real SeaweedFS in
tests/live/test_backup_cli.py: the push fails with the cause and nothing is written.)"""
import json
import os

import pytest

from tests.badinput.support import VENV_BIN, run

S3 = {"backup_offsite_enabled": True, "backup_offsite_backend": "s3", "backup_offsite_password": "x",
      "backup_offsite_s3_endpoint": "https://127.0.0.1:1", "backup_offsite_s3_bucket": "b",
      "backup_offsite_s3_access_key_id": "k", "backup_offsite_s3_secret_access_key": "s"}


def _role(settings):
    return run([os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
                "-m", "ansible.builtin.include_role", "-a", "name=edgefleet.mysql_backup.backup",
                "-e", json.dumps(settings)])


CASES = {
    # refused by the argument spec, the role's first (validation) task
    "unknown backend": (dict(S3, backup_offsite_backend="ftp"), "backup_offsite_backend must be one of: sftp, s3, got: ftp"),
    "S3 without a secret key": (dict(S3, backup_offsite_s3_secret_access_key=""), "backup_offsite_s3_secret_access_key (vault)"),
    "S3 over plain http": (dict(S3, backup_offsite_s3_endpoint="http://127.0.0.1:1"), "http:// only with backup_offsite_s3_allow_http"),
    "SFTP without a pinned key": ({"backup_offsite_enabled": True, "backup_offsite_password": "x",
                                   "backup_offsite_sftp_host": "h", "backup_offsite_sftp_user": "u"},
                                  "backup_offsite_known_hosts (pinned host key)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backup_role_refuses_bad_offsite_settings(case):
    settings, message = CASES[case]
    rc, out = _role(settings)
    assert rc != 0, out
    said = " ".join(out.split())
    assert message in said, out[-2000:]
    assert "Nothing was changed" in said or "Validation of arguments failed" in said
    assert "Install the backup tools" not in out
