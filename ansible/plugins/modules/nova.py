#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: nova
short_description: Nova [pci] and scheduler settings for a host's passthrough devices, returned or written
description:
  - Runs C(vfioctl nova --json) on the host and returns the nova.conf settings for its devices and an OpenStack release
    (C([pci] alias) with the C(device_type) Nova derives, C(device_spec) or C(passthrough_whitelist), and
    C([filter_scheduler] enabled_filters) with C(PciPassthroughFilter)).
  - With O(dest), writes them. O(format=ini) merges them into an INI file, as kolla-ansible reads from
    C(/etc/kolla/config/nova/nova-compute.conf) or C(/etc/kolla/config/nova/HOST/nova.conf); the file's other sections,
    options and comments are kept. O(format=osa) writes a YAML variables file holding C(nova_nova_conf_overrides), as
    OpenStack-Ansible reads from C(/etc/openstack_deploy/user_*.yml) or C(host_vars/HOST.yml).
  - Deployment configuration usually lives on the deploy host while the devices are on the compute node; run the module on
    the node, then pass its RV(vfioctl) result as O(document) to a second task delegated to the deploy host.
version_added: 0.1.0
options:
  selector:
    description:
      - Devices to configure, as vfioctl selectors. Default (empty) every device declared with vfioctl or bound to a VFIO driver now.
    type: list
    elements: str
    default: []
  release:
    description:
      - OpenStack release, for example V(train), V(zed), V(2024.1). Default the newest release vfioctl knows.
      - Before Zed the compute part writes C(passthrough_whitelist), from Zed C(device_spec), and from 2025.1 C(managed) is C(no) for
        declared devices.
    type: str
  alias:
    description:
      - Alias name, when the devices need exactly one alias. Default derived from pci.ids (for example C(nvidia-a100-sxm4-40gb)).
    type: str
  numa_policy:
    description:
      - numa_policy of the aliases. Default none given, which Nova takes as legacy.
    type: str
    choices: [legacy, preferred, required, socket]
  fabric:
    description:
      - HGX NVLink fabric mode the settings are derived for, passed as C(--fabric) to C(vfioctl nova). V(shared) keeps the NVSwitches on
        the host for Fabric Manager and offers only GPUs; V(full) offers every GPU and NVSwitch of the board to one VM.
      - Unset, vfioctl reads the mode from the host (the NVSwitches' driver, Fabric Manager enabled or running) and fails the task with
        status 2 when the host says neither. Given, it wins over the host, with a note in RV(notes) when they disagree.
    type: str
    choices: [shared, full]
  az_prefilter:
    description:
      - Up to Wallaby, have Placement filter hosts by availability zone (C([scheduler] query_placement_for_availability_zone = True))
        and leave C(AvailabilityZoneFilter) out of C(enabled_filters), as Xena does by default; passed as C(--az-prefilter).
      - Placement needs the host aggregates synced first with C(nova-manage placement sync_aggregates), which vfioctl prints first
        among RV(commands).
      - From Xena on Placement does this already and nothing is added.
    type: bool
    default: false
  placement:
    description:
      - Track and schedule the devices in Placement (2023.1 on), passed as C(--placement) - C([pci] report_in_placement) on compute
        nodes (it cannot be switched off again), C([filter_scheduler] pci_in_placement) on controllers, and a resource class in every
        device spec and alias.
    type: bool
    default: false
  one_time_use:
    description:
      - Mark the devices one-time-use (C(one_time_use) set to C(true) in their device specs; 2025.2 on, with O(placement); type-PCI
        and type-PF devices only), passed as C(--one-time-use). After a VM used such a device, Nova keeps it reserved in Placement
        until it is un-reserved, which RV(one_time_use) tells how to do once C(vfioctl reset) has verified the device.
      - vfioctl refuses it (the task fails with status 2 and the reason) before 2025.2, without O(placement), and for a VF.
    type: bool
    default: false
  hypervisor_hostname:
    description:
      - With O(one_time_use), the hypervisor hostname Nova names the devices' Placement resource providers after, the name libvirt
        reports on the compute node (C(virsh hostname)); passed as C(--hypervisor-hostname). Default the host's own name, which
        libvirt may report as its FQDN.
      - Letters, digits, C(.), C(-) and C(_), beginning with a letter or digit; vfioctl refuses anything else (status 2).
    type: str
  connect:
    description:
      - libvirt URI vfioctl asks for the device_type Nova will derive (read-only). Default C(qemu:///system) when O(root) is C(/).
    type: str
  part:
    description:
      - V(controller) the settings for nova-api and nova-scheduler, V(compute) those for nova-compute, V(all) both in one file.
    type: str
    choices: [all, controller, compute]
    default: all
  dest:
    description:
      - File to write. Without it the module only returns the settings.
    type: path
  format:
    description:
      - V(ini) merges the settings into O(dest) as nova.conf lines (kolla-ansible); managed options are C([pci] alias),
        C(device_spec), C(passthrough_whitelist) and C([filter_scheduler] enabled_filters). An existing C(enabled_filters)
        keeps its list, with C(PciPassthroughFilter) added when missing.
      - V(osa) writes O(dest) as a YAML file holding one variable, O(osa_variable), for OpenStack-Ansible's config_template.
    type: str
    choices: [ini, osa]
    default: ini
  osa_variable:
    description:
      - Name of the variable written with O(format=osa).
    type: str
    default: nova_nova_conf_overrides
  mode:
    description:
      - Permissions of O(dest) when it is created.
    type: raw
    default: '0640'
  document:
    description:
      - The RV(vfioctl) result of an earlier run of this module (on the compute node). When given, vfioctl is not run and
        O(selector), O(release), O(alias), O(numa_policy), O(fabric), O(az_prefilter), O(placement), O(one_time_use),
        O(hypervisor_hostname) and O(connect) are ignored.
    type: dict
  documents:
    description:
      - Like O(document), for several hosts at once (for example the controller part of every hardware model in a fleet).
        Their settings are combined; identical lines (the same alias seen on two hosts) are kept once.
    type: list
    elements: dict
extends_documentation_fragment:
  - vfioctl.vfioctl.common
  - vfioctl.vfioctl.common.attributes
notes:
  - vfioctl takes the device_type from libvirt when it can ask it (what Nova reads) and from sysfs otherwise; RV(notes) says which.
seealso:
  - name: kolla-ansible nova configuration
    description: Service configuration overrides under /etc/kolla/config.
    link: https://docs.openstack.org/kolla-ansible/latest/admin/advanced-configuration.html
'''

EXAMPLES = r'''
- name: The compute node's settings, returned
  vfioctl.vfioctl.nova:
    release: "2024.1"
    part: compute
  register: nova_pci

- name: kolla-ansible, per host, on the deploy host
  vfioctl.vfioctl.nova:
    document: "{{ nova_pci.vfioctl }}"
    part: compute
    dest: "/etc/kolla/config/nova/{{ inventory_hostname }}/nova.conf"
  delegate_to: localhost

- name: One-time-use GPUs (2025.2), each device's Placement provider returned
  vfioctl.vfioctl.nova:
    release: "2025.2"
    placement: true
    one_time_use: true
    part: compute
  register: nova_otu

- name: OpenStack-Ansible, per host
  vfioctl.vfioctl.nova:
    document: "{{ nova_pci.vfioctl }}"
    format: osa
    dest: "/etc/openstack_deploy/host_vars/{{ inventory_hostname }}.yml"
  delegate_to: localhost
'''

RETURN = r'''
vfioctl:
  description:
    - The document C(vfioctl nova --json) printed (schema in vfioctl(8)); pass it as O(document) to write elsewhere.
    - With O(documents), an object whose C(documents) member holds them.
  returned: always
  type: dict
  sample: {release: {series: "2024.1", name: caracal}, spec_option: device_spec, aliases: [], device_specs: []}
fragment:
  description: The nova.conf lines for O(part), as written with O(format=ini).
  returned: always
  type: str
  sample: "[pci]\nalias = {\"name\": \"nvidia-a100\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}\n"
config:
  description: The same settings as a dictionary, section to option to value; a multi-valued option is a list.
  returned: always
  type: dict
  sample: {pci: {alias: "{\"name\": \"nvidia-a100\", \"vendor_id\": \"10de\", \"product_id\": \"20b0\", \"device_type\": \"type-PF\"}"}}
osa_overrides:
  description: RV(config) as the value of nova_nova_conf_overrides.
  returned: always
  type: dict
commands:
  description:
    - The commands vfioctl suggests, in its order (C(nova-manage placement sync_aggregates) first with O(az_prefilter), then the
      flavor and image properties); with O(documents), each once.
  returned: always
  type: list
  elements: str
  sample: ["openstack flavor set FLAVOR --property pci_passthrough:alias=nvidia-a100:1",
           "openstack image set IMAGE --property img_hide_hypervisor_id=true"]
one_time_use:
  description:
    - With O(one_time_use), how the devices return to service between tenants (man vfioctl(8), BETWEEN TENANTS); null otherwise.
    - C(list_command) lists every one-time-use resource provider; each of C(providers) has the device's C(address), its
      provider's C(name) in Placement (C(hypervisor_hostname)_ADDRESS), C(resource_class), C(find_command) (prints the provider's
      uuid) and C(unreserve_command), where C(uuid_placeholder) (C(RP_UUID)) stands for that uuid. With O(documents), the
      providers of every document.
  returned: always
  type: dict
  sample: {hypervisor_hostname: compute-7, list_command: "openstack --os-placement-api-version 1.18 resource provider list
           --required HW_PCI_ONE_TIME_USE", uuid_placeholder: RP_UUID, providers: [{address: "0000:25:00.0",
           name: "compute-7_0000:25:00.0", resource_class: CUSTOM_PCI_10DE_20B0,
           find_command: "openstack resource provider list --name compute-7_0000:25:00.0",
           unreserve_command: "openstack resource provider inventory set --amend --resource CUSTOM_PCI_10DE_20B0:reserved=0 RP_UUID"}]}
