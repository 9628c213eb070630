#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: info
short_description: PCI passthrough facts of a host from vfioctl
description:
  - Gathers what vfioctl knows about a host, read-only. Its PCI functions with driver, IOMMU group, SR-IOV role, the
    Nova C(device_type) and the libvirt domain (VM) whose XML names each, with its Nova instance. The IOMMU groups of
    the selected functions and whether each can be handed to a VM; the declared bindings; the node health check
    verdicts; and the boot files and kernel arguments still missing.
version_added: 0.1.0
options:
  selector:
    description:
      - Functions to report, as vfioctl selectors. Default (empty) every function.
    type: list
    elements: str
    default: []
  gather:
    description:
      - What to gather. V(devices) (C(vfioctl list)), V(groups) (C(vfioctl show) once per IOMMU group of the selected endpoints),
        V(declarations) (C(vfioctl persist list)), V(check) (C(vfioctl check)), V(boot) (C(vfioctl host-config) preview).
    type: list
    elements: str
    choices: [devices, groups, declarations, check, boot]
    default: [devices, groups, declarations, check]
  connect:
    description:
      - libvirt URI (read-only) for the VM of each device and the check's view of libvirt. Default C(qemu:///system)
        when O(root) is C(/); with another O(root) and no O(connect), the VMs are unknown.
    type: str
extends_documentation_fragment:
  - vfioctl.vfioctl.common
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads, so check mode gathers the same facts.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: N/A
    details: The module never changes anything, so there is never a diff.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
'''

EXAMPLES = r'''
- name: What the GPUs are, where they sit, and whether the node is healthy
  vfioctl.vfioctl.info:
    selector: class=gpu
  register: gpus

- name: Refuse nodes whose GPU groups cannot go to a VM
  ansible.builtin.assert:
    that: gpus.groups | selectattr('viable', 'equalto', false) | list | length == 0

- name: The Nova device_type of each GPU
  ansible.builtin.debug:
    msg: "{{ gpus.devices | items2dict(key_name='address', value_name='nova_device_type') }}"

- name: Which instance has each GPU (a tenant reports a broken one)
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.domain }} ({{ item.value.state }}), Nova instance {{ item.value.nova.name | default('-') }}"
  loop: "{{ gpus.vms | dict2items }}"
'''

RETURN = r'''
devices:
  description: The selected functions (C(list --json) schema in vfioctl(8)).
  returned: when devices is gathered
  type: list
  elements: dict
  sample:
    - address: "0000:25:00.0"
      vendor_id: 10de
      device_id: 20b0
      driver: nvidia
      iommu_group: 21
      nova_device_type: type-PF
vms:
  description:
    - The libvirt domain whose XML names each selected function, by address, as C(vm) of C(list --json) in vfioctl(8)
      has it, with C(domain), C(uuid), C(state), C(active), C(persistent), C(autostart), C(named_in), C(kind),
      C(managed), C(qemu_pid), and C(nova) with the instance's C(name), C(flavor), C(project), C(user) and
      C(creation_time).
    - Functions no domain names are left out. When libvirt could not be asked the dict is empty and RV(vms_known) is
      false.
  returned: when devices is gathered
  type: dict
  sample:
    "0000:25:00.0": {domain: instance-0000002a, state: running, active: true, named_in: both, kind: hostdev,
                     managed: true, nova: {name: gpu-trainer-1, flavor: g1.a100, project: {name: ml-team}}}
vms_known:
  description: Whether libvirt answered, so that a function missing from RV(vms) is in no VM.
  returned: when devices is gathered
  type: bool
groups:
  description:
    - One entry per IOMMU group of the selected endpoints (C(show --json) C(iommu_group) schema), with C(viable) true when
      no member is on a host driver, and C(blockers) naming those that are.
  returned: when groups is gathered
  type: list
  elements: dict
  sample:
    - number: 21
      viable: false
      members: [{address: "0000:25:00.0", driver: nvidia, state: host_driver}]
      blockers: [{device: "0000:25:00.0", driver: nvidia}]
iommu:
  description: The IOMMU state (C(show --json) C(iommu) schema), from the first group looked up; null when none was.
  returned: when groups is gathered
  type: dict
declarations:
  description: The declared bindings (C(persist list --json) schema).
  returned: when declarations is gathered
  type: list
  elements: dict
check:
  description: The node health check (C(check --json) schema); C(status) is OK, WARNING, CRITICAL or UNKNOWN.
  returned: when check is gathered
  type: dict
  sample: {status: OK, exit_code: 0, checks: [{id: iommu.active, status: OK, message: "...", evidence: [], remedy: null, device: null}]}
boot:
  description: The boot files and kernel command line (C(host-config --json) schema), previewed, nothing written.
  returned: when boot is gathered
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v


def groups_of(module, devices):
    """show --json for one endpoint per IOMMU group: the group and its viability."""
    seen = {}
    iommu = None
    for device in devices:
        number = device.get('iommu_group')
        if number is None or number in seen or device.get('is_bridge'):
            continue
        dummy, shown = v.run(module, ['show'], operands=[device['address']])
        iommu = iommu or shown.get('iommu')
        seen[number] = shown.get('iommu_group')
    return [seen[n] for n in sorted(seen) if seen[n] is not None], iommu


def main():
    argument_spec = dict(
        selector=dict(type='list', elements='str', default=[]),
        gather=dict(type='list', elements='str', choices=['devices', 'groups', 'declarations', 'check', 'boot'],
                    default=['devices', 'groups', 'declarations', 'check']),
        connect=dict(type='str'),
    )
    argument_spec.update(v.COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    gather = module.params['gather']
    out = dict(changed=False)
    try:
        if 'devices' in gather or 'groups' in gather:
            devices = v.run(module, ['list'], operands=module.params['selector'])[1]
            if 'devices' in gather:
                out['devices'] = devices
                out['vms'] = dict((d['address'], d['vm']) for d in devices if d.get('vm'))
                out['vms_known'] = all(d.get('vms_known', False) for d in devices)
            if 'groups' in gather:
                out['groups'], out['iommu'] = groups_of(module, devices)
        if 'declarations' in gather:
            out['declarations'] = v.run(module, ['persist', 'list'])[1]
        if 'check' in gather:
            # check exits 0-3 with its verdict (monitoring-plugins convention).
            out['check'] = v.run(module, ['check'], ok=(0, 1, 2, 3))[1]
        if 'boot' in gather:
            out['boot'] = v.run(module, ['host-config'])[1]
    except v.VfioctlError as err:
        v.fail(module, err)
    module.exit_json(**out)


if __name__ == '__main__':
    main()
