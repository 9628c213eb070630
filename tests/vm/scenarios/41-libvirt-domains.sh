# shellcheck shell=bash
# libvirtd in the guest with a domain defined, not started, that names the
# e1000e with managed='no': restore is refused naming it (and that it
# autostarts), --force gives the device back, check reports the domain's
# next start failing; list and show name it. Then a paused domain with the
# e1000e on vfio-pci, started by libvirt with QEMU inside the guest (nested
# TCG, intel-iommu with caching-mode): restore is refused even with --force,
# and show matches the holder of /dev/vfio/N to the domain's QEMU.
# boot: iommu=on udev=on
# timeout: 480

# run COMMAND...: run it, keeping its output in $OUT and its status in $RC.
run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}
contains() { [[ $1 == *"$2"* ]]; }

start_libvirtd_for_domains /run/vmtest/libvirtd-domains.pid

bus=$((16#${E1000E:5:2}))
slot=$((16#${E1000E:8:2}))
fn=${E1000E:11:1}
domain_xml() { # NAME MANAGED
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>48</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:name>bed-$1</nova:name>
      <nova:flavor name="m1.tiny"/>
    </nova:instance>
  </metadata>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <hostdev mode='subsystem' type='pci' managed='$2'>
      <source><address domain='0x0000' bus='$bus' slot='$slot' function='$fn'/></source>
    </hostdev>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# (a) A defined domain, not started, names the e1000e (managed='no', autostart).
domain_xml stopped-vm no >/run/vmtest/stopped-vm.xml
check define-stopped-vm virsh -q -c qemu:///system define /run/vmtest/stopped-vm.xml
check autostart-stopped-vm virsh -q -c qemu:///system autostart stopped-vm
check e1000e-to-vfio "$VFIOCTL" bind "$E1000E"
run "$VFIOCTL" list "$E1000E"
check list-names-the-domain contains "$OUT" "stopped-vm (shut off)"
run "$VFIOCTL" show "$E1000E" --json
check show-names-the-nova-instance contains "$OUT" '"name": "bed-stopped-vm"'
run "$VFIOCTL" restore "$E1000E"
expect restore-refused "$RC" 4
check restore-names-the-domain contains "$OUT" "is named by the config of domain stopped-vm (shut off, Nova instance \"bed-stopped-vm\""
check restore-says-next-start-fails contains "$OUT" "its next start fails"
check restore-says-autostart contains "$OUT" "it autostarts with libvirt"
expect refused-left-on-vfio "$(driver_of "$E1000E")" vfio-pci
run "$VFIOCTL" restore "$E1000E" --force
expect force-gives-it-back "$RC" 0
check back-on-e1000e wait_for 10 is_driver "$E1000E" e1000e
run "$VFIOCTL" check --json
check check-reports-unmanaged contains "$OUT" '"id": "vm.unmanaged_not_vfio"'
check check-names-the-domain contains "$OUT" "stopped-vm"
run "$VFIOCTL" check --prometheus -
check prometheus-vm-info grep -qE "^vfioctl_device_vm_info\\{address=\"$E1000E\",segment=\"[0-9a-f]{4}\",bus=\"[0-9a-f]{2}\",device=\"[0-9a-f]{2}\",function=\"[0-7]\",domain=\"stopped-vm\"" <<<"$OUT"
virsh -q -c qemu:///system undefine stopped-vm >/dev/null

# (b) A paused domain holding the e1000e through QEMU inside the guest.
check e1000e-to-vfio-again "$VFIOCTL" bind "$E1000E"
domain_xml paused-vm no >/run/vmtest/paused-vm.xml
check define-paused-vm virsh -q -c qemu:///system define /run/vmtest/paused-vm.xml
run timeout 240 virsh -q -c qemu:///system start --paused paused-vm
if [[ $RC != 0 ]]; then
	skip running-domain "libvirt could not start QEMU in the guest: $(printf '%s\n' "$OUT" | tail -n1)"
	tail -n 20 /var/log/libvirt/qemu/paused-vm.log 2>/dev/null
else
	pass paused-vm-started
	run "$VFIOCTL" list "$E1000E"
	check list-paused contains "$OUT" "paused-vm (paused)"
	run "$VFIOCTL" restore "$E1000E" --force
	expect running-restore-refused "$RC" 4
	check running-names-the-domain contains "$OUT" "is used by domain paused-vm (paused, Nova instance \"bed-paused-vm\""
	check running-never-forced contains "$OUT" "refused even with --force"
	expect running-left-on-vfio "$(driver_of "$E1000E")" vfio-pci
	run "$VFIOCTL" show "$E1000E" --json
	check holder-is-the-domains-qemu contains "$OUT" '"domain": "paused-vm"'
	run "$VFIOCTL" show "$E1000E"
	check show-says-qemu-of-domain contains "$OUT" "the QEMU of domain paused-vm"
	run "$VFIOCTL" check --json
	check running-check-no-not-held bash -c '! grep -q vm.not_held <<<"$1"' _ "$OUT"
	virsh -q -c qemu:///system destroy paused-vm >/dev/null
fi
virsh -q -c qemu:///system undefine paused-vm >/dev/null
"$VFIOCTL" restore "$E1000E" --no-libvirt >/dev/null
check e1000e-back-at-the-end wait_for 10 is_driver "$E1000E" e1000e
kill "$(cat /run/vmtest/libvirtd-domains.pid)"
