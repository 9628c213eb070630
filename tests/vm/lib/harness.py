"""Host side of the real-kernel test bed (started by tests/vm/run).

Reads the scenario headers, groups scenarios by boot profile, boots one QEMU
guest per profile, answers the guest's QMP requests, turns the guest's
serial-console markers into PASS/FAIL/SKIP lines, enforces a hard timeout
per boot and prints the console tail of every boot that went wrong.
A boot with initrd=initramfs-tools|dracut is preceded by a builder guest
(vfioctl host-config --write against the real kernel) and a host-side build
of the distribution's initramfs (lib/build-initrd), then boots from it.

Serial-console markers (one per line, printed by the guest):
    @@VM ready UPTIME            stage 2 is up, scenarios start
    @@SCENARIO begin NAME
    @@CHECK pass|fail|skip SCENARIO/CHECK [detail]
    @@QMP ID JSON                run JSON on the QMP socket, reply to share/qmp/ID.json
    @@SCENARIO end NAME RC
    @@VM done                    all scenarios ran
    @@VM fatal MESSAGE           the guest could not set itself up
"""

import fcntl
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent.parent
REPO = VM_DIR.parent.parent
SCENARIO_DIR = VM_DIR / "scenarios"
# Benchmarks: run only with --bench (make bench-vm), never by `make test`.
BENCH_DIR = VM_DIR / "bench"
OVERLAY_DIR = VM_DIR / "overlays"

# Boot profile keys, their allowed values and defaults ("# boot:" header).
BOOT_KEYS = {
    "iommu": ({"on", "off"}, "on"),
    "udev": ({"on", "off"}, "on"),
    "overlay": (None, "none"),  # a directory name under tests/vm/overlays
    # the initramfs: the test bed's own, or one the distribution's tool builds
    # in a builder guest first (tests/vm/guest/initrd/build)
    "initrd": ({"test-bed", "initramfs-tools", "dracut"}, "test-bed"),
    # a GPU-like card (display + HD-audio functions in one slot) on a root
    # port of its own; only these boots have it, so no other topology moves
    "gpu": ({"on", "off"}, "off"),
    # a root port with QEMU's x-speed/x-width link properties and a
    # virtio-net with AER behind it, for the health checks; only these boots
    "health": ({"on", "off"}, "off"),
    # pcie_ports=compat: the OS owns no PCIe port service (no AER service
    # under any root port), as on servers whose firmware keeps AER
    # (firmware-first); only these boots
    "pcie_ports": ({"default", "compat"}, "default"),
}
BUILD_SCRIPT = VM_DIR / "guest/initrd/build"
BUILD_TIMEOUT = 60  # seconds for the builder guest's one scenario
# Kernel log of driver-core matching and binding, from the first probe on:
# shows whether a native driver ever probed a declared device in the initramfs.
PROBE_LOG = 'dyndbg="file drivers/base/dd.c +p"'
DEFAULT_TIMEOUT = 60  # seconds per scenario ("# timeout:" header)
BOOT_ALLOWANCE = 90  # seconds to reach "@@VM ready", on top of the scenarios
MARKER = re.compile(r"@@(VM|SCENARIO|CHECK|QMP) (\S+) ?(.*)")
CONSOLE_TAIL = 40


def fail_setup(message):
    print(f"vm: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass
class Scenario:
    name: str
    path: Path
    boot: tuple
    timeout: int


@dataclass
class Outcome:
    passed: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def record(self, status, name, detail=""):
        if status == "pass":
            self.passed.append(name)
            print(f"PASS  {name}", flush=True)
        elif status == "skip":
            self.skipped.append(name)
            print(f"SKIP  {name}: {detail}", flush=True)
        else:
            self.failed.append(name)
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""), flush=True)


