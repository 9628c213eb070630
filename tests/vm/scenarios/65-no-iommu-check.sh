# shellcheck shell=bash
# Without an IOMMU the node health check is CRITICAL and names it, and a bind
# to vfio-pci is refused as an environment problem (exit 5), nothing written.
# boot: iommu=off udev=off overlay=example
# timeout: 60

OUT=$("$VFIOCTL" check 2>&1)
RC=$?
expect check-critical-without-iommu "$RC" 2
expect iommu-active-critical "$(awk '$2 == "iommu.active" {print $1}' <<<"$OUT")" CRITICAL
check check-names-the-iommu grep -q "the IOMMU is off" <<<"$OUT"
check check-says-how grep -q "intel_iommu=on" <<<"$OUT"
OUT=$("$VFIOCTL" bind "$E1000E" 2>&1)
expect bind-refused-without-iommu "$?" 5
check bind-says-how grep -q "intel_iommu=on" <<<"$OUT"
expect bind-wrote-nothing "$(cat "$SYS/$E1000E/driver_override")" "(null)"
