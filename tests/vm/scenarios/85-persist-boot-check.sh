# shellcheck shell=bash
# A guest booted with declarations, rules and boot files already in place
# (overlay persist-boot) comes up with the declared device on vfio-pci; then
# the node health check: OK, CRITICAL naming a device restored by hand, OK
# again after persist apply, and libvirt's view once libvirtd runs.
# boot: iommu=on udev=on overlay=persist-boot
# timeout: 240

run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
# check's line for one check id: "STATUS  ID  MESSAGE".
verdict() { awk -v id="$1" '$2 == id {print $1}' <<<"$OUT"; }

check declared-device-on-vfio-at-boot wait_for 30 is_driver "$E1000E" vfio-pci
expect override-set-at-boot "$(cat "$SYS/$E1000E/driver_override")" vfio-pci
expect undeclared-e1000-untouched "$(driver_of "$E1000_A")" e1000
check boot-files-written test -s /etc/modprobe.d/vfioctl.conf
check softdep-names-e1000e grep -q "softdep e1000e pre: vfio-pci" /etc/modprobe.d/vfioctl.conf

run "$VFIOCTL" check
echo "$OUT"
expect check-ok-exit "$RC" 0
expect check-binding-ok "$(verdict "binding.$E1000E")" OK
expect check-iommu-ok "$(verdict iommu.active)" OK
expect check-interrupt-remapping-ok "$(verdict iommu.interrupt_remapping)" OK
expect check-udev-rules-ok "$(verdict udev.rules)" OK
run "$VFIOCTL" check --json
check check-json-parses python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["exit_code"] == 0' <<<"$OUT"

# Restored by hand: CRITICAL, naming the device and what grabbed it.
"$VFIOCTL" restore "$E1000E" >/dev/null
run "$VFIOCTL" check
expect check-critical-exit "$RC" 2
expect check-binding-critical "$(verdict "binding.$E1000E")" CRITICAL
check check-names-the-native-driver grep -q "$E1000E: e1000e grabbed it" <<<"$OUT"
run "$VFIOCTL" check --prometheus -
check prometheus-says-critical grep -qE "^vfioctl_device_status\\{check=\"binding.$E1000E\",address=\"$E1000E\",segment=\"[0-9a-f]{4}\",bus=\"[0-9a-f]{2}\",device=\"[0-9a-f]{2}\",function=\"[0-7]\"\\} 2$" <<<"$OUT"

"$VFIOCTL" persist apply >/dev/null
run "$VFIOCTL" check
expect check-ok-again-exit "$RC" 0

# libvirt's view of the declared device.
mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt
check libvirtd-starts libvirtd --daemon --pid-file=/run/vmtest/libvirtd-check.pid
check libvirtd-answers wait_for 90 virsh -q -c qemu:///system nodedev-list --cap pci
run "$VFIOCTL" check
expect check-with-libvirt-exit "$RC" 0
expect check-libvirt-ok "$(verdict libvirt.devices)" OK
check libvirt-saw-the-device grep -q "libvirt sees 1 declared device" <<<"$OUT"
kill "$(cat /run/vmtest/libvirtd-check.pid)"
