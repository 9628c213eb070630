# shellcheck shell=bash
# vfioctl sriov on a real kernel: 0 -> N VFs bound to vfio-pci with no
# native VF driver bound in between (uevent log and kernel log), N -> M
# through 0, back to 0, refusal while a VF's /dev/vfio/N is held (holder
# named, exit 4), a dry run that writes nothing; nvme PF (2 VFs) and, with
# QEMU 10, igb (7 VFs, whose igbvf binds by itself under autoprobe 1).
# A PF with VFs enabled never changes driver (refused, nothing written), and
# the kernel facts behind it by hand: vfio-pci refuses such a PF (EBUSY),
# nvme leaves its VFs behind when unbound, igb destroys them. A VF count
# change on the PF carrying the default route needs --force.
# Prints "timing:" lines (ms, measured around the vfioctl call).
# boot: iommu=on udev=on
# timeout: 300

run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}

ms() { echo $(($(date +%s%N) / 1000000)); }

# vfs_of PF: its VFs by virtfn index, on one line.
vfs_of() {
	local i link out=()
	for ((i = 0; ; i++)); do
		link=$(readlink "$SYS/$1/virtfn$i") || break
		out+=("${link##*/}")
	done
	echo "${out[*]}"
}

# vf_drivers PF: each VF's driver, on one line.
vf_drivers() {
	local vf out=()
	for vf in $(vfs_of "$1"); do
		out+=("$(driver_of "$vf")")
	done
	echo "${out[*]}"
}

# vf_nodes PF: whether each VF's /dev/vfio/N exists ("yes yes ...").
vf_nodes() {
	local vf out=()
	for vf in $(vfs_of "$1"); do
		if [[ -c /dev/vfio/$(group_of "$vf") ]]; then out+=(yes); else out+=(no); fi
	done
	echo "${out[*]}"
}

repeat() {
	local out=() i
	for ((i = 0; i < $2; i++)); do out+=("$1"); done
	echo "${out[*]}"
}

# Where the uevent and kernel logs are before a change.
log_marks() {
	udevadm settle
	UEVENTS_AT=$(wc -l </run/vmtest/uevents)
	DMESG_AT=$(dmesg | wc -l)
}

# native_binds PF: since log_marks, every uevent of a function other than
# the PF handled while it was bound to a driver other than vfio-pci, and
# every kernel log line of a native VF driver probing (nvme, igbvf).
native_binds() {
	udevadm settle
	tail -n +"$((UEVENTS_AT + 1))" /run/vmtest/uevents |
		awk -v pf="$1" '$2 != pf && $3 != "driver=vfio-pci" && $3 != "driver=none"'
	# A driver's lines about a device name it ("igbvf 0000:06:10.0: ...");
	# "igbvf: Intel(R) ..." alone is udev loading the module for the new
	# VFs' modalias, which binds nothing while autoprobe is 0.
	dmesg | tail -n +"$((DMESG_AT + 1))" |
		grep -E '(igbvf|nvme) [0-9a-f]{4}:[0-9a-f]{2}:|nvme nvme[0-9]+: pci function' | grep -v "$1"
}

# timed LABEL CMD...: marks the logs, runs CMD as run does, prints
# "timing: LABEL N ms".
timed() {
	local label=$1 t0
	shift
	log_marks
	t0=$(ms)
	run "$@"
	echo "timing: $label $(($(ms) - t0)) ms"
}

# changed TAG PF N: the last run exited 0 and left N VFs on vfio-pci with
# their /dev/vfio nodes, no native driver bound since timed, autoprobe 1.
changed() {
	expect "$1-exit" "$RC" 0
	expect "$1-vfs-on-vfio" "$(vf_drivers "$2")" "$(repeat vfio-pci "$3")"
	expect "$1-vfio-nodes" "$(vf_nodes "$2")" "$(repeat yes "$3")"
	expect "$1-no-native-bind" "$(native_binds "$2")" ""
	expect "$1-autoprobe" "$(cat "$SYS/$2/sriov_drivers_autoprobe")" 1
	expect "$1-numvfs" "$(cat "$SYS/$2/sriov_numvfs")" "$3"
}

json_field() {
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {"d": d}))' "$OUT" "$1"
}

hold() {
	rm -f /tmp/held-sriov
	python3 -c "import os,sys,time; os.open(sys.argv[1], os.O_RDWR); open('/tmp/held-sriov','w').close(); time.sleep(300)" "$1" &
	HOLDER=$!
	wait_for 30 test -e /tmp/held-sriov
}

pf=$NVME
expect nvme-starts-without-vfs "$(cat "$SYS/$pf/sriov_numvfs") $(cat "$SYS/$pf/sriov_drivers_autoprobe")" "0 1"

