# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleet inventory plugin: contract groups and host vars, reach, constructed options, cache."""

from __future__ import annotations

import os
import shlex
import sys

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
from ansible.utils.collection_loader import AnsibleCollectionConfig


def _ensure_collection_loader():
    """ansible-test installs Ansible's collection finder; under plain pytest install it here."""
    if AnsibleCollectionConfig.collection_finder is not None:
        return
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, '..', '..', '..', '..', 'collections'))
    for name in list(sys.modules):  # imported before the finder: no collection metadata
        if name == 'ansible_collections' or name.startswith('ansible_collections.'):
            del sys.modules[name]
    _AnsibleCollectionFinder(paths=[root])._install()


_ensure_collection_loader()

from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_inventory
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.fleet_config import resolve
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry import open_registry
from ansible_collections.edgefleet.mysql_backup.plugins.module_utils.registry_ops import run_allocation

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQXIftKBsmdNzE2DLNnRf3U4jn6rsC3i33UBQfl1zsC'
REGISTRY = """devices:
  - {id: device01, site: lab, status: active, address: 10.231.0.11, labels: {lab: "true", hw: rpi4}}
  - {id: device02, site: lab, status: active, reach: tunnel, address: 10.231.0.12, ssh_public_key: "%s"}
  - {id: device03, site: berlin, status: active, replica_mode: channel, vars: {app_port: 8080, ansible_user: kiosk}}
  - {id: device04, site: berlin, status: disabled}
  - {id: device05, status: retired}
  - {id: device06, site: berlin}
cloud_hosts:
  - {name: cloud01, address: 10.231.0.201, vars: {ansible_user: root}}
""" % KEY


def fleet(tmp_path, extra='', allocate=True, registry=REGISTRY, devices=None):
    (tmp_path / 'registry.yml').write_text(registry)
    config = tmp_path / 'lab.fleet.yml'
    config.write_text('plugin: edgefleet.mysql_backup.fleet\nregistry: {type: file, path: registry.yml}\n' + extra)
    if allocate:
        spec, policy, _raw = resolve(str(config))
        run_allocation(open_registry(spec), policy, only=devices, now=1800000000.0)
    return str(config)


def inventory(path):
    return InventoryManager(loader=DataLoader(), sources=[path])


def hostvars(inv, name):
    return inv.get_host(name).get_vars()


def resolved(inv, name, var):
    """A host variable as a task sees it: templated with the host's variables (the cloud lists are
    expressions over edgefleet_cloud_table)."""
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager
    loader = DataLoader()
    hv = VariableManager(loader=loader, inventory=inv).get_vars(host=inv.get_host(name), include_hostvars=False)
    return Templar(loader=loader, variables=hv).template(hv[var])


def group_hosts(inv, group):
    return sorted(h.name for h in inv.groups[group].get_hosts()) if group in inv.groups else []


def test_verify_file_names(tmp_path):
    from ansible.plugins.loader import inventory_loader
    plugin = inventory_loader.get('edgefleet.mysql_backup.fleet')
    for name, ok in (('lab.fleet.yml', True), ('fleet.yaml', True), ('hosts.yml', False), ('fleet.yml.bak', False)):
        (tmp_path / name).write_text('plugin: edgefleet.mysql_backup.fleet\n')
        assert plugin.verify_file(str(tmp_path / name)) is ok


def test_contract_groups(tmp_path):
    inv = inventory(fleet(tmp_path))
    assert group_hosts(inv, 'devices') == ['device01', 'device02', 'device03', 'device04', 'device06']
    assert group_hosts(inv, 'cloud') == ['cloud01']
    assert group_hosts(inv, 'cloud_cloud01') == ['device01', 'device02', 'device03', 'device06']
    assert group_hosts(inv, 'site_lab') == ['device01', 'device02']
    assert group_hosts(inv, 'site_berlin') == ['device03', 'device04', 'device06']
    assert group_hosts(inv, 'status_active') == ['device01', 'device02', 'device03', 'device06']
    assert group_hosts(inv, 'status_disabled') == ['device04']
    assert group_hosts(inv, 'status_retired') == []
    assert group_hosts(inv, 'mode_instance') == ['device01', 'device02', 'device06']
    assert group_hosts(inv, 'mode_channel') == ['device03']


