# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

PLAN = {
    'command': 'bind',
    'dry_run': True,
    'plan': {
        'goal': 'bind_vfio',
        'actions': [
            {'address': '0000:34:00.0', 'reason': 'requested',
             'before': {'driver': 'nvidia', 'driver_override': None},
             'after': {'driver': 'vfio-pci', 'driver_override': 'vfio-pci'},
             'steps': [{'step': 'set_override', 'driver': 'vfio-pci'}, {'step': 'probe'}]},
            {'address': '0000:33:00.0', 'reason': 'requested',
             'before': {'driver': 'vfio-pci', 'driver_override': 'vfio-pci'},
             'after': {'driver': 'vfio-pci', 'driver_override': 'vfio-pci'},
             'steps': []},
        ],
    },
    'result': None,
}


@pytest.mark.parametrize('selector, key', [
    ('25:00.0', '0000:25:00.0'),
    ('0000:25:00.0', '0000:25:00.0'),
    ('0001:AB:1f.7', '0001:ab:1f.7'),
    ('10DE:20B0', '10de:20b0'),
    ('10de:20b0:10de:134f', '10de:20b0:10de:134f'),
    ('10de:', None),
    ('class=gpu', None),
    ('group=3', None),
    ('25:00.8', None),
])
def test_declaration_key_follows_persist_add(selector, key):
    assert v.declaration_key(selector) == key


def test_plan_diff_lists_only_devices_that_change():
    diff = v.plan_diff(PLAN)
    assert diff['before'] == '0000:34:00.0 driver=nvidia override=-\n'
    assert diff['after'] == '0000:34:00.0 driver=vfio-pci override=vfio-pci\n'
    assert [a['address'] for a in v.plan_changes(PLAN)] == ['0000:34:00.0']


def test_a_plan_with_nothing_to_do_has_an_empty_diff():
    document = {'plan': {'actions': [PLAN['plan']['actions'][1]]}, 'result': None}
    assert v.plan_diff(document)['before'] == ''
    assert not v.plan_changes(document)
    assert not v.result_changed(document)


def test_result_changed_only_when_a_device_was_changed():
    unchanged = {'result': {'devices': [{'address': 'a', 'status': 'unchanged'}]}}
    done = {'result': {'devices': [{'address': 'a', 'status': 'unchanged'}, {'address': 'b', 'status': 'done'}]}}
    assert not v.result_changed(unchanged)
    assert v.result_changed(done)
    assert not v.result_changed({'result': None})


def test_error_message_prefers_vfioctl_line_then_clap_error():
    assert v.error_message(4, '', 'vfioctl: 0000:01:00.0 is a bridge\n') == 'vfioctl: 0000:01:00.0 is a bridge'
    clap = "error: unexpected argument '--fabric' found\n\n  tip: x\n\nUsage: vfioctl nova\n\nFor more information, try '--help'.\n"
    assert v.error_message(2, '', clap) == "vfioctl: error: unexpected argument '--fabric' found"
    assert 'status 5' in v.error_message(5, '', '')


def test_error_message_takes_the_failed_result_from_json():
    document = '{"result": {"devices": [], "error": "0000:34:00.0: expected driver nvidia", "rollback_errors": []}}'
    assert v.error_message(1, document, 'vfioctl: other') == '0000:34:00.0: expected driver nvidia'


def test_same_driver_treats_dash_and_underscore_alike():
    assert v.same_driver('vfio_pci', 'vfio-pci')
    assert v.same_driver(None, None)
    assert not v.same_driver(None, 'pci-stub')


def test_declarations_text_is_sorted_and_names_the_default():
    text = v.declarations_text([{'key': '10de:20b0', 'driver': None}, {'key': '0000:25:00.0', 'driver': 'pci-stub'}])
    assert text == '0000:25:00.0 driver=pci-stub\n10de:20b0 driver=vfio-pci-or-variant\n'


class ArgvModule(object):
    def __init__(self, **params):
        self.params = dict(binary='/usr/sbin/vfioctl', root='/', connect=None)
        self.params.update(params)


@pytest.mark.parametrize('value', ['--force', '--persist', '-n', '--root=/', '--', 'class=gpu'])
def test_values_from_the_play_never_become_options(value):
    module = ArgvModule(root='--force', connect='--json')
    argv = v.command_line(module, ['bind', v.option('driver', value), v.option('timeout', 10)], operands=[value, '25:00.0'])
    assert argv == ['/usr/sbin/vfioctl', '--root=--force', '--connect=--json', 'bind', '--driver=' + value,
                    '--timeout=10', '--json', '--', value, '25:00.0']
    # Everything before `--` is an option the module chose, each value joined to its name.
    options = argv[1:argv.index('--')]
    assert options == ['--root=--force', '--connect=--json', 'bind', '--driver=' + value, '--timeout=10', '--json']


def test_no_operands_no_separator():
    argv = v.command_line(ArgvModule(), ['persist', 'list'])
    assert argv == ['/usr/sbin/vfioctl', '--root=/', 'persist', 'list', '--json']
    argv = v.command_line(ArgvModule(), ['persist', 'add', '--dry-run'], operands=['--force'], json_output=False)
    assert argv == ['/usr/sbin/vfioctl', '--root=/', 'persist', 'add', '--dry-run', '--', '--force']
