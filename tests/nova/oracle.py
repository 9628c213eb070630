"""Nova itself judges `vfioctl nova`.

Reads one JSON document on stdin (written by `cargo test --test libvirt
nova_oracle`): the fake hosts' PCI functions and, for every release and
variant, vfioctl's controller and compute nova.conf and its openstack
commands. Each case runs through Nova's own code (the `nova` package from
PyPI, pinned in tests/nova/run):

- oslo.config loads both files; every option is one Nova registers (under
  its name or a deprecated one, which may only warn) or one vfioctl's facts
  say the release had and Nova 34 dropped;
- the alias parser (nova.pci.request) accepts the aliases;
- the device spec matcher (nova.pci.whitelist) picks exactly the devices
  vfioctl offered among all the host's functions;
- the flavor property, taken from the printed command, becomes PCI requests
  that the PciPassthroughFilter passes on pools built by nova.pci.stats;
- claiming that flavor again and again never gives two VMs devices of one
  IOMMU group, and every claim takes whole groups;
- the scheduler's filter loader (HostManager._choose_host_filters) loads
  every filter named;
- with --placement, the placement translator reports CUSTOM_ inventories for
  exactly the offered devices, and the flavor's request groups ask for those
  resource classes and traits.

Prints one line per failed check and ends with "N passed, N failed"; exits 1
when any failed.
"""

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")

import configparser
import copy
import json
import logging
import os
import sys
import tempfile
import time
import types
import uuid

import nova.conf
from oslo_log import versionutils
from nova import exception
from nova import objects
from nova.compute import pci_placement_translator
from nova.compute import provider_tree
from nova.pci import devspec
from nova.pci import request as pci_request
from nova.pci import stats as pci_stats
from nova.pci import utils as pci_utils
from nova.pci import whitelist
from nova.scheduler import filters as scheduler_filters
from nova.scheduler import host_manager
from nova.scheduler.filters import pci_passthrough_filter

CONF = nova.conf.CONF
objects.register_all()


class Warnings(logging.Handler):
    """Collects every warning Nova and oslo log while a file loads."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


WARNINGS = Warnings()
logging.getLogger().addHandler(WARNINGS)
logging.getLogger().setLevel(logging.WARNING)


class Results:
    def __init__(self, quiet=False):
        self.passed = 0
        self.failed = 0
        self.quiet = quiet
        self.messages = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.messages.append(what)
            if not self.quiet:
                print(f"FAIL {what}")


def ini_keys(text):
    """(section, key) pairs of an INI text, as oslo.config would read them."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    return [(s, k) for s in parser.sections() for k in parser[s]]


def known_options():
    """{(group, name): canonical name} for every option Nova registers,
    deprecated names included."""
    known = {}
    for group_name in list(CONF) + ["DEFAULT"]:
        group = CONF._groups.get(group_name) if group_name != "DEFAULT" else None
        opts = group._opts if group else CONF._opts
        for info in opts.values():
            opt = info["opt"]
            known[(group_name, opt.dest)] = opt.dest
            for dep in opt.deprecated_opts:
                known[(dep.group or group_name, dep.name)] = opt.dest
    return known


