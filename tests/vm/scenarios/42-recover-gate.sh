# shellcheck shell=bash
# recover is judged by the one gate as the command it puts back, on a real
# kernel with libvirtd in the guest.
# (a) A bind of the e1000e left interrupted (its intent recorded as a bind
# killed after its last write leaves it: the device on vfio-pci, the PID
# gone): a defined domain naming the e1000e with managed='no' refuses
# recover (as it refuses restore) unless --force; a domain started on it
# (paused, QEMU inside the guest) refuses it even with --force; once the
# domain is gone, recover gives the e1000e back to e1000e and check is clear.
# (b) An sriov of the igb (QEMU 10) left interrupted after creating a VF,
# with the VF in a running domain as <interface type='hostdev'>: recover
# refuses to destroy it (as sriov --numvfs 0 refuses), even with --force;
# once the domain is gone, recover puts the VF count back to 0.
# boot: iommu=on udev=on
# timeout: 480

run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}
contains() { [[ $1 == *"$2"* ]]; }

start_libvirtd_for_domains /run/vmtest/libvirtd-recover.pid

# interrupt COMMAND JSON_DEVICES [JSON_SRIOV]: records in the change record
# the intent a change killed after its last write leaves behind: its
# command, the devices' bindings before and targets, and a PID that is gone.
interrupt() {
	true &
	local gone=$!
	wait "$gone"
	python3 - "$1" "$2" "${3:-null}" "$gone" <<'EOF'
import json, sys, time
path = "/run/vfioctl/changes.json"
try:
    record = json.load(open(path))
except FileNotFoundError:
    record = {"devices": {}}
record["intent"] = {
    "command": sys.argv[1],
    "pid": int(sys.argv[4]),
    "process_start": None,
    "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(),
    "started_at": int(time.time()),
    "devices": json.loads(sys.argv[2]),
}
sriov = json.loads(sys.argv[3])
if sriov is not None:
    record["intent"]["sriov"] = sriov
json.dump(record, open(path + ".new", "w"))
EOF
	mv /run/vfioctl/changes.json.new /run/vfioctl/changes.json
}

# domain_xml NAME DEVICE_XML: a small domain with that one device.
domain_xml() {
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>48</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    $2
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# source_address ADDRESS [TYPE]: libvirt's <address> of a PCI function.
source_address() {
	printf "<address %sdomain='0x0000' bus='%d' slot='%d' function='%s'/>" \
		"${2:+type='$2' }" "$((16#${1:5:2}))" "$((16#${1:8:2}))" "${1:11:1}"
}

hostdev_xml() { # NAME MANAGED ADDRESS
	domain_xml "$1" "<hostdev mode='subsystem' type='pci' managed='$2'><source>$(source_address "$3")</source></hostdev>"
}

interface_xml() { # NAME ADDRESS
	domain_xml "$1" "<interface type='hostdev' managed='no'><source>$(source_address "$2" pci)</source></interface>"
}

interrupted_checks() {
	"$VFIOCTL" check --json 2>/dev/null | grep -c '"id": "change.interrupted"'
}

# (a) An interrupted bind of the e1000e.
check e1000e-to-vfio "$VFIOCTL" bind "$E1000E"
interrupt bind "[{\"address\": \"$E1000E\", \"before\": {\"driver\": \"e1000e\", \"driver_override\": null}, \"target\": {\"driver\": \"vfio-pci\", \"driver_override\": \"vfio-pci\"}}]"
check interrupted-bind-reported test "$(interrupted_checks)" -ge 1
hostdev_xml stopped-vm no "$E1000E" >/run/vmtest/recover-stopped.xml
check define-stopped-vm virsh -q -c qemu:///system define /run/vmtest/recover-stopped.xml
run "$VFIOCTL" recover
expect recover-refused-defined "$RC" 4
check recover-names-defined contains "$OUT" "is named by the config of domain stopped-vm (shut off)"
check recover-says-next-start contains "$OUT" "its next start fails"
expect recover-refused-left-on-vfio "$(driver_of "$E1000E")" vfio-pci
run "$VFIOCTL" recover --dry-run --force
expect recover-force-would-give-it-back "$RC" 0
virsh -q -c qemu:///system undefine stopped-vm >/dev/null
hostdev_xml paused-vm no "$E1000E" >/run/vmtest/recover-paused.xml
check define-paused-vm virsh -q -c qemu:///system define /run/vmtest/recover-paused.xml
run timeout 240 virsh -q -c qemu:///system start --paused paused-vm
if [[ $RC != 0 ]]; then
	skip recover-running-domain "libvirt could not start QEMU in the guest: $(printf '%s\n' "$OUT" | tail -n1)"
else
	pass paused-vm-started
	run "$VFIOCTL" recover --force
	expect recover-refused-running "$RC" 4
	check recover-names-running contains "$OUT" "is used by domain paused-vm (paused)"
	check recover-running-never-forced contains "$OUT" "refused even with --force"
	expect recover-running-left-on-vfio "$(driver_of "$E1000E")" vfio-pci
	check still-interrupted test "$(interrupted_checks)" -ge 1
	virsh -q -c qemu:///system destroy paused-vm >/dev/null
fi
virsh -q -c qemu:///system undefine paused-vm >/dev/null
run "$VFIOCTL" recover
expect recover-once-the-domain-is-gone "$RC" 0
check recover-gives-e1000e-back wait_for 10 is_driver "$E1000E" e1000e
expect recover-clears-the-intent "$(interrupted_checks)" 0

# (b) An interrupted sriov of the igb with its VF in a running domain.
if ! have_igb; then
	skip recover-sriov "no igb (QEMU 10 not in the cache)"
else
	pf=$IGB
	run "$VFIOCTL" sriov "$pf" --numvfs 1
	expect igb-one-vf "$RC" 0
	vf=$(basename "$(readlink "$SYS/$pf/virtfn0")")
	interrupt sriov "[]" "{\"pf\": \"$pf\", \"numvfs_before\": 0, \"numvfs\": 1, \"autoprobe_before\": true, \"vfs_before\": []}"
	# libvirt sets the VF's MAC through its PF: the PF's link must be up.
	for dev in $(netdevs "$pf"); do ip link set "$dev" up; done
	interface_xml vf-vm "$vf" >/run/vmtest/recover-vf.xml
	check define-vf-vm virsh -q -c qemu:///system define /run/vmtest/recover-vf.xml
	run timeout 240 virsh -q -c qemu:///system start --paused vf-vm
	if [[ $RC != 0 ]]; then
		skip recover-sriov-running "libvirt could not start QEMU in the guest: $(printf '%s\n' "$OUT" | tail -n1)"
	else
		pass vf-vm-started
		run "$VFIOCTL" recover --force
		expect recover-sriov-refused "$RC" 4
		check recover-sriov-names-the-vf contains "$OUT" "$vf is used by domain vf-vm (paused)"
		expect recover-sriov-vf-kept "$(cat "$SYS/$pf/sriov_numvfs")" 1
		virsh -q -c qemu:///system destroy vf-vm >/dev/null
	fi
	virsh -q -c qemu:///system undefine vf-vm >/dev/null
	run "$VFIOCTL" recover
	expect recover-sriov-once-the-domain-is-gone "$RC" 0
	expect recover-sriov-count-back "$(cat "$SYS/$pf/sriov_numvfs")" 0
	expect recover-sriov-clears-the-intent "$(interrupted_checks)" 0
fi
kill "$(cat /run/vmtest/libvirtd-recover.pid)"
