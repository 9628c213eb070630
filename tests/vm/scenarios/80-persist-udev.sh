# shellcheck shell=bash
# Persistent bindings on a running guest with udev: a declared device hot-added
# through QMP ends on vfio-pci (the kernel bound e1000e first; the hook undoes
# it); an undeclared one stays on e1000e and starts no hook; `persist apply`
# binds declarations now; an add-event storm leaves every declared device bound
# and no hook running.
# boot: iommu=on udev=on
# timeout: 300

run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
hook_runs() { dmesg | grep -c 'vfioctl\[' || true; }
no_hook_running() { ! pgrep -f "udev-hook" >/dev/null; }
hot_device() { below "$RP_HOT"; }
has_hot_device() { [[ -n $(hot_device) ]]; }
ms() { echo $(($(date +%s%N) / 1000000)); }

# The shipped rule, pointing at the vfioctl under test (make install's job).
sed "s|/usr/sbin/vfioctl|$VFIOCTL|" "$VM_REPO/udev-rules/70-vfioctl.rules" >/usr/lib/udev/rules.d/70-vfioctl.rules
udevadm control --reload

# Declare the e1000e model; the generated rules go in and udev reloads them.
run "$VFIOCTL" persist add 8086:10d3
expect persist-add-exit "$RC" 0
check rules-rewritten-and-reloaded grep -q "rewrote /etc/udev/rules.d/69-vfioctl-bindings.rules and reloaded udev" <<<"$OUT"
check rules-mark-the-ids grep -q 'ATTR{vendor}=="0x8086", ATTR{device}=="0x10d3", ENV{VFIOCTL_DRIVER}="auto"' /etc/udev/rules.d/69-vfioctl-bindings.rules

# Hot-add a declared device: the kernel binds e1000e, then the hook moves it.
before=$(hook_runs)
t0=$(ms)
check hot-add-declared qmp '{"execute":"device_add","arguments":{"driver":"e1000e","id":"hot1","bus":"rp3","romfile":""}}'
check declared-device-appears wait_for 30 has_hot_device
hot=$(hot_device)
check declared-device-ends-on-vfio-pci wait_for 30 is_driver "$hot" vfio-pci
echo "hot-add to vfio-pci: $(($(ms) - t0)) ms (TCG guest)"
expect hook-set-the-override "$(cat "$SYS/$hot/driver_override")" vfio-pci
expect native-netdev-gone "$(netdevs "$hot")" ""
check hook-logged-to-kernel-log wait_for 10 test "$(hook_runs)" -gt "$before"
check hook-says-what-it-did grep -q "$hot: declared by /etc/vfioctl/bindings.d/id-8086_10d3.toml:2; on vfio-pci" <<<"$(dmesg)"
check udev-marked-the-device grep -q '"udev_marked": true' <<<"$("$VFIOCTL" persist list --json)"
check hot1-removed qmp '{"execute":"device_del","arguments":{"id":"hot1"}}'
check hot1-gone wait_for 40 gone "$SYS/$hot"

# Without the declaration, a hot-added device stays native and no hook runs.
run "$VFIOCTL" persist remove 8086:10d3
expect persist-remove-exit "$RC" 0
check rules-emptied bash -c '! grep -q VFIOCTL_DRIVER= /etc/udev/rules.d/69-vfioctl-bindings.rules'
before=$(hook_runs)
check hot-add-undeclared qmp '{"execute":"device_add","arguments":{"driver":"e1000e","id":"hot2","bus":"rp3","romfile":""}}'
check undeclared-device-appears wait_for 30 has_hot_device
hot=$(hot_device)
check undeclared-stays-on-e1000e wait_for 20 is_driver "$hot" e1000e
udevadm settle --timeout=30
sleep 2
expect undeclared-started-no-hook "$(hook_runs)" "$before"
expect undeclared-keeps-its-netdev "$(netdevs "$hot" | wc -w)" 1
check hot2-removed qmp '{"execute":"device_del","arguments":{"id":"hot2"}}'
check hot2-gone wait_for 40 gone "$SYS/$hot"

# persist apply: declare the cold-plugged e1000e by address, bind it now.
run "$VFIOCTL" persist add "$E1000E"
expect declare-by-address-exit "$RC" 0
expect still-native-before-apply "$(driver_of "$E1000E")" e1000e
run "$VFIOCTL" persist apply
expect persist-apply-exit "$RC" 0
expect apply-bound-it "$(driver_of "$E1000E")" vfio-pci
run "$VFIOCTL" persist apply
expect apply-again-changes-nothing "$(grep -c 'done: now on' <<<"$OUT")" 0

# Restored by hand, a declared device comes back on the next add event.
"$VFIOCTL" restore "$E1000E" >/dev/null
expect restored-by-hand "$(driver_of "$E1000E")" e1000e
udevadm trigger --action=add "$SYS/$E1000E"
check add-event-re-enforces wait_for 30 is_driver "$E1000E" vfio-pci

# A storm of 32 add events: the hooks serialise on the lock and every one
# finds the device already as declared; none is left running.
before=$(hook_runs)
t0=$(ms)
for _ in $(seq 32); do
	udevadm trigger --action=add "$SYS/$E1000E"
done
udevadm settle --timeout=120
check storm-hooks-finish wait_for 60 no_hook_running
echo "32 add events handled in $(($(ms) - t0)) ms (TCG guest)"
expect storm-leaves-it-bound "$(driver_of "$E1000E")" vfio-pci
check storm-ran-the-hook test "$(hook_runs)" -gt "$before"

# Hook start-up inside the guest, for the record (no assertion: TCG timing).
t0=$(ms)
for _ in $(seq 10); do ACTION=bind "$VFIOCTL" udev-hook "$E1000E"; done
echo "udev-hook ignoring a bind event: $((($(ms) - t0) / 10)) ms per run (TCG guest)"
t0=$(ms)
for _ in $(seq 10); do ACTION=add "$VFIOCTL" udev-hook "$E1000E" 2>/dev/null; done
echo "udev-hook on a declared, already bound device: $((($(ms) - t0) / 10)) ms per run (TCG guest)"

"$VFIOCTL" persist remove "$E1000E" >/dev/null
"$VFIOCTL" restore "$E1000E" >/dev/null
expect cleaned-up "$(driver_of "$E1000E")" e1000e