def load(text):
    """Loads one nova.conf text into Nova's CONF; returns the warnings."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nova.conf")
        with open(path, "w") as f:
            f.write(text)
        WARNINGS.messages = []
        # oslo.log reports each deprecation once per process; once per file here.
        versionutils._deprecated_messages_sent.clear()
        CONF(args=[], project="nova", default_config_files=[path])
        pci_request.get_alias_from_config.cache_clear()
        # Reading the options is what makes oslo warn about deprecated names.
        _ = (CONF.pci.alias, CONF.pci.device_spec, CONF.pci.report_in_placement,
             CONF.filter_scheduler.enabled_filters,
             CONF.filter_scheduler.pci_in_placement)
        return list(WARNINGS.messages)


def nova_dev(dev):
    """The dict nova-compute builds for a PCI function (what specs match)."""
    physfn = dev["sriov"].get("physfn")
    return {
        "vendor_id": dev["vendor_id"],
        "product_id": dev["device_id"],
        "address": dev["address"],
        "parent_addr": physfn,
        "dev_type": dev["nova_device_type"],
        "numa_node": dev["numa_node"] if (dev["numa_node"] or -1) >= 0 else None,
        "label": f"label_{dev['vendor_id']}_{dev['device_id']}",
        "dev_id": "pci_" + dev["address"].replace(":", "_").replace(".", "_"),
        "compute_node_id": 1,
        "capabilities": {},
    }


def answer_sysfs_from(devs):
    """Nova asks sysfs whether a spec's single address is a PF (sriov_totalvfs
    above 0) to match VFs by their parent: the compute node is the fake host
    here, so its functions answer."""
    pfs = {d["address"] for d in devs
           if d["sriov"].get("role") == "pf" and (d["sriov"].get("total_vfs") or 0) > 0}

    def is_physical_function(domain, bus, slot, function):
        return f"{domain}:{bus}:{slot}.{function}" in pfs

    pci_utils.is_physical_function = is_physical_function


def pci_objects(devs, wl):
    """objects.PciDevice for every function the device specs take."""
    out = []
    for dev in devs:
        d = nova_dev(dev)
        if wl.device_assignable(d):
            fields = {k: v for k, v in d.items() if k != "capabilities"}
            obj = objects.PciDevice.create(None, fields)
            obj.id = len(out) + 1
            out.append(obj)
    return out


def flavor_property(commands):
    for line in commands.splitlines():
        if line.startswith("openstack flavor set") and "pci_passthrough:alias=" in line:
            return line.split("pci_passthrough:alias=", 1)[1].split()[0]
    return None


def run_case(case, hosts, known, r):
    name = f"{case['host']} {' '.join(case['args'])} --release {case['release']}"
    devs = hosts[case["host"]]
    by_addr = {d["address"]: d for d in devs}
    offered = set(case["offered"])
    old_option_ok = set(case["facts"]["options_gone_in_nova_34"])

    # 1. Every option is Nova's (or a documented older one).
    for part in ("controller", "compute"):
        for section, key in ini_keys(case[part]):
            ok = (section, key) in known or f"{section}.{key}" in old_option_ok
            r.check(ok, f"{name}: {part} option [{section}] {key} is not one Nova 34 knows")

    # 2. Compute node: device specs pick exactly the offered devices.
    warnings = load(case["compute"])
    deprecated_ok = case["spec_option"] == "passthrough_whitelist"
    bad = [w for w in warnings
           if not (deprecated_ok and "passthrough_whitelist" in w and "deprecated" in w)]
    r.check(not bad, f"{name}: compute conf warns: {bad}")
    if deprecated_ok:
        r.check(any("passthrough_whitelist" in w for w in warnings),
                f"{name}: passthrough_whitelist loads without its deprecation warning")
    answer_sysfs_from(devs)
    try:
        wl = whitelist.Whitelist(CONF.pci.device_spec)
        aliases = pci_request.get_alias_from_config()
    except Exception as e:  # Nova refuses the file
        r.check(False, f"{name}: compute conf refused: {e!r}")
        return
    r.check(sorted(aliases) == sorted(case["aliases"]),
            f"{name}: compute aliases {sorted(aliases)} != {sorted(case['aliases'])}")
    matched = {d["address"] for d in devs if wl.device_assignable(nova_dev(d))}
    r.check(matched == offered,
            f"{name}: device specs match {sorted(matched)}, vfioctl offered {sorted(offered)}")
    pci_devs = pci_objects(devs, wl)

    def fresh_stats():
        s = pci_stats.PciDeviceStats(objects.NUMATopology(cells=[]), dev_filter=wl)
        for obj in pci_devs:
            s.add_device(copy.deepcopy(obj))
        return s

    stats = fresh_stats()

    # 3. Placement: the translator reports exactly the offered devices.
    inventories = {}
    rp_traits = {}
    if case["placement"]:
        r.check(CONF.pci.report_in_placement, f"{name}: report_in_placement is not on")
        tree = provider_tree.ProviderTree()
        tree.new_root("compute1", str(uuid.uuid4()))
        tracker = types.SimpleNamespace(pci_devs=pci_devs, dev_filter=wl, stats=stats)
        try:
            pci_placement_translator.update_provider_tree_for_pci(
                tree, "compute1", tracker, {}, [])
        except Exception as e:
            r.check(False, f"{name}: placement translator refused: {e!r}")
            return
        for rp_uuid in tree.get_provider_uuids():
            data = tree.data(rp_uuid)
            for rc, inv in data.inventory.items():
                inventories[rc] = inventories.get(rc, 0) + inv["total"]
                rp_traits.setdefault(rc, []).append(set(data.traits))
        want = {}
        for a in case["alias_records"]:
            rc = a["placement"]["resource_class"]
            want[rc] = want.get(rc, 0) + len(a["devices"])
        r.check(inventories == want,
                f"{name}: Placement inventories {inventories}, expected {want}")
        r.check(all(rc.startswith("CUSTOM_") for rc in inventories),
                f"{name}: non-custom resource class in {inventories}")

    # 4. Controller: aliases, filters, the flavor, the filter, group safety.
    warnings = load(case["controller"])
    r.check(not warnings, f"{name}: controller conf warns: {warnings}")
    try:
        aliases = pci_request.get_alias_from_config()
    except Exception as e:
        r.check(False, f"{name}: alias parser refused: {e!r}")
        return
    r.check(sorted(aliases) == sorted(case["aliases"]),
            f"{name}: aliases {sorted(aliases)} != {sorted(case['aliases'])}")

    manager = host_manager.HostManager.__new__(host_manager.HostManager)
    classes = scheduler_filters.HostFilterHandler().get_matching_classes(
        CONF.filter_scheduler.available_filters)
    manager.filter_cls_map = {c.__name__: c for c in classes}
    manager.filter_obj_map = {}
    try:
        loaded = manager._choose_host_filters(CONF.filter_scheduler.enabled_filters)
        r.check([type(f).__name__ for f in loaded] == list(CONF.filter_scheduler.enabled_filters),
                f"{name}: filter loader loaded {loaded}")
    except exception.SchedulerHostFilterNotFound as e:
        r.check(False, f"{name}: scheduler refuses to start: {e}")
    r.check("PciPassthroughFilter" in CONF.filter_scheduler.enabled_filters,
            f"{name}: PciPassthroughFilter not enabled")

    prop = flavor_property(case["commands"])
    r.check(prop is not None, f"{name}: no flavor property in the commands")
    if prop is None:
        return
    r.check(sum(1 for l in case["commands"].splitlines() if "pci_passthrough:alias" in l) == 1,
            f"{name}: more than one pci_passthrough:alias command (the last would win)")
    flavor = objects.Flavor(extra_specs={"pci_passthrough:alias": prop})
    try:
        requests = pci_request.get_pci_requests_from_flavor(flavor)
    except Exception as e:
        r.check(False, f"{name}: flavor property refused: {e!r}")
        return
    asked = {q.alias_name: q.count for q in requests.requests}
    r.check(asked == {a["name"]: a["count"] for a in case["alias_records"]},
            f"{name}: flavor asks {asked}")

    host_state = types.SimpleNamespace(pci_stats=stats, allocation_candidates=[{"mappings": {}}])
    spec = types.SimpleNamespace(pci_requests=requests)
    r.check(pci_passthrough_filter.PciPassthroughFilter().host_passes(host_state, spec),
            f"{name}: PciPassthroughFilter rejects the host")

    # Claim the flavor until the host is full: no group split between VMs.
    claims = []
    pool = fresh_stats()
    for _ in range(len(pci_devs) + 1):
        try:
            got = pool.consume_requests(copy.deepcopy(requests).requests)
        except exception.PciDeviceRequestFailed:
            got = None
        if not got:
            break
        claims.append({d.address for d in got})
    r.check(claims, f"{name}: not even one VM gets the flavor's devices")
    group_of = {a: by_addr[a]["iommu_group"] for a in offered}
    owner = {}
    for i, claim in enumerate(claims):
        for addr in claim:
            g = group_of[addr]
            r.check(owner.setdefault(g, i) == i,
                    f"{name}: IOMMU group {g} split between VM {owner.get(g)} and VM {i}")
        groups = {group_of[a] for a in claim}
        whole = {a for a in offered if group_of[a] in groups}
        r.check(whole <= claim, f"{name}: VM {i} gets part of groups {sorted(groups)}: {sorted(claim)}")

    # Placement: the flavor's request groups ask for what compute reports.
    if case["placement"]:
        r.check(CONF.filter_scheduler.pci_in_placement, f"{name}: pci_in_placement is not on")
        req_spec = objects.RequestSpec(pci_requests=requests, requested_resources=[])
        req_spec.generate_request_groups_from_pci_requests()
        needed = {}
        for group in req_spec.requested_resources:
            for rc, n in group.resources.items():
                needed[rc] = needed.get(rc, 0) + n
                r.check(any(set(group.required_traits) <= t for t in rp_traits.get(rc, [])),
                        f"{name}: no provider of {rc} has traits {group.required_traits}")
        r.check(all(inventories.get(rc, 0) >= n for rc, n in needed.items()),
                f"{name}: flavor needs {needed} but Placement has {inventories}")


def check_facts(cases, r):
    """vfioctl's data about the newest release, held against Nova 34."""
    newest = [c for c in cases if c["release"] == "2026.2"]
    if not newest:
        r.check(False, "no case for 2026.2 (Nova 34)")
        return
    facts = newest[0]["facts"]
    CONF(args=[], project="nova", default_config_files=[])
    default = list(CONF.filter_scheduler.enabled_filters)
    r.check(default == facts["default_filters"],
            f"Nova 34's default filters {default} != vfioctl's {facts['default_filters']}")
    classes = {c.__name__ for c in scheduler_filters.HostFilterHandler().get_matching_classes(
        CONF.filter_scheduler.available_filters)}
    r.check("AvailabilityZoneFilter" not in classes, "Nova 34 still has AvailabilityZoneFilter")
    known = known_options()
    for option in facts["options_gone_in_nova_34"]:
        section, key = option.split(".")
        r.check((section, key) not in known, f"{option} is still in Nova 34")
    r.check(known.get(("pci", "passthrough_whitelist")) == "device_spec",
            "passthrough_whitelist is not device_spec's deprecated name")
    for section, key in (("pci", "report_in_placement"),
                         ("filter_scheduler", "pci_in_placement")):
        r.check((section, key) in known, f"[{section}] {key} missing in Nova 34")
    release_facts = {f["name"]: f for f in facts["release_facts"]}
    for name in ("managed_tag", "live_migratable"):
        tag = {"managed_tag": "managed"}.get(name, name)
        r.check(release_facts[name]["known"], f"vfioctl thinks Nova 34 lacks {tag}")
        try:
            devspec.PciDeviceSpec({"vendor_id": "10de", "product_id": "20b0", tag: "maybe"})
            r.check(False, f"Nova 34 does not check the {tag} tag")
        except exception.PciConfigInvalidSpec:
            r.check(True, "")
    r.check(not release_facts["availability_zone_filter"]["known"],
            "vfioctl thinks Nova 34 has AvailabilityZoneFilter")
    schema_keys = set(pci_request._ALIAS_SCHEMA["properties"])
    for key in ("resource_class", "traits", "live_migratable", "numa_policy"):
        r.check(key in schema_keys, f"alias key {key} unknown to Nova 34")