notes:
  description: vfioctl's notes (where the device_type came from, deprecated options).
  returned: always
  type: list
  elements: str
dest:
  description: The file written.
  returned: when dest is given
  type: str
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import nova_ini

try:
    import yaml
    HAS_YAML = True
except ImportError:
    HAS_YAML = False


def ask_vfioctl(module):
    params = module.params
    args = ['nova']
    for option in ('release', 'alias', 'numa_policy', 'fabric'):
        if params[option]:
            args.append(v.option(option.replace('_', '-'), params[option]))
    for flag in ('az_prefilter', 'placement', 'one_time_use'):
        if params[flag]:
            args.append('--' + flag.replace('_', '-'))
    if params['hypervisor_hostname'] is not None:
        args.append(v.option('hypervisor-hostname', params['hypervisor_hostname']))
    try:
        return v.run(module, args, operands=params['selector'])[1]
    except v.VfioctlError as err:
        v.fail(module, err)


def fragments(documents, part):
    texts = []
    for document in documents:
        if part in ('all', 'controller'):
            texts.append(document.get('controller_conf') or '')
        if part in ('all', 'compute'):
            texts.append(document.get('compute_conf') or '')
    return nova_ini.combine(*texts)


def once(items):
    """The items in their order, each once (the same command from two hosts' documents)."""
    kept = []
    for item in items:
        if item not in kept:
            kept.append(item)
    return kept


