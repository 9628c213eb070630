# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""nova.conf fragments from vfioctl: reading them, merging them into a file,
and turning them into OpenStack-Ansible overrides.

A fragment is what `vfioctl nova --json` returns in controller_conf and
compute_conf: INI text whose [pci] alias and device_spec (or
passthrough_whitelist) options repeat, one JSON object per line, as Nova's
multi-valued options do. configparser cannot hold repeated options, so the
merge works on lines and keeps everything it does not manage.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

SECTION_RE = re.compile(r'^\s*\[([^\]]+)\]\s*$')
OPTION_RE = re.compile(r'^\s*([A-Za-z0-9_.-]+)\s*[=:]\s*(.*?)\s*$')

# Options the merge owns in each section. device_spec and its predecessor
# passthrough_whitelist are both replaced, so a file moved to a newer release
# never keeps the deprecated name beside the new one.
MANAGED = {
    'pci': ('alias', 'device_spec', 'passthrough_whitelist'),
    'filter_scheduler': ('enabled_filters',),
}
PCI_FILTER = 'PciPassthroughFilter'


def parse_fragment(text):
    """[(section, [(option, value), ...]), ...] in file order; comments dropped."""
    sections = []
    current = None
    for line in (text or '').splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(('#', ';')):
            continue
        match = SECTION_RE.match(line)
        if match:
            current = (match.group(1).strip(), [])
            sections.append(current)
            continue
        match = OPTION_RE.match(line)
        if match and current is not None:
            current[1].append((match.group(1), match.group(2)))
    return sections


def combine(*fragments):
    """One fragment from several (controller and compute parts): sections in
    first-seen order, repeated identical option lines kept once."""
    merged = []
    index = {}
    for fragment in fragments:
        for section, options in parse_fragment(fragment):
            if section not in index:
                index[section] = []
                merged.append((section, index[section]))
            for option in options:
                if option not in index[section]:
                    index[section].append(option)
    return merged


def render(sections):
    """INI text of a combined fragment."""
    blocks = []
    for section, options in sections:
        lines = ['[%s]' % section] + ['%s = %s' % option for option in options]
        blocks.append('\n'.join(lines) + '\n')
    return '\n'.join(blocks)


def as_dict(sections):
    """{section: {option: value or [values]}}: repeated options become lists."""
    out = {}
    for section, options in sections:
        target = out.setdefault(section, {})
        for name, value in options:
            if name in target:
                if not isinstance(target[name], list):
                    target[name] = [target[name]]
                target[name].append(value)
            else:
                target[name] = value
    return out


def _filters_with_pci(existing_value):
    names = [n.strip() for n in existing_value.split(',') if n.strip()]
    if PCI_FILTER not in names:
        names.append(PCI_FILTER)
    return ','.join(names)


def merge(existing, sections):
    """existing INI text with the fragment's managed options replaced.

    Lines of other sections and options, and comments, are kept. An existing
    enabled_filters keeps the operator's list, with PciPassthroughFilter
    appended when missing, instead of being replaced by the release default.
    """
    lines = (existing or '').splitlines()
    wanted = dict((section, list(options)) for section, options in sections)
    # The operator's enabled_filters, if any, wins over the release default.
    current = None
    for line in lines:
        match = SECTION_RE.match(line)
        if match:
            current = match.group(1).strip()
            continue
        match = OPTION_RE.match(line)
        if match and current == 'filter_scheduler' and match.group(1) == 'enabled_filters' and current in wanted:
            wanted[current] = [(n, _filters_with_pci(match.group(2)) if n == 'enabled_filters' else val)
                               for n, val in wanted[current]]
    out = []
    current = None
    placed = set()

    def owned(section, option):
        return section in wanted and (option in MANAGED.get(section, ()) or option in [n for n, dummy in wanted[section]])

    def place(section):
        if section in wanted and section not in placed:
            out.extend('%s = %s' % option for option in wanted[section])
            placed.add(section)

    for line in lines:
        match = SECTION_RE.match(line)
        if match:
            if current is not None:
                _trim_and_place(out, place, current)
            current = match.group(1).strip()
            out.append(line)
            continue
        match = OPTION_RE.match(line)
        if match and current is not None and owned(current, match.group(1)):
            continue
        out.append(line)
    if current is not None:
        _trim_and_place(out, place, current)
    for section, dummy in sections:
        if section not in placed:
            if out and out[-1].strip():
                out.append('')
            out.append('[%s]' % section)
            place(section)
    return '\n'.join(out) + '\n'


def _trim_and_place(out, place, section):
    """Insert a section's options after its last non-blank line."""
    blanks = []
    while out and not out[-1].strip():
        blanks.append(out.pop())
    place(section)
    out.extend(blanks)


def osa_overrides(sections):
    """The fragment as OpenStack-Ansible's nova_nova_conf_overrides: config_template
    writes a list value as one line per item, which Nova's multi-valued options need."""
    return as_dict(sections)
