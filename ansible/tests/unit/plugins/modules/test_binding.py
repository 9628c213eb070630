# -*- coding: utf-8 -*-
# Copyright: vfioctl maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible_collections.vfioctl.vfioctl.plugins.modules import binding
from ansible_collections.vfioctl.vfioctl.plugins.module_utils import vfioctl as v

# persist list --json: 10de:2204 declared by IDs, governing two GPUs.
DECLARED = [
    {'key': '10de:2204', 'driver': None, 'devices': [
        {'address': '0000:33:00.0', 'driver': 'vfio-pci'},
        {'address': '0000:34:00.0', 'driver': 'nvidia'},
    ]},
]
# What `vfioctl list SELECTOR --json` matches, per selector.
MATCHES = {
    'class=gpu': ['0000:33:00.0', '0000:34:00.0'],
    'class=audio': ['0000:33:00.1'],
    '0000:34:00.0': ['0000:34:00.0'],
    '10de:2204': ['0000:33:00.0', '0000:34:00.0'],
}


class FakeModule(object):
    def __init__(self, selectors):
        self.params = {'selector': selectors}

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


@pytest.fixture(autouse=True)
def fake_list(monkeypatch):
    def run(module, args, ok=(0,), json_output=True, operands=None):
        # The selector goes after `--`, never among the options.
        assert args == ['list'] and len(operands) == 1
        found = MATCHES.get(operands[0])
        if found is None:
            if 3 not in ok:
                raise v.VfioctlError(args, 3, 'no match')
            return 3, None
        return 0, [{'address': a} for a in found]
    monkeypatch.setattr(v, 'run', run)


def test_present_by_key_is_done_when_the_key_is_declared_with_that_driver():
    todo, after = binding.pending(FakeModule(['10de:2204']), DECLARED, 'present', None)
    assert todo == []
    assert after == DECLARED


def test_present_by_key_with_another_driver_is_pending():
    todo, after = binding.pending(FakeModule(['10de:2204']), DECLARED, 'present', 'pci-stub')
    assert todo == ['10de:2204']
    assert after == [{'key': '10de:2204', 'driver': 'pci-stub'}]


def test_an_address_is_its_own_declaration_even_when_ids_govern_it():
    todo, after = binding.pending(FakeModule(['34:00.0']), DECLARED, 'present', None)
    assert todo == ['34:00.0']
    assert [d['key'] for d in after] == ['10de:2204', '0000:34:00.0']


def test_present_by_class_looks_at_the_devices_it_matches():
    todo, dummy = binding.pending(FakeModule(['class=gpu']), DECLARED, 'present', None)
    assert todo == []
    todo, after = binding.pending(FakeModule(['class=audio']), DECLARED, 'present', None)
    assert todo == ['class=audio']
    assert after[-1] == {'key': '0000:33:00.1', 'driver': None}


def test_absent_removes_by_key_or_by_governed_device():
    todo, after = binding.pending(FakeModule(['10de:2204']), DECLARED, 'absent', None)
    assert todo == ['10de:2204'] and after == []
    todo, after = binding.pending(FakeModule(['class=gpu']), DECLARED, 'absent', None)
    assert todo == ['class=gpu'] and after == []


def test_absent_is_done_when_nothing_names_a_declaration():
    todo, after = binding.pending(FakeModule(['class=audio', '0000:99:00.0']), DECLARED, 'absent', None)
    assert todo == [] and after == DECLARED


def test_changed_devices_compares_coverage_and_driver():
    after = [{'key': '10de:2204', 'driver': 'pci-stub', 'devices': DECLARED[0]['devices']}]
    assert binding.changed_devices(DECLARED, after) == ['0000:33:00.0', '0000:34:00.0']
    assert binding.changed_devices(DECLARED, DECLARED) == []


class RuntimeModule(FakeModule):
    def __init__(self, check_mode=False, **params):
        super(RuntimeModule, self).__init__(['0000:34:00.0'])
        self.params.update(state='bound', driver=None, force=False, with_group=False, timeout=10)
        self.params.update(params)
        self.check_mode = check_mode
        self._diff = False

    def exit_json(self, **kwargs):
        self.exited = kwargs


def run_runtime(monkeypatch, module):
    calls = []

    def run(module, args, ok=(0,), json_output=True, operands=None):
        calls.append((args, operands))
        return 0, {'plan': {'actions': []}, 'result': None}
    monkeypatch.setattr(v, 'run', run)
    binding.runtime(module)
    return calls


def test_bind_passes_its_options_joined_and_never_a_fabric(monkeypatch):
    module = RuntimeModule(check_mode=True, driver='pci-stub', with_group=True, force=True)
    calls = run_runtime(monkeypatch, module)
    # vfioctl bind reads the HGX fabric mode from the host; it has no --fabric.
    assert calls == [(['bind', '--driver=pci-stub', '--with-group', '--force', '--timeout=10', '--dry-run'], ['0000:34:00.0'])]
    assert module.exited['changed'] is False


def test_restore_takes_no_bind_options(monkeypatch):
    calls = run_runtime(monkeypatch, RuntimeModule(state='restored'))
    assert calls == [(['restore', '--timeout=10'], ['0000:34:00.0'])]


def test_fabric_is_not_an_option_of_binding(capsys):
    testing = pytest.importorskip('ansible.module_utils.testing')
    with testing.patch_module_args({'selector': ['0000:34:00.0'], 'fabric': 'shared'}):
        with pytest.raises(SystemExit):
            binding.main()
    out = json.loads(capsys.readouterr().out)
    assert out['failed']
    assert 'Unsupported parameters' in out['msg'] and 'fabric' in out['msg']
