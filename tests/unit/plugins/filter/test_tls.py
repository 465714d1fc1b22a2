# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""subject_alt_names: the names the enrollment and changestream roles put in the certificates they
make. For every valid input the line is the one the Jinja expression this filter replaced wrote
(rendered here by ansible-core's own templar), so server.ext and the certificates do not change."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.edgefleet.mysql_backup.plugins.filter import tls as T

# The expression both roles' tls.yml had (changestream_ip_re / enrollment_ip_re), verbatim.
OLD_IP_RE = '^([0-9.]+|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$'
OLD_LINE = ("subjectAltName={{ (names | select('match', ip_re) | map('regex_replace', '^', 'IP:') | list\n"
            "   + names | reject('match', ip_re) | map('regex_replace', '^', 'DNS:') | list) | join(',') }}\n")

VALID = [
    ['10.231.0.2'],                                       # the enrollment default: listen address, inventory name
    ['10.231.0.2', 'cloud01'],
    ['cloud01', 'localhost'],                             # the changestream default: broker host, localhost
    ['127.0.0.1', 'localhost'],
    ['cloud01', '10.0.0.5', 'api.example.net', '192.168.1.9'],   # IPs first, each group in input order
    ['::1'],
    ['fd00::5', 'cloud01', '2001:db8::1', '::ffff:10.0.0.5'],    # IPv6, IPv4-mapped as given (not normalized)
    ['FD00:0:0:0::A'],
    ['*.edge.example.net', 'edge.example.net'],           # wildcard
    ['cloud_01', 'cloud-01.example.net', 'x'],            # inventory names with _ and -
    ['cloud01', 'cloud01'],                               # repeated: kept, as before
]


def _old_line(names):
    templar = Templar(loader=DataLoader(), variables={'names': names, 'ip_re': OLD_IP_RE})
    return templar.template(trust_as_template(OLD_LINE))


def test_filter_is_registered():
    assert T.FilterModule().filters() == {'subject_alt_names': T.subject_alt_names}


@pytest.mark.parametrize('names', VALID, ids=','.join)
def test_same_line_as_the_jinja_expression_it_replaced(names):
    assert 'subjectAltName=%s\n' % ','.join(T.subject_alt_names(names)) == _old_line(names)


def test_ips_first_then_dns_names_each_in_input_order():
    assert T.subject_alt_names(['cloud01', '10.0.0.5', '*.example.net', '::1', 'localhost']) == \
        ['IP:10.0.0.5', 'IP:::1', 'DNS:cloud01', 'DNS:*.example.net', 'DNS:localhost']
    assert T.subject_alt_names(('a.example',)) == ['DNS:a.example']


def test_ipv6_is_written_as_given():
    assert T.subject_alt_names(['2001:DB8:0:0::1', '::ffff:10.0.0.5']) == ['IP:2001:DB8:0:0::1', 'IP:::ffff:10.0.0.5']


def test_empty_list_is_refused():
    with pytest.raises(AnsibleFilterError, match='no names given'):
        T.subject_alt_names([])


@pytest.mark.parametrize('value', ['cloud01', 'cloud01,10.0.0.5', None, {'name': 'cloud01'}, 5])
def test_not_a_list_is_refused(value):
    with pytest.raises(AnsibleFilterError, match='expects a list'):
        T.subject_alt_names(value)


@pytest.mark.parametrize('name', [
    '1.2.3',                 # digits and dots only, but not an address
    '10.0.0.256',
    '1.2.3.4.5',
    '010.0.0.1',             # leading zero (ambiguous octal)
    ':::',
    '2001:db8::1::2',
    'fe80::1%eth0',          # zone: no certificate can carry it
    '[::1]',                 # brackets belong in URLs, not in certificates
    '10.0.0.5:8443',         # a port
    'cloud01:5671',
    '::1/128',
])
def test_malformed_addresses_are_refused(name):
    with pytest.raises(AnsibleFilterError, match='is neither an IP address'):
        T.subject_alt_names(['cloud01', name])


@pytest.mark.parametrize('name', [
    '',
    ' ',
    'cloud 01',
    'cloud01,DNS:evil.example',                  # a comma would add a name to the extension line
    'cloud01\nbasicConstraints=critical,CA:TRUE',  # a newline would add a field to server.ext
    'cloud01\n',
    '*',                                         # a wildcard alone
    'foo.*.example.net',                         # a wildcard not leftmost
    '*.*.example.net',
    'api.example.net.',                          # trailing dot
    '.example.net',
    'a..example',
    'https://cloud01',
    'cloud01/ca',
    'clöud01',
    'x' * 64,                                    # label over 63
    '.'.join(['a' * 63] * 4) + '.ab',            # name over 253
])
def test_garbage_is_refused(name):
    with pytest.raises(AnsibleFilterError, match='is neither an IP address'):
        T.subject_alt_names(['10.0.0.5', name])


@pytest.mark.parametrize('name', [None, 5, ['cloud01'], b'cloud01'])
def test_non_strings_are_refused(name):
    with pytest.raises(AnsibleFilterError, match='is not a string'):
        T.subject_alt_names([name])


def test_longest_names_are_accepted():
    label = 'a' * 63
    name = '.'.join([label] * 3) + '.' + 'b' * 61   # 253 characters
    assert len(name) == T.DNS_MAX
    assert T.subject_alt_names([name]) == ['DNS:' + name]
