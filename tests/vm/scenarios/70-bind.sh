# shellcheck shell=bash
# vfioctl bind, restore and unbind on a real kernel: a device alone in its
# group, the shared group (refused, then whole with --with-group, bridge
# untouched), an idempotent re-run, a holder of /dev/vfio/N blocking restore,
# rollback when a target driver rejects a device, a mounted filesystem, VFs,
# concurrent runs, and the privilege check.
# boot: iommu=on udev=on
# timeout: 240

# run COMMAND...: run it, keeping its output in $OUT and its status in $RC.
run() {
	OUT=$("$@" 2>&1)
	RC=$?
}

dev=$E1000E
group=$(group_of "$dev")

# Dry run: the plan, and nothing written.
run "$VFIOCTL" bind "$dev" --dry-run
expect dry-run-exit "$RC" 0
check dry-run-shows-steps grep -q "unbind from e1000e" <<<"$OUT"
expect dry-run-writes-nothing "$(cat "$SYS/$dev/driver_override")" "(null)"

# Bind, verified by the kernel's own state.
run "$VFIOCTL" bind "$dev"
expect bind-exit "$RC" 0
expect bound-to-vfio-pci "$(driver_of "$dev")" vfio-pci
expect override-is-vfio-pci "$(cat "$SYS/$dev/driver_override")" vfio-pci
check vfio-node-exists test -c "/dev/vfio/$group"
expect netdev-gone "$(netdevs "$dev")" ""
check show-reports-the-change grep -q "changed by   vfioctl bind" <<<"$("$VFIOCTL" show "$dev")"

# Re-running changes nothing (never disturb a VM using the device).
run "$VFIOCTL" bind "$dev" --json
expect rerun-exit "$RC" 0
expect rerun-has-no-result "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["result"])' <<<"$OUT")" None

# A process holding /dev/vfio/N (a VM) blocks restore, named by PID.
rm -f /tmp/held
python3 -c "import os,time; os.open('/dev/vfio/$group', os.O_RDWR); open('/tmp/held','w').close(); time.sleep(60)" &
holder=$!
check holder-opens-the-group wait_for 30 test -e /tmp/held
run "$VFIOCTL" restore "$dev"
expect restore-refused-while-held "$RC" 4
check refusal-names-the-holder grep -q "held open by PID $holder" <<<"$OUT"
expect still-on-vfio-pci "$(driver_of "$dev")" vfio-pci
kill "$holder"
wait "$holder" 2>/dev/null

# Restore: back to e1000e with its netdev, without a reboot.
run "$VFIOCTL" restore "$dev"
expect restore-exit "$RC" 0
expect back-on-e1000e "$(driver_of "$dev")" e1000e
expect override-cleared "$(cat "$SYS/$dev/driver_override")" "(null)"
check netdev-returns wait_for 10 has_netdev "$dev"
check vfio-node-goes wait_for 10 gone "/dev/vfio/$group"

# The shared group: refused alone, naming the other member; whole with
# --with-group; the PCIe-to-PCI bridge is never touched.
bridge_driver=$(driver_of "$PCIBRIDGE")
run "$VFIOCTL" bind "$E1000_A"
expect shared-group-refused "$RC" 4
check refusal-names-the-other-member grep -q "$E1000_B on e1000" <<<"$OUT"
expect refusal-writes-nothing "$(cat "$SYS/$E1000_A/driver_override")" "(null)"
run "$VFIOCTL" bind "$E1000_A" --with-group
expect with-group-exit "$RC" 0
expect member-a-on-vfio "$(driver_of "$E1000_A")" vfio-pci
expect member-b-on-vfio "$(driver_of "$E1000_B")" vfio-pci
expect bridge-untouched "$(driver_of "$PCIBRIDGE")" "$bridge_driver"
expect bridge-override-untouched "$(cat "$SYS/$PCIBRIDGE/driver_override")" "(null)"
check group-node-exists test -c "/dev/vfio/$(group_of "$E1000_A")"
run "$VFIOCTL" restore "$E1000_A" "$E1000_B"
expect restore-group-exit "$RC" 0
expect member-a-back "$(driver_of "$E1000_A")" e1000
expect member-b-back "$(driver_of "$E1000_B")" e1000

