# shellcheck shell=bash
# The checks of a guest booted from a distribution-built initramfs (sourced by
# scenarios 90 and 91, after guest/lib.sh). The initramfs was built in a
# builder guest from tests/vm/guest/initrd/declare's declarations: E1000E
# and NVME declared by address, E1000E_2 (same model) not, and a stale
# declaration on VIRTIO_NET's slot. The kernel ran with dyndbg on the driver
# core, so its log names every driver probed against every device from the
# first probe on; /vmshare/initrd-dmesg.txt is that log when the initramfs
# mounted the root.

run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
verdict() { awk -v id="$1" '$2 == id {print $1}' <<<"$OUT"; }
dmesg >/run/vmtest/dmesg.txt
# probed DRIVER BDF LOG: the driver core tried DRIVER on the device (the 6.1
# form, "pci BDF: bus: 'pci': really_probe: probing driver D with device",
# or the older one ending in the device's name).
probed() { grep -qE "$2: bus: 'pci': really_probe: probing driver $1 with device\$|probing driver $1 with device $2\$" "$3"; }
initrd_log=/vmshare/initrd-dmesg.txt

# For the log: the declarations and what host-config wrote on this root.
ls -l /etc/vfioctl/bindings.d
cat /etc/vfioctl/bindings.d/*.toml /run/vmtest/host-config.log

check initramfs-mounted-the-root test -s "$initrd_log"
check probe-log-works probed e1000e "$E1000E_2" /run/vmtest/dmesg.txt

# Declared devices: on vfio-pci, already in the initramfs, never probed by
# their native drivers.
for pair in "e1000e:$E1000E" "nvme:$NVME"; do
	native=${pair%%:*} dev=${pair#*:}
	expect "$native-declared-on-vfio" "$(driver_of "$dev")" vfio-pci
	expect "$native-declared-override" "$(cat "$SYS/$dev/driver_override")" vfio-pci
	check "$native-claimed-in-initramfs" probed vfio-pci "$dev" "$initrd_log"
	check "$native-never-probed-$native" eval "! probed $native $dev /run/vmtest/dmesg.txt"
	check "$native-no-native-uevent" eval "! grep -q ' $dev driver=$native' /run/vmtest/uevents"
done
check nvme-namespace-never-appeared eval '! grep -q "nvme0n1" /run/vmtest/dmesg.txt'

# The undeclared e1000e, the e1000 pair and virtio-net keep their drivers.
expect undeclared-e1000e-on-e1000e "$(driver_of "$E1000E_2")" e1000e
expect undeclared-e1000e-no-override "$(cat "$SYS/$E1000E_2/driver_override")" "(null)"
expect e1000-a-on-e1000 "$(driver_of "$E1000_A")" e1000
expect e1000-b-on-e1000 "$(driver_of "$E1000_B")" e1000

# The stale declaration (an e1000e declared on virtio-net's slot): not
# applied, and check names it.
expect stale-not-applied "$(driver_of "$VIRTIO_NET")" virtio-pci
expect stale-no-override "$(cat "$SYS/$VIRTIO_NET/driver_override")" "(null)"
check stale-reported-at-boot grep -q "vfioctl: $VIRTIO_NET is declared as 8086:10d3 but holds 0x1af4:" "$initrd_log"
run "$VFIOCTL" check
echo "$OUT"
expect check-stale-critical-exit "$RC" 2
expect check-stale-critical "$(verdict "binding.$VIRTIO_NET")" CRITICAL
check check-stale-names-the-slot grep -q "declares 8086:10d3 at $VIRTIO_NET, but the slot holds" <<<"$OUT"
expect check-e1000e-ok "$(verdict "binding.$E1000E")" OK
expect check-nvme-ok "$(verdict "binding.$NVME")" OK

# Without the stale declaration, and with the files that depend on the
# declarations rewritten, check is OK.
rm /etc/vfioctl/bindings.d/stale.toml
"$VFIOCTL" persist rules --write
"$VFIOCTL" host-config --write
run "$VFIOCTL" check
echo "$OUT"
expect check-ok-exit "$RC" 0
expect check-iommu-ok "$(verdict iommu.active)" OK

# The kernel arguments: what host-config advised in the builder guest is what
# this guest booted with; host-config and check agree there is nothing to add.
cat /proc/cmdline
for arg in intel_iommu=on iommu=pt; do
	check "cmdline-has-$arg" grep -qw -- "$arg" /proc/cmdline
done
check builder-advised-nothing-missing eval '! grep -q "^missing:" /vmshare/host-config-cmdline.txt'
run "$VFIOCTL" host-config
check host-config-nothing-to-change grep -qx "nothing to change" <<<"$OUT"
