# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.vfioctl.vfioctl.plugins.modules import nova
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

# The parts of a `vfioctl nova --json` document the module reads.
DOCUMENT = {
    'controller_conf': '[filter_scheduler]\nenabled_filters = ComputeFilter,PciPassthroughFilter\n\n'
                       '[scheduler]\nquery_placement_for_availability_zone = True\n',
    'compute_conf': '',
    'commands': ['nova-manage placement sync_aggregates',
                 'openstack flavor set FLAVOR --property pci_passthrough:alias=a:1'],
    'notes': [],
}


class FakeModule(object):
    def __init__(self, **params):
        self.params = dict(selector=[], release=None, alias=None, numa_policy=None, fabric=None, az_prefilter=False,
                           placement=False, one_time_use=False, hypervisor_hostname=None)
        self.params.update(params)

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def run(module, args, ok=(0,), json_output=True, operands=None):
        seen.append((args, operands))
        return 0, DOCUMENT
    monkeypatch.setattr(v, 'run', run)
    return seen


def test_options_reach_vfioctl_nova_joined_selectors_after_the_separator(calls):
    module = FakeModule(selector=['10de:20b0'], release='wallaby', numa_policy='socket', fabric='shared', az_prefilter=True)
    assert nova.ask_vfioctl(module) == DOCUMENT
    assert calls == [(['nova', '--release=wallaby', '--numa-policy=socket', '--fabric=shared', '--az-prefilter'], ['10de:20b0'])]


def test_without_az_prefilter_no_flag(calls):
    nova.ask_vfioctl(FakeModule(release='train'))
    assert calls == [(['nova', '--release=train'], [])]


def test_commands_keep_vfioctl_order_once():
    assert nova.once(['nova-manage placement sync_aggregates', 'openstack flavor', 'nova-manage placement sync_aggregates',
                      'openstack image']) == ['nova-manage placement sync_aggregates', 'openstack flavor', 'openstack image']


def test_a_document_is_used_as_is_and_vfioctl_not_run(calls, capsys):
    testing = pytest.importorskip('ansible.module_utils.testing')
    with testing.patch_module_args({'document': DOCUMENT, 'part': 'controller', 'az_prefilter': True, 'fabric': 'full'}):
        with pytest.raises(SystemExit):
            nova.main()
    out = json.loads(capsys.readouterr().out)
    assert calls == []
    assert not out.get('failed')
    assert out['config']['scheduler'] == {'query_placement_for_availability_zone': 'True'}
    assert out['commands'][0] == 'nova-manage placement sync_aggregates'


def test_one_time_use_reaches_vfioctl_with_placement_and_the_hostname_joined(calls):
    module = FakeModule(release='2025.2', placement=True, one_time_use=True, hypervisor_hostname='--json')
    nova.ask_vfioctl(module)
    # The hostname is the value of its option, never an option of its own (vfioctl refuses '--json' as a name).
    assert calls == [(['nova', '--release=2025.2', '--placement', '--one-time-use', '--hypervisor-hostname=--json'], [])]


def test_one_time_use_is_passed_only_when_asked(calls):
    nova.ask_vfioctl(FakeModule(release='2025.2', placement=True))
    assert calls == [(['nova', '--release=2025.2', '--placement'], [])]


OTU = {
    'hypervisor_hostname': 'compute-7',
    'hypervisor_hostname_source': 'host',
    'list_command': 'openstack --os-placement-api-version 1.18 resource provider list --required HW_PCI_ONE_TIME_USE',
    'uuid_placeholder': 'RP_UUID',
    'providers': [{'address': '0000:25:00.0', 'name': 'compute-7_0000:25:00.0', 'resource_class': 'CUSTOM_PCI_10DE_20B0',
                   'find_command': 'openstack resource provider list --name compute-7_0000:25:00.0',
                   'unreserve_command': 'openstack resource provider inventory set --amend '
                                        '--resource CUSTOM_PCI_10DE_20B0:reserved=0 RP_UUID'}],
    'commands': ['# 0000:25:00.0', 'openstack resource provider list --name compute-7_0000:25:00.0'],
}


def test_one_time_use_of_one_document_is_returned_as_is():
    assert nova.one_time_use([dict(DOCUMENT, one_time_use=OTU)]) == OTU
    assert nova.one_time_use([DOCUMENT, dict(DOCUMENT, one_time_use=None)]) is None


def test_one_time_use_of_several_documents_joins_their_providers():
    other = dict(OTU, hypervisor_hostname='compute-8',
                 providers=[dict(OTU['providers'][0], name='compute-8_0000:25:00.0')])
    joined = nova.one_time_use([dict(DOCUMENT, one_time_use=OTU), dict(DOCUMENT, one_time_use=other),
                                dict(DOCUMENT, one_time_use=OTU)])
    assert [(p['hypervisor_hostname'], p['name']) for p in joined['providers']] == [
        ('compute-7', 'compute-7_0000:25:00.0'), ('compute-8', 'compute-8_0000:25:00.0')]
    assert joined['list_command'] == OTU['list_command']
    assert joined['hypervisor_hostname'] is None
