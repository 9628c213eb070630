# shellcheck shell=bash
# The binding facts vfioctl relies on, checked by hand on a real kernel:
# driver_override + unbind + drivers_probe moves e1000e to vfio-pci and back.
# boot: iommu=on udev=on
# timeout: 60

dev=$E1000E
group=$(group_of "$dev")
vfio_node=/dev/vfio/$group

expect start-on-e1000e "$(driver_of "$dev")" e1000e
check start-has-netdev has_netdev "$dev"
expect alone-in-group "$(group_members "$dev")" "$dev"
expect no-override-at-start "$(cat "$SYS/$dev/driver_override")" "(null)"
check vfio-pci-loads modprobe vfio-pci

# Without an override, vfio-pci's own bind file refuses the device.
check unbind-from-e1000e wr "$SYS/$dev/driver/unbind" "$dev"
expect bind-without-override-fails "$(wr /sys/bus/pci/drivers/vfio-pci/bind "$dev")" "No such device"

# The override alone binds nothing; drivers_probe does.
check override-writes wr "$SYS/$dev/driver_override" vfio-pci
expect override-reads-back "$(cat "$SYS/$dev/driver_override")" vfio-pci
expect override-alone-binds-nothing "$(driver_of "$dev")" none
check drivers-probe-writes wr /sys/bus/pci/drivers_probe "$dev"
check bound-to-vfio-pci wait_for 10 is_driver "$dev" vfio-pci
check vfio-group-node-appears wait_for 10 test -c "$vfio_node"
expect netdev-gone-on-vfio "$(netdevs "$dev")" ""

# Clearing takes "\n"; the binding stays until the next unbind + probe.
check override-clears wr "$SYS/$dev/driver_override" $'\n'
expect cleared-override-reads-null "$(cat "$SYS/$dev/driver_override")" "(null)"
expect still-on-vfio-pci-after-clear "$(driver_of "$dev")" vfio-pci
check unbind-from-vfio-pci wr "$SYS/$dev/driver/unbind" "$dev"
check vfio-group-node-goes wait_for 10 gone "$vfio_node"
check reprobe-writes wr /sys/bus/pci/drivers_probe "$dev"
check back-on-e1000e wait_for 10 is_driver "$dev" e1000e
check netdev-returns wait_for 10 has_netdev "$dev"

# "none" keeps every driver away until cleared.
wr "$SYS/$dev/driver_override" none
wr "$SYS/$dev/driver/unbind" "$dev"
wr /sys/bus/pci/drivers_probe "$dev"
expect override-none-binds-nothing "$(driver_of "$dev")" none
wr "$SYS/$dev/driver_override" $'\n'
wr /sys/bus/pci/drivers_probe "$dev"
check restored-after-none wait_for 10 is_driver "$dev" e1000e
