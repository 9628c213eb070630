# shellcheck shell=bash
# Binding benchmark (not part of `make test`: `make bench-vm`, or
# `tests/vm/run --bench binding`): binds 1 device (the e1000e, from e1000e),
# N VFs (the nvme's 2, driverless with autoprobe off; the igb's 7, from
# igbvf) and several devices of different drivers at once (the NVMe
# controller, the e1000e and the igb's 7 VFs) to vfio-pci and back, REPS
# times each, by:
#   shell    driver_override + unbind + drivers_probe per device, bash
#            builtins only (no process started): about the kernel's own time;
#   shellpar (several devices only) the same writes, each device's in a
#            background job (a forked bash), then `wait`: the kernel's time
#            when the devices change at once;
#   vfioctl  one `vfioctl bind DEVICES...`, one `vfioctl restore DEVICES...`;
#   vfioctl1 one `vfioctl bind` and `restore` per device (as udev-hook runs);
#   virsh    `virsh nodedev-detach` / `nodedev-reattach`, one call per device
#            (libvirtd in the guest, as in 40-libvirt-nodedev).
# Also timed: `vfioctl --version` (process start) and `vfioctl bind
# --dry-run` (reads and checks, no writes). Every run is checked to end where
# it should; times go to /run/vmtest/binding-times, the tables to the log
# and /vmshare/results/binding.md (binding-report.py).
# boot: iommu=on udev=on
# timeout: 1800

REPS=${VM_BENCH_REPS:-5}
times=/run/vmtest/binding-times
: >"$times"
modprobe vfio-pci
mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt
check libvirtd-starts libvirtd --daemon --pid-file=/run/vmtest/libvirtd-bench.pid
check libvirtd-answers wait_for 90 virsh -q -c qemu:///system nodedev-list --cap pci

