# shellcheck shell=bash
# SR-IOV on a real kernel: VFs come and go through sriov_numvfs, are linked
# to their PF both ways, and sit in IOMMU groups of their own.
# boot: iommu=on udev=on
# timeout: 90

pf=$NVME
numvfs=$SYS/$pf/sriov_numvfs

expect nvme-totalvfs "$(cat "$SYS/$pf/sriov_totalvfs")" 2
expect nvme-starts-without-vfs "$(cat "$numvfs")" 0
# VFs meant for VFIO must not be grabbed by the host driver.
check autoprobe-off wr "$SYS/$pf/sriov_drivers_autoprobe" 0
check numvfs-0-to-2 wr "$numvfs" 2
check virtfn-links-appear wait_for 10 test -e "$SYS/$pf/virtfn1"
vf0=$(readlink "$SYS/$pf/virtfn0")
vf0=${vf0##*/}
vf1=$(readlink "$SYS/$pf/virtfn1")
vf1=${vf1##*/}
physfn=$(readlink "$SYS/$vf0/physfn")
expect physfn-points-to-pf "${physfn##*/}" "$pf"
expect vf0-alone-in-group "$(group_members "$vf0")" "$vf0"
expect vf1-alone-in-group "$(group_members "$vf1")" "$vf1"
check vf-groups-differ-from-pf test "$(group_of "$vf0")" != "$(group_of "$pf")"
expect vf-no-driver-without-autoprobe "$(driver_of "$vf0") $(driver_of "$vf1")" "none none"
expect vf-has-no-totalvfs "$(cat "$SYS/$vf0/sriov_totalvfs" 2>/dev/null)" ""

expect numvfs-2-to-1-is-busy "$(wr "$numvfs" 1)" "Device or resource busy"
expect numvfs-unchanged-after-busy "$(cat "$numvfs")" 2
check numvfs-2-to-0 wr "$numvfs" 0
check vfs-go-away wait_for 10 gone "$SYS/$vf0"
check virtfn-links-go wait_for 10 gone "$SYS/$pf/virtfn0"
wr "$SYS/$pf/sriov_drivers_autoprobe" 1

# igb (QEMU 10 only): with autoprobe on, the VFs bind igbvf by themselves.
if have_igb; then
	expect igb-totalvfs "$(cat "$SYS/$IGB/sriov_totalvfs")" 7
	check igb-numvfs-0-to-2 wr "$SYS/$IGB/sriov_numvfs" 2
	check igb-virtfn-links-appear wait_for 10 test -e "$SYS/$IGB/virtfn1"
	ivf=$(readlink "$SYS/$IGB/virtfn0")
	ivf=${ivf##*/}
	check igb-vf-binds-igbvf wait_for 20 is_driver "$ivf" igbvf
	expect igb-vf-alone-in-group "$(group_members "$ivf")" "$ivf"
	check igb-numvfs-2-to-0 wr "$SYS/$IGB/sriov_numvfs" 0
	check igb-vfs-go-away wait_for 10 gone "$SYS/$ivf"
else
	skip igb "no igb in $VM_QEMU (QEMU 10 from bookworm-backports not in the cache)"
fi