# Dry run: the exact sysfs writes, nothing written.
run "$VFIOCTL" sriov "$pf" --numvfs 2 --dry-run
expect dry-run-exit "$RC" 0
check dry-run-autoprobe-write grep -qx "  echo 0 > /sys/bus/pci/devices/$pf/sriov_drivers_autoprobe" <<<"$OUT"
check dry-run-numvfs-write grep -qx "  echo 2 > /sys/bus/pci/devices/$pf/sriov_numvfs" <<<"$OUT"
expect dry-run-wrote-nothing "$(cat "$SYS/$pf/sriov_numvfs") $(cat "$SYS/$pf/sriov_drivers_autoprobe")" "0 1"

# Refusals: above sriov_totalvfs, and a function that is not a PF.
run "$VFIOCTL" sriov "$pf" --numvfs 3
expect above-total-refused "$RC" 4
check above-total-names-total grep -q "at most 2 VFs" <<<"$OUT"
run "$VFIOCTL" sriov "$E1000E" --numvfs 1
expect not-a-pf-refused "$RC" 4
check not-a-pf-named grep -q "is not an SR-IOV physical function" <<<"$OUT"

# 0 -> 2 on vfio-pci.
timed "nvme 0->2" "$VFIOCTL" sriov "$pf" --numvfs 2 --json
changed nvme-0-to-2 "$pf" 2
expect nvme-json-numvfs "$(json_field 'd["result"]["numvfs"]')" 2
expect nvme-json-steps "$(json_field '" ".join(s["step"] for s in d["plan"]["steps"])')" "autoprobe numvfs wait_virtfns bind_vfs autoprobe"
# The VFs the plan predicted from sriov_offset and sriov_stride are the ones
# the kernel made (QEMU's nvme puts them in the PF's own slot: offset 1).
expect nvme-json-vfs-after "$(json_field '" ".join(d["plan"]["vfs_after"])')" "$(vfs_of "$pf")"

# Again: nothing to do.
run "$VFIOCTL" sriov "$pf" --numvfs 2 --json
expect nvme-again-exit "$RC" 0
expect nvme-again-no-result "$(json_field 'd["result"]')" None

