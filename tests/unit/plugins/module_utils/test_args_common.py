# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each shared argument-spec piece of args_common matches the doc fragment that documents it:
the same options, types, defaults, choices, required flags and suboptions."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
import yaml

from ansible_collections.edgefleet.mysql_backup.plugins.doc_fragments import (
    mysql_connection as connection_doc, replica_instances as instances_doc, replica_sockets as sockets_doc,
)
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import args_common


def documented(fragment):
    return yaml.safe_load(fragment)['options']


def compare(spec, docs, where=''):
    """Differences between an argument spec and its documentation, as readable strings."""
    problems = []
    for name in sorted(set(spec) | set(docs)):
        path = where + name
        if name not in docs:
            problems.append('%s: in the spec, not documented' % path)
            continue
        if name not in spec:
            problems.append('%s: documented, not in the spec' % path)
            continue
        arg, doc = spec[name], docs[name]
        for key, default in (('type', 'str'), ('elements', None), ('default', None), ('choices', None),
                             ('required', False), ('aliases', None)):
            if arg.get(key, default) != doc.get(key, default):
                problems.append('%s: %s is %r in the spec, %r in the docs'
                                % (path, key, arg.get(key, default), doc.get(key, default)))
        problems += compare(arg.get('options') or {}, doc.get('suboptions') or {}, path + '.')
    return problems


@pytest.mark.parametrize('spec, fragment', [
    (args_common.mysql_connection_argument_spec(), connection_doc.ModuleDocFragment.DOCUMENTATION),
    (args_common.replica_sockets_argument_spec(), sockets_doc.ModuleDocFragment.DOCUMENTATION),
    (args_common.instances_argument_spec(), instances_doc.ModuleDocFragment.DOCUMENTATION),
    (args_common.channels_argument_spec(), instances_doc.ModuleDocFragment.CHANNELS),
], ids=['mysql_connection', 'replica_sockets', 'replica_instances', 'replica_instances.channels'])
def test_spec_and_fragment_agree(spec, fragment):
    assert compare(spec, documented(fragment)) == []


def test_the_two_instances_texts_are_the_same_apart_from_channels():
    plain = documented(instances_doc.ModuleDocFragment.DOCUMENTATION)['instances']
    with_channels = documented(instances_doc.ModuleDocFragment.CHANNELS)['instances']
    suboptions = dict(with_channels['suboptions'])
    assert suboptions.pop('channels')['suboptions'] == documented(instances_doc.ModuleDocFragment.CHANNELS)['channels']['suboptions']
    assert dict(with_channels, suboptions=suboptions) == plain


def test_compare_finds_a_difference():
    spec = {'a': {'type': 'int', 'default': 1}, 'b': {'type': 'str'}}
    docs = {'a': {'type': 'int', 'default': 2}, 'c': {'type': 'str'}}
    assert compare(spec, docs) == ["a: default is 1 in the spec, 2 in the docs",
                                   'b: in the spec, not documented', 'c: documented, not in the spec']


def test_secrets_are_not_logged():
    assert args_common.mysql_connection_argument_spec()['login_password']['no_log'] is True
    assert args_common.replica_sockets_argument_spec()['login_password']['no_log'] is True
    assert args_common.channel_options()['source_password']['no_log'] is True
