# shellcheck shell=bash
# PCIe hot-add and removal through QMP into the empty root port. Shows the
# order a udev hook must cope with: the kernel binds the native driver before
# udev handles the add event. The rule logging events comes from the base
# overlay (tests/vm/guest/overlay), in place before udev started.
# boot: iommu=on udev=on
# timeout: 90

uevents=/run/vmtest/uevents
has_device() { [[ -n $(below "$RP_HOT") ]]; }
logged() { grep -q "^$1 $2 " "$uevents" 2>/dev/null; }

expect hot-port-starts-empty "$(below "$RP_HOT")" ""
check cold-plug-events-logged logged add "$E1000E"

check device-add qmp '{"execute":"device_add","arguments":{"driver":"e1000e","id":"hot1","bus":"rp3","romfile":""}}'
check device-appears wait_for 30 has_device
hot=$(below "$RP_HOT")
check native-driver-binds wait_for 20 is_driver "$hot" e1000e
check udev-rule-fires-on-add wait_for 20 logged add "$hot"
# The rule logged the driver it saw bound while handling "add".
expect driver-bound-before-udev-add "$(grep "^add $hot " "$uevents" | head -n1)" "add $hot driver=e1000e"
check bind-event-logged wait_for 10 logged bind "$hot"
expect hot-device-alone-in-group "$(group_members "$hot")" "$hot"

check device-del qmp '{"execute":"device_del","arguments":{"id":"hot1"}}'
# pciehp waits out the attention-button period (~5 s) before removing.
check device-goes-away wait_for 40 gone "$SYS/$hot"
check udev-rule-fires-on-remove wait_for 20 logged remove "$hot"
