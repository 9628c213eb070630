# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.vfioctl.vfioctl.plugins.modules import reset
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

# The parts of a `vfioctl reset --json` document the module reads.
PLAN = {'method': None, 'devices': [{'address': '0000:41:00.0'}, {'address': '0000:41:00.1'}], 'checks': [], 'notes': []}


class FakeModule(object):
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = dict(selector=['41:00.0'], method=None, timeout=10)
        self.params.update(params)


def test_options_are_joined_and_check_mode_is_the_dry_run():
    assert reset.arguments(FakeModule()) == ['reset', '--timeout=10']
    assert reset.arguments(FakeModule(check_mode=True, method='flr', timeout=3)) == \
        ['reset', '--method=flr', '--timeout=3', '--dry-run']


def test_an_option_shaped_selector_stays_an_operand():
    argv = v.command_line(type('M', (), {'params': dict(binary='/usr/sbin/vfioctl', root='/')})(),
                          reset.arguments(FakeModule()), operands=['--dry-run'])
    assert argv[argv.index('--') + 1:] == ['--dry-run']
    assert argv.count('--dry-run') == 1


def test_check_mode_reports_the_planned_devices_as_changing():
    out = reset.outcome({'plan': PLAN, 'result': None}, check_mode=True)
    assert out['changed']
    assert out['devices'] == ['0000:41:00.0', '0000:41:00.1']
    assert out['verified'] == []


def test_a_real_run_reports_what_was_reset_and_what_verified():
    result = {'devices': [
        {'address': '0000:41:00.0', 'status': 'verified'},
        {'address': '0000:41:00.1', 'status': 'unfit'},
    ], 'state_error': None}
    out = reset.outcome({'plan': PLAN, 'result': result}, check_mode=False)
    assert out['changed']
    assert out['devices'] == ['0000:41:00.0', '0000:41:00.1']
    assert out['verified'] == ['0000:41:00.0']
    # A pending first device: the second was not reset.
    result['devices'] = [{'address': '0000:41:00.0', 'status': 'pending'},
                         {'address': '0000:41:00.1', 'status': 'not_reset'}]
    out = reset.outcome({'plan': PLAN, 'result': result}, check_mode=False)
    assert out['devices'] == ['0000:41:00.0']
    assert out['verified'] == []


def test_the_methods_are_the_kernels():
    assert reset.METHODS == ['device_specific', 'acpi', 'flr', 'af_flr', 'pm', 'bus', 'cxl_bus']


def test_pending_has_a_reason():
    assert v.EXIT_NAMES[8] == 'pending in the kernel'