def test_device_vars(tmp_path):
    inv = inventory(fleet(tmp_path))
    one = hostvars(inv, 'device01')
    expected = {
        'edgefleet_site': 'lab',
        'edgefleet_labels': {'lab': 'true', 'hw': 'rpi4'}, 'edgefleet_cloud_host': 'cloud01',
        'edgefleet_tunnel_mysql_port': 20000,
        'edgefleet_tunnel_ssh_port': 20001, 'edgefleet_server_id': 1000, 'edgefleet_gtid_domain_id': 1000,
        'edgefleet_replica_mode': 'instance',
        'ansible_host': '10.231.0.11', 'edgefleet_reach': 'address', 'edgefleet_address': '10.231.0.11',
    }
    # nothing else: no device's data written twice (issue 19.3)
    assert dict((k, v) for k, v in one.items() if k.startswith(('edgefleet_', 'ansible_'))) == expected
    # the rest of its allocation is in its cloud host's entry, read back by device_entry_vars
    listed = dict((host.name, host.get_vars()) for host in inv.get_hosts())
    assert fleet_inventory.device_entry_vars('device01', listed) == {
        'edgefleet_replica_port': 30000, 'edgefleet_replica_datadir': '/var/lib/edgefleet/replicas/device01',
        'edgefleet_channel_name': 'device01', 'edgefleet_schema_prefix': '', 'edgefleet_cloud_address': '10.231.0.201',
        'edgefleet_replica_instance': 'device01'}  # on the device only when not its own id
    assert fleet_inventory.device_entry_vars('device03', listed)['edgefleet_schema_prefix'] == 'device03_'
    assert fleet_inventory.device_entry_vars('device04', listed) == {}  # disabled: no allocation
    assert 'edgefleet_ssh_public_key' not in one  # optional registry fields: unset when empty
    six = hostvars(inv, 'device06')
    assert 'edgefleet_address' not in six and six['edgefleet_site'] == 'berlin'
    retired = hostvars(inventory(fleet(tmp_path, 'include_retired: true\n')), 'device05')
    assert 'edgefleet_site' not in retired and retired['edgefleet_status'] == 'retired'
    three = hostvars(inv, 'device03')
    assert three['edgefleet_replica_instance'] == 'multi-01' and 'edgefleet_schema_prefix' not in three
    assert three['app_port'] == 8080 and three['ansible_user'] == 'kiosk'
    four = hostvars(inv, 'device04')  # disabled: released, no allocation vars, still listed
    assert four['edgefleet_status'] == 'disabled' and 'edgefleet_tunnel_mysql_port' not in four
    assert four['edgefleet_reach'] == 'none'


def test_tunnel_reach_pins_host_key_per_device(tmp_path):
    inv = inventory(fleet(tmp_path, 'cloud_ssh_port: 2222\nssh_common_args: -o StrictHostKeyChecking=yes\n'))
    two = hostvars(inv, 'device02')
    assert two['ansible_host'] == '127.0.0.1' and two['ansible_port'] == two['edgefleet_tunnel_ssh_port']
    args = shlex.split(two['ansible_ssh_common_args'])
    assert args == ['-o', 'StrictHostKeyChecking=yes', '-o', 'ProxyJump=root@10.231.0.201:2222',
                    '-o', 'HostKeyAlias=device02']
    assert two['edgefleet_ssh_public_key'] == KEY
    six = hostvars(inv, 'device06')  # no address: auto -> tunnel
    assert six['edgefleet_reach'] == 'tunnel' and 'HostKeyAlias=device06' in six['ansible_ssh_common_args']


