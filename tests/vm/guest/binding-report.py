"""Binding benchmark report (tests/vm/bench/binding.sh): turns the timing
lines "SET METHOD STEP N MICROSECONDS" into min/median tables, printed and
written as Markdown to /vmshare/results/binding.md for bench/vm.py.

    binding-report.py TIMES VFIOCTL_BINARY"""

import os
import statistics
import sys
from collections import defaultdict

from vmcheck import check, publish

SETS = {
    "e1000e": "1 device: the e1000e (e1000e ↔ vfio-pci)",
    "nvme-vfs": "nvme VFs (no driver ↔ vfio-pci; autoprobe off)",
    "igb-vfs": "igb VFs (igbvf ↔ vfio-pci)",
    "several": "several devices at once: the NVMe controller, the e1000e and the igb's VFs "
    "(nvme, e1000e, igbvf ↔ vfio-pci)",
}
METHODS = [
    ("shell", "shell writes (override, unbind, drivers_probe)"),
    ("shellpar", "shell writes, each device's in a background job, then `wait`"),
    ("vfioctl", "`vfioctl bind` / `vfioctl restore`, one process"),
    ("vfioctl1", "`vfioctl bind` / `vfioctl restore`, one per device"),
    ("virsh", "`virsh nodedev-detach` / `nodedev-reattach`, one per device"),
]


def ms(us):
    return f"{us / 1000:.1f}"


def main():
    times_path, binary = sys.argv[1:3]
    runs = defaultdict(list)
    counts = {}
    with open(times_path) as f:
        for line in f:
            words = line.split()
            if len(words) != 5:
                continue
            set_, method, step, n, us = words
            runs[(set_, method, step)].append(int(us))
            counts[set_] = int(n)
    check("timings-recorded", any(k[0] in SETS for k in runs), f"no timings in {times_path}")
    med = {k: statistics.median(v) for k, v in runs.items()}
    build = "release" if "/release/" in binary else "debug" if "/debug/" in binary else "as built"
    if os.environ.get("VM_REPO") and binary.startswith(os.environ["VM_REPO"] + "/"):
        binary = os.path.relpath(binary, os.environ["VM_REPO"])
    reps = max((len(v) for v in runs.values()), default=0)
    out = []
    w = out.append
    w(f"vfioctl: `{binary}` ({build} build); {reps} repetitions of each row, wall times in ms "
      "(bash's `EPOCHREALTIME` around each step; no process is started to time it).")
    w("")
    for set_, title in SETS.items():
        if (set_, "shell", "bind") not in runs:
            continue
        n = counts[set_]
        w(f"**{title}**, {n} function{'s' if n > 1 else ''}")
        w("")
        # Where the shell also ran each device's writes at once: the ratios to that too.
        par = med.get((set_, "shellpar", "bind"))
        par_back = med.get((set_, "shellpar", "back"))
        w("| method | to vfio-pci min | median | back min | median | per function, to vfio-pci | × shell |"
          + (" × shell at once, to vfio-pci | back |" if par else ""))
        w("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if par else ""))
        shell = med[(set_, "shell", "bind")]
        for method, label in METHODS:
            bind, back = runs.get((set_, method, "bind")), runs.get((set_, method, "back"))
            if not bind or not back:
                continue
            row = (f"| {label} | {ms(min(bind))} | {ms(statistics.median(bind))} | {ms(min(back))} | "
                   f"{ms(statistics.median(back))} | {ms(statistics.median(bind) / n)} | "
                   f"{statistics.median(bind) / shell:.1f}× |")
            if par:
                row += f" {statistics.median(bind) / par:.1f}× | {statistics.median(back) / par_back:.1f}× |"
            w(row)
        w("")
    start = med.get(("process", "vfioctl", "version"))
    w("**Where vfioctl's time goes** (medians, ms): the shell sequence is the kernel's own "
      "unbind + probe time; `--dry-run` is process start, reads and checks without writing.")
    w("")
    w("| functions | kernel (shell) | `vfioctl --version` | `bind --dry-run` | `vfioctl bind` | "
      "vfioctl's own cost (bind − shell) | own cost less process start, ÷ functions |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for set_ in SETS:
        if (set_, "vfioctl", "bind") not in med:
            continue
        n = counts[set_]
        shell, bind = med[(set_, "shell", "bind")], med[(set_, "vfioctl", "bind")]
        dry = med.get((set_, "vfioctl", "dry-run"))
        own = bind - shell
        w(f"| {set_} ({n}) | {ms(shell)} | {ms(start) if start else '–'} | {ms(dry) if dry else '–'} | "
          f"{ms(bind)} | {ms(own)} | {ms((own - (start or 0)) / n)} |")
    publish("binding.md", out)


if __name__ == "__main__":
    main()
