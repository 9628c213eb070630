# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options every vfioctl module takes.
    DOCUMENTATION = r'''
author:
  - vfioctl maintainers (@vfioctl)
options:
  root:
    description:
      - Resolve every host path (C(/sys), C(/proc), C(/dev), C(/etc), C(/run), C(/lib/modules)) under this directory, as C(vfioctl --root) does.
      - Used by tests, which give hosts as directory trees, and for inspecting a copied-off snapshot of a host.
    type: path
    default: /
  binary:
    description:
      - The vfioctl program. A bare name is looked up in C(PATH), C(/usr/local/sbin), C(/usr/sbin) and C(/sbin).
    type: path
    default: vfioctl
requirements:
  - vfioctl on the managed host (the C(vfioctl) package, or C(make install) from its source).
notes:
  - The module runs vfioctl with C(--json) and reads only its JSON documents, never its human-readable text.
  - When vfioctl fails, the module fails with vfioctl's own one-line message in C(msg), its exit status in C(rc) and the status's
    meaning in C(reason).
'''

    # Attributes of the modules that change the host.
    ATTRIBUTES = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
'''
