# shellcheck shell=bash
# The .deb (make deb), installed into the guest's root before udev starts
# (overlay package), with a declaration dropped in by hand and no generated
# udev rules. udev's coldplug leaves the declared e1000e on e1000e; the
# package's vfioctl-apply.service, run as systemd would at its place after
# coldplug (guest/run-unit: the installed unit file, enabled by the package's
# preset, its ExecStart; output kept as the unit's journal), moves it to
# vfio-pci; `check` passes once the rules and boot files are written; a hot-added
# declared device goes to vfio-pci through the package's udev rule; remove
# and purge leave the bound device alone. The packaged vfioctl ignores the
# test bed's VFIOCTL_TEST_NO_HOLDERS (no test hooks in a release build).
# boot: iommu=on udev=on overlay=package
# timeout: 150

PKG=/usr/sbin/vfioctl
journal=/vmshare/logs/vfioctl-apply.journal
run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
verdict() { awk -v id="$1" '$2 == id {print $1}' <<<"$OUT"; }

cat /run/vmtest/dpkg-install.log
check package-installed grep -qx 'install ok installed' <<<"$(dpkg-query -W -f='${Status}' vfioctl 2>&1)"
check binary-from-package test "$(dpkg-query -S $PKG 2>/dev/null)" = "vfioctl: $PKG"
check unit-enabled-by-preset test -L /etc/systemd/system/sysinit.target.wants/vfioctl-apply.service
check udev-rule-from-package grep -q "RUN+=\"$PKG udev-hook" /lib/udev/rules.d/70-vfioctl.rules
check no-generated-rules test ! -e /etc/udev/rules.d/69-vfioctl-bindings.rules
expect coldplug-left-it-on-e1000e "$(driver_of "$E1000E")" e1000e

# The unit: After=systemd-udev-trigger.service, so here (stage 2 has run the
# coldplug trigger and settled).
run "$VM_REPO/tests/vm/guest/run-unit" vfioctl-apply.service "$journal"
echo "$OUT"
expect unit-succeeds "$RC" 0
check journal-names-the-unit-file grep -q 'unit file \(/usr\)\?/lib/systemd/system/vfioctl-apply.service, enabled' "$journal"
check journal-shows-the-bind grep -q "$E1000E.*vfio-pci" "$journal"
check journal-shows-success grep -q 'Result: success' "$journal"
expect declared-on-vfio-pci "$(driver_of "$E1000E")" vfio-pci
expect override-set "$(cat "$SYS/$E1000E/driver_override")" vfio-pci
expect undeclared-e1000-untouched "$(driver_of "$E1000_A")" e1000
run "$VM_REPO/tests/vm/guest/run-unit" vfioctl-apply.service "$journal"
expect unit-again-succeeds "$RC" 0
expect still-on-vfio-pci "$(driver_of "$E1000E")" vfio-pci

# What the man page says to do after editing bindings.d by hand (rules, and
# the boot files for the next boot); then check.
check rules-written $PKG persist rules --write
check rules-applied udevadm trigger --action=change "$SYS/$E1000E"
udevadm settle --timeout=30
mkdir -p /etc/initramfs-tools
check boot-files-written $PKG host-config --write
run $PKG check
echo "$OUT"
expect check-ok-exit "$RC" 0
expect check-binding-ok "$(verdict "binding.$E1000E")" OK
expect check-udev-rules-ok "$(verdict udev.rules)" OK

# The package is built without the test-hooks feature: the test bed's
# VFIOCTL_TEST_NO_HOLDERS=1 switches nothing off, and a process holding the
# NVMe controller's node still refuses its unbind (a dry run: nothing is
# written).
if [[ -e /dev/nvme0 ]]; then
	sleep 600 </dev/nvme0 &
	holder=$!
	run env VFIOCTL_TEST_NO_HOLDERS=1 $PKG --no-libvirt unbind "$NVME" --dry-run
	echo "$OUT"
	expect holder-rule-ignores-the-environment "$RC" 4
	check holder-refusal-names-the-pid grep -q "held open by PID $holder" <<<"$OUT"
	kill "$holder"
	wait "$holder" 2>/dev/null
else
	fail holder-rule-ignores-the-environment "no /dev/nvme0 to hold"
fi

# Hot-add: the package's rule runs the packaged hook.
check hot-add qmp '{"execute":"device_add","arguments":{"driver":"e1000e","id":"pkghot","bus":"rp3","romfile":""}}'
hot_present() { [[ -n $(below "$RP_HOT") ]]; }
check hot-device-appears wait_for 30 hot_present
hot=$(below "$RP_HOT")
check hot-device-on-vfio-pci wait_for 30 is_driver "$hot" vfio-pci
check hot-device-del qmp '{"execute":"device_del","arguments":{"id":"pkghot"}}'
check hot-device-gone wait_for 40 gone "$SYS/$hot"

# Remove keeps the declarations; purge removes the generated rules and only
# them; neither touches the bound device.
check dpkg-remove dpkg -r vfioctl
check remove-keeps-declaration test -f /etc/vfioctl/bindings.d/e1000e.toml
check remove-keeps-example test -f /etc/vfioctl/bindings.d/example.toml
check remove-disables-unit test ! -e /etc/systemd/system/sysinit.target.wants/vfioctl-apply.service
check dpkg-purge dpkg -P vfioctl
check purge-removes-generated-rules test ! -e /etc/udev/rules.d/69-vfioctl-bindings.rules
check purge-removes-boot-files test ! -e /etc/modprobe.d/vfioctl.conf -a ! -e /etc/modules-load.d/vfioctl.conf
check purge-keeps-handwritten-declaration test -f /etc/vfioctl/bindings.d/e1000e.toml
expect purge-leaves-device-bound "$(driver_of "$E1000E")" vfio-pci
