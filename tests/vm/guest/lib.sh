# shellcheck shell=bash
# Helpers for scenario scripts, sourced in the guest by run-scenario.
#
# Check results are markers on fd 3 (the serial console), which the host
# turns into PASS/FAIL/SKIP lines:
#   @@CHECK pass SCENARIO/NAME
#   @@CHECK fail SCENARIO/NAME detail
#   @@CHECK skip SCENARIO/NAME reason
# Everything else a scenario prints goes to its log (kept by the host).

SYS=/sys/bus/pci/devices
export VFIOCTL=${VFIOCTL_BIN:?the host did not say where vfioctl is}
GUEST=$VM_REPO/tests/vm/guest

mark() {
	printf '%s\n' "$*" >&3
	printf '%s\n' "$*"
}

pass() { mark "@@CHECK pass $VM_SCENARIO/$1"; }

fail() {
	local name=$1
	shift
	mark "@@CHECK fail $VM_SCENARIO/$name $*"
}

skip() {
	local name=$1
	shift
	mark "@@CHECK skip $VM_SCENARIO/$name $*"
}

# check NAME COMMAND...: pass when the command succeeds, else fail with the
# last line it printed.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		pass "$name"
	else
		fail "$name" "$(printf '%s\n' "$out" | tail -n1) [$*]"
	fi
}

# expect NAME ACTUAL WANTED
expect() {
	if [[ $2 == "$3" ]]; then
		pass "$1"
	else
		fail "$1" "got '$2', want '$3'"
	fi
}

# wait_for SECONDS COMMAND...: poll the command every 0.1 s until it succeeds
# or the deadline passes.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# wr FILE VALUE: write to sysfs; on failure print only the error text
# (e.g. "Device or resource busy") and return 1.
wr() {
	local err
	if err=$({ printf '%s' "$2" >"$1"; } 2>&1); then
		return 0
	fi
	printf '%s\n' "${err##*: }"
	return 1
}

# driver_of BDF: the bound driver's name, or "none".
driver_of() {
	local link
	if link=$(readlink "$SYS/$1/driver"); then
		echo "${link##*/}"
	else
		echo none
	fi
}

is_driver() { [[ $(driver_of "$1") == "$2" ]]; }

# group_of BDF: the IOMMU group number, or nothing.
group_of() {
	local link
	link=$(readlink "$SYS/$1/iommu_group") && echo "${link##*/}"
}

# entries DIR: the names in a directory, sorted (glob order), on one line.
entries() {
	local d out=()
	for d in "$1"/*; do
		[[ -e $d ]] && out+=("${d##*/}")
	done
	echo "${out[*]}"
}

# group_members BDF: the addresses in the device's IOMMU group, on one line.
group_members() { entries "$SYS/$1/iommu_group/devices"; }

# netdevs BDF: the device's network interfaces, on one line.
netdevs() { entries "$SYS/$1/net"; }

has_netdev() { [[ -n $(netdevs "$1") ]]; }

# below BDF: the functions on a bridge's secondary bus, on one line.
below() {
	local d out=()
	for d in "$SYS/$1"/????:??:??.?; do
		[[ -e $d ]] && out+=("${d##*/}")
	done
	echo "${out[*]}"
}

# gone PATH: true when PATH does not exist (for wait_for).
gone() { [[ ! -e $1 ]]; }

# pycheck SCRIPT ARGS...: run a Python check script from tests/vm/guest; it
# reports through the same markers (vmcheck.py).
pycheck() {
	local script=$1
	shift
	PYTHONPATH=$GUEST /usr/bin/python3 "$GUEST/$script" "$@"
}

# qmp JSON: ask the host to run one QMP command (a single-line JSON object)
# and print its reply; returns 1 on an error reply or no reply in 30 s.
qmp() {
	local id="$VM_SCENARIO.$BASHPID.$RANDOM"
	local reply="/vmshare/qmp/$id.json"
	mark "@@QMP $id $1"
	if ! wait_for 30 test -e "$reply"; then
		echo "no QMP reply from the host for: $1"
		return 1
	fi
	cat "$reply"
	echo
	grep -q '"return"' "$reply"
}

have_igb() { [[ -n ${IGB:-} ]]; }

# hold PATH TAG: a background process holding PATH open; its PID in $HOLDER
# once the file is open.
hold() {
	rm -f "/tmp/held-$2"
	python3 -c "import os,sys,time; os.open(sys.argv[1], os.O_RDWR); open(sys.argv[2],'w').close(); time.sleep(600)" \
		"$1" "/tmp/held-$2" &
	HOLDER=$!
	wait_for 30 test -e "/tmp/held-$2"
}

release() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# writers_waiting: the PIDs of vfioctl processes still running once the
# vfioctl command that started them has returned: the helper each blocked
# sysfs write runs in, waiting in the kernel. The deadline contract without a
# clock: while a holder keeps the unbind blocked, vfioctl must come back with
# its helper still waiting (it returned by its deadline, not by the write's
# end); the helper ends once the holder lets go.
writers_waiting() {
	local exe p pids=()
	exe=$(readlink -f "$VFIOCTL")
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == "$exe" ]] && pids+=("${p#/proc/}")
	done
	((${#pids[@]})) && echo "${pids[*]}"
}
no_writers_waiting() { ! writers_waiting >/dev/null; }

# libvirtd for scenarios that start domains (QEMU inside the guest): no
# systemd in the guest, so QEMU's logs go to files (no virtlogd), QEMU runs
# as root, and no namespace or cgroup setup is asked of the guest. Checks
# that it starts and answers; PIDFILE is what the scenario kills at its end.
start_libvirtd_for_domains() { # PIDFILE
	mkdir -p /run/libvirt /var/lib/libvirt/qemu /var/cache/libvirt /var/log/libvirt/qemu /etc/libvirt
	grep -q '^stdio_handler = "file"' /etc/libvirt/qemu.conf 2>/dev/null ||
		printf '%s\n' 'stdio_handler = "file"' 'user = "root"' 'group = "root"' 'namespaces = []' \
			'cgroup_controllers = []' 'remember_owner = 0' >>/etc/libvirt/qemu.conf
	check libvirtd-starts libvirtd --daemon --pid-file="$1"
	check libvirtd-answers wait_for 90 virsh -q -c qemu:///system list --all
}
