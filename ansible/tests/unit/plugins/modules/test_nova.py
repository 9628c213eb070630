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
        self.params = dict(selector=[], release=None, alias=None, numa_policy=None, fabric=None, az_prefilter=False)
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
