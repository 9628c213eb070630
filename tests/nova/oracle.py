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
  every filter named; for a release older than 2023.2 whose own default
  names AvailabilityZoneFilter, that release's own filter (from its PyPI
  release, see releases.txt) is what the loader finds under that name;
- every release's own facts, read from its nova/conf/scheduler.py and
  availability_zone_filter.py at the tag (releases.txt): the default
  enabled_filters vfioctl starts from, and whether the zone filter and
  query_placement_for_availability_zone exist there and what they default to;
- up to Wallaby, a request for an availability zone is still filtered by
  zone: it reaches AvailabilityZoneFilter, run through Nova's filter handler
  with the loaded list, which keeps only the GPU host in that zone; or, with
  --az-prefilter, Placement's pre-filter is switched on (an option that
  release has, off by default) after nova-manage placement sync_aggregates;
- with --placement, the placement translator reports CUSTOM_ inventories for
  exactly the offered devices, and the flavor's request groups ask for those
  resource classes and traits;
- with --one-time-use (2025.2 on), the translator, run under the hypervisor
  hostname vfioctl printed, marks exactly the offered devices' providers
  HW_PCI_ONE_TIME_USE under the names vfioctl printed; once VMs hold the
  devices it reserves them (reserved = total); the openstack client's own
  Placement commands (osc-placement, see osc.py), run on vfioctl's printed
  lines against that tree, list exactly those providers, find each by its
  name and un-reserve it (reserved 0, the rest of the inventory as Nova
  wrote it); Nova's device spec parser refuses the same specs without
  [pci] report_in_placement, and its translator refuses the tag on a VF,
  where vfioctl refuses --one-time-use too (doc["refusals"]); every
  release's own devspec.py knows the managed, live_migratable and
  one_time_use tags exactly where vfioctl's facts say.

