#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: binding
short_description: Bind PCI devices to VFIO now, or declare them for boots and hot-plug
description:
  - With O(state=bound) or O(state=restored), changes drivers now with C(vfioctl bind) or C(vfioctl restore). vfioctl plans the change
    (companions, IOMMU groups, devices the host uses, processes holding them), refuses unsafe ones, verifies every device and rolls back on failure.
  - With O(state=present) or O(state=absent), adds or removes declarations in C(/etc/vfioctl/bindings.d) with C(vfioctl persist add) or
    C(vfioctl persist remove). udev enforces them when devices are added; O(state=bound) applies them now.
  - Devices already as wanted are not touched, so the task is idempotent and never disturbs a running VM.
version_added: 0.1.0
options:
  selector:
    description:
      - The devices, as vfioctl selectors (C(0000:25:00.0), C(25:00.0), C(10de:20b0), C(10de:20b0:10de:134f), C(10de:), C(class=gpu),
        C(driver=nvidia), C(group=21)).
      - For O(state=present) and O(state=absent), an address or full IDs names the declaration kept under that key; another selector names
        the devices it matches now.
      - Quote addresses in YAML. Unquoted, V(0000:34:00.0) is read as a base-60 number by YAML 1.1 and reaches vfioctl as a malformed selector.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(bound) binds the devices now (C(vfioctl bind)); V(restored) gives them back to the host driver now (C(vfioctl restore)).
      - V(present) declares them (C(vfioctl persist add)); V(absent) removes their declarations (C(vfioctl persist remove)), leaving the
        devices on their current driver.
    type: str
    choices: [bound, restored, present, absent]
    default: bound
  driver:
    description:
      - Driver to bind or declare instead of vfio-pci or its best VFIO variant (for example C(pci-stub)).
      - Only with O(state=bound) or O(state=present).
    type: str
  force:
    description:
      - Release devices the host uses (mounts, swap, network addresses or routes, console), as C(vfioctl --force) does.
        The root filesystem and processes holding a device are never overridden.
      - Only with O(state=bound) or O(state=restored).
    type: bool
    default: false
  with_group:
    description:
      - Also bind every other endpoint of the devices' IOMMU groups (bridges are never touched). Only with O(state=bound).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for each unbind, for each bind to verify, and for vfioctl's lock.
    type: int
    default: 10
extends_documentation_fragment:
  - vfioctl.vfioctl.common
  - vfioctl.vfioctl.common.attributes
