# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/failover.yml: the report lines and the listening ports of ss output."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.edgefleet.mysql_backup.plugins.filter import failover as F

HOSTVARS = {
    'd1': {'edgefleet_cloud_host': 'c2', 'edgefleet_tunnel_mysql_port': 20010, 'edgefleet_tunnel_ssh_port': 20011,
           'edgefleet_replica_instance': 'd1'},
    'd2': {'edgefleet_cloud_host': 'c2', 'edgefleet_tunnel_mysql_port': 20012, 'edgefleet_tunnel_ssh_port': 20013,
           'edgefleet_replica_instance': 'multi-01'},
    'd3': {'edgefleet_cloud_host': 'c3', 'edgefleet_tunnel_mysql_port': 20000, 'edgefleet_tunnel_ssh_port': 20001,
           'edgefleet_replica_instance': 'd3'},
}


def test_report_lines_say_which_device_replicates_and_which_is_pending():
    lines = F.failover_report_lines(['d3', 'd1', 'd2'], HOSTVARS, 'c1', verified=['d1'], online=['d1', 'd3'])
    assert lines == [
        'd1: c1 -> c2 (tunnel ports 20010/20011, replica d1): replicating, caught up',
        'd2: c1 -> c2 (tunnel ports 20012/20013, replica multi-01): PENDING: offline (the next site.yml or '
        'failover.yml run after it is back finishes it)',
        'd3: c1 -> c3 (tunnel ports 20000/20001, replica d3): PENDING: not verified (run failover.yml again)',
    ]


def test_report_lines_without_devices():
    assert F.failover_report_lines([], {}, 'c1') == ['no device to re-home from c1']


def test_listening_ports():
    out = ("LISTEN 0      128        127.0.0.1:20010      0.0.0.0:*\n"
           "LISTEN 0      128          0.0.0.0:22         0.0.0.0:*\n"
           "LISTEN 0      128             [::]:22            [::]:*\n"
           "LISTEN 0      80         127.0.0.1:30001      0.0.0.0:*\n"
           "garbage\n")
    assert F.listening_ports(out) == [22, 20010, 30001]
    assert F.listening_ports('') == []
