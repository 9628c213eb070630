#!/bin/sh
# Scale of declared bindings: how long vfioctl takes to load, list and
# check N declarations (default 10,000) on a fake host of G GPUs (default
# 2,500: 10,000 PCI functions). Read-only commands against a fake --root.
# Prints a table of wall-clock times (best of 3). Usage:
#   bench/config_scale.sh [N] [G]   (builds release binaries first; NO_BUILD=1 skips that)
set -eu
N=${1:-10000}
G=${2:-2500}
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked --quiet --bin vfioctl --example fakehost
BIN=target/release/vfioctl
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vfioctl-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
target/release/examples/fakehost "$WORK/root" "$G" >/dev/null
D="$WORK/root/etc/vfioctl/bindings.d"
# One file of N bindings (line numbers), by IDs, none of which is present,
# plus one file per present GPU declared by address (N files in all at most).
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "[[binding]]\nvendor = \"1af4\"\ndevice = \"%04x\"\n\n", i }' > "$D/many.toml"
time_it() {
    best=
    for _ in 1 2 3; do
        start=$(date +%s%N)
        "$BIN" --root "$WORK/root" "$@" >/dev/null 2>&1 || true
        end=$(date +%s%N)
        ms=$(( (end - start) / 1000000 ))
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
    done
    printf '| %-28s | %6s ms |\n' "$*" "$best"
}
echo "$N declarations in one file, $((G * 4)) PCI functions"
echo
printf '| %-28s | %9s |\n' command "best of 3"
printf '|%s|%s|\n' "------------------------------" "-----------"
time_it list
time_it persist list
time_it persist list --json
time_it persist rules
time_it check
time_it host-config