def parse_scenario(path):
    boot = {key: default for key, (_, default) in BOOT_KEYS.items()}
    timeout = DEFAULT_TIMEOUT
    for line in path.read_text().splitlines()[:30]:
        m = re.match(r"#\s*(boot|timeout):\s*(.*?)\s*$", line)
        if not m:
            continue
        if m.group(1) == "timeout":
            if not m.group(2).isdigit():
                fail_setup(f"{path.name}: bad timeout {m.group(2)!r}")
            timeout = int(m.group(2))
            continue
        for item in m.group(2).split():
            key, _, value = item.partition("=")
            if key not in BOOT_KEYS:
                fail_setup(f"{path.name}: unknown boot key {key!r} (known: {', '.join(BOOT_KEYS)})")
            allowed = BOOT_KEYS[key][0]
            if allowed is not None and value not in allowed:
                fail_setup(f"{path.name}: {key}={value!r} is not one of {sorted(allowed)}")
            boot[key] = value
    if boot["overlay"] != "none" and not (OVERLAY_DIR / boot["overlay"]).is_dir():
        fail_setup(f"{path.name}: no overlay directory {OVERLAY_DIR / boot['overlay']}")
    return Scenario(path.stem, path, tuple(sorted(boot.items())), timeout)


def select_scenarios(wanted, bench=False):
    """The scenarios named (all without names). With bench, the benchmarks
    in tests/vm/bench can be named too, and are what no names selects."""
    everything = [parse_scenario(p) for p in sorted(SCENARIO_DIR.glob("*.sh"))]
    if bench:
        benchmarks = [parse_scenario(p) for p in sorted(BENCH_DIR.glob("*.sh"))]
        if not wanted:
            return benchmarks
        everything += benchmarks
    if not wanted:
        return everything
    chosen = []
    for w in wanted:
        # "20-sriov" or just "sriov" (the name without its order prefix)
        hits = [s for s in everything if w in (s.name, s.name.split("-", 1)[-1])]
        if not hits:
            fail_setup(f"no scenario named {w!r}; have: {' '.join(s.name for s in everything)}")
        chosen += [s for s in hits if s not in chosen]
    return sorted(chosen, key=lambda s: s.name)


class Qemu:
    """Which QEMU to run: QEMU 10 unpacked by setup when present (has igb),
    else the system's."""

    def __init__(self, cache):
        private = cache / "qemu10"
        choice = os.environ.get("VFIOCTL_VM_QEMU", "auto")
        self.env = dict(os.environ)
        if choice != "system" and (private / "usr/bin/qemu-system-x86_64").is_file():
            self.argv = [str(private / "usr/bin/qemu-system-x86_64"),
                         "-L", str(private / "usr/share/qemu"),
                         "-L", str(private / "usr/share/seabios")]
            self.env["QEMU_MODULE_DIR"] = str(private / "usr/lib/x86_64-linux-gnu/qemu")
        elif choice == "backports":
            fail_setup("VFIOCTL_VM_QEMU=backports but QEMU 10 is not in the cache: run tests/vm/setup")
        else:
            system = shutil.which("qemu-system-x86_64")
            if not system:
                fail_setup("qemu-system-x86_64 is missing: run tests/vm/setup")
            self.argv = [system]
        version = subprocess.run(self.argv + ["-version"], env=self.env, capture_output=True,
                                 text=True).stdout.split("\n")[0]
        self.version = version.replace("QEMU emulator version ", "QEMU ")
        probe = subprocess.run(self.argv + ["-device", "igb,help"], env=self.env,
                               capture_output=True, text=True)
        # QEMU 7.2 says "Device 'igb' not found" yet exits 0.
        self.has_igb = probe.returncode == 0 and probe.stdout.startswith("igb options")