Prints one line per failed check and ends with "N passed, N failed"; exits 1
when any failed.
"""

import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")

import ast
import configparser
import copy
import importlib.util
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

import osc

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


AZ_FILTER = "AvailabilityZoneFilter"
AZ_OPTION = "query_placement_for_availability_zone"
SYNC_AGGREGATES = "nova-manage placement sync_aggregates"


class ReleaseSource:
    """What one older Nova release's own source says (tests/nova/run keeps
    nova/conf/scheduler.py and the zone filter of each release in
    releases.txt under $VFIOCTL_NOVA_RELEASES/MAJOR/)."""

    def __init__(self, major, root):
        self.major = major
        conf = os.path.join(root, "nova/conf/scheduler.py")
        with open(conf) as f:
            tree = ast.parse(f.read())
        self.options = {}  # name -> default (None when not a literal)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr.endswith("Opt") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                default = None
                for kw in node.keywords:
                    if kw.arg == "default":
                        try:
                            default = ast.literal_eval(kw.value)
                        except ValueError:
                            pass
                self.options[node.args[0].value] = default
        self.default_filters = self.options.get("enabled_filters")
        # Device spec tags this release's parser normalizes (and so knows).
        self.spec_tags = set()
        devspec_path = os.path.join(root, "nova/pci/devspec.py")
        if os.path.exists(devspec_path):
            with open(devspec_path) as f:
                for node in ast.walk(ast.parse(f.read())):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "_normalize_device_spec_tag"
                            and node.args and isinstance(node.args[0], ast.Constant)):
                        self.spec_tags.add(node.args[0].value)
        self.has_devspec = os.path.exists(devspec_path)
        path = os.path.join(root, "nova/scheduler/filters/availability_zone_filter.py")
        self.az_filter_path = path if os.path.exists(path) else None
        self.az_filter_deprecated = False
        if self.az_filter_path:
            with open(path) as f:
                self.az_filter_deprecated = "deprecated" in f.read().lower()
        self._az_class = None

    def az_filter_class(self):
        """This release's own AvailabilityZoneFilter, built on Nova 34's
        filter base (only for releases that do not deprecate it: the
        deprecated one reads an option Nova 34 no longer registers)."""
        if self._az_class is None:
            spec = importlib.util.spec_from_file_location(
                f"nova_{self.major}_availability_zone_filter", self.az_filter_path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._az_class = module.AvailabilityZoneFilter
        return self._az_class


def release_sources(r):
    """{major: ReleaseSource} for every release directory tests/nova/run kept."""
    root = os.environ.get("VFIOCTL_NOVA_RELEASES")
    if not root or not os.path.isdir(root):
        r.check(False, "no older Nova releases: VFIOCTL_NOVA_RELEASES is unset or missing (tests/nova/run sets it)")
        return {}
    return {int(d): ReleaseSource(int(d), os.path.join(root, d))
            for d in sorted(os.listdir(root)) if d.isdigit()}


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


def check_zones(case, name, source, loaded, requests, fresh_stats, r):
    """Availability zones are still filtered on a release whose own default
    filters them with AvailabilityZoneFilter, and the prefilter, when
    written, is an option of that release that needs switching on."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(case["controller"])
    prefilter = parser.get("scheduler", AZ_OPTION, fallback="").strip() == "True"
    commands = case["commands"].splitlines()
    if prefilter:
        r.check(AZ_OPTION in source.options,
                f"{name}: [scheduler] {AZ_OPTION} is not an option of Nova {source.major}")
        r.check(source.options.get(AZ_OPTION) is False,
                f"{name}: {AZ_OPTION} written where Nova {source.major} already defaults to it")
        r.check(commands[:1] == [SYNC_AGGREGATES],
                f"{name}: Placement filters zones without {SYNC_AGGREGATES} first: {commands}")
    if AZ_FILTER not in (source.default_filters or []):
        return
    if prefilter:
        r.check(AZ_FILTER not in [type(f).__name__ for f in loaded],
                f"{name}: both {AZ_FILTER} and Placement filter zones")
        return
    # Two hosts with the same GPUs: one in the aggregate of zone "gpu", one
    # in no zone (the default). A request for "gpu" must end on the first.
    az = [f for f in loaded if type(f).__name__ == AZ_FILTER]
    r.check(len(az) == 1, f"{name}: an availability zone request does not reach {AZ_FILTER} "
            f"(loaded: {[type(f).__name__ for f in loaded]})")
    gpu_zone = types.SimpleNamespace(host="gpu1", nodename="gpu1", aggregates=[
        types.SimpleNamespace(metadata={"availability_zone": "gpu"})],
        pci_stats=fresh_stats(), allocation_candidates=[{"mappings": {}}])
    no_zone = types.SimpleNamespace(host="gpu2", nodename="gpu2", aggregates=[],
                                    pci_stats=fresh_stats(), allocation_candidates=[{"mappings": {}}])
    # The other default filters judge services, images and server groups,
    # which this request leaves alone: they pass here, in their place.
    chain = []
    for f in loaded:
        if type(f).__name__ not in (AZ_FILTER, "PciPassthroughFilter"):
            f = copy.copy(f)
            f.host_passes = lambda host_state, spec_obj: True
        chain.append(f)
    handler = scheduler_filters.HostFilterHandler()
    for zone, want in (("gpu", ["gpu1"]), (None, ["gpu1", "gpu2"])):
        spec = objects.RequestSpec(availability_zone=zone, pci_requests=copy.deepcopy(requests),
                                   scheduler_hints={}, instance_uuid=str(uuid.uuid4()))
        got = [h.host for h in handler.get_filtered_objects(chain, [gpu_zone, no_zone], spec) or []]
        r.check(got == want, f"{name}: a request for zone {zone} passes {got}, expected {want}")


