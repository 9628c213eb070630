# shellcheck shell=bash
# vfioctl nodedev and nova against libvirtd in the guest: libvirt and sysfs
# agree on every device; e1000e is type-PCI, the nvme PF type-PF with no VF
# enabled, its VFs type-VF; the generated nova.conf names type-PF for the PF;
# one-time-use names the PF's provider after libvirt's hostname, refuses the VF.
# boot: iommu=on udev=on
# timeout: 180

run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
# field JSON ADDRESS EXPR: evaluate EXPR on the nodedev entry of ADDRESS.
field() {
	python3 -c '
import json, sys
data = json.loads(sys.argv[1])
entry = [d for d in data["devices"] if d["address"] == sys.argv[2]][0]
print(eval(sys.argv[3], {}, {"e": entry}))' "$OUT" "$1" "$2"
}

mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt
check libvirtd-starts libvirtd --daemon --pid-file=/run/vmtest/libvirtd-45.pid
check libvirtd-answers wait_for 90 virsh -q -c qemu:///system nodedev-list --cap pci

run "$VFIOCTL" nodedev --json
expect nodedev-exit "$RC" 0
expect libvirt-and-sysfs-agree "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["agree"], [x["disagreements"] for x in d["devices"] if x["disagreements"]])' "$OUT")" "True []"
expect e1000e-type-pci "$(field "$E1000E" 'e["libvirt"]["nova_device_type"]')" type-PCI
expect nvme-pf-type-pf-with-no-vf "$(field "$NVME" 'e["libvirt"]["nova_device_type"]')" type-PF
expect nvme-numvfs-zero "$(cat "$SYS/$NVME/sriov_numvfs")" 0

wr "$SYS/$NVME/sriov_drivers_autoprobe" 0
wr "$SYS/$NVME/sriov_numvfs" 2
vf=$(readlink "$SYS/$NVME/virtfn1")
vf=${vf##*/}
check libvirt-learns-the-vf wait_for 30 virsh -q -c qemu:///system nodedev-dumpxml "pci_${vf//[:.]/_}"
run "$VFIOCTL" nodedev "$NVME" "$vf" --json
expect vf-type-vf "$(field "$vf" 'e["libvirt"]["nova_device_type"]')" type-VF
expect vf-parent-is-the-pf "$(field "$vf" 'e["libvirt"]["nova_parent"]')" "$NVME"
expect pf-still-type-pf "$(field "$NVME" 'e["libvirt"]["nova_device_type"]')" type-PF
expect vfs-agree-with-sysfs "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["agree"])' "$OUT")" True

# One-time-use (2025.2): the PF's Placement provider is named after this
# host's name, which is the hypervisor hostname libvirt reports (what Nova
# names providers after), or the output says they may differ; the VF, type-VF
# by libvirt, is refused.
lv_host=$(virsh -q -c qemu:///system hostname)
run "$VFIOCTL" nova "$NVME" --release 2025.2 --placement --one-time-use --json
expect nova-otu-exit "$RC" 0
otu_name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["one_time_use"]["providers"][0]["name"])' "$OUT")
if [[ $otu_name == "${lv_host}_${NVME^^}" ]]; then
	pass nova-otu-provider-named-after-libvirts-hostname
else
	check nova-otu-note-says-libvirts-name-may-differ grep -q "libvirt reports a name without a dot" <<<"$OUT"
fi
run "$VFIOCTL" nova "$vf" --release 2025.2 --placement --one-time-use
expect nova-otu-vf-refused "$RC" 2
check nova-otu-vf-reason grep -q "$vf is a VF (type-VF)" <<<"$OUT"

# The Nova configuration for the PF (Train: passthrough_whitelist) says type-PF.
run "$VFIOCTL" nova "$NVME" --release train --alias nvme-pf
expect nova-exit "$RC" 0
check nova-alias-is-type-pf grep -q '"device_type": "type-PF"' <<<"$OUT"
check nova-train-uses-passthrough-whitelist grep -q '^passthrough_whitelist = ' <<<"$OUT"
check nova-device-type-from-libvirt grep -qi "libvirt" <<<"$OUT"
run "$VFIOCTL" nova "$NVME" --release 2024.1 --alias nvme-pf --json
check nova-2024-uses-device-spec python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert "device_spec" in json.dumps(d)' "$OUT"

wr "$SYS/$NVME/sriov_numvfs" 0
wr "$SYS/$NVME/sriov_drivers_autoprobe" 1
kill "$(cat /run/vmtest/libvirtd-45.pid)"
