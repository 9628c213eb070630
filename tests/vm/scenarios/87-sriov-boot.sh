# shellcheck shell=bash
# A guest booted with [[sriov]] declarations, the rules and the boot files in
# place (overlay sriov-boot) comes up with the declared VFs on vfio-pci: the
# udev hook creates them when the PF's driver binds, with autoprobe off, so no
# native VF driver ever binds one (udev's log of PCI uevents and the kernel
# log say so), and check says OK. Then, in the running guest: sriov --persist
# declares a new count, a count removed by hand is CRITICAL, and persist apply
# (the boot unit) puts the declared count back. Last (igb): a VF that its own
# [[binding]] names igbvf is re-created with the others and bound once, to
# igbvf, never to vfio-pci first.
# boot: iommu=on udev=on overlay=sriov-boot
# timeout: 300

uevents=/run/vmtest/uevents
run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
# check's line for one check id: "STATUS  ID  MESSAGE".
verdict() { awk -v id="$1" '$2 == id {print $1}' <<<"$OUT"; }
vfs_of() {
	local link
	for link in "$SYS/$1"/virtfn*; do
		[[ -e $link ]] && basename "$(readlink "$link")"
	done
	return 0
}
# Every uevent udev handled for the VF found it on no driver or on DRIVER,
# and the kernel log never shows NATIVE probing it.
never_native() {
	local vf=$1 native=$2
	! grep -E "^[a-z]+ $vf driver=" "$uevents" | grep -qv -E "driver=(none|vfio-pci)$" &&
		! dmesg | grep -E "^\[[ 0-9.]+\] $native " | grep -q "$vf"
}
# A function, not `bash -c`: pgrep -f would find that shell's own command line.
no_hook_running() { ! pgrep -f "udev-hook" >/dev/null; }
# The declared PF's VFs: on vfio-pci, never on NATIVE, autoprobe back on.
declared_vfs_up() {
	local pf=$1 count=$2 native=$3 name=$4 vf
	check "$name-has-$count-vfs-at-boot" wait_for 90 grep -qx "$count" "$SYS/$pf/sriov_numvfs"
	for vf in $(vfs_of "$pf"); do
		check "$name-vf-$vf-on-vfio-pci" wait_for 30 is_driver "$vf" vfio-pci
		check "$name-vf-$vf-never-on-$native" never_native "$vf" "$native"
	done
	expect "$name-vf-count" "$(vfs_of "$pf" | wc -l)" "$count"
	check "$name-autoprobe-restored" wait_for 10 grep -qx 1 "$SYS/$pf/sriov_drivers_autoprobe"
}

declared_vfs_up "$NVME" 2 nvme nvme
if have_igb; then
	declared_vfs_up "$IGB" 7 igbvf igb
else
	skip igb "no igb in $VM_QEMU (QEMU 10 from bookworm-backports not in the cache)"
fi
# The hook created them (logged to the kernel log: the guest has no syslog).
check hook-created-the-nvme-vfs bash -c "dmesg | grep -q 'vfioctl\[[0-9]*\]: $NVME: declared by .* 2 VF(s) on auto'"

run "$VFIOCTL" check
echo "$OUT"
expect check-ok-exit "$RC" 0
expect check-nvme-count-ok "$(verdict "sriov.$NVME.numvfs")" OK
for vf in $(vfs_of "$NVME"); do
	expect "check-vf-$vf-ok" "$(verdict "binding.$vf")" OK
done
run "$VFIOCTL" persist list
echo "$OUT"
check persist-list-shows-the-pf grep -q "^$NVME .* 2/2 .*auto" <<<"$OUT"

# In the running guest: a new count declared with the change.
run "$VFIOCTL" sriov "$NVME" --numvfs 1 --persist
echo "$OUT"
expect sriov-persist-exit "$RC" 0
decl=/etc/vfioctl/bindings.d/sriov-${NVME//:/_}.toml
check declaration-says-1 grep -qx "numvfs = 1" "$decl"
check rules-mark-the-pf grep -q "KERNEL==\"$NVME\".*ENV{VFIOCTL_NUMVFS}=\"1\"" /etc/udev/rules.d/69-vfioctl-bindings.rules
expect one-vf-now "$(cat "$SYS/$NVME/sriov_numvfs")" 1

# Removed without --persist: CRITICAL naming declared and present.
run "$VFIOCTL" sriov "$NVME" --numvfs 0
expect sriov-to-0-exit "$RC" 0
run "$VFIOCTL" check
expect check-critical-exit "$RC" 2
expect check-count-critical "$(verdict "sriov.$NVME.numvfs")" CRITICAL
check check-names-both-counts grep -q "declared 1 VF(s) on $NVME, 0 present" <<<"$OUT"

# persist apply (what vfioctl-apply.service runs at boot) puts it back.
run "$VFIOCTL" persist apply
echo "$OUT"
expect persist-apply-exit "$RC" 0
expect applied-count "$(cat "$SYS/$NVME/sriov_numvfs")" 1
vf=$(vfs_of "$NVME")
check applied-vf-on-vfio-pci is_driver "$vf" vfio-pci
check applied-vf-never-on-nvme never_native "$vf" nvme
run "$VFIOCTL" check
expect check-ok-again-exit "$RC" 0

# A VF named by its own [[binding]] (igbvf): persist apply re-creates the
# declared 7 VFs and binds that one only to igbvf, never to vfio-pci first.
if have_igb; then
	read -r -a igb_vfs <<<"$(vfs_of "$IGB" | tr '\n' ' ')"
	kept=${igb_vfs[2]}
	run "$VFIOCTL" persist add "$kept" --driver igbvf
	echo "$OUT"
	expect kept-vf-declared-exit "$RC" 0
	run "$VFIOCTL" sriov "$IGB" --numvfs 0
	expect igb-to-0-exit "$RC" 0
	mark=$(wc -l <"$uevents")
	run "$VFIOCTL" persist apply
	echo "$OUT"
	expect kept-persist-apply-exit "$RC" 0
	expect kept-igb-count "$(cat "$SYS/$IGB/sriov_numvfs")" 7
	check kept-vf-on-igbvf wait_for 30 is_driver "$kept" igbvf
	check kept-vf-never-on-vfio-pci-again bash -c "! tail -n +$((mark + 1)) '$uevents' | grep -E '^[a-z]+ $kept driver=vfio-pci$'"
	check other-igb-vf-on-vfio-pci is_driver "${igb_vfs[3]}" vfio-pci
	check no-hook-left wait_for 30 no_hook_running
	run "$VFIOCTL" check
	echo "$OUT"
	expect kept-vf-check-ok "$(verdict "binding.$kept")" OK
fi