notes:
  - In check mode every state runs vfioctl with C(--dry-run) (C(bind), C(restore), C(persist add), C(persist remove)). The plan it prints is
    the diff, and its refusals fail the task just as a real run would.
  - Every selector reaches vfioctl after C(--), and option values as C(--name=value), so no value from an inventory, a fact or a loop
    (V(--force), V(--persist)) can become an option; vfioctl refuses it as a malformed selector or driver name.
  - Declarations are compared with C(vfioctl persist list --json) before and after, and C(changed) says whether they differ.
  - On HGX boards the NVLink fabric mode is not an option here. C(vfioctl bind) and C(vfioctl persist add) read it from the host
    (the NVSwitches' driver, Fabric Manager enabled or running) and refuse an NVSwitch while Fabric Manager is enabled or running,
    even with O(force). The mode Nova's settings are derived for is O(vfioctl.vfioctl.nova#module:fabric).
seealso:
  - module: vfioctl.vfioctl.info
  - module: vfioctl.vfioctl.host_config
'''

EXAMPLES = r'''
- name: Hand every A100 to VFIO now (companions and group checked by vfioctl)
  vfioctl.vfioctl.binding:
    selector: "10de:20b0"
    state: bound

- name: Declare them, so udev binds them at boot and on hot-plug
  vfioctl.vfioctl.binding:
    selector: "10de:20b0"
    state: present

- name: HGX in shared fabric mode, only the GPUs (vfioctl refuses NVSwitches while Fabric Manager is enabled or running)
  vfioctl.vfioctl.binding:
    selector: "10de:20b0"

- name: Give one GPU back to the host driver, without reboot
  vfioctl.vfioctl.binding:
    selector: "0000:48:00.0"
    state: restored

- name: Stop declaring it
  vfioctl.vfioctl.binding:
    selector: "0000:48:00.0"
    state: absent
'''

RETURN = r'''
plan:
  description:
    - The plan vfioctl made (C(bind --json) schema in vfioctl(8)), with V(state=bound) or V(state=restored).
    - Actions without steps are devices already as wanted.
  returned: when state is bound or restored
  type: dict
  sample:
    goal: bind_vfio
    load_modules: []
    actions:
      - address: "0000:25:00.0"
        reason: requested
        before: {driver: nvidia, driver_override: null}
        after: {driver: vfio-pci, driver_override: vfio-pci}
        steps: [{step: set_override, driver: vfio-pci}, {step: unbind, driver: nvidia}, {step: probe}]
    notes: []
    checks: []
result:
  description: What happened to each device (null in check mode or when nothing needed changing).
  returned: when state is bound or restored
  type: dict
  sample:
    devices: [{address: "0000:25:00.0", status: done, driver: vfio-pci}]
    error: null
    rollback_errors: []
devices:
  description: Addresses of the devices changed (or, in check mode, that would change).
  returned: always
  type: list
  elements: str
  sample: ["0000:25:00.0", "0000:25:00.1"]
declarations:
  description: The declarations after the task (C(persist list --json) schema in vfioctl(8)); in check mode, those found before.
  returned: when state is present or absent
  type: list
  elements: dict
  sample:
    - key: 10de:20b0
      vendor: 10de
      device: 20b0
      driver: null
      devices: [{address: "0000:25:00.0", driver: vfio-pci, enforced: true, udev_marked: true}]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v


def runtime(module):
    """state bound or restored: vfioctl bind|restore, --dry-run in check mode."""
    params = module.params
    args = ['bind' if params['state'] == 'bound' else 'restore']
    if params['state'] == 'bound':
        if params['driver']:
            args.append(v.option('driver', params['driver']))
        if params['with_group']:
            args.append('--with-group')
    if params['force']:
        args.append('--force')
    args.append(v.option('timeout', params['timeout']))
    if module.check_mode:
        args.append('--dry-run')
    try:
        dummy, document = v.run(module, args, operands=params['selector'])
    except v.VfioctlError as err:
        v.fail(module, err)
    changing = v.plan_changes(document)
    if module.check_mode:
        changed = bool(changing)
        devices = [a['address'] for a in changing]
    else:
        changed = v.result_changed(document)
        result = document.get('result') or {}
        devices = [d['address'] for d in result.get('devices') or [] if d.get('status') not in ('unchanged', None)]
    out = dict(changed=changed, plan=document.get('plan'), result=document.get('result'), devices=devices)
    if module._diff:
        out['diff'] = v.plan_diff(document)
    module.exit_json(**out)


def matched(module, selector, required):
    """Addresses of the functions a selector matches now (vfioctl list)."""
    try:
        rc, document = v.run(module, ['list'], ok=(0,) if required else (0, 3), operands=[selector])
    except v.VfioctlError as err:
        v.fail(module, err)
    if rc == 3 or not document:
        return []
    return [d['address'] for d in document]


def covered(declarations):
    """Address -> declared driver, for the devices the declarations govern now."""
    found = {}
    for decl in declarations:
        for dev in decl.get('devices') or []:
            found[dev['address']] = decl.get('driver')
    return found


def pending(module, declarations, state, driver):
    """Selectors whose declaration is not yet as wanted, and the predicted declarations after."""
    todo = []
    after = list(declarations)
    governed = covered(declarations)
    for selector in module.params['selector']:
        key = v.declaration_key(selector)
        if state == 'present':
            if key is not None:
                done = any(d.get('key') == key and v.same_driver(d.get('driver'), driver) for d in declarations)
                new_keys = [key]
            else:
                addresses = matched(module, selector, required=True)
                missing = [a for a in addresses if a not in governed or not v.same_driver(governed[a], driver)]
                done = not missing
                new_keys = missing
            if not done:
                todo.append(selector)
                after = [d for d in after if d.get('key') not in new_keys]
                after += [dict(key=k, driver=driver) for k in new_keys]
        else:
            addresses = matched(module, selector, required=False)
            doomed = [d for d in after if (key is not None and d.get('key') == key)
                      or any(dev.get('address') in addresses for dev in d.get('devices') or [])]
            if doomed:
                todo.append(selector)
                after = [d for d in after if d not in doomed]
    return todo, after


def declared(module):
    """state present or absent: persist add|remove, compared through persist list."""
    params = module.params
    driver = params['driver'] if params['state'] == 'present' else None

    def current():
        try:
            return v.run(module, ['persist', 'list'])[1] or []
        except v.VfioctlError as err:
            v.fail(module, err)

    before = current()
    todo, predicted = pending(module, before, params['state'], driver)
    if not todo:
        after = before
    else:
        if params['state'] == 'present':
            args = ['persist', 'add'] + ([v.option('driver', driver)] if driver else [])
        else:
            args = ['persist', 'remove']
        if module.check_mode:
            # vfioctl's own dry run: every check and refusal of the real
            # run, nothing written, so check mode fails where it would.
            args.append('--dry-run')
        try:
            # persist add/remove print no JSON (vfioctl 0.1): the result is read back with persist list.
            v.run(module, args, json_output=False, operands=todo)
        except v.VfioctlError as err:
            v.fail(module, err)
        after = predicted if module.check_mode else current()
    before_text, after_text = v.declarations_text(before), v.declarations_text(after)
    changed = before_text != after_text
    out = dict(changed=changed, declarations=before if module.check_mode else after, devices=changed_devices(before, after))
    if module._diff:
        out['diff'] = dict(before=before_text, after=after_text,
                           before_header='declarations before', after_header='declarations after')
    module.exit_json(**out)


def changed_devices(before, after):
    was, now = covered(before), covered(after)
    addresses = set(was) | set(now)
    return sorted(a for a in addresses if (a in was) != (a in now) or not v.same_driver(was.get(a), now.get(a)))


def main():
    argument_spec = dict(
        selector=dict(type='list', elements='str', required=True),
        state=dict(type='str', choices=['bound', 'restored', 'present', 'absent'], default='bound'),
        driver=dict(type='str'),
        force=dict(type='bool', default=False),
        with_group=dict(type='bool', default=False),
        timeout=dict(type='int', default=10),
    )
    argument_spec.update(v.COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    state = module.params['state']
    if not module.params['selector']:
        module.fail_json(msg='selector: give at least one device selector')
    if module.params['driver'] and state in ('restored', 'absent'):
        module.fail_json(msg='driver applies to state=bound or state=present, not %s' % state)
    if module.params['with_group'] and state != 'bound':
        module.fail_json(msg='with_group applies to state=bound only')
    if state in ('bound', 'restored'):
        runtime(module)
    else:
        declared(module)


if __name__ == '__main__':
    main()