def test_reach_option_and_proxycommand(tmp_path):
    inv = inventory(fleet(tmp_path, 'reach: tunnel\njump: proxycommand\njump_ssh_args: -i /k -o UserKnownHostsFile=/kh\n'))
    one = hostvars(inv, 'device01')
    args = shlex.split(one['ansible_ssh_common_args'])
    assert args == ['-o', 'ProxyCommand=ssh -W %h:%p -i /k -o UserKnownHostsFile=/kh root@10.231.0.201',
                    '-o', 'HostKeyAlias=device01']
    inv = inventory(fleet(tmp_path, 'reach: address\n'))
    assert hostvars(inv, 'device06')['edgefleet_reach'] == 'none'
    assert hostvars(inv, 'device02')['ansible_host'] == '127.0.0.1'  # per-device override wins


def test_cloud_host_vars(tmp_path):
    inv = inventory(fleet(tmp_path))
    cloud = hostvars(inv, 'cloud01')
    assert cloud['ansible_host'] == '10.231.0.201' and cloud['ansible_user'] == 'root'
    devices = resolved(inv, 'cloud01', 'edgefleet_cloud_devices')
    assert [d['id'] for d in devices] == ['device01', 'device02', 'device03', 'device06']
    assert set(devices[0]) == {'id', 'site', 'status', 'tunnel_mysql_port', 'tunnel_ssh_port', 'server_id',
                               'gtid_domain_id', 'replica_mode', 'replica_instance', 'replica_port',
                               'replica_datadir', 'channel_name', 'schema_prefix', 'ssh_public_key'}
    assert devices[1]['ssh_public_key'] == KEY
    instances = resolved(inv, 'cloud01', 'edgefleet_cloud_instances')
    assert [(i['name'], i['mode'], i['channels']) for i in instances] == [
        ('device01', 'instance', ['device01']), ('device02', 'instance', ['device02']),
        ('device06', 'instance', ['device06']), ('multi-01', 'channel', ['device03'])]
    assert cloud['edgefleet_cloud_tunnel_ports'] == ['20000-29999']


def test_unallocated_devices_still_appear(tmp_path):
    inv = inventory(fleet(tmp_path, allocate=False))
    one = hostvars(inv, 'device01')
    assert one['ansible_host'] == '10.231.0.11' and 'edgefleet_cloud_host' not in one
    assert group_hosts(inv, 'status_active') == ['device01', 'device02', 'device03', 'device06']
    assert resolved(inv, 'cloud01', 'edgefleet_cloud_devices') == []


def test_include_retired(tmp_path):
    inv = inventory(fleet(tmp_path, 'include_retired: true\n'))
    assert group_hosts(inv, 'status_retired') == ['device05']


def test_constructed_options(tmp_path):
    extra = """keyed_groups:
  - key: edgefleet_labels.hw | default('none')
    prefix: hw
  - key: edgefleet_server_id | string
    prefix: sid
groups:
  has_key: edgefleet_ssh_public_key is defined
compose:
  backup_port: edgefleet_tunnel_mysql_port | default(0) + 1
"""
    inv = inventory(fleet(tmp_path, extra))
    assert group_hosts(inv, 'hw_rpi4') == ['device01']
    assert group_hosts(inv, 'has_key') == ['device02']
    assert group_hosts(inv, 'sid_1000') == ['device01']
    assert hostvars(inv, 'device01')['backup_port'] == 20001


def test_cache(tmp_path):
    extra = 'cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: %s\n' % (tmp_path / 'cache')
    path = fleet(tmp_path, extra)
    inv = inventory(path)
    assert 'device01' in inv.hosts
    assert os.listdir(str(tmp_path / 'cache'))


def test_bad_registry_is_a_parse_error(tmp_path):
    path = fleet(tmp_path, allocate=False, registry='devices:\n  - {id: a}\n  - {id: a}\n')
    from ansible.plugins.loader import inventory_loader
    from ansible.inventory.data import InventoryData
    from ansible.errors import AnsibleParserError
    plugin = inventory_loader.get('edgefleet.mysql_backup.fleet')
    with pytest.raises(AnsibleParserError, match='device a: field "id" is duplicated'):
        plugin.parse(InventoryData(), DataLoader(), path, cache=False)


