# shellcheck shell=bash
# The other boot variants: no IOMMU (no intel_iommu=on, no iommu device), no
# udev (drivers loaded by hand), and a pre-seeded overlay (files and a boot
# hook in place before any driver loads).
# boot: iommu=off udev=off overlay=example
# timeout: 60

no_udevd() {
	local comm
	for comm in /proc/[0-9]*/comm; do
		[[ $(cat "$comm" 2>/dev/null) == systemd-udevd ]] && return 1
	done
	return 0
}

expect no-iommu-groups "$(entries /sys/kernel/iommu_groups)" ""
expect no-iommu-units "$(entries /sys/class/iommu)" ""
expect no-group-link "$(group_of "$E1000E")" ""
check no-udevd-running no_udevd
expect driver-loaded-by-hand "$(driver_of "$E1000E")" e1000e
check seeded-file-present test -s /etc/vmtest/seeded
expect boot-hook-ran-before-drivers "$(cat /run/vmtest/early-state)" "e1000e not loaded"

"$VFIOCTL" list --json | pycheck list-check.py no-iommu \
	"iommu_group@$E1000E=null" "iommu_group@$NVME=null" "driver@$E1000E=\"e1000e\""

# vfio-pci takes no device that has no IOMMU group.
modprobe vfio-pci
wr "$SYS/$E1000E/driver_override" vfio-pci
wr "$SYS/$E1000E/driver/unbind" "$E1000E"
wr /sys/bus/pci/drivers_probe "$E1000E"
expect vfio-pci-refuses-without-iommu "$(driver_of "$E1000E")" none
wr "$SYS/$E1000E/driver_override" $'\n'
wr /sys/bus/pci/drivers_probe "$E1000E"
check e1000e-restored wait_for 10 is_driver "$E1000E" e1000e
