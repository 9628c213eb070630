# shellcheck shell=bash
# Boot storm: every function the emulated devices allow (the e1000e, the
# nvme's 2 VFs and the igb's 7, created at boot by a udev rule the way
# operators do it) is declared by address (overlay boot-storm); udev starts,
# each add event runs vfioctl's hook, and all end on vfio-pci with no hook
# left running. Each hook traces its timings (VFIOCTL_TRACE): the report
# prints when each asked for, got and released the lock, and checks that the
# hooks held it in turn, each for its own device only.
# boot: iommu=on udev=on overlay=boot-storm
# timeout: 240

mapfile -t devices </run/vmtest/storm-devices
no_hook_running() { ! pgrep -f "udev-hook" >/dev/null; }
all_bound() {
	local d
	for d in "${devices[@]}"; do
		is_driver "$d" vfio-pci || return 1
	done
}
on_vfio() {
	local d out=()
	for d in "${devices[@]}"; do
		is_driver "$d" vfio-pci || out+=("$d=$(driver_of "$d")")
	done
	echo "${out[*]}"
}

if have_igb; then want=10; else want=3; fi
expect declared-functions "${#devices[@]}" "$want"
check nvme-vfs-created-at-boot test "$(cat "$SYS/$NVME/sriov_numvfs")" = 2
have_igb && check igb-vfs-created-at-boot test "$(cat "$SYS/$IGB/sriov_numvfs")" = 7
check all-declared-on-vfio-pci wait_for 60 all_bound
expect none-left-behind "$(on_vfio)" ""
check no-hook-still-running wait_for 30 no_hook_running
# Each hook changed its own device and nothing else.
log=$(dmesg)
for d in "${devices[@]}"; do
	check "hook-bound-only-$d" grep -q "$d: declared by /etc/vfioctl/bindings.d/boot-storm.toml:[0-9]*; on vfio-pci (1 device(s) changed)" <<<"$log"
done

# One hook on its own after the storm, for its hold time without a queue:
# the first nvme VF and the last VF (an igb VF when there is one), each
# restored by hand and re-added.
alone=("${devices[1]}" "${devices[-1]}")
for d in "${alone[@]}"; do
	"$VFIOCTL" restore "$d" >/dev/null
	expect "alone-restored-$d" "$(driver_of "$d")" none
	udevadm trigger --action=add "$SYS/$d"
	check "alone-back-on-vfio-pci-$d" wait_for 30 is_driver "$d" vfio-pci
	udevadm settle --timeout=30
	check "alone-hook-finished-$d" wait_for 30 no_hook_running
done

cat /run/vfioctl-trace/hook-trace
pycheck storm-report.py /run/vfioctl-trace/hook-trace /run/vmtest/udev-start /run/vmtest/udev-settled /run/vmtest/storm-devices "${alone[@]}"