def topology(has_igb, nvme_disk, second_e1000e=False, gpu=False, health=False):
    """The fixed PCI layout (see tests/vm/README.md)."""
    d = []
    for n in range(1, 6):
        d += ["-device", f"pcie-root-port,id=rp{n},bus=pcie.0,addr=0x{0x0f + n:x},chassis={n},slot={n}"]
    d += [
        # alone in its group, host driver e1000e
        "-device", "e1000e,id=e1000e,bus=rp1,romfile=",
        # SR-IOV PF with two VFs (nvme); the VFs get their own groups
        "-device", "nvme-subsys,id=nvmesubsys",
        "-device", "nvme,id=nvme,bus=rp2,serial=vfioctl-vm,subsys=nvmesubsys,sriov_max_vfs=2,"
                   "sriov_vq_flexible=4,sriov_vi_flexible=2,max_ioqpairs=6",
        # its namespace, on a per-boot sparse image, for filesystem-in-use cases
        "-drive", f"file={nvme_disk},if=none,id=nvmedisk,format=raw",
        "-device", "nvme-ns,drive=nvmedisk,bus=nvme,nsid=1",
        # rp3 stays empty for hot-add
        # one group holding a PCIe-to-PCI bridge and two e1000 behind it
        "-device", "pcie-pci-bridge,id=pcibridge,bus=rp4",
        "-device", "e1000,id=e1000a,bus=pcibridge,addr=1,romfile=",
        "-device", "e1000,id=e1000b,bus=pcibridge,addr=2,romfile=",
        "-device", "virtio-net-pci,id=virtionet,bus=pcie.0,addr=0x18,romfile=",
    ]
    if has_igb:
        # SR-IOV NIC (7 VFs with igbvf); QEMU 8.0 and later only
        d += ["-device", "igb,id=igb,bus=rp5,romfile="]
    if second_e1000e:
        # a second device of the e1000e model in a group of its own, for the
        # boots from a distribution-built initramfs: declared one, undeclared other
        d += ["-device", "pcie-root-port,id=rp6,bus=pcie.0,addr=0x15,chassis=6,slot=6",
              "-device", "e1000e,id=e1000e2,bus=rp6,romfile="]
    if gpu:
        # A GPU-like card for the safety gate: a display function with a DRM
        # driver (bochs, 16 MB prefetchable BAR: the port reserves room for
        # it) and an HD-audio function with a codec in the same slot.
        d += ["-audiodev", "none,id=gpuaudio",
              "-device", "pcie-root-port,id=rp7,bus=pcie.0,addr=0x16,chassis=7,slot=7,"
                         "pref32-reserve=32M,mem-reserve=8M",
              "-device", "bochs-display,id=gpu,bus=rp7,addr=0.0,multifunction=on,romfile=",
              "-device", "ich9-intel-hda,id=gpuhda,bus=rp7,addr=0.1,romfile=",
              "-device", "hda-duplex,bus=gpuhda.0,audiodev=gpuaudio"]
    if health:
        # A root port whose link capability QEMU sets to 8 GT/s x4 (its
        # defaults are 16 GT/s x32), with a virtio-net behind it that has an
        # AER capability and writable error reporting enables (QEMU's e1000e
        # has AER, but its Device Control reporting bits are read-only 0).
        d += ["-device", "pcie-root-port,id=rp8,bus=pcie.0,addr=0x17,chassis=8,slot=8,"
                         "x-speed=8,x-width=4",
              "-device", "virtio-net-pci,id=virtioaer,bus=rp8,aer=on,disable-legacy=on,romfile="]
    return d


class Qmp:
    """A small QMP client: one command at a time; events are skipped."""

    def __init__(self, path, deadline):
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(30)
        self.stream = self.sock.makefile("rw", encoding="utf-8")
        self._reply()  # the greeting
        self.execute({"execute": "qmp_capabilities"})

    def _reply(self):
        while True:
            line = self.stream.readline()
            if not line:
                raise ConnectionError("QMP socket closed")
            message = json.loads(line)
            if "event" not in message:
                return message

    def execute(self, command):
        self.stream.write(json.dumps(command) + "\n")
        self.stream.flush()
        return self._reply()

    def close(self):
        self.sock.close()