def test_build_is_pure_and_json_safe(tmp_path):
    import json
    path = fleet(tmp_path)
    spec, policy, _raw = resolve(path)
    reg = open_registry(spec)
    data = fleet_inventory.build(*reg.load_registry(), state=reg.load_state(), options={'policy': policy})
    assert json.loads(json.dumps(data)) == data


# --------------------------------------------------------------------------- issue 19: scale

def _snapshot(inv):
    """Every host's variables and every group's members: what two parses must agree on."""
    hosts = dict((name, dict(host.vars)) for name, host in inv.hosts.items())
    groups = dict((name, sorted(h.name for h in group.get_hosts())) for name, group in inv.groups.items())
    group_vars = dict((name, dict(group.vars)) for name, group in inv.groups.items() if group.vars)
    return hosts, groups, group_vars


def test_only_strings_that_cannot_hold_a_template_are_trusted(tmp_path):
    """Config values (YAML, tagged with their origin and trusted-as-template) must not reach host
    vars with their tags. The plugin marks trusted-as-template exactly the strings without ``{``
    and ``#`` (no Jinja delimiter, no ``#jinja2:`` header): printed as plain strings, not
    __ansible_unsafe objects, and rendering them changes nothing. A registry string that could be
    a template (a variable ``{{ lookup(...) }}``, a ``#jinja2:`` header, a label with braces) and
    the packed cloud table stay untrusted, at every depth."""
    from ansible.template import Templar, is_trusted_as_template
    from ansible.module_utils._internal._datatag import AnsibleTagHelper
    from ansible._internal._datatag._tags import TrustedAsTemplate
    lookup = "{{ lookup('pipe', 'id') }}"
    header = "#jinja2:variable_start_string:'[[', variable_end_string:']]'\n[[ lookup('pipe', 'id') ]]"
    registry = REGISTRY.replace(
        'vars: {app_port: 8080, ansible_user: kiosk}',
        'vars: {app_port: 8080, ansible_user: kiosk, note: "%s", header: "%s", nested: {deep: ["%s", plain]}}'
        % (lookup, header.replace('\n', '\\n'), lookup)).replace(
        'labels: {lab: "true", hw: rpi4}', 'labels: {lab: "true", hw: rpi4, odd: "{%% if 1 %%}x{%% endif %%}"}')
    inv = inventory(fleet(tmp_path, 'reach: auto\ntunnel_host: 127.0.0.1\nssh_common_args: -o A=b\n', registry=registry))
    two, one, three = hostvars(inv, 'device02'), hostvars(inv, 'device01'), hostvars(inv, 'device03')
    assert two['edgefleet_reach'] == 'tunnel' and one['edgefleet_reach'] == 'address'
    assert three['header'] == header
    trusted = ((two, 'ansible_host'), (two, 'edgefleet_reach'), (two, 'edgefleet_replica_mode'),
               (two, 'ansible_ssh_common_args'), (one, 'ansible_host'), (one, 'edgefleet_site'),
               (one, 'edgefleet_cloud_host'), (three, 'ansible_user'), (three, 'edgefleet_replica_mode'))
    for hv, key in trusted:
        assert is_trusted_as_template(hv[key]), key
        assert AnsibleTagHelper.tags(hv[key]) == {TrustedAsTemplate()}, key  # no origin tag of the config file
    for value in (three['note'], three['header'], three['nested']['deep'][0], one['edgefleet_labels']['odd']):
        assert not is_trusted_as_template(value), value
        assert value.__class__ is str, value  # exactly str, no tagged subclass
    assert is_trusted_as_template(three['nested']['deep'][1]) and is_trusted_as_template(one['edgefleet_labels']['hw'])
    assert is_trusted_as_template(inv.groups['cloud_cloud01'].vars['edgefleet_cloud_address'])
    # rendering a trusted value changes nothing; an untrusted one is never run
    templar = Templar(loader=DataLoader(), variables=three)
    assert templar.template(three['note']) == lookup and templar.template(three['header']) == header
    for hv, key in trusted:
        assert templar.template(hv[key]) == str(hv[key]), key
    # the cloud host: the packed table (JSON, braces) untrusted, the list expressions trusted
    cloud = hostvars(inv, 'cloud01')
    assert not is_trusted_as_template(cloud['edgefleet_cloud_table'])
    assert is_trusted_as_template(cloud['edgefleet_cloud_devices']) and is_trusted_as_template(cloud['edgefleet_cloud_name'])


