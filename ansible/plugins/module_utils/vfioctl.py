# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Running vfioctl with --json and reading what it says.

Every module goes through run(): it adds --root and --json, never reads the
human text, and turns a failure into vfioctl's own one-line message. Pure
helpers (plans to diffs, selectors to declaration keys) live here too so the
unit tests can reach them without a host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

# Options every module shares (merged into each argument_spec).
COMMON_ARGS = dict(
    root=dict(type='path', default='/'),
    binary=dict(type='path', default='vfioctl'),
)

# vfioctl's exit statuses (man page, EXIT STATUS).
EXIT_NAMES = {
    0: 'success',
    1: 'failed',
    2: 'bad usage',
    3: 'no such device',
    4: 'refused for safety',
    5: 'host lacks something needed',
    6: 'rollback failed',
    7: 'configuration malformed or untrusted',
    8: 'pending in the kernel',
    75: 'lock busy',
    77: 'not privileged',
}

ADDRESS_RE = re.compile(r'^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$')
IDS_RE = re.compile(r'^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::([0-9a-fA-F]{4}):([0-9a-fA-F]{4}))?$')


class VfioctlError(Exception):
    """vfioctl exited with a status its caller did not accept."""

    def __init__(self, argv, rc, message, document=None):
        super(VfioctlError, self).__init__(message)
        self.argv = argv
        self.rc = rc
        self.message = message
        self.document = document

    def fail_args(self):
        """Keyword arguments for module.fail_json."""
        args = dict(
            msg=self.message,
            rc=self.rc,
            cmd=self.argv,
            reason=EXIT_NAMES.get(self.rc, 'unknown status'),
        )
        if self.document is not None:
            args['vfioctl'] = self.document
        return args


def error_message(rc, stdout, stderr):
    """vfioctl's own message for a failed run.

    On error vfioctl prints one line, 'vfioctl: ...', on stderr; a JSON
    document with an 'error' member is used first where one was printed.
    """
    document = parse_json(stdout)
    if isinstance(document, dict):
        result = document.get('result')
        if isinstance(result, dict) and result.get('error'):
            return result['error']
        if isinstance(document.get('error'), str):
            return document['error']
    lines = [line.strip() for line in (stderr or '').splitlines() if line.strip()]
    # vfioctl's own error line; clap's usage errors (status 2) start with
    # 'error:' and are followed by usage lines.
    own = [line for line in lines if line.startswith('vfioctl:')]
    if own:
        return own[-1]
    usage = [line for line in lines if line.startswith('error:')]
    if usage:
        return 'vfioctl: ' + usage[0]
    if lines:
        return lines[-1]
    return 'vfioctl exited with status %d (%s) and printed no message' % (rc, EXIT_NAMES.get(rc, 'unknown status'))


def parse_json(text):
    """The JSON document in text, or None when there is none (empty output)."""
    text = (text or '').strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def option(name, value):
    """One option with its value as a single argument, '--name=value'.

    Joined, a value from the play (an inventory variable, a fact, a loop
    item) can never be read as an option of its own: '--driver=--force'
    names a driver (one vfioctl refuses), it does not set --force.
    """
    return '--%s=%s' % (name, value)


def base_argv(module):
    """The vfioctl binary and its global options."""
    binary = module.params['binary']
    if '/' not in binary:
        binary = module.get_bin_path(binary, required=True, opt_dirs=['/usr/local/sbin', '/usr/sbin', '/sbin'])
    argv = [binary, option('root', module.params['root'])]
    connect = module.params.get('connect')
    if connect:
        argv.append(option('connect', connect))
    return argv


def command_line(module, args, operands=None, json_output=True):
    """The argv for vfioctl ARGS [--json] [-- OPERANDS...].

    ARGS are the subcommand and options the module chose (values joined with
    option()); OPERANDS are the selectors from the play, passed after '--'
    so that none of them can become an option ('--force', '--persist'):
    vfioctl takes each as a selector and refuses a malformed one.
    """
    argv = base_argv(module) + list(args)
    if json_output:
        argv.append('--json')
    if operands is not None:
        argv.append('--')
        argv += [str(operand) for operand in operands]
    return argv


def run(module, args, ok=(0,), json_output=True, operands=None):
    """Runs vfioctl ARGS [--json] [-- OPERANDS...] and returns (rc, document).

    A status outside ok raises VfioctlError with vfioctl's message; a
    successful run (status 0) that printed no JSON raises too. Another
    accepted status may come with no document (None).
    """
    argv = command_line(module, args, operands, json_output)
    rc, stdout, stderr = module.run_command(argv, environ_update=dict(LC_ALL='C'))
    if rc not in ok:
        raise VfioctlError(argv, rc, error_message(rc, stdout, stderr), parse_json(stdout))
    if not json_output:
        return rc, None
    document = parse_json(stdout)
    if document is None and rc == 0:
        raise VfioctlError(argv, rc, 'vfioctl printed no JSON document (status %d): %s' % (rc, (stderr or stdout or '').strip()))
    return rc, document


def fail(module, err, **extra):
    args = err.fail_args()
    args.update(extra)
    module.fail_json(**args)


def declaration_key(selector):
    """The declaration key vfioctl uses for an address or full-IDs selector, else None.

    `persist add 25:00.0` keys its declaration by 0000:25:00.0, `persist add
    10de:20b0` by 10de:20b0 (man page, PERSISTENT BINDINGS).
    """
    text = selector.strip()
    match = ADDRESS_RE.match(text)
    if match:
        domain, bus, slot, function = match.groups()
        return ('%s:%s:%s.%s' % (domain or '0000', bus, slot, function)).lower()
    match = IDS_RE.match(text)
    if match:
        return ':'.join(part for part in match.groups() if part).lower()
    return None


def same_driver(declared, wanted):
    """Whether a declared driver (None: vfio-pci or its variant) is the one wanted."""
    def norm(name):
        return None if name is None else name.replace('-', '_').lower()
    return norm(declared) == norm(wanted)


def plan_changes(document):
    """Actions of a bind/restore/unbind plan that have steps (the ones that change)."""
    plan = (document or {}).get('plan') or {}
    return [action for action in plan.get('actions') or [] if action.get('steps')]


def _driver_line(address, state):
    state = state or {}
    return '%s driver=%s override=%s' % (
        address, state.get('driver') or '-', state.get('driver_override') or '-')


def plan_diff(document):
    """The plan of a bind/restore/unbind document as an Ansible diff.

    One line per device, driver and override before and after; devices
    already as wanted are left out.
    """
    before, after = [], []
    for action in plan_changes(document):
        address = action.get('address')
        before.append(_driver_line(address, action.get('before')))
        after.append(_driver_line(address, action.get('after')))
    return dict(
        before='\n'.join(before) + ('\n' if before else ''),
        after='\n'.join(after) + ('\n' if after else ''),
        before_header='drivers before',
        after_header='drivers after',
    )


def result_changed(document):
    """Whether a non-dry-run bind/restore/unbind changed any device."""
    result = (document or {}).get('result')
    if not result:
        return False
    return any(d.get('status') not in ('unchanged', None) for d in result.get('devices') or [])


def declarations_text(declarations):
    """Declarations from `persist list --json` as diff text, one per line."""
    lines = []
    for decl in sorted(declarations or [], key=lambda d: d.get('key') or ''):
        lines.append('%s driver=%s' % (decl.get('key'), decl.get('driver') or 'vfio-pci-or-variant'))
    return '\n'.join(lines) + ('\n' if lines else '')
