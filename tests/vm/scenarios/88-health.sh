# shellcheck shell=bash
# The health checks on a real kernel. Link: QEMU's x-speed/x-width set a
# root port's link capability; the kernel's link attributes of every
# function are listed, and check's expectation (the narrowest and slowest
# maximum on the path) is compared with them. AER: errors injected with the
# QEMU monitor's pcie_aer_inject_error (at the root port above a device,
# then at the device) reach the kernel's AER service and its counters; check
# sees the count rise (fatal: CRITICAL, nonfatal and a correctable rate:
# WARNING) and is OK again after a new baseline. Reset: each emulated
# device's reset_method, and check's verdict on it.
# boot: iommu=on udev=on health=on
# timeout: 420

# run COMMAND...: run it, keeping its output in $OUT and its status in $RC.
run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}

attr() { cat "$SYS/$1/$2" 2>/dev/null || echo "-"; }

# total FUNCTION FILE: the TOTAL_ line of an aer_dev_* file.
total() { awk '/^TOTAL_/ {print $2}' "$SYS/$1/$2" 2>/dev/null; }

# moved FUNCTION FILE BEFORE: the total is no longer BEFORE.
moved() { [[ $(total "$1" "$2") != "$3" ]]; }

# verdict ID: "STATUS message" of one check in `check --json` ($JSON).
verdict() {
	python3 -c 'import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    if c["id"] == sys.argv[2]:
        print(c["status"], c["message"])' "$JSON" "$1"
}

# check_json ARGS...: vfioctl check --json ARGS into $JSON.
JSON=/tmp/health-check.json
check_json() { "$VFIOCTL" check --json "$@" >"$JSON" 2>/tmp/health-check.err; }

# expect_verdict NAME ID STATUS TEXT: the check is STATUS and says TEXT.
expect_verdict() {
	local got
	got=$(verdict "$2")
	if [[ $got == "$3 "* && $got == *"$4"* ]]; then
		pass "$1"
	else
		fail "$1" "got '$got', want $3 with '$4'"
	fi
}

# inject QEMU_ID ERROR: pcie_aer_inject_error through QMP's human monitor,
# which answers "OK id: ..." when it recorded the error.
inject() {
	local reply
	reply=$(qmp "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"pcie_aer_inject_error $1 $2\"}}") || return 1
	echo "$reply"
	grep -q '"return": "OK id' <<<"$reply"
}

# reporting BDF: the error reporting enables of Device Control (bits 0-3:
# correctable, nonfatal, fatal, unsupported request), in hex.
reporting() { printf '%x\n' $((0x$(setpci -s "$1" CAP_EXP+8.w) & 0xf)); }

# --- What the kernel shows of every function ---
echo "== link, AER, reset and power of every PCI function"
for d in "$SYS"/*; do
	a=${d##*/}
	aer=no
	[[ -e $d/aer_dev_fatal ]] && aer=yes
	[[ -e $d/aer_rootport_total_err_fatal ]] && aer=rootport
	service=-
	[[ -e /sys/bus/pci_express/devices/$a:pcie002 ]] && service=pcie002
	printf '%s class=%s driver=%s link=%s/%s of %s/%s aer=%s %s reset_method=[%s] power=%s enable=%s\n' \
		"$a" "$(attr "$a" class)" "$(driver_of "$a")" \
		"$(attr "$a" current_link_width)" "$(attr "$a" current_link_speed)" \
		"$(attr "$a" max_link_width)" "$(attr "$a" max_link_speed)" "$aer" "$service" \
		"$(attr "$a" reset_method)" "$(attr "$a" power_state)" "$(attr "$a" enable)"
done

# --- Link: x-speed/x-width on the root port; the default ports ---
expect x-speed-sets-the-port-max-speed "$(attr "$RP_LINK" max_link_speed)" "8.0 GT/s PCIe"
expect x-width-sets-the-port-max-width "$(attr "$RP_LINK" max_link_width)" "4"
expect default-port-max-speed "$(attr "$RP_E1000E" max_link_speed)" "16.0 GT/s PCIe"
expect default-port-max-width "$(attr "$RP_E1000E" max_link_width)" "32"
check device-behind-the-port [ -n "$VIRTIO_AER" ]