def negative_controls(cases, hosts, known, r):
    """The oracle must catch the mistakes it exists for: each mutation of a
    good case has to fail with the expected complaint."""
    base = next((c for c in cases if c["host"] == "hgx_paired"
                 and c["args"] == ["--fabric", "full"] and c["release"] == "2023.1"), None)
    if base is None:
        r.check(False, "negative controls: no hgx_paired --fabric full case for 2023.1")
        return

    def name_az(c):
        c["controller"] = c["controller"].replace(
            "enabled_filters = ", "enabled_filters = AvailabilityZoneFilter,")

    def one_switch(c):
        c["commands"] = c["commands"].replace("nvidia-a100-nvswitch:6", "nvidia-a100-nvswitch:1")
        for a in c["alias_records"]:
            if a["name"] == "nvidia-a100-nvswitch":
                a["count"] = 1

    def two_commands(c):
        c["commands"] += "openstack flavor set FLAVOR --property pci_passthrough:alias=x:1\n"

    def spec_too_wide(c):
        c["compute"] = c["compute"].replace(
            'device_spec = {"vendor_id": "10de", "product_id": "20b0"}',
            'device_spec = {"vendor_id": "10de", "product_id": "20b0"}\n'
            'device_spec = {"vendor_id": "8086", "product_id": "1521"}')

    for what, mutate, expect in [
        ("AvailabilityZoneFilter named", name_az, "scheduler refuses to start"),
        ("NVSwitch pairs requested one by one", one_switch, "part of groups"),
        ("two flavor commands", two_commands, "more than one pci_passthrough"),
        ("a device spec offering an undeclared NIC", spec_too_wide, "device specs match"),
    ]:
        case = copy.deepcopy(base)
        mutate(case)
        probe = Results(quiet=True)
        run_case(case, hosts, known, probe)
        r.check(any(expect in m for m in probe.messages),
                f"negative control '{what}' not caught: {probe.messages}")

    # A spec naming the other PF takes its VF and not the offered ones: the
    # parent match is real, not an address that happens to be ignored.
    parent = next((c for c in cases if c["host"] == "sriov_two_pfs"
                   and "--vf-parent" in c["args"] and len(c["args"]) == 3
                   and c["release"] == "2025.1"), None)
    r.check(parent is not None and '"address": "0000:3b:00.0"' in parent["compute"],
            "negative controls: no sriov_two_pfs --vf-parent case naming PF 0000:3b:00.0 for 2025.1")
    if parent is not None:
        case = copy.deepcopy(parent)
        case["compute"] = case["compute"].replace(
            '"address": "0000:3b:00.0"', '"address": "0000:3b:00.1"')
        probe = Results(quiet=True)
        try:
            run_case(case, hosts, known, probe)
        except KeyError:
            pass  # the later checks meet a device vfioctl never offered
        r.check(any("device specs match ['0000:3b:01.2']" in m for m in probe.messages),
                f"negative control 'a spec naming the other PF' not caught: {probe.messages}")


def main():
    start = time.monotonic()
    doc = json.load(sys.stdin)
    r = Results()
    CONF([], project="nova", default_config_files=[])
    known = known_options()
    check_facts(doc["cases"], r)
    for case in doc["cases"]:
        run_case(case, doc["hosts"], known, r)
    negative_controls(doc["cases"], doc["hosts"], known, r)
    print(f"nova oracle (Nova {doc.get('nova_version', '34.0.0')}): "
          f"{len(doc['cases'])} cases in {time.monotonic() - start:.1f} s, "
          f"{r.passed} passed, {r.failed} failed")
    sys.exit(1 if r.failed else 0)


if __name__ == "__main__":
    main()