# Rollback: virtio-pci binds the virtio NIC (first by address) but rejects
# the Intel e1000e (its probe wants Red Hat's vendor ID): every device ends
# as it began.
"$VFIOCTL" unbind "$VIRTIO_NET" >/dev/null
expect virtio-net-unbound "$(driver_of "$VIRTIO_NET")" none
run "$VFIOCTL" bind --driver virtio-pci "$VIRTIO_NET" "$dev" --timeout 3
expect rollback-exit "$RC" 1
check rollback-names-the-device grep -q "$dev: expected driver virtio-pci" <<<"$OUT"
check rollback-says-put-back grep -q "every device changed was put back" <<<"$OUT"
expect rolled-back-e1000e "$(driver_of "$dev")" e1000e
expect rolled-back-override "$(cat "$SYS/$dev/driver_override")" "(null)"
expect rolled-back-virtio-net "$(driver_of "$VIRTIO_NET")" none
expect rolled-back-virtio-override "$(cat "$SYS/$VIRTIO_NET/driver_override")" "(null)"
wr /sys/bus/pci/drivers_probe "$VIRTIO_NET"

# A mounted filesystem on the NVMe namespace: refused, nothing written.
ns=$(entries "$SYS/$NVME/nvme" | cut -d' ' -f1)
mkfs.ext4 -q -F "/dev/${ns}n1" && mkdir -p /mnt/data && mount "/dev/${ns}n1" /mnt/data
run "$VFIOCTL" bind "$NVME"
expect mounted-nvme-refused "$RC" 4
check refusal-names-the-mount grep -q "backs /mnt/data" <<<"$OUT"
expect mounted-nvme-untouched "$(driver_of "$NVME")" nvme
umount /mnt/data

# VFs: created without autoprobe, bound, restored (no host driver: none).
wr "$SYS/$NVME/sriov_drivers_autoprobe" 0
wr "$SYS/$NVME/sriov_numvfs" 2
vf=$(basename "$(readlink "$SYS/$NVME/virtfn0")")
run "$VFIOCTL" bind "$vf"
expect vf-bind-exit "$RC" 0
expect vf-on-vfio "$(driver_of "$vf")" vfio-pci
check vf-listed-as-type-vf grep -q "type-VF" <<<"$("$VFIOCTL" list "$vf")"
run "$VFIOCTL" restore "$vf"
expect vf-restore-exit "$RC" 0
expect vf-left-without-driver "$(driver_of "$vf")" none
wr "$SYS/$NVME/sriov_numvfs" 0

# Two concurrent binds of the same device: both succeed, one does the work.
"$VFIOCTL" bind "$dev" --json >/tmp/bind-a.json 2>&1 &
a=$!
"$VFIOCTL" bind "$dev" --json >/tmp/bind-b.json 2>&1 &
b=$!
wait "$a"; sa=$?
wait "$b"; sb=$?
expect concurrent-exits "$sa $sb" "0 0"
expect concurrent-end-on-vfio "$(driver_of "$dev")" vfio-pci
expect concurrent-one-did-it "$(cat /tmp/bind-a.json /tmp/bind-b.json | grep -c '"status": "done"')" 1
"$VFIOCTL" restore "$dev" >/dev/null

# Without CAP_SYS_ADMIN: refused with 77, nothing written.
run setpriv --bounding-set=-sys_admin --inh-caps=-all -- "$VFIOCTL" bind "$dev"
expect unprivileged-exit "$RC" 77
expect unprivileged-wrote-nothing "$(driver_of "$dev")" e1000e
