# shellcheck shell=bash
# `vfioctl list --json` against the guest's sysfs, read directly: functions,
# IDs, drivers and overrides, IOMMU group membership, bridge by header type,
# PF/VF roles and Nova's device_type. Compared at rest and again with VFs
# enabled and a device moved to vfio-pci by hand.
# boot: iommu=on udev=on
# timeout: 120

list_json() { "$VFIOCTL" list --json 2>>/tmp/vfioctl.stderr; }

# Facts of the topology itself, so both readers cannot be wrong together.
expect multi-device-group "$(group_members "$E1000_A")" "$PCIBRIDGE $E1000_A $E1000_B"
expect e1000e-alone "$(group_members "$E1000E")" "$E1000E"

check list-runs list_json
list_json | pycheck list-check.py at-rest \
	"is_bridge@$PCIBRIDGE=true" "is_bridge@$RP_HOT=true" "is_bridge@0000:00:1f.0=false" \
	"is_bridge@$E1000_A=false" "nova_device_type@$NVME=\"type-PF\"" \
	"nova_device_type@$E1000E=\"type-PCI\"" "driver@$E1000E=\"e1000e\"" \
	"driver_override@$E1000E=null" "iommu_group@$E1000E=$(group_of "$E1000E")"

# Change the picture: two nvme VFs without a driver, e1000e on vfio-pci.
wr "$SYS/$NVME/sriov_drivers_autoprobe" 0
wr "$SYS/$NVME/sriov_numvfs" 2
check vfs-appear wait_for 10 test -e "$SYS/$NVME/virtfn1"
vf0=$(readlink "$SYS/$NVME/virtfn0")
vf0=${vf0##*/}
modprobe vfio-pci
wr "$SYS/$E1000E/driver_override" vfio-pci
wr "$SYS/$E1000E/driver/unbind" "$E1000E"
wr /sys/bus/pci/drivers_probe "$E1000E"
check e1000e-on-vfio-pci wait_for 10 is_driver "$E1000E" vfio-pci
list_json | pycheck list-check.py changed \
	"nova_device_type@$vf0=\"type-VF\"" "driver@$vf0=null" \
	"driver@$E1000E=\"vfio-pci\"" "driver_override@$E1000E=\"vfio-pci\""

# Back to the start.
wr "$SYS/$NVME/sriov_numvfs" 0
wr "$SYS/$NVME/sriov_drivers_autoprobe" 1
wr "$SYS/$E1000E/driver_override" $'\n'
wr "$SYS/$E1000E/driver/unbind" "$E1000E"
wr /sys/bus/pci/drivers_probe "$E1000E"
check e1000e-restored wait_for 10 is_driver "$E1000E" e1000e
list_json | pycheck list-check.py restored
echo "vfioctl stderr:"
cat /tmp/vfioctl.stderr
