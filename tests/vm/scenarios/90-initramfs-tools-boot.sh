# shellcheck shell=bash
# Booted from an initramfs built by Debian's mkinitramfs (initramfs-tools) with
# vfioctl's hook and init-top script, e1000e and nvme inside it: declared
# devices are claimed before their native drivers, the undeclared same-model
# device is not, a stale declaration is reported and never applied, and the
# kernel arguments host-config advises are the ones booted with.
# boot: iommu=on udev=on overlay=initrd-boot initrd=initramfs-tools
# timeout: 180

# shellcheck source=tests/vm/guest/initrd/checks.sh
. "$GUEST/initrd/checks.sh"
