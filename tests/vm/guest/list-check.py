"""list-check.py LABEL [KEY@BDF=JSON...] < `vfioctl list --json`

Compares vfioctl's inventory with the guest's sysfs, read directly here:
the set of functions, IDs and class, driver and override, IOMMU group
membership, bridge by header type, and Nova's device_type. One check per
fact kind; a failure names the devices that differ. LABEL prefixes the
check names, so the comparison can run in several device states. Each
KEY@BDF=JSON argument also asserts one field outright (e.g.
is_bridge@0000:04:00.0=true), so that vfioctl and this reader cannot agree
on a wrong answer."""

import json
import sys

import vmcheck as vm


def sysfs_view(bdf):
    override = vm.attr(bdf, "driver_override")
    group = vm.link(bdf, "iommu_group")
    return {
        "vendor_id": vm.attr(bdf, "vendor")[2:],
        "device_id": vm.attr(bdf, "device")[2:],
        "class": vm.attr(bdf, "class")[2:],
        "driver": vm.link(bdf, "driver"),
        "driver_override": None if override in (None, "(null)") else override,
        "iommu_group": int(group) if group is not None else None,
        "is_bridge": vm.header_type(bdf) == 1,
        "nova_device_type": vm.nova_device_type(bdf),
    }


def main():
    label = sys.argv[1]
    try:
        listed = {r["address"]: r for r in json.load(sys.stdin)}
    except (ValueError, KeyError, TypeError) as e:
        vm.check(f"{label}/json-parses", False, f"vfioctl list --json: {e}")
        return
    present = vm.devices()
    vm.expect(f"{label}/same-functions", sorted(listed), present)
    views = {bdf: sysfs_view(bdf) for bdf in present if bdf in listed}
    for key in ("vendor_id", "device_id", "class", "driver", "driver_override",
                "iommu_group", "is_bridge", "nova_device_type"):
        wrong = [f"{bdf}: {listed[bdf].get(key)!r} != {view[key]!r}"
                 for bdf, view in views.items() if listed[bdf].get(key) != view[key]]
        vm.check(f"{label}/{key}", not wrong, "; ".join(wrong[:4]))
    # Membership: the groups vfioctl implies must be exactly sysfs's groups.
    implied = {}
    for bdf, record in listed.items():
        if record.get("iommu_group") is not None:
            implied.setdefault(record["iommu_group"], []).append(bdf)
    implied_sets = sorted(sorted(m) for m in implied.values())
    sysfs_sets = sorted({tuple(vm.group_members(b)) for b in present if vm.group_members(b)})
    vm.expect(f"{label}/group-membership", [tuple(m) for m in implied_sets], sysfs_sets)
    for arg in sys.argv[2:]:
        target, _, wanted = arg.partition("=")
        key, _, bdf = target.partition("@")
        vm.expect(f"{label}/{target}", listed.get(bdf, {}).get(key), json.loads(wanted))


if __name__ == "__main__":
    main()