@pytest.mark.parametrize('text, inert', [
    ('site01', True), ('-o ProxyJump=root@192.0.2.1 -o HostKeyAlias=dev1', True), ('', True),
    ('fe80::1%eth0', True), ('{{ x }}', False), ('a {% if 1 %}', False), ('{# c #}', False),
    ('#jinja2:variable_start_string:"[["\n[[ x ]]', False), ('x#y', False), ('{', False)])
def test_cannot_hold_template(text, inert):
    assert fleet_inventory.cannot_hold_template(text) is inert


@pytest.mark.parametrize('tunnel_host', ['"{{ lookup(\'pipe\', \'id\') }}"', '"a b"', '""'])
def test_tunnel_host_must_be_an_address(tmp_path, tunnel_host):
    from ansible.errors import AnsibleParserError
    from ansible.inventory.data import InventoryData
    from ansible.plugins.loader import inventory_loader
    path = fleet(tmp_path, 'tunnel_host: %s\n' % tunnel_host)
    plugin = inventory_loader.get('edgefleet.mysql_backup.fleet')
    with pytest.raises(AnsibleParserError, match='tunnel_host: .* is not a host name or IP address'):
        plugin.parse(InventoryData(), DataLoader(), path, cache=False)


def test_cloud_address_is_a_variable_of_the_cloud_group(tmp_path):
    """A device's effective variables (host vars with its groups' vars merged, as a task and
    `ansible-inventory --host` see them) are its host variables plus edgefleet_cloud_address from
    its group cloud_<cloud host>: the address its cloud host carries, without
    hostvars[<cloud host>] (not in an AWX slice that lacks the cloud host)."""
    from ansible.vars.manager import VariableManager
    registry = REGISTRY.replace('vars: {ansible_user: root}}', 'capacity: 3, vars: {ansible_user: root}}') \
        + '  - {name: cloud02, address: 10.231.0.202, capacity: 3}\n'
    inv = inventory(fleet(tmp_path, registry=registry))
    vm = VariableManager(loader=DataLoader(), inventory=inv)
    clouds = dict((name, hostvars(inv, name)['edgefleet_cloud_address']) for name in ('cloud01', 'cloud02'))
    assert clouds == {'cloud01': '10.231.0.201', 'cloud02': '10.231.0.202'}
    seen = set()
    for name in group_hosts(inv, 'devices'):
        own = hostvars(inv, name)
        effective = vm.get_vars(host=inv.get_host(name), include_hostvars=False)
        expected = dict((k, v) for k, v in own.items() if k.startswith(('edgefleet_', 'ansible_')))
        if 'edgefleet_cloud_host' in own:
            expected['edgefleet_cloud_address'] = clouds[own['edgefleet_cloud_host']]
            seen.add(own['edgefleet_cloud_host'])
        magic = ('ansible_facts', 'ansible_config_file', 'ansible_playbook_python', 'ansible_version')
        assert dict((k, v) for k, v in effective.items() if k.startswith(('edgefleet_', 'ansible_'))
                    and k not in magic) == expected, name
    assert seen == {'cloud01', 'cloud02'}
    assert 'edgefleet_cloud_address' not in inv.groups['devices'].vars
    # the cloud hosts keep their own (host) variable; they are not in any cloud_<name> group
    assert vm.get_vars(host=inv.get_host('cloud02'), include_hostvars=False)['edgefleet_cloud_address'] == '10.231.0.202'


