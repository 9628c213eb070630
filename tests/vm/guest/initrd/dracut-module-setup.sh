#!/bin/bash
# shellcheck disable=SC2154 # dracut sets moddir
# Test-bed-only dracut module (tests/vm/guest/initrd): mounts the test bed's
# root for root=vmtest. Added with --add vmtest by the builder guest.
check() { return 255; }
depends() { echo base; }
installkernel() { hostonly='' instmods virtio_pci 9pnet_virtio 9p overlay; }
install() {
	inst_hook cmdline 99 "$moddir/vmtest-cmdline.sh"
	inst_hook mount 99 "$moddir/vmtest-mount.sh"
	inst_multiple mkdir uname dmesg
}