def check_release_sources(cases, sources, r):
    """vfioctl's facts for each release, held against that release's own
    source: its default enabled_filters, the zone filter and the zone
    pre-filter option."""
    majors = sorted({c["nova_version"] for c in cases if c["nova_version"] < 34})
    r.check(set(majors) <= set(sources),
            f"no source for Nova {sorted(set(majors) - set(sources))}")
    for major in majors:
        if major not in sources:
            continue
        source = sources[major]
        case = next(c for c in cases if c["nova_version"] == major)
        facts = {f["name"]: f for f in case["facts"]["release_facts"]}
        r.check(source.default_filters == case["facts"]["default_filters"],
                f"Nova {major}'s default filters {source.default_filters} != vfioctl's "
                f"{case['facts']['default_filters']}")
        r.check(facts["availability_zone_filter"]["known"] == bool(source.az_filter_path),
                f"vfioctl thinks Nova {major} {'has' if facts['availability_zone_filter']['known'] else 'lacks'} {AZ_FILTER}")
        r.check(facts["availability_zone_prefilter_option"]["known"] == (AZ_OPTION in source.options),
                f"vfioctl is wrong about [scheduler] {AZ_OPTION} in Nova {major}")
        on_by_default = source.options.get(AZ_OPTION, True) is True
        r.check(facts["availability_zone_prefilter_default"]["known"] == on_by_default,
                f"vfioctl is wrong about Placement filtering zones by default in Nova {major}")
        r.check(source.has_devspec, f"no nova/pci/devspec.py kept for Nova {major}")
        for fact, tag in SPEC_TAG_FACTS:
            r.check(facts[fact]["known"] == (tag in source.spec_tags),
                    f"vfioctl thinks Nova {major} {'knows' if facts[fact]['known'] else 'lacks'} "
                    f"the {tag} device spec tag; its devspec.py normalizes {sorted(source.spec_tags)}")


# vfioctl's fact for each device spec tag.
SPEC_TAG_FACTS = (("managed_tag", "managed"), ("live_migratable", "live_migratable"),
                  ("one_time_use", "one_time_use"))


