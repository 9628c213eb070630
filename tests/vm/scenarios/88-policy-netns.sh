# shellcheck shell=bash
# What the fakes cannot stage, on a real kernel (#24): the e1000e's routes
# living only in an `ip rule` table (policy routing: nothing in the main
# table, nothing in /proc/net/route), and its interface moved into another
# network namespace (`ip netns`: its net directory empty here). vfioctl
# reads every routing table through rtnetlink and sees the empty net
# directory: bind, persist add and host-config --write are refused, nothing
# changes; once the routes and the namespace are gone the same bind plans.
# boot: iommu=on udev=on
# timeout: 120

# run COMMAND...: run it, keeping its output in $OUT and its status in $RC.
run() {
	OUT=$("$@" 2>&1)
	RC=$?
	printf '$ %s\n%s\n[exit %s]\n' "$*" "$OUT" "$RC"
}

dev=$E1000E
ifc=$(netdevs "$dev")
expect one-interface "$(wc -w <<<"$ifc")" 1
ns=vfioctl-test
table=100

# refused NAME WORDS: bind, persist add and host-config --write of $dev are
# refused (exit 4) naming WORDS; the device stays on e1000e, nothing declared.
refused() {
	local name=$1 words=$2 decl=/etc/vfioctl/bindings.d/vmtest-88.toml
	run "$VFIOCTL" bind "$dev"
	expect "$name-bind-refused" "$RC" 4
	check "$name-bind-names-it" grep -qF "$words" <<<"$OUT"
	run "$VFIOCTL" persist add "$dev"
	expect "$name-persist-add-refused" "$RC" 4
	check "$name-persist-add-names-it" grep -qF "$words" <<<"$OUT"
	# A declaration written by hand: the boot files would claim the NIC.
	mkdir -p /etc/vfioctl/bindings.d
	printf '[[binding]]\nvendor = "%s"\ndevice = "%s"\naddress = "%s"\n' \
		"$(sed 's/^0x//' "$SYS/$dev/vendor")" "$(sed 's/^0x//' "$SYS/$dev/device")" "$dev" >"$decl"
	local before
	before=$(cat /etc/modprobe.d/vfioctl.conf 2>&1)
	run "$VFIOCTL" host-config --write
	expect "$name-host-config-refused" "$RC" 4
	check "$name-host-config-names-it" grep -qF "$words" <<<"$OUT"
	expect "$name-no-boot-file-written" "$(cat /etc/modprobe.d/vfioctl.conf 2>&1)" "$before"
	rm -f "$decl"
	expect "$name-still-on-e1000e" "$(driver_of "$dev")" e1000e
	expect "$name-override-untouched" "$(cat "$SYS/$dev/driver_override")" "(null)"
}

# Policy routing: a route in table 100 only, chosen by an ip rule.
check link-up ip link set "$ifc" up
check table-route ip route add 10.98.0.0/24 dev "$ifc" table "$table"
check rule-added ip rule add to 10.98.0.0/24 lookup "$table" pref 1000
expect main-table-empty "$(ip -4 route show table main dev "$ifc")" ""
expect proc-route-empty "$(awk -v i="$ifc" '$1 == i' /proc/net/route)" ""
expect no-addresses "$(ip -o addr show dev "$ifc" scope global)" ""
refused policy-route "$dev carries addresses on $ifc (routes in table $table)"
# A default route in that table is the default route.
check table-default ip route add default dev "$ifc" table "$table"
refused policy-default "$dev carries the default route ($ifc, table $table)"
ip rule del pref 1000
ip route flush table "$table"
ip link set "$ifc" down
run "$VFIOCTL" bind "$dev" --dry-run
expect routes-gone-bind-plans "$RC" 0

# Another network namespace: the interface moves there; here its net
# directory is empty.
check netns-added ip netns add "$ns"
check moved-to-netns ip link set "$ifc" netns "$ns"
expect net-dir-empty-here "$(netdevs "$dev")" ""
check interface-in-netns ip -n "$ns" link show "$ifc"
refused netns "$dev has the e1000e interface in another network namespace"
# --force may override it (the operator says the container is gone).
run "$VFIOCTL" bind "$dev" --dry-run --force
expect netns-force-plans "$RC" 0
check moved-back ip -n "$ns" link set "$ifc" netns 1
ip netns del "$ns"
check netdev-back wait_for 10 has_netdev "$dev"
run "$VFIOCTL" bind "$dev" --dry-run
expect netns-gone-bind-plans "$RC" 0