check vfio-pci-loads modprobe vfio-pci
reporting_on_e1000e=$(reporting "$E1000E")
run "$VFIOCTL" bind "$E1000E" "$NVME" "$E1000_A" "$E1000_B"
expect bind-four "$RC" 0
# The virtio-net is judged as a declared device and stays on virtio-pci:
# unbinding it raced QEMU 10's TCG memory map (iotlb_to_section assertion)
# in one run of four.
run "$VFIOCTL" persist add "$VIRTIO_AER"
expect declare-virtio "$RC" 0
reporting_on_vfio=$(reporting "$E1000E")
echo "Device Control error reporting of $E1000E: $reporting_on_e1000e on e1000e, $reporting_on_vfio on vfio-pci"

# check's expectation is the narrowest and slowest maximum on the path.
path_min() {
	local w s f
	w=$(for f in "$@"; do attr "$f" max_link_width; done | sort -n | head -n1)
	s=$(for f in "$@"; do attr "$f" max_link_speed; done | awk '{print $1 + 0}' | sort -g | head -n1)
	echo "x$w, $s GT/s expected"
}
check_json
grep -o '"health\.[a-z]*\.[^"]*"' "$JSON" | sort -u
expect_verdict link-behind-x-width-port "health.link.$VIRTIO_AER" OK \
	"x$(attr "$VIRTIO_AER" current_link_width) at $(attr "$VIRTIO_AER" current_link_speed) on 2 function(s) up to root port $RP_LINK ($(path_min "$VIRTIO_AER" "$RP_LINK"))"
expect_verdict link-behind-default-port "health.link.$E1000E" OK "($(path_min "$E1000E" "$RP_E1000E"))"

# --- Reset: what the kernel lists, and check's verdict ---
# The two e1000 share the bus behind the PCIe-to-PCI bridge: the first
# enumerated got "bus" (probed while alone on the bus), the second nothing.
for dev in "$E1000E" "$VIRTIO_AER" "$NVME" "$E1000_A" "$E1000_B"; do
	methods=$(attr "$dev" reset_method)
	echo "reset_method of $dev: [$methods]; check: $(verdict "health.reset.$dev")"
	if [[ $methods == - ]]; then
		expect_verdict "reset-$dev" "health.reset.$dev" CRITICAL "no reset_method"
	elif [[ $methods == bus ]]; then
		expect_verdict "reset-$dev" "health.reset.$dev" WARNING "only reset is a bus reset, which also resets"
	else
		expect_verdict "reset-$dev" "health.reset.$dev" OK "reset by ${methods// /, else }"
	fi
done
expect_verdict link-of-conventional-pci "health.link.$E1000_A" OK "no PCIe link to judge"

# --- AER: does the kernel own it below the root ports? ---
if [[ ! -e /sys/bus/pci_express/devices/$RP_E1000E:pcie002 ]]; then
	fail aer-service "no /sys/bus/pci_express/devices/$RP_E1000E:pcie002: the kernel does not own AER here"
	expect_verdict aer-not-judged-without-service "health.aer.$E1000E" OK "not judged: the OS does not own AER"
	exit 0
fi
pass aer-service
expect_verdict aer-first-baseline "health.aer.$E1000E" OK "baseline taken (first seen)"

# The device itself (the virtio-net behind the x-width port, declared):
# an error it reports moves its own counters; a correctable rate above 0
# per hour (check.toml) warns. (QEMU's e1000e has an AER capability, but
# its Device Control error reporting enables are read-only 0: it never
# reports, so only its root port's counters can move for it.)
echo on >"$SYS/$VIRTIO_AER/power/control"
echo "$VIRTIO_AER: power $(attr "$VIRTIO_AER" power_state), error reporting $(reporting "$VIRTIO_AER")"
mkdir -p /etc/vfioctl
printf '[aer]\ncorrectable_per_hour = 0\n' >/etc/vfioctl/check.toml
check_json
expect_verdict device-baseline "health.aer.$VIRTIO_AER" OK "up to root port $RP_LINK"
check e1000e-enables-stay-off setpci -s "$E1000E" CAP_EXP+8.w=000f:000f
expect e1000e-never-reports "$(reporting "$E1000E")" 0
expect virtio-reports "$(reporting "$VIRTIO_AER")" f
before=$(total "$VIRTIO_AER" aer_dev_correctable)
check inject-correctable inject virtioaer RCVR
check correctable-counted wait_for 30 moved "$VIRTIO_AER" aer_dev_correctable "$before"
echo "aer_dev_correctable of $VIRTIO_AER:"; grep -v ' 0$' "$SYS/$VIRTIO_AER/aer_dev_correctable"
check_json
expect_verdict correctable-rate-is-warning "health.aer.$VIRTIO_AER" WARNING "correctable error(s) per hour at $VIRTIO_AER"
check_json --new-aer-baseline
check_json
expect_verdict device-ok-after-new-baseline "health.aer.$VIRTIO_AER" OK "no new errors"
rm -f /etc/vfioctl/check.toml

