#!/usr/bin/env bash
set -euxo pipefail

out=$OUTPUT_DIR/gpu_passthrough
root=$out/host
rm -rf "$out"
mkdir -p "$out"
vars=(-i ../../inventory -e @../../integration_config.yml -e "root=$root" -e "output_dir=$out")

ansible-playbook setup.yml "${vars[@]}" "$@"
# The simulated kernel of the fakehost target answers vfioctl's sysfs writes.
python3 ../fakehost/files/simkernel.py "$root" 300 &
sim=$!
trap 'touch "$root/.simkernel-stop"; wait $sim' EXIT

ansible-playbook role.yml --check --diff "${vars[@]}" "$@" | tee "$out/check.log"
ansible-playbook assert-untouched.yml "${vars[@]}" "$@"

ansible-playbook role.yml "${vars[@]}" "$@" | tee "$out/first.log"
grep -Eq 'testhost *: ok=[0-9]+ +changed=[1-9]' "$out/first.log"

ansible-playbook role.yml "${vars[@]}" "$@" | tee "$out/second.log"
grep -Eq 'testhost *: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$out/second.log"

ansible-playbook assert-applied.yml "${vars[@]}" "$@"
