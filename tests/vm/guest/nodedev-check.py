"""nodedev-check.py LABEL BDF...

Compares libvirt's node-device XML (`virsh nodedev-dumpxml`, from the libvirtd
running in the guest) with the guest's sysfs for each device: driver, IDs,
IOMMU group members, SR-IOV capabilities, and the device_type Nova derives
from the XML. One check per device, named LABEL/BDF."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import vmcheck as vm

VIRSH = ["virsh", "-q", "-c", "qemu:///system"]


def bdf_of(address):
    """<address domain='0x0000' bus='0x02' slot='0x00' function='0x1'/> as a BDF."""
    a = {k: int(address.get(k), 16) for k in ("domain", "bus", "slot", "function")}
    return f"{a['domain']:04x}:{a['bus']:02x}:{a['slot']:02x}.{a['function']:x}"


def nova_device_type(pci_cap):
    """Nova's rule: walk the pci capability's children in document order."""
    for cap in pci_cap.findall("capability"):
        if cap.get("type") == "virt_functions":
            return "type-PF"
        if cap.get("type") == "phys_function" and cap.findall("address"):
            return "type-VF"
    return "type-PCI"


def check_device(label, bdf):
    """One check per device; its detail lists every fact that differs."""
    name = "pci_" + bdf.replace(":", "_").replace(".", "_")
    out = subprocess.run(VIRSH + ["nodedev-dumpxml", name], capture_output=True, text=True)
    if out.returncode != 0:
        vm.check(f"{label}/{bdf}", False, f"virsh nodedev-dumpxml {name}: {out.stderr.strip()}")
        return
    print(out.stdout)
    root = ET.fromstring(out.stdout)
    pci = root.find("capability[@type='pci']")
    vfs = pci.find("capability[@type='virt_functions']")
    physfn = pci.find("capability[@type='phys_function']/address")
    total = int(vm.attr(bdf, "sriov_totalvfs") or 0)
    numvfs = int(vm.attr(bdf, "sriov_numvfs") or 0)
    facts = {  # fact: (libvirt's XML, sysfs)
        "driver": (root.findtext("driver/name"), vm.link(bdf, "driver")),
        "ids": ((pci.find("vendor").get("id"), pci.find("product").get("id")),
                (vm.attr(bdf, "vendor"), vm.attr(bdf, "device"))),
        "iommuGroup members": (sorted(bdf_of(a) for a in pci.findall("iommuGroup/address")),
                               vm.group_members(bdf)),
        "Nova device_type": (nova_device_type(pci), vm.nova_device_type(bdf)),
        "virt_functions maxCount": (vfs.get("maxCount") if vfs is not None else None,
                                    str(total) if total else None),
        "virt_functions": (sorted(bdf_of(a) for a in vfs.findall("address")) if vfs is not None else [],
                           sorted(vm.link(bdf, f"virtfn{i}") for i in range(numvfs))),
        "phys_function": (bdf_of(physfn) if physfn is not None else None, vm.link(bdf, "physfn")),
    }
    wrong = [f"{fact}: libvirt {x!r}, sysfs {y!r}" for fact, (x, y) in facts.items() if x != y]
    vm.check(f"{label}/{bdf}", not wrong, "; ".join(wrong))


def main():
    label = sys.argv[1]
    for bdf in sys.argv[2:]:
        check_device(label, bdf)


if __name__ == "__main__":
    main()
