# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A simulated kernel for a fake host tree, run beside vfioctl as its own process.

vfioctl writes a fake tree's attribute files exactly as it writes sysfs:
driver_override, DRIVER/unbind and drivers_probe. This process answers those
writes the way the kernel does (and the test suite's simulated kernel,
tests/support/simkernel.rs, does in process): an unbind removes the driver
links, a probe binds the override or the native driver and creates
/dev/vfio/GROUP for a VFIO driver. It stops when ROOT/.simkernel-stop appears
or after its lifetime.

    python simkernel.py ROOT [LIFETIME_SECONDS]
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys
import time

VFIO_DRIVERS = ('vfio-pci',)


def first_line(path):
    try:
        with open(path) as handle:
            return handle.read().split('\n')[0].strip()
    except (IOError, OSError):
        return ''


def clear(path):
    with open(path, 'w'):
        pass


class Sim(object):
    def __init__(self, root):
        self.root = root
        self.devices = os.path.join(root, 'sys/bus/pci/devices')
        self.drivers = os.path.join(root, 'sys/bus/pci/drivers')
        self.probe_file = os.path.join(root, 'sys/bus/pci/drivers_probe')
        self.native = {}
        for address in os.listdir(self.devices):
            driver = self.driver_of(address)
            if driver and driver not in VFIO_DRIVERS and driver != 'pci-stub':
                self.native[address] = driver

    def dev(self, address):
        return os.path.join(self.devices, address)

    def driver_of(self, address):
        link = os.path.join(self.dev(address), 'driver')
        if not os.path.islink(link):
            return None
        return os.path.basename(os.readlink(link))

    def group_of(self, address):
        link = os.path.join(self.dev(address), 'iommu_group')
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def override_of(self, address):
        """The override, rewriting the file as the kernel shows it ('(null)' when clear)."""
        path = os.path.join(self.dev(address), 'driver_override')
        value = first_line(path) or '(null)'
        with open(path, 'w') as handle:
            handle.write(value + '\n')
        return None if value == '(null)' else value

    def vfio_node(self, address):
        group = self.group_of(address)
        return os.path.join(self.root, 'dev/vfio', group) if group else None

    def unbind(self, address):
        driver = self.driver_of(address)
        if driver is None:
            return
        self.override_of(address)
        os.unlink(os.path.join(self.dev(address), 'driver'))
        back = os.path.join(self.drivers, driver, address)
        if os.path.lexists(back):
            os.unlink(back)
        node = self.vfio_node(address)
        if driver in VFIO_DRIVERS and node and os.path.exists(node):
            os.unlink(node)

    def probe(self, address):
        if not os.path.isdir(self.dev(address)) or self.driver_of(address):
            return
        wanted = self.override_of(address) or self.native.get(address)
        if not wanted or not os.path.isdir(os.path.join(self.drivers, wanted)):
            return
        device_dir = os.path.realpath(self.dev(address))
        driver_dir = os.path.join(self.drivers, wanted)
        os.symlink(os.path.relpath(driver_dir, device_dir), os.path.join(device_dir, 'driver'))
        os.symlink(os.path.relpath(device_dir, driver_dir), os.path.join(driver_dir, address))
        node = self.vfio_node(address)
        if wanted in VFIO_DRIVERS and node:
            if not os.path.isdir(os.path.dirname(node)):
                os.makedirs(os.path.dirname(node))
            clear(node)

    def tick(self):
        # Probes are read before unbinds: a probe seen now was written after
        # its unbind, which is then visible too and is handled first.
        probe = first_line(self.probe_file)
        unbinds = []
        for driver in os.listdir(self.drivers):
            path = os.path.join(self.drivers, driver, 'unbind')
            address = first_line(path)
            if address:
                unbinds.append((path, address))
        for path, address in unbinds:
            self.unbind(address)
            clear(path)
        if probe:
            self.probe(probe)
            clear(self.probe_file)


def main():
    root = sys.argv[1]
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 300.0
    sim = Sim(root)
    stop = os.path.join(root, '.simkernel-stop')
    deadline = time.time() + lifetime
    while time.time() < deadline and not os.path.exists(stop):
        sim.tick()
        time.sleep(0.005)


if __name__ == '__main__':
    main()
