"""The openstack client's Placement commands (osc-placement, from PyPI, pinned
in constraints.txt) run on the command lines vfioctl prints, against a
Placement API held in memory over the provider tree Nova's own Placement
translator built.

`run(line, placement)` splits a printed line as sh would (shlex), takes the
global options the openstack shell takes before the command
(`--os-placement-api-version`, registered by osc-placement's own plugin),
finds the command by its words in osc-placement's entry points (as the
openstack shell's command manager does), parses the rest with that
command's own argument parser and runs its `take_action`. Whatever the
command does not accept (an unknown option, a missing argument, a
microversion too low for an option) raises `Refused`.
"""

import argparse
import contextlib
import io
import shlex
import types
from importlib import metadata

from osc_placement import plugin
from osc_placement import version

ENTRY_POINTS = "openstack.placement.v1"


class Refused(Exception):
    """The openstack client refuses the command line."""


class Response:
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


class Placement:
    """Placement's REST API over a nova ProviderTree, for the calls the
    commands vfioctl prints make. Every other call raises, so a command that
    does something unexpected is noticed. `usages` is {rp_uuid: {rc: n}}."""

    def __init__(self, tree, usages=None):
        self.tree = tree
        self.usages = usages or {}
        self.api_version = None
        self.calls = []

    def _providers(self):
        return [self.tree.data(u) for u in self.tree.get_provider_uuids()]

    def _rp(self, data):
        return {"uuid": data.uuid, "name": data.name, "generation": data.generation,
                "root_provider_uuid": None, "parent_provider_uuid": data.parent_uuid}

    def _by_uuid(self, rp_uuid):
        for data in self._providers():
            if data.uuid == rp_uuid:
                return data
        raise Refused(f"Placement: no resource provider {rp_uuid} (404)")

    def request(self, method, url, params=None, json=None, **kwargs):
        self.calls.append((method, url, params, json))
        parts = url.strip("/").split("/")
        if method == "GET" and parts == ["resource_providers"]:
            params = dict(params or {})
            rows = self._providers()
            name = params.pop("name", None)
            if name is not None:
                rows = [d for d in rows if d.name == name]
            for required in params.pop("required", None) or []:
                if required.startswith("in:"):
                    raise Refused("Placement stand-in: any-traits not modelled")
                traits = set(required.split(","))
                rows = [d for d in rows if traits <= set(d.traits)]
            if params:
                raise Refused(f"Placement stand-in: filters {sorted(params)} not modelled")
            return Response({"resource_providers": [self._rp(d) for d in rows]})
        if len(parts) >= 2 and parts[0] == "resource_providers":
            data = self._by_uuid(parts[1])
            rest = parts[2:]
            if method == "GET" and rest == []:
                return Response(self._rp(data))
            if method == "GET" and rest == ["inventories"]:
                return Response({"inventories": copy_inventory(data.inventory),
                                 "resource_provider_generation": data.generation})
            if method == "GET" and rest == ["usages"]:
                used = self.usages.get(data.uuid, {})
                return Response({"usages": {rc: used.get(rc, 0) for rc in data.inventory},
                                 "resource_provider_generation": data.generation})
            if method == "PUT" and rest == ["inventories"]:
                if json.get("resource_provider_generation") != data.generation:
                    raise Refused("Placement: resource provider generation conflict (409)")
                self.tree.update_inventory(data.uuid, json["inventories"])
                data = self.tree.data(data.uuid)
                return Response({"inventories": copy_inventory(data.inventory),
                                 "resource_provider_generation": data.generation})
        raise Refused(f"Placement stand-in: {method} {url} not modelled")


def copy_inventory(inventory):
    return {rc: dict(fields) for rc, fields in inventory.items()}


def last(err):
    """argparse's complaint: the last line it wrote, after its usage."""
    lines = err.getvalue().strip().splitlines()
    return lines[-1] if lines else ""


def commands():
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINTS)}


def global_parser():
    parser = argparse.ArgumentParser(prog="openstack", add_help=False, exit_on_error=False)
    return plugin.build_option_parser(parser)


def run(line, placement):
    """Runs one printed command line; returns (command name, rows)."""
    words = shlex.split(line, comments=True)
    if not words:
        return None, []
    if words[0] != "openstack":
        raise Refused(f"not an openstack command: {line}")
    words = words[1:]
    options = []
    while words and words[0].startswith("-"):
        option = words.pop(0)
        options.append(option)
        if "=" not in option and words:
            options.append(words.pop(0))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = global_parser().parse_args(options)
    except (argparse.ArgumentError, SystemExit) as e:
        raise Refused(f"openstack refuses global options {options}: {last(err) or e}")
    known = commands()
    for n in range(len(words), 0, -1):
        key = "_".join(words[:n])
        if key in known:
            break
    else:
        raise Refused(f"openstack has no command {' '.join(words)}")
    requested = ns.os_placement_api_version
    # '1' asks the client to negotiate: it takes its newest gapless
    # microversion, which every Placement since Train serves.
    placement.api_version = (version.MAX_VERSION_NO_GAP
                             if requested in version.NEGOTIATE_VERSIONS else requested)
    app = types.SimpleNamespace(client_manager=types.SimpleNamespace(
        session=object(), placement=placement), options=ns)
    command = known[key].load()(app, None)
    parser = command.get_parser("openstack " + " ".join(words[:n]))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = parser.parse_args(words[n:])
    except SystemExit:
        raise Refused(f"openstack {' '.join(words[:n])} refuses {words[n:]}: {last(err)}")
    try:
        result = command.take_action(parsed)
    except ValueError as e:  # osc-placement's microversion checks
        raise Refused(f"openstack {' '.join(words[:n])}: {e}")
    rows = []
    if result:
        fields, data = result
        if isinstance(data, (list, tuple)) and data and not isinstance(data[0], (list, tuple)):
            data = [data]
        rows = [dict(zip(fields, row)) for row in data]
    return key, rows
