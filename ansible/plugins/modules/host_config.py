#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: host_config
short_description: Write the boot-time files for declared VFIO bindings and report the kernel arguments
description:
  - Runs C(vfioctl host-config) to write (or remove) the files that make declared bindings hold from early boot
    (modprobe.d softdeps, modules-load.d, the initramfs-tools hook or dracut configuration), and returns the kernel
    command-line arguments the IOMMU still needs, with the distribution's command to add them.
  - Never edits the boot loader and never reboots; it returns RV(reboot_required) for the play to act on.
version_added: 0.1.0
options:
  state:
    description:
      - V(present) writes the files vfioctl would generate now (files already current are left alone).
      - V(absent) deletes the files vfioctl wrote.
    type: str
    choices: [present, absent]
    default: present
  blacklist:
    description:
      - Also blacklist the native drivers of declared devices. This affects every device those drivers drive.
    type: bool
    default: false
  ids:
    description:
      - Also claim the declared IDs ID-wide with C(options vfio-pci ids=).
    type: bool
    default: false
extends_documentation_fragment:
  - vfioctl.vfioctl.common
  - vfioctl.vfioctl.common.attributes
notes:
  - In check mode vfioctl runs C(host-config --write --dry-run) (or C(--remove --dry-run)), with the same refusals and exit statuses as the
    real run and nothing written; the diff shows each file's content before and after.
  - After files changed, regenerate the initramfs (RV(initramfs_command)) before rebooting; the
    P(vfioctl.vfioctl.gpu_passthrough#role) role does this in a handler.
seealso:
  - module: vfioctl.vfioctl.binding
'''

EXAMPLES = r'''
- name: Boot files for the declared GPUs
  vfioctl.vfioctl.host_config:
  register: boot

- name: Say what the node still needs
  ansible.builtin.debug:
    msg: "add {{ boot.kernel_args | join(' ') }} with: {{ boot.kernel_args_how }}"
  when: boot.kernel_args | length > 0

- name: Reboot only where vfioctl says so (in a maintenance window)
  ansible.builtin.reboot:
  when: boot.reboot_required and allow_reboot | default(false)
'''

RETURN = r'''
files:
  description: The files vfioctl owns, with the status after the task (or, in check mode, what it would be) and their content.
  returned: always
  type: list
  elements: dict
  sample:
    - path: /etc/modprobe.d/vfioctl.conf
      status: new
      mode: "0644"
      content: "softdep nvidia pre: vfio-pci\n"
changed_files:
  description: Paths written or removed (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [/etc/modprobe.d/vfioctl.conf]
kernel_args:
  description: Kernel command-line arguments missing from the running kernel (for example C(intel_iommu=on)).
  returned: always
  type: list
  elements: str
  sample: [intel_iommu=on, iommu=pt]
kernel_args_conflicting:
  description: Arguments on the running kernel's command line that work against the declarations.
  returned: always
  type: list
  elements: str
  sample: []
kernel_args_how:
  description: The distribution's command to add the missing arguments (vfioctl never edits the boot loader), or null.
  returned: always
  type: str
  sample: grubby --update-kernel=ALL --args="intel_iommu=on iommu=pt"
initramfs_command:
  description: The command that regenerates the initramfs so it carries the new files, or null.
  returned: always
  type: str
  sample: update-initramfs -u -k all
initramfs_update_required:
  description: Whether boot files changed, so the initramfs must be regenerated before the next boot.
  returned: always
  type: bool
reboot_required:
  description:
    - True when boot files changed in this run or kernel arguments are missing or conflicting. The declarations
      only hold from early boot after a reboot (bindings made now by vfioctl.vfioctl.binding need none).
  returned: always
  type: bool
notes:
  description: vfioctl's notes.
  returned: always
  type: list
  elements: str
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

CHANGING = ('new', 'changed', 'removed')


def read_current(root, path):
    """A file's content under root, or None when absent or unreadable."""
    full = os.path.join(root, path.lstrip('/'))
    if os.path.islink(full) or not os.path.isfile(full):
        return None
    try:
        with open(full, 'r') as handle:
            return handle.read()
    except (IOError, OSError, UnicodeDecodeError):
        return None


def file_diffs(root, files, state):
    """One Ansible diff per file that changes: its content now and after."""
    diffs = []
    for entry in files:
        path = entry.get('path')
        before = read_current(root, path)
        if state == 'absent':
            if before is None:
                continue
            after = ''
        else:
            if entry.get('status') not in ('new', 'changed'):
                continue
            after = entry.get('content') or ''
        diffs.append(dict(before=before or '', after=after, before_header=path, after_header=path))
    return diffs


def summarize(document, files, changed_files):
    cmdline = document.get('kernel_cmdline') or {}
    missing = list(cmdline.get('missing') or [])
    conflicting = list(cmdline.get('conflicting') or [])
    return dict(
        changed=bool(changed_files),
        files=files,
        changed_files=changed_files,
        kernel_args=missing,
        kernel_args_conflicting=conflicting,
        kernel_args_how=cmdline.get('how'),
        initramfs_command=document.get('initramfs_command'),
        initramfs_update_required=bool(changed_files),
        reboot_required=bool(changed_files or missing or conflicting),
        notes=list(document.get('notes') or []),
    )


def main():
    argument_spec = dict(
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        blacklist=dict(type='bool', default=False),
        ids=dict(type='bool', default=False),
    )
    argument_spec.update(v.COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    options = []
    if params['blacklist']:
        options.append('--blacklist')
    if params['ids']:
        options.append('--ids')
    diffs = None
    if module._diff:
        # The files' content before, read before anything is written.
        try:
            dummy, preview = v.run(module, ['host-config'] + options)
        except v.VfioctlError as err:
            v.fail(module, err)
        diffs = file_diffs(params['root'], preview.get('files') or [], params['state'])
    # Always --write/--remove (vfioctl leaves unchanged files alone), so its
    # refusals (a device the host uses, files vfioctl does not own,
    # conflicting declarations) fail the task even when nothing would
    # change; check mode runs vfioctl's own dry run of it, which refuses
    # exactly where the real run would.
    flag = '--write' if params['state'] == 'present' else '--remove'
    dry_run = ['--dry-run'] if module.check_mode else []
    try:
        dummy, document = v.run(module, ['host-config', flag] + options + dry_run)
    except v.VfioctlError as err:
        v.fail(module, err)
    files = document.get('files') or []
    changed_files = [f['path'] for f in files if f.get('status') in CHANGING]
    out = summarize(document, files, changed_files)
    if diffs is not None:
        out['diff'] = diffs
    module.exit_json(**out)


if __name__ == '__main__':
    main()