class Boot:
    """One guest: boots it, runs its scenarios, records their checks."""

    def __init__(self, cfg, number, total, boot, scenarios, builder=None):
        """builder: the Boot that built this boot's initramfs (initrd=FLAVOUR
        boots), or None (the test bed's own initramfs; also the builder's)."""
        self.cfg = cfg
        self.builder = builder
        self.number, self.total = number, total
        self.boot = dict(boot)
        self.scenarios = scenarios
        self.label = " ".join(f"{k}={v}" for k, v in boot)
        self.dir = cfg["run_dir"] / f"boot{number}"
        self.share = self.dir / "share"
        self.console_path = self.dir / "console.log"
        self.console = []

    def command(self):
        cfg, iommu = self.cfg, self.boot["iommu"] == "on"
        append = ["console=ttyS0", "panic=-1", "quiet", "loglevel=4", "mitigations=off", "clocksource=tsc", "tsc=reliable",
                  # a loaded host can starve the IO-APIC timer check into a panic
                  "no_timer_check",
                  f"vmmodules={cfg['modules']}"]
        initrd = cfg["cache"] / "initramfs.cpio.gz"
        stage2 = f"{VM_DIR}/guest/stage2"
        if self.builder:
            # The distribution's initramfs hands over to stage 2 through its
            # own init= (last: dracut passes what follows to the init).
            initrd = self.builder.share / "initrd.img"
            root = "boot=vmtest" if self.boot["initrd"] == "initramfs-tools" else "root=vmtest"
            tail = [PROBE_LOG, root, f"init={stage2}"]
        else:
            tail = [f"vmstage2={stage2}"]
        machine = ["-machine", "q35"]
        if self.boot["pcie_ports"] == "compat":
            append += ["pcie_ports=compat"]
        if iommu:
            append += ["intel_iommu=on", "iommu=pt"]
            # The IOMMU must come before the devices it translates for.
            machine = ["-machine", "q35,kernel-irqchip=split",
                       "-device", "intel-iommu,intremap=on,caching-mode=on"]
        append += tail
        return [
            *cfg["qemu"].argv,
            "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1G",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            *machine,
            "-kernel", str(cfg["cache"] / "vmlinux"),
            "-initrd", str(initrd),
            "-append", " ".join(append),
            "-serial", "stdio",
            "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.share},mount_tag=vmshare,security_model=none,multidevs=remap",
            *topology(cfg["qemu"].has_igb, self.dir / "nvme.img", self.boot["initrd"] != "test-bed",
                     self.boot["gpu"] == "on", self.boot["health"] == "on"),
        ]

    def prepare(self):
        self.share.mkdir(parents=True)
        (self.share / "qmp").mkdir()
        with open(self.dir / "nvme.img", "wb") as disk:
            disk.truncate(64 << 20)
        overlay = self.boot["overlay"]
        env = {
            "VM_REPO": REPO,
            "VFIOCTL_BIN": self.cfg["vfioctl"],
            "VM_UDEV": self.boot["udev"],
            "VM_IOMMU": self.boot["iommu"],
            "VM_OVERLAY": "" if overlay == "none" else overlay,
            "VM_QEMU": self.cfg["qemu"].version,
            "VM_INITRD": self.boot["initrd"],
            "VM_CACHE": self.cfg["cache"],
        }
        # Benchmark settings (VM_BENCH_REPS: bench/vm.py) reach the guest as they are.
        env.update({k: v for k, v in os.environ.items() if k.startswith("VM_BENCH_")})
        (self.share / "run.env").write_text(
            "".join(f"{k}={shell_quote(str(v))}\n" for k, v in env.items()))
        (self.share / "scenarios.list").write_text(
            "".join(f"{s.name} {s.timeout} {s.path}\n" for s in self.scenarios))

    def run(self, outcome):
        if self.builder and not self.build_initrd(outcome):
            for s in self.scenarios:
                outcome.record("fail", f"{s.name}/scenario", f"never ran: no {self.boot['initrd']} initramfs was built")
            return 0.0, False
        self.prepare()
        names = " ".join(s.name for s in self.scenarios)
        print(f"== boot {self.number}/{self.total} [{self.label}]: {names}", flush=True)
        limit = BOOT_ALLOWANCE + sum(s.timeout + 10 for s in self.scenarios)
        if self.cfg["timeout"]:
            limit = self.cfg["timeout"]
        started = time.monotonic()
        deadline = started + limit
        log = self.console_path.open("w", encoding="utf-8")
        proc = subprocess.Popen(self.command(), env=self.cfg["qemu"].env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = queue.Queue()

        def pump():
            for raw in proc.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        qmp = None
        failed_before = len(outcome.failed)
        state = {"ready": False, "done": False, "current": None, "ended": set(), "problem": None,
                 "since": started}
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    where = state["current"] or ("boot" if not state["ready"] else "shutdown")
                    state["problem"] = f"hard timeout after {limit} s (in {where}); QEMU killed"
                    break
                try:
                    line = lines.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    continue
                if line is None:
                    break
                log.write(line + "\n")
                log.flush()
                self.console.append(line)
                if self.cfg["verbose"]:
                    print(f"   | {line}", flush=True)
                m = MARKER.search(line)
                if not m:
                    continue
                kind, word, rest = m.groups()
                if kind == "QMP":
                    if qmp is None:
                        qmp = Qmp(self.dir / "qmp.sock", deadline)
                    self.answer_qmp(qmp, word, rest)
                elif kind == "CHECK":
                    name, _, detail = rest.partition(" ")
                    outcome.record(word, name, detail)
                elif kind == "SCENARIO" and word == "begin":
                    state["current"] = rest
                    state["since"] = time.monotonic()
                elif kind == "SCENARIO" and word == "end":
                    name, _, rc = rest.partition(" ")
                    state["ended"].add(name)
                    state["current"] = None
                    if rc != "0":
                        why = "timed out in the guest" if rc in ("124", "137") else f"exited with status {rc}"
                        outcome.record("fail", f"{name}/scenario", why)
                    print(f"   {name} took {time.monotonic() - state['since']:.1f} s", flush=True)
                elif kind == "VM" and word == "ready":
                    state["ready"] = True
                    print(f"   guest ready after {time.monotonic() - started:.1f} s", flush=True)
                elif kind == "VM" and word == "done":
                    state["done"] = True
                elif kind == "VM" and word == "fatal":
                    state["problem"] = f"guest setup failed: {rest}"
        finally:
            if proc.poll() is None:
                proc.kill()  # SIGKILL by PID
            proc.wait()
            if qmp:
                qmp.close()
            log.close()
        took = time.monotonic() - started
        if not state["problem"] and not state["done"]:
            state["problem"] = f"QEMU exited (status {proc.returncode}) before the guest finished"
        for s in self.scenarios:
            if s.name not in state["ended"] and s.name != state["current"]:
                outcome.record("fail", f"{s.name}/scenario", "never ran")
            elif s.name == state["current"]:
                outcome.record("fail", f"{s.name}/scenario", "did not finish")
        if state["problem"]:
            outcome.record("fail", f"boot{self.number}", state["problem"])
        failed = {name.split("/", 1)[0] for name in outcome.failed[failed_before:]}
        if failed:
            self.show_tail([s.name for s in self.scenarios if s.name in failed or state["problem"]])
        print(f"   boot {self.number} took {took:.1f} s", flush=True)
        return took, state["problem"] is None

    def build_initrd(self, outcome):
        """Builds this boot's initramfs on the host from what the builder
        guest's host-config wrote (tests/vm/lib/build-initrd)."""
        flavour, share = self.boot["initrd"], self.builder.share
        name = f"build-{flavour}/initrd-built"
        if not (share / "host-files.tar").is_file():
            outcome.record("fail", name, "the builder guest left no host-files.tar")
            return False
        started = time.monotonic()
        run = subprocess.run([str(VM_DIR / "lib/build-initrd"), flavour, str(self.cfg["cache"]), str(share)],
                             capture_output=True, text=True)
        took = time.monotonic() - started
        image = share / "initrd.img"
        if run.returncode != 0 or not image.is_file() or image.stat().st_size == 0:
            detail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            outcome.record("fail", name, f"exit {run.returncode}: {detail}")
            return False
        outcome.record("pass", name)
        print(f"   {flavour} initramfs built in {took:.1f} s ({image.stat().st_size >> 10} KiB)", flush=True)
        return True

    def answer_qmp(self, qmp, ident, payload):
        try:
            reply = qmp.execute(json.loads(payload))
        except (ValueError, OSError) as e:
            reply = {"error": {"class": "HarnessError", "desc": str(e)}}
        tmp = self.share / "qmp" / f".{ident}.tmp"
        tmp.write_text(json.dumps(reply))
        tmp.rename(self.share / "qmp" / f"{ident}.json")  # appears whole to the guest

    def show_tail(self, scenarios):
        """The console's tail, then the tails of the named scenarios' logs."""
        print(f"   --- console tail ({self.console_path}) ---")
        for line in self.console[-CONSOLE_TAIL:]:
            print(f"   | {line}")
        for name in scenarios:
            path = self.share / "logs" / f"{name}.log"
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-15:]
                print(f"   --- {path} (tail) ---")
                for line in text:
                    print(f"   | {line}")
        print("   ---")


