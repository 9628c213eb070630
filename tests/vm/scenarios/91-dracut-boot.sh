# shellcheck shell=bash
# Booted from an initramfs built by dracut (Debian's package, as on the seed's
# CentOS/RHEL hosts) with vfioctl's dracut configuration, e1000e and nvme
# inside it: the same checks as the initramfs-tools boot (scenario 90).
# boot: iommu=on udev=on overlay=initrd-boot initrd=dracut
# timeout: 180

# shellcheck source=tests/vm/guest/initrd/checks.sh
. "$GUEST/initrd/checks.sh"
