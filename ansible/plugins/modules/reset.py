#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: reset
short_description: Reset passthrough devices between tenants and verify each is fit for the next
description:
  - Resets PCI devices with C(vfioctl reset) once a tenant's VM has stopped, and verifies each afterwards (config space IDs, BARs, link,
    AER errors, power state, driver, C(/dev/vfio/N)), so the next tenant gets a clean, known-good device.
  - vfioctl resets only devices on a VFIO driver or on none, and refuses, never forced, a device on a host driver, one without a reset
    method, and a reset when the device or any function it also resets (a bus reset resets every function below the bridge) is held by a
    process, used by a running libvirt domain or used by the host.
  - A device that fails verification fails the task, and C(vfioctl check) reports it CRITICAL until a later reset verifies it.
version_added: 0.2.0
options:
  selector:
    description:
      - The devices, as vfioctl selectors (C(0000:41:00.0), C(41:00.0), C(10de:20b0), C(class=gpu), C(driver=vfio-pci), C(group=21)).
      - Quote addresses in YAML. Unquoted, V(0000:34:00.0) is read as a base-60 number by YAML 1.1 and reaches vfioctl as a malformed selector.
    type: list
    elements: str
    required: true
  method:
    description:
      - Use this reset method only, then put the device's C(reset_method) back as it was. It must be one the device's C(reset_method) lists.
      - Default is the kernel's order of the methods the device lists.
    type: str
    choices: [device_specific, acpi, flr, af_flr, pm, bus, cxl_bus]
  timeout:
    description:
      - Seconds to wait for each reset and for vfioctl's lock. A reset that does not return in time stays pending in the kernel and fails
        the task (C(rc) 8).
    type: int
    default: 10
  connect:
    description:
      - libvirt URI (read-only) asked which domains use the devices. Default C(qemu:///system) when O(root) is C(/); with another
        O(root) and no O(connect), the VMs are not checked.
    type: str
extends_documentation_fragment:
  - vfioctl.vfioctl.common
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Check mode runs C(vfioctl reset --dry-run), which plans and judges exactly as the real run, so it fails where the real run
      would be refused.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
notes:
  - A reset is an action, not a state, so the task reports C(changed) whenever it resets a device (in check mode, whenever it would).
  - Every selector reaches vfioctl after C(--), and option values as C(--name=value), so no value from an inventory, a fact or a loop
    (V(--dry-run)) can become an option; vfioctl refuses it as a malformed selector.
  - With Nova's C(one_time_use) devices, un-reserve a device in Placement only after this task succeeded for it.
seealso:
  - module: vfioctl.vfioctl.binding
  - module: vfioctl.vfioctl.info
'''

EXAMPLES = r'''
- name: Reset the GPU and its audio function the last tenant had, verified before the next VM
  vfioctl.vfioctl.reset:
    selector: ["0000:41:00.0", "0000:41:00.1"]

- name: With a bus reset listed, the function-level method only
  vfioctl.vfioctl.reset:
    selector: "0000:41:00.0"
    method: flr

- name: Would it be refused? (vfioctl reset --dry-run)
  vfioctl.vfioctl.reset:
    selector: "0000:41:00.0"
  check_mode: true
'''

RETURN = r'''
plan:
  description: The plan vfioctl made (C(reset --json) schema in vfioctl(8)).
  returned: always
  type: dict
  sample:
    method: flr
    devices:
      - address: "0000:41:00.0"
        driver: vfio-pci
        iommu_group: 60
        methods: [flr, bus]
        resets_also: []
        steps: [{step: set_reset_method, value: flr}, {step: reset}, {step: put_back_reset_method, value: flr bus},
                {step: verify, vfio_group: 60}]
    checks: []
    notes: []
result:
  description: What was read before and after each reset and the verdicts (null in check mode).
  returned: always
  type: dict
  sample:
    devices:
      - address: "0000:41:00.0"
        status: verified
        findings: [{check: config, ok: true, message: reads 10de:20b0}]
    state_error: null
devices:
  description: Addresses of the devices reset (in check mode, that would be reset).
  returned: always
  type: list
  elements: str
  sample: ["0000:41:00.0"]
verified:
  description: Addresses of the devices reset and verified fit for the next tenant (empty in check mode).
  returned: always
  type: list
  elements: str
  sample: ["0000:41:00.0"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

METHODS = ['device_specific', 'acpi', 'flr', 'af_flr', 'pm', 'bus', 'cxl_bus']


def arguments(module):
    """The options of `vfioctl reset` for the module's parameters."""
    params = module.params
    args = ['reset']
    if params['method']:
        args.append(v.option('method', params['method']))
    args.append(v.option('timeout', params['timeout']))
    if module.check_mode:
        args.append('--dry-run')
    return args


def outcome(document, check_mode):
    """The module's result from a `reset --json` document."""
    plan = (document or {}).get('plan') or {}
    result = (document or {}).get('result')
    planned = [d.get('address') for d in plan.get('devices') or []]
    if check_mode or not result:
        reset = planned if check_mode else []
        verified = []
    else:
        reset = [d.get('address') for d in result.get('devices') or [] if d.get('status') != 'not_reset']
        verified = [d.get('address') for d in result.get('devices') or [] if d.get('status') == 'verified']
    return dict(changed=bool(reset), plan=plan, result=result, devices=reset, verified=verified)


def main():
    argument_spec = dict(
        selector=dict(type='list', elements='str', required=True),
        method=dict(type='str', choices=METHODS),
        timeout=dict(type='int', default=10),
        connect=dict(type='str'),
    )
    argument_spec.update(v.COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not module.params['selector']:
        module.fail_json(msg='selector: give at least one device selector')
    try:
        dummy, document = v.run(module, arguments(module), operands=module.params['selector'])
    except v.VfioctlError as err:
        # A reset that ran and did not verify prints its report: return it with the failure.
        extra = outcome(err.document, module.check_mode) if isinstance(err.document, dict) and 'plan' in err.document else {}
        extra.pop('changed', None)
        v.fail(module, err, changed=bool(extra.get('devices')), **extra)
    module.exit_json(**outcome(document, module.check_mode))


if __name__ == '__main__':
    main()
