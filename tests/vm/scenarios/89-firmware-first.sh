# shellcheck shell=bash
# Firmware-first AER on a real kernel. Booted with pcie_ports=compat the OS
# owns no PCIe port service: no root port has its AER service (pcie002),
# while devices keep their aer_dev_* counters, which then stay 0, as on
# servers whose firmware keeps AER (ACPI _OSC). The declared e1000e
# (overlay persist-boot) is on vfio-pci at boot. check exits 0 with the
# note (its AER family not judged, and why: the human first line, JSON's
# not_judged, the Prometheus info series, --npd's line); with check.toml
# choosing WARNING for it, check exits 1 and --npd says a problem (1).
# boot: iommu=on udev=on overlay=persist-boot pcie_ports=compat
# timeout: 180

# run COMMAND...: run it, keeping its output in $OUT and its status in $RC.
run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}
contains() { [[ $1 == *"$2"* ]]; }
# check's line for one check id: "STATUS  ID  MESSAGE".
line_of() { awk -v id="$1" '$2 == id' <<<"$OUT"; }

check booted-with-compat grep -qw pcie_ports=compat /proc/cmdline
services=$(find /sys/bus/pci_express/devices -name '*:pcie002' 2>/dev/null | wc -l)
expect no-aer-service-at-any-port "$services" 0
check counters-still-there test -e "$SYS/$E1000E/aer_dev_fatal"
check declared-device-on-vfio-at-boot wait_for 30 is_driver "$E1000E" vfio-pci

run "$VFIOCTL" check
expect check-ok-exit "$RC" 0
first=$(head -n1 <<<"$OUT")
check first-line-is-ok contains "$first" "VFIOCTL OK - "
check first-line-has-the-note contains "$first" "not judged: firmware-first AER on 1 "
aer=$(line_of "health.aer.$E1000E")
check aer-ok-not-judged contains "$aer" "OK"
check aer-says-why contains "$aer" "not judged: the OS does not own AER below root port $RP_E1000E (no /sys/bus/pci_express/devices/$RP_E1000E:pcie002"
check link-still-judged contains "$(line_of "health.link.$E1000E")" "expected"

run "$VFIOCTL" check --json
check json-not-judged python3 -c '
import json, sys
doc = json.load(sys.stdin)
aer = [c for c in doc["checks"] if c["id"] == "health.aer." + sys.argv[1]][0]
assert doc["exit_code"] == 0, doc["exit_code"]
assert aer["not_judged"] == "firmware_first_aer", aer
assert doc["not_judged"] == {"firmware_first_aer": 1}, doc["not_judged"]
assert doc["summary"].startswith("VFIOCTL OK - "), doc["summary"]' "$E1000E" <<<"$OUT"

run "$VFIOCTL" check --prometheus -
check prometheus-info-series grep -qE "^vfioctl_device_not_judged_info\\{check=\"health.aer.$E1000E\",address=\"$E1000E\",segment=\"[0-9a-f]{4}\",bus=\"[0-9a-f]{2}\",device=\"[0-9a-f]{2}\",function=\"[0-7]\",reason=\"firmware_first_aer\"\\} 1$" <<<"$OUT"

run "$VFIOCTL" check --npd
expect npd-ok-exit "$RC" 0
check npd-line-fits test "${#OUT}" -le 80

mkdir -p /etc/vfioctl
printf '[not_judged]\nfirmware_first_aer = "warning"\n' >/etc/vfioctl/check.toml
run "$VFIOCTL" check
expect check-warning-exit "$RC" 1
check warning-first-line contains "$(head -n1 <<<"$OUT")" "VFIOCTL WARNING - 1 warning: health.aer.$E1000E"
check warning-remedy contains "$(line_of "health.aer.$E1000E")" "-> read the firmware's (BMC's) error log"
run "$VFIOCTL" check --npd
expect npd-problem-exit "$RC" 1
rm -f /etc/vfioctl/check.toml
