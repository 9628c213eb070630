"""Python side of the guest helpers (see lib.sh): check markers on fd 3 and
sysfs readers. Scripts run by a scenario import it from this directory."""

import os

SYS = "/sys/bus/pci/devices"
SCENARIO = os.environ.get("VM_SCENARIO", "python")
_marks = os.fdopen(3, "w", buffering=1, closefd=False) if os.path.exists("/proc/self/fd/3") else None


def _mark(text):
    text = " ".join(text.split())  # one line, whatever the detail holds
    print(text, flush=True)
    if _marks:
        _marks.write(text + "\n")


def check(name, ok, detail=""):
    """Reports one check; the detail is shown only on failure."""
    if ok:
        _mark(f"@@CHECK pass {SCENARIO}/{name}")
    else:
        _mark(f"@@CHECK fail {SCENARIO}/{name} {detail}")
    return ok


def expect(name, actual, wanted):
    return check(name, actual == wanted, f"got {actual!r}, want {wanted!r}")


def attr(bdf, name):
    """A sysfs attribute's text, stripped, or None when absent or unreadable."""
    try:
        with open(os.path.join(SYS, bdf, name)) as f:
            return f.read().strip()
    except OSError:
        return None


def link(bdf, name):
    """The last component of a sysfs link (driver, iommu_group, physfn), or None."""
    try:
        return os.path.basename(os.readlink(os.path.join(SYS, bdf, name)))
    except OSError:
        return None


def devices():
    return sorted(os.listdir(SYS))


def header_type(bdf):
    with open(os.path.join(SYS, bdf, "config"), "rb") as f:
        return f.read(16)[0x0E] & 0x7F


def group_members(bdf):
    path = os.path.join(SYS, bdf, "iommu_group", "devices")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def nova_device_type(bdf):
    """What Nova would derive from libvirt's XML, from sysfs directly."""
    if link(bdf, "physfn"):
        return "type-VF"
    if int(attr(bdf, "sriov_totalvfs") or 0) > 0:
        return "type-PF"
    return "type-PCI"


def publish(name, lines):
    """Prints a benchmark's Markdown lines (the scenario log) and writes them
    to /vmshare/results/NAME, where bench/vm.py collects them."""
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs("/vmshare/results", exist_ok=True)
    with open(f"/vmshare/results/{name}", "w") as f:
        f.write(text)
