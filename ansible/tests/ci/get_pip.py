# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Stands in for the pip bootstrap script ansible-test downloads from
ci-files.testing.ansible.com, a host CI cannot reach: pip comes from the
interpreter's own ensurepip, then the version ansible-test asks for from PyPI.
`run` copies it to ~/.ansible/test/cache/get_pip_VERSION.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)


if __name__ == '__main__':
    main()
