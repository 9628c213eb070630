# shellcheck shell=bash
# The Ansible collection inside the guest (connection: local): the
# gpu_passthrough role declares and binds the e1000e and writes its boot
# files; a second run changes nothing; `vfioctl check` then passes (check
# mode is proven on fake hosts by make test-ansible). Uses the
# ansible-core venv `make test-ansible` leaves in target/ansible (the guest
# sees the host's / read-only); skips when there is none.
# boot: iommu=on udev=on
# timeout: 600

venv=$VM_REPO/target/ansible/venv
if [[ ! -x $venv/bin/ansible-playbook ]]; then
	skip ansible-role "no ansible-core venv at $venv (make test-ansible creates it)"
	return 0
fi

run() {
	OUT=$("$@" 2>&1)
	RC=$?
}
# recap FIELD: the number after FIELD= in the play recap of $OUT.
recap() { sed -n "s/^localhost .* $1=\([0-9]*\).*/\1/p" <<<"$OUT"; }

# The collection straight from the checkout, as ansible_collections/vfioctl/vfioctl.
mkdir -p /tmp/ansible/ansible_collections/vfioctl
ln -sfn "$VM_REPO/ansible" /tmp/ansible/ansible_collections/vfioctl/vfioctl
export ANSIBLE_COLLECTIONS_PATH=/tmp/ansible ANSIBLE_NOCOLOR=1 ANSIBLE_PYTHON_INTERPRETER=$venv/bin/python ANSIBLE_PIPELINING=1

# The shipped rule, pointing at the vfioctl under test (make install's job).
sed "s|/usr/sbin/vfioctl|$VFIOCTL|" "$VM_REPO/udev-rules/70-vfioctl.rules" >/usr/lib/udev/rules.d/70-vfioctl.rules
udevadm control --reload

cat >/tmp/ansible/site.yml <<PLAY
- name: Pass the e1000e through
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: vfioctl.vfioctl.gpu_passthrough
      vars:
        gpu_passthrough_devices: ["$E1000E"]
        gpu_passthrough_install_package: false
        gpu_passthrough_binary: "$VFIOCTL"
        gpu_passthrough_update_initramfs: false
        # Each module run costs seconds under TCG: vfioctl check runs below,
        # and the Nova export is proven on fake hosts.
        gpu_passthrough_check: false
        gpu_passthrough_nova: false
PLAY

run "$venv/bin/ansible-playbook" -i localhost, /tmp/ansible/site.yml
expect first-run-exit "$RC" 0
check first-run-changed test "$(recap changed)" -gt 0
expect first-run-failed "$(recap failed)" 0
expect e1000e-on-vfio-pci "$(driver_of "$E1000E")" vfio-pci
check e1000e-declared grep -q "\"key\": \"$E1000E\"" <<<"$("$VFIOCTL" persist list --json)"
check boot-files-written test -s /etc/modprobe.d/vfioctl.conf
[[ $RC == 0 ]] || echo "$OUT" | tail -30

run "$venv/bin/ansible-playbook" -i localhost, /tmp/ansible/site.yml
expect second-run-exit "$RC" 0
expect second-run-unchanged "$(recap changed)" 0

run "$VFIOCTL" check
expect vfioctl-check-ok "$RC" 0
[[ $RC == 0 ]] || echo "$OUT"

# Leave the device as the boot had it.
"$VFIOCTL" host-config --remove >/dev/null
"$VFIOCTL" persist remove "$E1000E" >/dev/null
"$VFIOCTL" restore "$E1000E" >/dev/null
expect cleaned-up "$(driver_of "$E1000E")" e1000e