def one_time_use(documents):
    """The one-time-use record of the documents: one document's as it is, the
    providers of several joined (each keeps its own hypervisor_hostname)."""
    records = [d.get('one_time_use') for d in documents if d.get('one_time_use')]
    if not records:
        return None
    if len(records) == 1:
        return records[0]
    providers = []
    for record in records:
        for provider in record.get('providers') or []:
            provider = dict(provider, hypervisor_hostname=record.get('hypervisor_hostname'))
            if provider not in providers:
                providers.append(provider)
    return dict(records[0], hypervisor_hostname=None, providers=providers,
                commands=once(c for r in records for c in r.get('commands') or []))


def osa_text(variable, overrides):
    header = '---\n# Written by vfioctl.vfioctl.nova from vfioctl nova; merged by config_template into nova.conf.\n'
    return header + yaml.safe_dump({variable: overrides}, default_flow_style=False, sort_keys=True, width=4096)


def read(path):
    if not os.path.exists(path):
        return None
    with open(path, 'rb') as handle:
        return handle.read().decode('utf-8')


def write_atomic(module, path, text, mode):
    """Write through a temporary file in the same directory, then rename over dest."""
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        module.fail_json(msg='dest: directory %s does not exist (create it first)' % directory)
    fd, tmp = tempfile.mkstemp(prefix='.vfioctl-nova-', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(to_bytes(text))
        existed = os.path.exists(path)
        # atomic_move keeps an existing file's owner and mode.
        module.atomic_move(tmp, path)
        if not existed:
            module.set_mode_if_different(path, mode, False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main():
    argument_spec = dict(
        selector=dict(type='list', elements='str', default=[]),
        release=dict(type='str'),
        alias=dict(type='str'),
        numa_policy=dict(type='str', choices=['legacy', 'preferred', 'required', 'socket']),
        fabric=dict(type='str', choices=['shared', 'full']),
        az_prefilter=dict(type='bool', default=False),
        placement=dict(type='bool', default=False),
        one_time_use=dict(type='bool', default=False),
        hypervisor_hostname=dict(type='str'),
        connect=dict(type='str'),
        part=dict(type='str', choices=['all', 'controller', 'compute'], default='all'),
        dest=dict(type='path'),
        format=dict(type='str', choices=['ini', 'osa'], default='ini'),
        osa_variable=dict(type='str', default='nova_nova_conf_overrides'),
        mode=dict(type='raw', default='0640'),
        document=dict(type='dict'),
        documents=dict(type='list', elements='dict'),
    )
    argument_spec.update(v.COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('document', 'documents')])
    params = module.params
    if params['documents'] is not None:
        documents = params['documents']
    elif params['document'] is not None:
        documents = [params['document']]
    else:
        documents = [ask_vfioctl(module)]
    document = documents[0] if len(documents) == 1 else dict(documents=documents)
    sections = fragments(documents, params['part'])
    if not sections:
        module.fail_json(msg='the vfioctl document holds no nova.conf settings for part=%s' % params['part'], vfioctl=document)
    overrides = nova_ini.osa_overrides(sections)
    out = dict(
        changed=False,
        vfioctl=document,
        fragment=nova_ini.render(sections),
        config=nova_ini.as_dict(sections),
        osa_overrides=overrides,
        commands=once(c for d in documents for c in d.get('commands') or []),
        one_time_use=one_time_use(documents),
        notes=[n for d in documents for n in d.get('notes') or []],
    )
    dest = params['dest']
    if dest:
        if params['format'] == 'osa' and not HAS_YAML:
            module.fail_json(msg='format=osa needs PyYAML on the host that writes dest')
        try:
            before = read(dest)
        except (IOError, OSError, UnicodeDecodeError) as err:
            module.fail_json(msg='cannot read %s: %s' % (dest, to_native(err)))
        if params['format'] == 'ini':
            after = nova_ini.merge(before, sections)
        else:
            after = osa_text(params['osa_variable'], overrides)
        out['dest'] = dest
        out['changed'] = before != after
        if module._diff:
            out['diff'] = dict(before=before or '', after=after, before_header=dest, after_header=dest)
        if out['changed'] and not module.check_mode:
            write_atomic(module, dest, after, params['mode'])
    module.exit_json(**out)


if __name__ == '__main__':
    main()