def test_cache_stores_plain_data_and_warm_equals_cold(tmp_path):
    cache_dir = tmp_path / 'cache'
    extra = ('reach: tunnel\ntunnel_host: 127.0.0.1\nlabel_groups: [hw]\ndevice_vars: {ansible_user: admin}\n'
             'cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: %s\n' % cache_dir)
    path = fleet(tmp_path, extra)
    cold_inv = inventory(path)
    cold = _snapshot(cold_inv)
    files = os.listdir(str(cache_dir))
    assert len(files) == 1
    text = (cache_dir / files[0]).read_text()
    assert '__ansible' not in text  # no tags, no unsafe/trust markers: plain JSON
    # warm: the registry and allocation files are not read at all (a MySQL registry neither)
    os.remove(str(tmp_path / 'registry.yml'))
    os.remove(str(tmp_path / 'registry.alloc.yml'))
    warm_inv = inventory(path)
    assert _snapshot(warm_inv) == cold
    from ansible.template import is_trusted_as_template
    # the same strings trusted, warm or cold (the rule, fleet_inventory.cannot_hold_template,
    # runs on load; the cache holds no trust)
    for name in cold[0]:
        cold_vars, warm_vars = hostvars(cold_inv, name), hostvars(warm_inv, name)
        assert dict((k, is_trusted_as_template(v)) for k, v in warm_vars.items() if isinstance(v, str)) == \
            dict((k, is_trusted_as_template(v)) for k, v in cold_vars.items() if isinstance(v, str)), name
    assert is_trusted_as_template(hostvars(warm_inv, 'device02')['edgefleet_reach'])
    assert not is_trusted_as_template(hostvars(warm_inv, 'cloud01')['edgefleet_cloud_table'])
    assert resolved(warm_inv, 'cloud01', 'edgefleet_cloud_devices')[0]['id'] == 'device01'


def test_cache_of_another_format_is_rebuilt(tmp_path):
    cache_dir = tmp_path / 'cache'
    path = fleet(tmp_path, 'cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: %s\n' % cache_dir)
    cold = _snapshot(inventory(path))
    from ansible.plugins.loader import cache_loader, inventory_loader
    name = inventory_loader.get('edgefleet.mysql_backup.fleet').get_cache_key(path)
    prefix = 'ansible_inventory_'
    store = cache_loader.get('ansible.builtin.jsonfile', _uri=str(cache_dir), _prefix=prefix)
    assert store.get(name)['format'] == fleet_inventory.CACHE_FORMAT
    store.set(name, {'hosts': {'ghost': {}}, 'groups': {'devices': ['ghost'], 'cloud': []}})  # the old layout
    assert _snapshot(inventory(path)) == cold
    store = cache_loader.get('ansible.builtin.jsonfile', _uri=str(cache_dir), _prefix=prefix)
    assert store.get(name)['format'] == fleet_inventory.CACHE_FORMAT


def test_label_groups_unallocated_group_and_device_vars(tmp_path):
    registry = REGISTRY.replace('labels: {lab: "true", hw: rpi4}', 'labels: {lab: "true", hw: rpi-4}')
    extra = ('label_groups:\n  - {label: hw, prefix: hw, default: unknown}\n  - lab\n'
             'unallocated_group: unbacked\ndevice_vars: {ansible_user: admin, backup_port: 3306}\n')
    inv = inventory(fleet(tmp_path, extra, registry=registry, devices=['device01', 'device02']))
    assert group_hosts(inv, 'hw_rpi_4') == ['device01']  # '-' sanitized like keyed_groups does
    assert group_hosts(inv, 'hw_unknown') == ['device02', 'device03', 'device04', 'device06']
    assert group_hosts(inv, 'label_lab_true') == ['device01']
    assert group_hosts(inv, 'unbacked') == ['device03', 'device04', 'device06']
    assert inv.groups['devices'].vars == {'ansible_user': 'admin', 'backup_port': 3306}
    from ansible.vars.manager import VariableManager
    vm = VariableManager(loader=DataLoader(), inventory=inv)
    assert vm.get_vars(host=inv.get_host('device01'))['ansible_user'] == 'admin'
    assert vm.get_vars(host=inv.get_host('device03'))['ansible_user'] == 'kiosk'  # registry vars win
    assert 'ansible_user' not in inv.groups['cloud'].vars