# vf_list PF: the PF's VFs, on one line.
vf_list() {
	local l out=()
	for l in "$SYS/$1"/virtfn*; do
		l=$(readlink "$l")
		out+=("${l##*/}")
	done
	echo "${out[*]}"
}
nodedev() { local d=${1//[:.]/_}; echo "pci_$d"; }

bind_shell() {
	local d
	for d; do
		printf vfio-pci >"$SYS/$d/driver_override"
		[[ -e $SYS/$d/driver ]] && printf '%s' "$d" >"$SYS/$d/driver/unbind"
		printf '%s' "$d" >/sys/bus/pci/drivers_probe
	done
}
back_shell() {
	local d
	for d; do
		printf '\n' >"$SYS/$d/driver_override"
		[[ -e $SYS/$d/driver ]] && printf '%s' "$d" >"$SYS/$d/driver/unbind"
		printf '%s' "$d" >/sys/bus/pci/drivers_probe 2>/dev/null
	done
	return 0
}
# Each device's writes in its own background job, all at once.
bind_shellpar() {
	local d
	for d; do bind_shell "$d" & done
	wait
}
back_shellpar() {
	local d
	for d; do back_shell "$d" & done
	wait
}
bind_vfioctl() { "$VFIOCTL" bind "$@" >/dev/null; }
back_vfioctl() { "$VFIOCTL" restore "$@" >/dev/null; }
# One process per function, as the udev hook runs.
bind_vfioctl1() {
	local d
	for d; do "$VFIOCTL" bind "$d" >/dev/null || return 1; done
}
back_vfioctl1() {
	local d
	for d; do "$VFIOCTL" restore "$d" >/dev/null || return 1; done
}
bind_virsh() {
	local d
	for d; do virsh -q -c qemu:///system nodedev-detach "$(nodedev "$d")" >/dev/null || return 1; done
}
back_virsh() {
	local d
	for d; do virsh -q -c qemu:///system nodedev-reattach "$(nodedev "$d")" >/dev/null || return 1; done
}
dry_vfioctl() { "$VFIOCTL" bind --dry-run "$@" >/dev/null; }
version_vfioctl() { "$VFIOCTL" --version >/dev/null; }

# drivers_are WANT DEVICES...: every device on WANT ("none": no driver).
drivers_are() {
	local want=$1 d
	shift
	for d; do is_driver "$d" "$want" || return 1; done
}
drivers_of() {
	local d out=()
	for d; do out+=("$(driver_of "$d")"); done
	echo "${out[*]}"
}

# timed SET METHOD STEP N COMMAND...: runs it, appends "SET METHOD STEP N µS"
# (wall time from bash's clock: no process is started to read it).
timed() {
	local set=$1 method=$2 step=$3 n=$4 t0 t1
	shift 4
	t0=$EPOCHREALTIME
	"$@"
	local rc=$?
	t1=$EPOCHREALTIME
	echo "$set $method $step $n $((${t1/./} - ${t0/./}))" >>"$times"
	return $rc
}

# drivers_now_are WANT DEVICES...: the devices' drivers are WANT, a list as
# drivers_of prints it.
drivers_now_are() {
	local want=$1
	shift
	[[ $(drivers_of "$@") == "$want" ]]
}

# on_host_drivers DEVICES...: every device on a driver, none on vfio-pci.
on_host_drivers() {
	local d
	for d; do
		[[ $(driver_of "$d") != none && $(driver_of "$d") != vfio-pci ]] || return 1
	done
}

failures=0
# bench SET NATIVE DEVICES...: REPS rounds of each method of METHODS, there
# and back. NATIVE is the driver every device starts on, or "mixed": each
# device's own (as found), which every run must give back.
METHODS="shell vfioctl vfioctl1 virsh"
bench() {
	local set=$1 native=$2 rep method natives
	shift 2
	local n=$#
	if [[ $native == mixed ]]; then
		check "$set-starts-on-host-drivers" on_host_drivers "$@"
		natives=$(drivers_of "$@")
	else
		check "$set-starts-on-$native" drivers_are "$native" "$@"
		natives=$(drivers_of "$@")
	fi
	for ((rep = 0; rep < REPS; rep++)); do
		timed "$set" vfioctl dry-run "$n" dry_vfioctl "$@"
		for method in $METHODS; do
			# One device: one process either way.
			[[ $method == vfioctl1 && $n == 1 ]] && continue
			timed "$set" "$method" bind "$n" "bind_$method" "$@"
			if ! drivers_are vfio-pci "$@"; then
				fail "$set-$method-bind-$rep" "drivers: $(drivers_of "$@")"
				((failures++))
			fi
			timed "$set" "$method" back "$n" "back_$method" "$@"
			# igbvf and e1000e probe synchronously; allow a slow reprobe anyway.
			if ! wait_for 10 drivers_now_are "$natives" "$@"; then
				fail "$set-$method-back-$rep" "drivers: $(drivers_of "$@")"
				((failures++))
				back_shell "$@"
			fi
		done
	done
	check "$set-ends-on-${native/#mixed/its-drivers}" drivers_now_are "$natives" "$@"
}

for ((rep = 0; rep < REPS; rep++)); do
	timed process vfioctl version 1 version_vfioctl
done

bench e1000e e1000e "$E1000E"

wr "$SYS/$NVME/sriov_drivers_autoprobe" 0
check nvme-vfs-created wr "$SYS/$NVME/sriov_numvfs" 2
read -ra nvme_vfs <<<"$(vf_list "$NVME")"
check libvirt-sees-nvme-vfs wait_for 30 virsh -q -c qemu:///system nodedev-dumpxml "$(nodedev "${nvme_vfs[-1]}")"
bench nvme-vfs none "${nvme_vfs[@]}"
wr "$SYS/$NVME/sriov_numvfs" 0
wr "$SYS/$NVME/sriov_drivers_autoprobe" 1

if have_igb; then
	check igb-vfs-created wr "$SYS/$IGB/sriov_numvfs" 7
	read -ra igb_vfs <<<"$(vf_list "$IGB")"
	check igb-vfs-on-igbvf wait_for 60 drivers_are igbvf "${igb_vfs[@]}"
	check libvirt-sees-igb-vfs wait_for 30 virsh -q -c qemu:///system nodedev-dumpxml "$(nodedev "${igb_vfs[-1]}")"
	bench igb-vfs igbvf "${igb_vfs[@]}"
else
	skip igb-vfs "no igb in $VM_QEMU"
fi

# Several devices of different drivers at once: the NVMe controller (no
# VFs now), the e1000e and the igb's VFs (when there is an igb).
several=("$NVME" "$E1000E")
have_igb && several+=("${igb_vfs[@]}")
METHODS="shell shellpar vfioctl" bench several mixed "${several[@]}"
have_igb && wr "$SYS/$IGB/sriov_numvfs" 0

expect every-run-ended-as-it-should "$failures" 0
kill "$(cat /run/vmtest/libvirtd-bench.pid)"
pycheck binding-report.py "$times" "$(readlink -f "$VFIOCTL")"