# An error the root port above the other e1000e detects (its link partner):
# counted in the port's aer_dev_* and judged for the device below it.
target=$RP_E1000E qemu_id=rp1
before=$(total "$target" aer_dev_fatal)
check inject-fatal-at-port inject "$qemu_id" DLP
check fatal-counted-at-port wait_for 30 moved "$target" aer_dev_fatal "$before"
echo "aer_dev_fatal of $target:"; grep -v ' 0$' "$SYS/$target/aer_dev_fatal"
for f in current_link_speed current_link_width max_link_speed max_link_width power_state; do
	printf '%s/%s: ' "$target" "$f"; cat "$SYS/$target/$f" 2>&1 || true
done
dmesg | grep -i 'aer' | tail -n 12
check_json
expect_verdict fatal-rise-is-critical "health.aer.$E1000E" CRITICAL "1 new fatal error(s) at $target"
check_json
expect_verdict fatal-rise-stays-reported "health.aer.$E1000E" CRITICAL "new fatal error(s) at $target"
check_json --new-aer-baseline
expect_verdict new-baseline-asked "health.aer.$E1000E" OK "baseline taken (asked for)"
check_json
expect_verdict ok-after-new-baseline "health.aer.$E1000E" OK "no new errors"

# The recovery of that fatal error (a link reset at the root port) failed
# in QEMU ("Data Link Layer Link Active not set"), and the reset left the
# e1000e's BARs unprogrammed: check sees BAR0 read 0 where the kernel
# assigned an address.
expect_verdict bars-after-failed-recovery "health.bars.$E1000E" CRITICAL "BAR0 reads 0 although the kernel assigned it an address"
# And the root port's link capability now reads 0 (max_link_width 0 while
# the link runs x1): the path cannot be judged.
expect_verdict link-after-failed-recovery "health.link.$E1000E" UNKNOWN "link capability unreadable: max_link_width reads 0 at $RP_E1000E"

# Nonfatal: a poisoned TLP is nonfatal by default (Uncorrectable Error Severity).
before=$(total "$target" aer_dev_nonfatal)
check inject-nonfatal-at-port inject "$qemu_id" POISON_TLP
check nonfatal-counted-at-port wait_for 30 moved "$target" aer_dev_nonfatal "$before"
check_json
expect_verdict nonfatal-rise-is-warning "health.aer.$E1000E" WARNING "new nonfatal error(s) at $target"
check_json --new-aer-baseline
check_json
expect_verdict ok-at-the-end "health.aer.$E1000E" OK "no new errors"

# The root port counted everything below it.
echo "root port $RP_E1000E totals: cor=$(attr "$RP_E1000E" aer_rootport_total_err_cor) nonfatal=$(attr "$RP_E1000E" aer_rootport_total_err_nonfatal) fatal=$(attr "$RP_E1000E" aer_rootport_total_err_fatal)"
run "$VFIOCTL" check --prometheus -
grep -E '^vfioctl_pcie_(aer|link)' <<<"$OUT" | grep -E "$E1000E|$RP_E1000E|$RP_LINK|$VIRTIO_AER"
run "$VFIOCTL" show "$E1000E"
run "$VFIOCTL" restore "$NVME" "$E1000_A" "$E1000_B"
expect restore-three "$RC" 0
run "$VFIOCTL" persist remove "$VIRTIO_AER"
expect undeclare-virtio "$RC" 0
# After the failed recovery e1000e's probe fails: the first e1000e stays on
# vfio-pci; check says what it sees of it.
run "$VFIOCTL" check