# A VF held open (a VM's /dev/vfio/N): shrinking, or any change, is refused
# even with --force, naming the holder; nothing changes.
vf1=$(vfs_of "$pf")
vf1=${vf1##* }
if hold "/dev/vfio/$(group_of "$vf1")"; then
	pass holder-opens-vf-group
	run "$VFIOCTL" sriov "$pf" --numvfs 1
	expect held-shrink-refused "$RC" 4
	check held-names-holder grep -q "held open by PID $HOLDER" <<<"$OUT"
	run "$VFIOCTL" sriov "$pf" --numvfs 0 --force
	expect held-remove-refused-forced "$RC" 4
	OUT=$("$VFIOCTL" sriov "$pf" --numvfs 0 --json 2>/dev/null)
	expect held-json-exit-status "$(json_field 'd["exit_status"]')" 4
	expect held-vfs-kept "$(vf_drivers "$pf")" "vfio-pci vfio-pci"
else
	fail holder-opens-vf-group "could not open /dev/vfio/$(group_of "$vf1")"
fi
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null

# 2 -> 1 (through 0), then 0.
timed "nvme 2->1" "$VFIOCTL" sriov "$pf" --numvfs 1
changed nvme-2-to-1 "$pf" 1
timed "nvme 1->0" "$VFIOCTL" sriov "$pf" --numvfs 0
changed nvme-1-to-0 "$pf" 0

# dmesg_since: the kernel log since log_marks.
dmesg_since() { dmesg | tail -n +"$((DMESG_AT + 1))"; }

# A PF with VFs enabled: vfioctl refuses to change its driver, even with
# --force, and writes nothing.
run "$VFIOCTL" sriov "$pf" --numvfs 2
expect pf-with-vfs-setup "$RC" 0
for args in "bind" "bind --force" "unbind --force" "bind --driver pci-stub"; do
	# shellcheck disable=SC2086
	run "$VFIOCTL" $args "$pf"
	expect "pf-with-vfs-${args// /-}-refused" "$RC" 4
	check "pf-with-vfs-${args// /-}-names-vfs" grep -q "is an SR-IOV PF with 2 VF(s) enabled" <<<"$OUT"
done
expect pf-with-vfs-untouched "$(driver_of "$pf") $(cat "$SYS/$pf/driver_override") $(cat "$SYS/$pf/sriov_numvfs") $(vf_drivers "$pf")" \
	"nvme (null) 2 vfio-pci vfio-pci"
# What the kernel does with such a PF, by hand: nvme's remove leaves the VFs
# enabled ("driver left SR-IOV enabled after remove"), and vfio-pci refuses
# the PF ("Cannot bind to PF with SR-IOV enabled"): the PF is left with no
# driver at all.
log_marks
wr "$SYS/$pf/driver_override" vfio-pci
wr "$SYS/$pf/driver/unbind" "$pf"
wr /sys/bus/pci/drivers_probe "$pf"
udevadm settle
expect kernel-nvme-pf-left-without-driver "$(driver_of "$pf")" none
expect kernel-nvme-vfs-left-behind "$(cat "$SYS/$pf/sriov_numvfs") $(vf_drivers "$pf")" "2 vfio-pci vfio-pci"
check kernel-nvme-left-sriov-enabled grep -q "driver left SR-IOV enabled after remove" <<<"$(dmesg_since)"
check kernel-vfio-refuses-pf-with-vfs grep -q "Cannot bind to PF with SR-IOV enabled" <<<"$(dmesg_since)"
dmesg_since | grep -E "SR-IOV|$pf" | tail -n 5
wr "$SYS/$pf/driver_override" $'\n'
wr /sys/bus/pci/drivers_probe "$pf"
check kernel-nvme-pf-back wait_for 20 is_driver "$pf" nvme
run "$VFIOCTL" sriov "$pf" --numvfs 0
expect pf-with-vfs-cleanup "$RC $(cat "$SYS/$pf/sriov_numvfs")" "0 0"

# igb (QEMU 10): 7 VFs, which igbvf would bind with autoprobe 1.
if have_igb; then
	pf=$IGB
	# The kernel alone, for comparison: autoprobe 0, 0 -> 7, the virtfn
	# links; no driver bound.
	wr "$SYS/$pf/sriov_drivers_autoprobe" 0
	t0=$(ms)
	wr "$SYS/$pf/sriov_numvfs" 7
	wait_for 20 test -e "$SYS/$pf/virtfn6"
	t1=$(ms)
	echo "timing: igb 0->7 by hand (sysfs writes only, no bind) $((t1 - t0)) ms"
	wr "$SYS/$pf/sriov_numvfs" 0
	wr "$SYS/$pf/sriov_drivers_autoprobe" 1
	OUT=$("$VFIOCTL" sriov "$pf" --numvfs 7 --dry-run --json 2>/dev/null)
	predicted=$(json_field '" ".join(d["plan"]["vfs_after"])')
	timed "igb 0->7" "$VFIOCTL" sriov "$pf" --numvfs 7
	changed igb-0-to-7 "$pf" 7
	# igb's VFs: sriov_offset 128, sriov_stride 2, as the plan predicted.
	expect igb-vfs-where-predicted "$(vfs_of "$pf")" "$predicted"
	timed "igb 7->3" "$VFIOCTL" sriov "$pf" --numvfs 3
	changed igb-7-to-3 "$pf" 3
	timed "igb 3->0" "$VFIOCTL" sriov "$pf" --numvfs 0
	changed igb-3-to-0 "$pf" 0

	# igb with VFs: vfioctl refuses the PF; by hand, igb's remove destroys
	# the VFs (igb_disable_sriov), and the PF binds again without them.
	run "$VFIOCTL" sriov "$pf" --numvfs 2
	expect igb-pf-with-vfs-setup "$RC" 0
	run "$VFIOCTL" bind "$pf" --force
	expect igb-pf-with-vfs-refused "$RC" 4
	expect igb-pf-with-vfs-untouched "$(driver_of "$pf") $(cat "$SYS/$pf/sriov_numvfs")" "igb 2"
	wr "$SYS/$pf/driver/unbind" "$pf"
	check kernel-igb-unbind-destroys-vfs wait_for 20 test "$(cat "$SYS/$pf/sriov_numvfs")" = 0
	expect kernel-igb-virtfns-gone "$(vfs_of "$pf")" ""
	wr /sys/bus/pci/drivers_probe "$pf"
	check kernel-igb-pf-back wait_for 20 is_driver "$pf" igb

	# The PF carries the default route: a count change needs --force (some
	# drivers reset the PF then); the plan names the use.
	# The interface once udev has named it (igb was probed again above).
	udevadm settle
	check igb-netdev wait_for 20 has_netdev "$pf"
	ifc=$(netdevs "$pf")
	ip link set "$ifc" up
	ip addr add 192.0.2.2/24 dev "$ifc"
	ip route replace default via 192.0.2.1 dev "$ifc"
	ip route show
	run "$VFIOCTL" sriov "$pf" --numvfs 2
	expect igb-default-route-refused "$RC" 4
	check igb-default-route-named grep -q "carries the default route ($ifc)" <<<"$OUT"
	check igb-default-route-says-force grep -q "use --force to change it anyway" <<<"$OUT"
	expect igb-default-route-untouched "$(cat "$SYS/$pf/sriov_numvfs")" 0
	OUT=$("$VFIOCTL" sriov "$pf" --numvfs 2 --force --dry-run --json 2>/dev/null)
	expect igb-default-route-json "$(json_field '" ".join(u["kind"] for u in d["plan"]["pf_uses"])')" "default_route addresses"
	timed "igb 0->2 --force" "$VFIOCTL" sriov "$pf" --numvfs 2 --force
	changed igb-default-route-forced "$pf" 2
	run "$VFIOCTL" sriov "$pf" --numvfs 0 --force
	expect igb-default-route-back-to-0 "$RC $(cat "$SYS/$pf/sriov_numvfs")" "0 0"
	ip route del default
	ip addr flush dev "$ifc"
else
	skip igb "no igb in $VM_QEMU (QEMU 10 from bookworm-backports not in the cache)"
fi