def run_case(case, hosts, known, r, sources):
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
    otu = case.get("one_time_use")
    if case["placement"]:
        r.check(CONF.pci.report_in_placement, f"{name}: report_in_placement is not on")
        nodename = otu["hypervisor_hostname"] if otu else "compute1"
        tree = provider_tree.ProviderTree()
        tree.new_root(nodename, str(uuid.uuid4()))
        tracker = types.SimpleNamespace(pci_devs=pci_devs, dev_filter=wl, stats=stats)
        try:
            pci_placement_translator.update_provider_tree_for_pci(
                tree, nodename, tracker, {}, [])
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
        if otu:
            check_one_time_use(case, name, otu, tree, nodename, tracker, r)
    else:
        r.check(not otu, f"{name}: one-time-use devices without Placement")
    r.check(bool(otu) == ("--one-time-use" in case["args"]),
            f"{name}: one_time_use record {otu!r} for args {case['args']}")

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

    enabled = list(CONF.filter_scheduler.enabled_filters)
    source = sources.get(case["nova_version"])
    if case["nova_version"] < 34 and source is None:
        r.check(False, f"{name}: no source of Nova {case['nova_version']} to judge with")
    manager = host_manager.HostManager.__new__(host_manager.HostManager)
    classes = scheduler_filters.HostFilterHandler().get_matching_classes(
        CONF.filter_scheduler.available_filters)
    manager.filter_cls_map = {c.__name__: c for c in classes}
    if AZ_FILTER in enabled and source is not None and source.az_filter_path:
        r.check(not source.az_filter_deprecated,
                f"{name}: names {AZ_FILTER}, which Nova {source.major} deprecates")
        if not source.az_filter_deprecated:
            manager.filter_cls_map[AZ_FILTER] = source.az_filter_class()
    manager.filter_obj_map = {}
    loaded = []
    try:
        loaded = manager._choose_host_filters(enabled)
        r.check([type(f).__name__ for f in loaded] == enabled,
                f"{name}: filter loader loaded {loaded}")
    except exception.SchedulerHostFilterNotFound as e:
        r.check(False, f"{name}: scheduler refuses to start: {e}")
    r.check("PciPassthroughFilter" in enabled,
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

    if source is not None:
        check_zones(case, name, source, loaded, requests, fresh_stats, r)

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


OTU_TRAIT = "HW_PCI_ONE_TIME_USE"


def otu_providers(tree, nodename):
    """{name: ProviderData} of the one-time-use providers under nodename."""
    out = {}
    for rp_uuid in tree.get_provider_uuids_in_tree(nodename):
        data = tree.data(rp_uuid)
        if OTU_TRAIT in data.traits:
            out[data.name] = data
    return out


def run_printed(line, placement, name, r):
    """One printed command line through osc-placement; None when refused."""
    try:
        return osc.run(line, placement)[1]
    except osc.Refused as e:
        r.check(False, f"{name}: the openstack client refuses '{line}': {e}")
    return None


def check_one_time_use(case, name, otu, tree, nodename, tracker, r):
    """The between-tenants cycle with Nova's translator and the openstack
    client's own Placement commands on the lines vfioctl printed."""
    offered = sorted(case["offered"])
    providers = otu["providers"]
    r.check(sorted(p["address"] for p in providers) == offered,
            f"{name}: one-time-use providers for {[p['address'] for p in providers]}, offered {offered}")
    # Every spec carries the tag (Nova normalizes "true").
    specs = [s for s in tracker.dev_filter.specs]
    r.check(specs and all(s.get_tags().get("one_time_use") == "true" for s in specs),
            f"{name}: device specs without one_time_use: {[s.get_tags() for s in specs]}")
    # Nova names each device's provider as vfioctl printed it, with the trait.
    marked = otu_providers(tree, nodename)
    r.check(sorted(marked) == sorted(p["name"] for p in providers),
            f"{name}: Nova's one-time-use providers {sorted(marked)}, vfioctl printed "
            f"{sorted(p['name'] for p in providers)}")
    for p in providers:
        data = marked.get(p["name"])
        if data is None:
            continue
        r.check(list(data.inventory) == [p["resource_class"]],
                f"{name}: {p['name']} holds {list(data.inventory)}, vfioctl printed {p['resource_class']}")
        r.check(not data.inventory[p["resource_class"]].get("reserved"),
                f"{name}: {p['name']} reserved before any VM used it")
    # VMs take every device: Nova reserves each (its own translator).
    held = copy.deepcopy(tracker.pci_devs)
    for dev in held:
        dev.instance_uuid = str(uuid.uuid4())
    tracker_held = types.SimpleNamespace(pci_devs=held, dev_filter=tracker.dev_filter,
                                         stats=tracker.stats)
    pci_placement_translator.update_provider_tree_for_pci(tree, nodename, tracker_held, {}, [])
    for data in otu_providers(tree, nodename).values():
        for rc, inv in data.inventory.items():
            r.check(inv.get("reserved") == inv["total"],
                    f"{name}: Nova did not reserve used {data.name}: {inv}")
    # The VMs are gone; the devices wait. vfioctl's lines, run by the openstack client.
    placement = osc.Placement(tree)
    lines = otu["commands"]
    r.check(case["commands"].splitlines()[-len(lines):] == lines,
            f"{name}: the commands part does not end with the one-time-use lines")
    commands = [l for l in lines if not l.startswith("#")]
    r.check(otu["list_command"] in commands, f"{name}: the list command is not printed")
    listed = run_printed(otu["list_command"], placement, name, r)
    if listed is not None:
        r.check(sorted(row["name"] for row in listed) == sorted(marked),
                f"{name}: the list command finds {sorted(row['name'] for row in listed)}, "
                f"Nova's one-time-use providers are {sorted(marked)}")
    for p in providers:
        r.check(p["find_command"] in commands and p["unreserve_command"] in commands,
                f"{name}: {p['address']}'s commands are not printed")
        found = run_printed(p["find_command"], placement, name, r)
        if not found:
            r.check(found is None, f"{name}: '{p['find_command']}' finds no provider")
            continue
        r.check(len(found) == 1 and found[0]["name"] == p["name"],
                f"{name}: '{p['find_command']}' finds {found}")
        rp_uuid = found[0]["uuid"]
        before = copy.deepcopy(tree.data(rp_uuid).inventory)
        for line in commands:
            if line.startswith("openstack resource provider inventory list") or \
                    line.startswith("openstack resource provider usage show"):
                rows = run_printed(line.replace(otu["uuid_placeholder"], rp_uuid), placement, name, r)
                if rows and "reserved" in rows[0]:
                    r.check(rows[0]["reserved"] == rows[0]["total"] and rows[0].get("used", 0) == 0,
                            f"{name}: {p['name']} does not show as waiting: {rows}")
        run_printed(p["unreserve_command"].replace(otu["uuid_placeholder"], rp_uuid), placement, name, r)
        after = tree.data(rp_uuid).inventory
        want = copy.deepcopy(before)
        want[p["resource_class"]]["reserved"] = 0
        r.check({rc: dict(v) for rc, v in after.items()} == want,
                f"{name}: un-reserving {p['name']} left {dict(after)}, expected {want}")
    # Every device back in service: none is listed as reserved any more.
    for data in otu_providers(tree, nodename).values():
        r.check(all(not inv.get("reserved") for inv in data.inventory.values()),
                f"{name}: {data.name} still reserved after its un-reserve command")
    # Nova itself refuses these specs without [pci] report_in_placement.
    without = "\n".join(l for l in case["compute"].splitlines()
                        if not l.startswith("report_in_placement")) + "\n"
    refused_without_report_in_placement(without, name, r)


def refused_without_report_in_placement(compute, what, r):
    """Nova's device spec parser refuses the tagged specs of `compute`,
    which has no [pci] report_in_placement, for that reason."""
    load(compute)
    try:
        whitelist.Whitelist(CONF.pci.device_spec)
        r.check(False, f"{what}: Nova takes one_time_use without report_in_placement")
    except exception.PciConfigInvalidSpec as e:
        r.check("report_in_placement" in str(e), f"{what}: refused for another reason: {e}")


def add_one_time_use(compute):
    """The compute conf with "one_time_use": "true" added to every device spec."""
    out = []
    for line in compute.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key in ("device_spec", "passthrough_whitelist"):
            spec = json.loads(value)
            spec["one_time_use"] = "true"
            line = f"{key} = {json.dumps(spec)}"
        out.append(line)
    return "\n".join(out) + "\n"


def check_refusals(doc, r):
    """Where vfioctl refuses --one-time-use, Nova's own code refuses the
    configuration vfioctl would otherwise have written with the tag."""
    cases = doc["cases"]
    kinds = set()
    for refusal in doc["refusals"]:
        kind = refusal["kind"]
        kinds.add(kind)
        what = f"{refusal['host']} {' '.join(refusal['args'])} --release {refusal['release']}"
        r.check(refusal["status"] == 2 and refusal["stderr"].count("\n") == 1,
                f"{what}: vfioctl exits {refusal['status']}: {refusal['stderr']!r}")
        r.check(refusal["expect"] in refusal["stderr"],
                f"{what}: vfioctl's refusal does not say '{refusal['expect']}': {refusal['stderr']!r}")
        base = next((c for c in cases if c["host"] == refusal["host"]
                     and c["args"] == refusal["base_args"] and c["release"] == refusal["release"]), None)
        r.check(base is not None, f"{what}: no case {refusal['base_args']} to judge it with")
        if base is None:
            continue
        devs = doc["hosts"][base["host"]]
        answer_sysfs_from(devs)
        compute = add_one_time_use(base["compute"])
        if kind == "vf":
            load(compute)
            wl = whitelist.Whitelist(CONF.pci.device_spec)
            tracker = types.SimpleNamespace(pci_devs=pci_objects(devs, wl), dev_filter=wl)
            tree = provider_tree.ProviderTree()
            tree.new_root("compute1", str(uuid.uuid4()))
            try:
                pci_placement_translator.update_provider_tree_for_pci(tree, "compute1", tracker, {}, [])
                r.check(False, f"{what}: Nova's translator takes one_time_use on a VF")
            except exception.PlacementPciException as e:
                r.check("Only type-PCI and type-PF devices may set one_time_use" in str(e),
                        f"{what}: Nova refuses for another reason: {e}")
        elif kind == "no_placement":
            refused_without_report_in_placement(compute, what, r)
        else:
            r.check(False, f"{what}: unknown refusal kind {kind}")
    r.check(kinds == {"vf", "no_placement"}, f"refusals judged: {sorted(kinds)}")
    # Every release from 2025.2 on has one-time-use cases, none before.
    with_otu = {c["nova_version"] for c in cases if c.get("one_time_use")}
    r.check(with_otu and min(with_otu) == 32,
            f"one-time-use cases for Nova {sorted(with_otu)}: from 32 (2025.2) on only")


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
    for name, tag in SPEC_TAG_FACTS:
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


def caught(what, base, mutate, expect, hosts, known, r, sources):
    """A negative control: `base` mutated must fail with `expect`."""
    case = copy.deepcopy(base)
    mutate(case)
    probe = Results(quiet=True)
    run_case(case, hosts, known, probe, sources)
    r.check(any(expect in m for m in probe.messages),
            f"negative control '{what}' not caught: {probe.messages}")


def negative_controls(cases, hosts, known, r, sources):
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
        caught(what, base, mutate, expect, hosts, known, r, sources)

    zone_controls(cases, hosts, known, r, sources)
    one_time_use_controls(cases, hosts, known, r, sources)

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
            run_case(case, hosts, known, probe, sources)
        except KeyError:
            pass  # the later checks meet a device vfioctl never offered
        r.check(any("device specs match ['0000:3b:01.2']" in m for m in probe.messages),
                f"negative control 'a spec naming the other PF' not caught: {probe.messages}")


def one_time_use_controls(cases, hosts, known, r, sources):
    """One-time-use: the checks catch a provider named with the address as
    vfioctl spells it (lower case) or after another hostname, an un-reserve
    that would change the total, a list command below the microversion its
    trait filter needs, and a spec that lost the tag."""
    base = next((c for c in cases if c["host"] == "hgx" and "--one-time-use" in c["args"]
                 and c["release"] == "2025.2"), None)
    r.check(base is not None, "one-time-use controls: no hgx --one-time-use case for 2025.2")
    if base is None:
        return

    def lower_case_address(c):
        for p in c["one_time_use"]["providers"]:
            p["name"] = p["name"].lower()

    def short_hostname(c):
        # What the default gives on a host whose libvirt reports its FQDN.
        c["one_time_use"]["hypervisor_hostname"] = "compute-7.example.org"

    def unreserve_sets_total(c):
        for p in c["one_time_use"]["providers"]:
            old = p["unreserve_command"]
            p["unreserve_command"] = old.replace(":reserved=0", "=0")
            c["commands"] = c["commands"].replace(old, p["unreserve_command"])
            c["one_time_use"]["commands"] = [p["unreserve_command"] if l == old else l
                                             for l in c["one_time_use"]["commands"]]

    def old_microversion(c):
        otu = c["one_time_use"]
        old = otu["list_command"]
        otu["list_command"] = old.replace("1.18", "1.17")
        c["commands"] = c["commands"].replace(old, otu["list_command"])
        otu["commands"] = [otu["list_command"] if l == old else l for l in otu["commands"]]

    def tag_lost(c):
        c["compute"] = c["compute"].replace(', "one_time_use": "true"', "")

    for what, mutate, expect in [
        ("provider names with a lower-case address", lower_case_address, "Nova's one-time-use providers"),
        ("providers named after a name libvirt does not report", short_hostname,
         "Nova's one-time-use providers"),
        ("an un-reserve that sets the total", unreserve_sets_total, "un-reserving"),
        ("a trait filter below microversion 1.18", old_microversion, "requires at least version 1.18"),
        ("a spec without the tag", tag_lost, "device specs without one_time_use"),
    ]:
        caught(what, base, mutate, expect, hosts, known, r, sources)


def zone_controls(cases, hosts, known, r, sources):
    """Availability zones: the checks catch Train output that stops
    filtering zones, the pre-issue output (pre-filter without
    sync_aggregates), the pre-filter written where it is already the
    default, and the zone filter named on 2023.2."""
    def find(release, args):
        case = next((c for c in cases if c["host"] == "hgx_fm" and c["args"] == args
                     and c["release"] == release), None)
        r.check(case is not None, f"zone controls: no hgx_fm {args} case for {release}")
        return case

    train = find("train", ["10de:20b0"])
    prefilter = find("train", ["10de:20b0", "--az-prefilter"])
    xena = find("xena", ["10de:20b0"])
    bobcat = find("2023.2", ["10de:20b0"])
    if None in (train, prefilter, xena, bobcat):
        return

    def drop_az(c):
        c["controller"] = c["controller"].replace(f"{AZ_FILTER},", "")

    def before_the_issue(c):
        c["commands"] = "\n".join(l for l in c["commands"].splitlines()
                                  if l != SYNC_AGGREGATES) + "\n"

    def prefilter_on_xena(c):
        c["controller"] += f"\n[scheduler]\n{AZ_OPTION} = True\n"
        c["commands"] = f"{SYNC_AGGREGATES}\n" + c["commands"]

    def name_az(c):
        c["controller"] = c["controller"].replace(
            "enabled_filters = ", f"enabled_filters = {AZ_FILTER},")

    for what, base, mutate, expect in [
        ("Train without AvailabilityZoneFilter", train, drop_az,
         f"an availability zone request does not reach {AZ_FILTER}"),
        ("Train without AvailabilityZoneFilter: the zone is not kept", train, drop_az,
         "a request for zone gpu passes ['gpu1', 'gpu2']"),
        ("the pre-filter without sync_aggregates", prefilter, before_the_issue,
         f"without {SYNC_AGGREGATES} first"),
        ("the pre-filter written on Xena", xena, prefilter_on_xena,
         "already defaults to it"),
        ("AvailabilityZoneFilter named on Xena", xena, name_az,
         f"names {AZ_FILTER}, which Nova 24 deprecates"),
        ("AvailabilityZoneFilter named on 2023.2", bobcat, name_az,
         "scheduler refuses to start"),
    ]:
        caught(what, base, mutate, expect, hosts, known, r, sources)


def main():
    start = time.monotonic()
    doc = json.load(sys.stdin)
    r = Results()
    CONF([], project="nova", default_config_files=[])
    known = known_options()
    sources = release_sources(r)
    check_facts(doc["cases"], r)
    check_release_sources(doc["cases"], sources, r)
    for case in doc["cases"]:
        run_case(case, doc["hosts"], known, r, sources)
    check_refusals(doc, r)
    negative_controls(doc["cases"], doc["hosts"], known, r, sources)
    otu = sum(1 for c in doc["cases"] if c.get("one_time_use"))
    print(f"nova oracle (Nova {doc.get('nova_version', '34.0.0')}): "
          f"{len(doc['cases'])} cases ({otu} with one-time-use devices) in "
          f"{time.monotonic() - start:.1f} s, "
          f"{r.passed} passed, {r.failed} failed")
    sys.exit(1 if r.failed else 0)


if __name__ == "__main__":
    main()