def hold_the_lock(cache):
    """One suite at a time per cache: guests are CPU-bound (2 cores in CI)
    and share the cache. Held until this process exits."""
    global _lock_file
    _lock_file = open(cache / "run.lock", "a+")
    try:
        fcntl.flock(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _lock_file.seek(0)
        other = _lock_file.read().strip() or "?"
        print(f"vm: waiting for another tests/vm/run (pid {other}) to finish", flush=True)
        fcntl.flock(_lock_file, fcntl.LOCK_EX)
    _lock_file.truncate(0)
    _lock_file.write(f"{os.getpid()}\n")
    _lock_file.flush()


def new_run_dir(cache, keep=5):
    """cache/runs/<time>-<pid>, the newest `keep` kept; cache/last-run points
    at this one."""
    runs = cache / "runs"
    runs.mkdir(exist_ok=True)
    for old in sorted(runs.iterdir())[:-(keep - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir()
    link = cache / "last-run"
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(run_dir.relative_to(cache))
    return run_dir


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def main():
    cache = Path(os.environ.get("VFIOCTL_VM_CACHE", REPO / ".vm-cache")).resolve()
    vfioctl = os.environ.get("VFIOCTL_BIN")
    if not vfioctl or not os.access(vfioctl, os.X_OK):
        fail_setup(f"VFIOCTL_BIN={vfioctl!r} is not an executable (tests/vm/run sets it)")
    for need in ("vmlinux", "initramfs.cpio.gz", "kernel.version"):
        if not (cache / need).is_file():
            fail_setup(f"{cache / need} is missing: run tests/vm/setup")
    version = (cache / "kernel.version").read_text().strip()
    hold_the_lock(cache)
    run_dir = new_run_dir(cache)
    timeout = os.environ.get("VFIOCTL_VM_TIMEOUT", "")
    cfg = {
        "cache": cache,
        "modules": cache / "kernel/lib/modules" / version,
        "vfioctl": Path(vfioctl).resolve(),
        "qemu": Qemu(cache),
        "run_dir": run_dir,
        "verbose": os.environ.get("VFIOCTL_VM_VERBOSE") == "1",
        "timeout": int(timeout) if timeout.isdigit() else 0,
    }
    args = sys.argv[1:]
    bench = args[:1] == ["--bench"]
    scenarios = select_scenarios(args[1:] if bench else args, bench)
    groups = {}
    for s in scenarios:
        groups.setdefault(s.boot, []).append(s)
    print(f"vm: {len(scenarios)} scenarios in {len(groups) + sum(dict(b)['initrd'] != 'test-bed' for b in groups)} boots; kernel {version}; "
          f"{cfg['qemu'].version}{'' if cfg['qemu'].has_igb else ' (no igb)'}; logs in {run_dir}",
          flush=True)
    outcome = Outcome()
    started = time.monotonic()
    boots = []
    for boot, members in groups.items():
        flavour = dict(boot)["initrd"]
        builder = None
        if flavour != "test-bed":
            # A guest on the test bed's initramfs builds this boot's first.
            # Same devices, no overlay: it declares and writes for itself.
            plain = tuple((k, "none" if k == "overlay" else v) for k, v in boot)
            build = Scenario(f"build-{flavour}", BUILD_SCRIPT, plain, BUILD_TIMEOUT)
            builder = (plain, [build], None)
            boots.append(builder)
        boots.append((boot, members, builder))
    made = {}
    for n, (boot, members, builder) in enumerate(boots, 1):
        made[id(members)] = Boot(cfg, n, len(boots), boot, members,
                                 made[id(builder[1])] if builder else None)
        made[id(members)].run(outcome)
    total = time.monotonic() - started
    print(f"vm: {len(boots)} boots in {total:.0f} s; {len(outcome.skipped)} skipped")
    if outcome.failed:
        print("vm: failed: " + " ".join(outcome.failed))
    print(f"{len(outcome.passed)} passed, {len(outcome.failed)} failed")
    sys.exit(1 if outcome.failed or not outcome.passed else 0)


if __name__ == "__main__":
    main()
