# shellcheck shell=bash
# libvirtd, started in the guest, describes the same devices as sysfs: the
# node-device XML that Nova reads (driver, iommuGroup, virt_functions on the
# nvme PF, phys_function on its VFs).
# boot: iommu=on udev=on
# timeout: 150

mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt
check libvirtd-starts libvirtd --daemon --pid-file=/run/vmtest/libvirtd.pid
check libvirtd-answers wait_for 90 virsh -q -c qemu:///system nodedev-list --cap pci

devices=("$E1000E" "$NVME" "$PCIBRIDGE" "$E1000_A" "$VIRTIO_NET")
have_igb && devices+=("$IGB")
pycheck nodedev-check.py at-rest "${devices[@]}"

# With VFs enabled, libvirt learns of them through udev.
wr "$SYS/$NVME/sriov_drivers_autoprobe" 0
check numvfs-0-to-2 wr "$SYS/$NVME/sriov_numvfs" 2
check virtfn-links-appear wait_for 10 test -e "$SYS/$NVME/virtfn1"
vf0=$(readlink "$SYS/$NVME/virtfn0")
vf0=${vf0##*/}
vf1=$(readlink "$SYS/$NVME/virtfn1")
vf1=${vf1##*/}
vf_name=pci_${vf1//[:.]/_}
check libvirt-sees-vfs wait_for 30 virsh -q -c qemu:///system nodedev-dumpxml "$vf_name"
pycheck nodedev-check.py with-vfs "$NVME" "$vf0" "$vf1"

wr "$SYS/$NVME/sriov_numvfs" 0
wr "$SYS/$NVME/sriov_drivers_autoprobe" 1
kill "$(cat /run/vmtest/libvirtd.pid)"
