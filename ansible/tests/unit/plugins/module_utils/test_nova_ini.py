# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import configparser

from ansible_collections.vfioctl.vfioctl.plugins.module_utils import nova_ini

CONTROLLER = (
    '[pci]\n'
    'alias = {"name": "nvidia-a100", "vendor_id": "10de", "product_id": "20b0", "device_type": "type-PF"}\n'
    '\n'
    '[filter_scheduler]\n'
    '# Nova\'s default filters plus PciPassthroughFilter\n'
    'enabled_filters = ComputeFilter,ImagePropertiesFilter,PciPassthroughFilter\n'
)
COMPUTE = (
    '[pci]\n'
    'device_spec = {"vendor_id": "10de", "product_id": "20b0"}\n'
    'alias = {"name": "nvidia-a100", "vendor_id": "10de", "product_id": "20b0", "device_type": "type-PF"}\n'
)
EXISTING = (
    '[DEFAULT]\n'
    'debug = True\n'
    '\n'
    '[pci]\n'
    '# kept\n'
    'passthrough_whitelist = {"vendor_id": "8086"}\n'
    'alias = {"name": "old"}\n'
    '\n'
    '[filter_scheduler]\n'
    'enabled_filters = AvailabilityZoneFilter,ComputeFilter\n'
    '\n'
    '[libvirt]\n'
    'virt_type = kvm\n'
)


def multi(text):
    """section -> option -> [values], read like oslo.config reads multi-valued options."""
    out = {}
    for section, options in nova_ini.parse_fragment(text):
        for name, value in options:
            out.setdefault(section, {}).setdefault(name, []).append(value)
    return out


def test_combine_keeps_one_copy_of_repeated_alias():
    sections = nova_ini.combine(CONTROLLER, COMPUTE)
    assert [s for s, dummy in sections] == ['pci', 'filter_scheduler']
    assert len(multi(nova_ini.render(sections))['pci']['alias']) == 1


def test_merge_replaces_managed_options_and_keeps_the_rest():
    sections = nova_ini.combine(CONTROLLER, COMPUTE)
    merged = nova_ini.merge(EXISTING, sections)
    values = multi(merged)
    assert values['DEFAULT'] == {'debug': ['True']}
    assert values['libvirt'] == {'virt_type': ['kvm']}
    assert 'passthrough_whitelist' not in values['pci']
    assert values['pci']['device_spec'] == ['{"vendor_id": "10de", "product_id": "20b0"}']
    assert values['pci']['alias'][0].startswith('{"name": "nvidia-a100"')
    assert '# kept' in merged
    # The operator's filter list is kept, with the PCI filter added.
    assert values['filter_scheduler']['enabled_filters'] == ['AvailabilityZoneFilter,ComputeFilter,PciPassthroughFilter']


def test_merge_is_idempotent_and_reads_as_ini():
    sections = nova_ini.combine(CONTROLLER, COMPUTE)
    once = nova_ini.merge(EXISTING, sections)
    assert nova_ini.merge(once, sections) == once
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(once)
    assert parser.get('libvirt', 'virt_type') == 'kvm'


def test_merge_into_nothing_writes_the_fragment():
    sections = nova_ini.combine(CONTROLLER)
    assert nova_ini.merge('', sections) == nova_ini.render(sections)
    assert nova_ini.merge(None, sections) == nova_ini.render(sections)


def test_osa_overrides_turn_repeated_options_into_lists():
    text = '[pci]\ndevice_spec = {"a": 1}\ndevice_spec = {"b": 2}\n'
    overrides = nova_ini.osa_overrides(nova_ini.combine(text))
    assert overrides == {'pci': {'device_spec': ['{"a": 1}', '{"b": 2}']}}
