# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_policy.restic_open_failure and offsite_repository: what restic's answers mean (only a
missing repository may be created), and which repository a host name opens. The messages are
the ones restic 0.14 printed against SeaweedFS 4.48 and a local/SFTP repository."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import backup_policy as P

REPO = 's3:https://127.0.0.1:18443/edgefleet-backups/cloud01'


@pytest.mark.parametrize('text, cause', [
    ('Fatal: unable to open config file: Stat: The access key ID you provided does not exist in our records.\n'
     'Is there a repository at the following location?\n' + REPO, 'credentials'),
    ('Fatal: unable to open config file: Stat: The request signature we calculated does not match the signature '
     'you provided. Check your key and signing method.', 'credentials'),
    ('Fatal: unable to open config file: Stat: Access Denied.', 'credentials'),
    ('Fatal: wrong password or no key found', 'credentials'),
    ('Fatal: unable to open config file: Stat: Get "https://127.0.0.1:18443/edgefleet-backups/?location=": '
     'x509: certificate signed by unknown authority', 'tls'),
    ('Fatal: unable to open config file: Stat: dial tcp 10.231.0.1:8443: connect: connection refused', 'unreachable'),
    ('Fatal: unable to open config file: Stat: The specified bucket does not exist', 'missing'),
    ('Fatal: unable to open config file: Stat: The specified key does not exist.', 'missing'),
    ('Fatal: unable to open config file: stat /tmp/nonexist-repo/config: no such file or directory', 'missing'),
    # restic 0.14 over SFTP (the chrooted lab target) before the repository exists
    ('Fatal: unable to open config file: Lstat: file does not exist\nIs there a repository at the following location?\n'
     'sftp:sftp-backup@127.0.0.1:/edgefleet/cloud01', 'missing'),
    ('Fatal: something else entirely', 'other'),
    ('', 'other'),
])
def test_restic_open_failure_names_the_cause(text, cause):
    assert P.restic_open_failure(text) == cause


def test_a_refused_key_saying_does_not_exist_is_never_a_missing_repository():
    text = 'The access key ID you provided does not exist in our records. The specified bucket does not exist'
    assert P.restic_open_failure(text) == 'credentials'


def test_offsite_repository_of_this_host_and_of_another():
    offsite = {'repository': 's3:https://s3.example:8443/b/edgefleet/cloud01',
               'repository_pattern': 's3:https://s3.example:8443/b/edgefleet/{host}'}
    assert P.offsite_repository(offsite) == offsite['repository']
    assert P.offsite_repository(offsite, 'cloud02') == 's3:https://s3.example:8443/b/edgefleet/cloud02'
    with pytest.raises(P.PolicyError):
        P.offsite_repository(offsite, '../other')
    with pytest.raises(P.PolicyError):
        P.offsite_repository({'repository': 'sftp:u@h:/custom/path'}, 'cloud02')