def test_native_options_equal_their_expressions(tmp_path):
    """label_groups/unallocated_group build the same device groups as the keyed_groups/groups
    entries they replace (the expressions put cloud hosts in them too; the native options take
    devices only)."""
    native = inventory(fleet(tmp_path, 'label_groups: [{label: hw, prefix: hw, default: unknown}]\n'
                                       'unallocated_group: unbacked\n', devices=['device01']))
    jinja = inventory(fleet(tmp_path, "keyed_groups: [{key: \"edgefleet_labels.hw | default('unknown')\", prefix: hw}]\n"
                                      'groups: {unbacked: edgefleet_tunnel_mysql_port is not defined}\n',
                            allocate=False))
    for group in ('hw_rpi4', 'hw_unknown', 'unbacked'):
        devices = set(group_hosts(jinja, 'devices'))
        assert group_hosts(native, group) == [h for h in group_hosts(jinja, group) if h in devices], group
    assert 'cloud01' in group_hosts(jinja, 'unbacked') and 'cloud01' not in group_hosts(native, 'unbacked')
    assert group_hosts(native, 'unbacked') == ['device02', 'device03', 'device04', 'device06']


@pytest.mark.parametrize('bad, message', [
    ('label_groups: [{prefix: hw}]', 'label_groups\\[0\\]: must be a label key'),
    ('label_groups: [{label: hw, colour: red}]', 'unknown key'),
    ('device_vars: {"not a name": 1}', 'not a valid variable name'),
])
def test_native_options_bad_input(tmp_path, bad, message):
    from ansible.errors import AnsibleParserError
    from ansible.inventory.data import InventoryData
    from ansible.plugins.loader import inventory_loader
    path = fleet(tmp_path, bad + '\n')
    plugin = inventory_loader.get('edgefleet.mysql_backup.fleet')
    with pytest.raises(AnsibleParserError, match=message):
        plugin.parse(InventoryData(), DataLoader(), path, cache=False)


def test_expressions_compiled_once_per_run(tmp_path, monkeypatch):
    from ansible._internal._templating._engine import TemplateEngine
    calls = []
    original = TemplateEngine._compile_expression

    def counting(self, expression, options):
        calls.append(str(expression))
        return original(self, expression, options)

    monkeypatch.setattr(TemplateEngine, '_compile_expression', counting)
    extra = ("keyed_groups: [{key: \"edgefleet_labels.hw | default('none')\", prefix: hw}]\n"
             "groups: {has_key: edgefleet_ssh_public_key is defined}\n"
             "compose: {backup_port: edgefleet_tunnel_mysql_port | default(0) + 1}\n")
    inv = inventory(fleet(tmp_path, extra))
    assert group_hosts(inv, 'hw_rpi4') == ['device01'] and group_hosts(inv, 'has_key') == ['device02']
    assert hostvars(inv, 'device01')['backup_port'] == 20001
    assert len(calls) == len(set(calls)) == 3  # 6 hosts, 3 expressions: each compiled once


def test_cloud_table_round_trip(tmp_path):
    path = fleet(tmp_path)
    spec, policy, _raw = resolve(path)
    reg = open_registry(spec)
    data = fleet_inventory.build(*reg.load_registry(), state=reg.load_state(), options={'policy': policy})
    packed = fleet_inventory.pack(data)
    cloud = packed['hosts']['cloud01']
    assert 'edgefleet_cloud_devices' not in cloud and isinstance(cloud['edgefleet_cloud_table'], str)
    assert fleet_inventory.expand(packed) == data
    import json
    cached = json.loads(json.dumps(fleet_inventory.to_cache(packed)))
    assert fleet_inventory.from_cache(cached) == packed
    assert fleet_inventory.from_cache({'hosts': {}, 'groups': {}}) is None  # another version's cache
    from ansible_collections.edgefleet.mysql_backup.plugins.module_utils import fleet_table
    assert fleet_table.devices('') == [] and fleet_table.instances(None) == []
    with pytest.raises(ValueError, match='unknown format'):
        fleet_table.devices('{"v": 99}')
