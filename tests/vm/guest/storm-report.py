"""Boot storm report (scenario 86-boot-storm): reads the hooks' trace lines
(VFIOCTL_TRACE, one per udev-hook run), the time udev started and the
declared devices, checks that every device had its hook and that the hooks
held the lock one after another, and prints a table, also written as
Markdown to /vmshare/results/boot-storm.md for bench/vm.py.

    storm-report.py TRACE UDEV_START UDEV_SETTLED DEVICES [ALONE_DEVICE...]

Times in the trace are seconds since boot (the clock of /proc/uptime).
ALONE_DEVICE: a device whose last trace line is a hook run on its own after
the storm (the scenario re-added it), for the hold time without a queue."""

import statistics
import sys

from vmcheck import check, expect, publish


def parse(path):
    runs = []
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) < 3 or words[0] != "udev-hook":
                continue
            run = {"device": words[1]}
            for word in words[2:]:
                key, _, value = word.partition("=")
                run[key] = value
            for key in ("start", "lock_asked", "lock_got", "lock_released", "end"):
                run[key] = float(run[key]) if run.get(key, "-") != "-" else None
            runs.append(run)
    return runs


def ms(seconds):
    return f"{seconds * 1000:.0f}"


def main():
    trace, udev_start, udev_settled, devices_file = sys.argv[1:5]
    alone_devices = sys.argv[5:]
    t0 = float(open(udev_start).read().split()[0])
    settled = float(open(udev_settled).read().split()[0])
    devices = open(devices_file).read().split()
    runs = parse(trace)
    alone = []
    for device in alone_devices:
        mine = [r for r in runs if r["device"] == device]
        check(f"alone-{device}-traced", len(mine) == 2 and mine[-1]["lock_released"] is not None,
              f"{len(mine)} trace lines")
        if len(mine) == 2:
            alone.append((mine[0], mine[1]))
            runs.remove(mine[1])
    storm = [r for r in runs if r["device"] in devices]

    expect("one-hook-per-device", sorted(r["device"] for r in storm), sorted(devices))
    check("every-hook-ok", all(r.get("status") == "ok" for r in storm),
          " ".join(f"{r['device']}={r.get('status')}" for r in storm))
    locked = [r for r in storm if r["lock_got"] is not None and r["lock_released"] is not None]
    expect("every-hook-took-the-lock", len(locked), len(storm))
    spans = sorted((r["lock_got"], r["lock_released"]) for r in locked)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    check("hooks-hold-the-lock-in-turn", not overlaps, f"overlapping holds: {overlaps}")
    if not storm or len(locked) != len(storm):
        return

    lines = []
    out = lines.append
    out("| device | hook start | asked lock | got lock | released | hook end | lock wait ms | lock held ms | hook total ms |")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(storm, key=lambda r: r["start"]):
        out(f"| `{r['device']}` | {r['start'] - t0:.3f} | {r['lock_asked'] - t0:.3f} | {r['lock_got'] - t0:.3f}"
            f" | {r['lock_released'] - t0:.3f} | {r['end'] - t0:.3f} | {ms(r['lock_got'] - r['lock_asked'])}"
            f" | {ms(r['lock_released'] - r['lock_got'])} | {ms(r['end'] - r['start'])} |")
    holds = [r["lock_released"] - r["lock_got"] for r in storm]
    waits = [r["lock_got"] - r["lock_asked"] for r in storm]
    first_start = min(r["start"] for r in storm)
    last_bound = max(r["lock_released"] for r in storm)
    first_got = min(r["lock_got"] for r in storm)
    out("")
    out("Times in seconds after udev started; each hook's lock is released once its device is verified on vfio-pci.")
    out("")
    out("| measure | value |")
    out("|---|---:|")
    out(f"| declared functions bound by hooks | {len(storm)} |")
    out(f"| udev start → first hook start | {first_start - t0:.3f} s |")
    out(f"| udev start → last function bound (last lock release) | {last_bound - t0:.3f} s |")
    out(f"| udev start → `udevadm settle` returned | {settled - t0:.3f} s |")
    out(f"| lock held, sum over hooks | {sum(holds):.3f} s |")
    out(f"| lock held from first take to last release | {last_bound - first_got:.3f} s "
        f"(busy {sum(holds) / (last_bound - first_got) * 100:.0f}%) |")
    out(f"| lock held per hook, min / median / max | {ms(min(holds))} / {ms(statistics.median(holds))} / {ms(max(holds))} ms |")
    out(f"| lock wait per hook, min / median / max | {ms(min(waits))} / {ms(statistics.median(waits))} / {ms(max(waits))} ms |")
    out(f"| hook run time, median (start → end) | {ms(statistics.median(r['end'] - r['start'] for r in storm))} ms |")
    for in_storm, by_itself in alone:
        if by_itself["lock_got"] is None or by_itself["lock_released"] is None:
            continue
        out(f"| `{by_itself['device']}`: lock held in the storm / alone after it | "
            f"{ms(in_storm['lock_released'] - in_storm['lock_got'])} / "
            f"{ms(by_itself['lock_released'] - by_itself['lock_got'])} ms |")
    publish("boot-storm.md", lines)


if __name__ == "__main__":
    main()
