#!/usr/bin/env python3
"""A simulated kernel under a fake host root, for the real vfioctl binary.

vfioctl changes a device with plain file writes under `--root TREE`:
`driver_override`, the address to `TREE/sys/bus/pci/devices/ADDR/driver/unbind`
(the driver's `unbind`, through the `driver` link) and to
`TREE/sys/bus/pci/drivers_probe`; then it polls the `driver` link, and for
vfio-pci `TREE/dev/vfio/GROUP`. On a plain fake tree nothing answers those
writes. This module answers them the way the kernel does, with a delay:

- Every driver's `unbind` and `drivers_probe` is a one-file FUSE mount (the
  `/dev/fuse` protocol spoken here with the standard library; `mount(2)`
  through ctypes), so opening and writing it are requests this process
  answers when it chooses. An open of an `unbind` for writing is answered
  UNBIND_S after it arrives; the write that follows (the address) moves the
  device's links as the kernel's unbind moves them and returns. The writer is
  blocked meanwhile, as a process writing to a real `unbind` is while the
  driver's remove callback runs; vfioctl's helper process (and a shell's
  `printf ADDR > unbind`) opens and writes, so it is blocked for UNBIND_S
  either way. Each open has its own clock: N unbinds at once all return about
  UNBIND_S later, N one after the other take N x UNBIND_S.
- A `drivers_probe` write binds the device (after PROBE_S, default 0) before it
  returns, as the kernel's does: to its `driver_override` when set and that
  driver is registered, else to the driver it had when the tree was opened
  (none if it had none); binding to vfio-pci creates `dev/vfio/GROUP`,
  unbinding from it removes that node.

Why the time is spent in open, not in write: FUSE holds the file's inode lock
(shared at best) while a write request is pending, and an `O_TRUNC` open (a
shell's `>`, vfioctl's helper) takes that lock exclusively, so a second
writer would wait for the first: every unbind of a driver would run one
after the other whatever vfioctl does. kernfs locks per open file, so the
real kernel runs them at once. A pending open holds no inode lock. The
cost: an engine that opened `unbind` in the process that keeps the deadline
and handed only the write to a helper would wait in that open here, where the
kernel would not; vfioctl's helper opens and writes.

Why not a FIFO with a full buffer (open succeeds, write blocks until the
buffer is drained)? Every device of a driver shares that driver's one
`unbind`, so one pipe would carry the writes of all 8 GPUs: draining it wakes
one waiting writer per freed slot (Linux 5.5+ wakes pipe writers one at a
time), the addresses sit behind the filler so the emulator learns which
device was released only later, and a writer whose write started late would
be released by an earlier writer's drain: an unbind shorter than modelled,
which flatters a concurrent engine. A FUSE request is answered on its own.

The links move as tests/support/fakehost.rs's `FakeHost::bind` and `unbind`
move them (relative symlinks `DEVICE/driver` and `drivers/DRIVER/ADDRESS`).

Must run as root in a private mount namespace (`unshare -m --propagation
private`; the callers check they are not in the one they started from): the
mounts vanish with it. It touches only files under TREE and
refuses a TREE of "/".

By hand: `python3 bench/simkernel.py --self-check` builds a small tree in a
temporary directory and shows that `printf ADDR > unbind` blocks for the
unbind time, that concurrent writes overlap and sequential ones add up, and
that probes bind as described (it re-runs itself under unshare).
"""

import ctypes
import errno
import heapq
import os
import selectors
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

# /dev/fuse protocol (include/uapi/linux/fuse.h), version 7.31 replies.
FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_SETATTR = 4
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_FSYNC = 20
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42
NO_REPLY = (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT)
FOPEN_DIRECT_IO = 1 << 0
# Writes are answered at once (an unbind waits in its open), but without this
# FUSE takes the inode's lock exclusively around each direct write; shared, a
# write queues only behind an O_TRUNC open's truncate. A write past the file's
# end takes it exclusively anyway: the size stays 4096 (an O_TRUNC open is a
# SETATTR, answered with the same attributes).
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
WRITE_IN = struct.Struct("<QQIIQII")  # fh, offset, size, write_flags, lock_owner, flags, pad
READ_BUFFER = 1 << 17  # at least max_write plus the headers (the kernel refuses less than 8 KiB)
MAX_WRITE = 4096
ATTR_VALID_S = 3600

MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

VFIO_DRIVERS = ("vfio-pci",)


class Mount:
    """One file of TREE served over FUSE: `kind` is "unbind" (of `driver`) or "probe"."""

    def __init__(self, path, kind, driver=None):
        self.path = path
        self.kind = kind
        self.driver = driver
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        mode = stat.S_IFREG | 0o200  # as sysfs shows unbind and drivers_probe: --w-------
        data = f"fd={self.fd},rootmode={mode:o},user_id=0,group_id=0,allow_other"
        if _libc.mount(b"vfioctl-simkernel", path.encode(), b"fuse", MS_NOSUID | MS_NODEV, data.encode()) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"mount fuse on {path}: {os.strerror(err)}")
        now = int(time.time())
        # fuse_attr: ino, size, blocks, atime, mtime, ctime, their nsecs, mode, nlink, uid, gid, rdev, blksize, flags
        self.attr = struct.pack("<QQQQQQIIIIIIIIII", 1, 4096, 0, now, now, now, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)

    def unmount(self):
        _libc.umount2(self.path.encode(), MNT_DETACH)
        # Closing the connection aborts it: a writer still waiting fails (ECONNABORTED).
        os.close(self.fd)


class SimKernel:
    """The emulator for one tree. `start()` mounts and serves on a thread;
    `stop()` unmounts (always call it, e.g. in a `finally`)."""

    def __init__(self, tree, unbind_s=2.0, probe_s=0.0):
        self.tree = os.path.realpath(tree)
        if self.tree == "/" or not os.path.isdir(os.path.join(self.tree, "sys/bus/pci/devices")):
            raise ValueError(f"{tree}: not a fake host tree (no sys/bus/pci/devices under it)")
        self.unbind_s = unbind_s
        self.probe_s = probe_s
        self.mounts = []
        self.timers = []  # heap of (due, seq, callable)
        self.seq = 0
        self.lock = threading.Lock()  # guards the event log and counters the caller reads
        self.events = []  # (monotonic time, "unbound"|"probe"|"bound", address, driver)
        self.in_flight = 0  # unbinds waiting in their open now
        self.peak = 0  # the most that waited at once since reset_stats
        self.failure = None
        self.stopping = False
        self.native = {}
        self.overrides = {}
        for addr in self.addresses():
            driver = self.driver_of(addr)
            if driver and driver not in VFIO_DRIVERS:
                self.native[addr] = driver
            self.overrides[addr] = self._read(addr, "driver_override")

    # --- the tree (never a mounted file: the serving thread must not call into FUSE)

    def p(self, rel):
        return os.path.join(self.tree, rel)

    def addresses(self):
        return sorted(os.listdir(self.p("sys/bus/pci/devices")))

    def device_dir(self, addr):
        return os.path.realpath(self.p(f"sys/bus/pci/devices/{addr}"))

    def _read(self, addr, name):
        try:
            with open(os.path.join(self.device_dir(addr), name)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def driver_of(self, addr):
        try:
            return os.path.basename(os.readlink(os.path.join(self.device_dir(addr), "driver")))
        except FileNotFoundError:
            return None

    def group_of(self, addr):
        try:
            return os.path.basename(os.readlink(os.path.join(self.device_dir(addr), "iommu_group")))
        except FileNotFoundError:
            return None

    def _link(self, link, target):
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)

    def _set_enable(self, addr, driver):
        # As the fake host writes it: vfio-pci enables a device only while a VM has it open.
        path = os.path.join(self.device_dir(addr), "enable")
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("0\n" if driver is None or driver in VFIO_DRIVERS else "1\n")

    def bind(self, addr, driver):
        """Binds like the kernel's successful probe (FakeHost::bind)."""
        dev = self.device_dir(addr)
        drv = self.p(f"sys/bus/pci/drivers/{driver}")
        self._link(os.path.join(dev, "driver"), drv)
        self._link(os.path.join(drv, addr), dev)
        self._set_enable(addr, driver)
        group = self.group_of(addr)
        if driver in VFIO_DRIVERS and group is not None:
            os.makedirs(self.p("dev/vfio"), exist_ok=True)
            open(self.p(f"dev/vfio/{group}"), "w").close()

    def unbind(self, addr):
        """Leaves the device without a driver (FakeHost::unbind)."""
        driver = self.driver_of(addr)
        if driver is None:
            return
        group = self.group_of(addr)
        if driver in VFIO_DRIVERS and group is not None and os.path.exists(self.p(f"dev/vfio/{group}")):
            os.unlink(self.p(f"dev/vfio/{group}"))
        link = self.p(f"sys/bus/pci/drivers/{driver}/{addr}")
        if os.path.lexists(link):
            os.unlink(link)
        os.unlink(os.path.join(self.device_dir(addr), "driver"))
        self._set_enable(addr, None)

    def probe_target(self, addr):
        """The driver a probe binds now: the override if set and registered,
        else the native driver (if registered)."""
        override = (self._read(addr, "driver_override") or "").strip()
        wanted = override if override and override != "(null)" else self.native.get(addr)
        if wanted and os.path.isdir(self.p(f"sys/bus/pci/drivers/{wanted}")):
            return wanted
        return None

    def reset(self):
        """Puts every device back as the tree was when opened (native driver,
        override) and forgets the log; for a fresh run on the same tree."""
        for addr in self.addresses():
            want = self.native.get(addr)
            if self.driver_of(addr) != want:
                self.unbind(addr)
                if want:
                    self.bind(addr, want)
            if self.overrides[addr] is not None:
                with open(os.path.join(self.device_dir(addr), "driver_override"), "w") as f:
                    f.write(self.overrides[addr])
        self.reset_stats()

    # --- serving

    def start(self):
        drivers = self.p("sys/bus/pci/drivers")
        try:
            for driver in sorted(os.listdir(drivers)):
                path = os.path.join(drivers, driver, "unbind")
                if os.path.isfile(path):
                    self.mounts.append(Mount(path, "unbind", driver))
            self.mounts.append(Mount(self.p("sys/bus/pci/drivers_probe"), "probe"))
        except BaseException:
            self.stop()
            raise
        self.selector = selectors.DefaultSelector()
        for m in self.mounts:
            self.selector.register(m.fd, selectors.EVENT_READ, m)
        self.thread = threading.Thread(target=self._serve, name="simkernel", daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        if getattr(self, "thread", None):
            self.thread.join(timeout=self.unbind_s + 5)
        for m in self.mounts:
            m.unmount()
        self.mounts = []
        if self.failure:
            raise RuntimeError(f"simkernel: {self.failure}")

    def note(self, kind, addr, driver):
        with self.lock:
            self.events.append((time.monotonic(), kind, addr, driver))

    def stats(self):
        """(unbinds done, most unbinds waiting at once) since the last reset_stats."""
        with self.lock:
            return sum(1 for e in self.events if e[1] == "unbound"), self.peak

    def reset_stats(self):
        with self.lock:
            self.events.clear()
            self.peak = self.in_flight

    def _after(self, delay, action):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, action))

    def _serve(self):
        try:
            while not self.stopping:
                timeout = 0.1
                if self.timers:
                    timeout = min(timeout, max(0.0, self.timers[0][0] - time.monotonic()))
                for key, _ in self.selector.select(timeout):
                    self._receive(key.data)
                while self.timers and self.timers[0][0] <= time.monotonic():
                    heapq.heappop(self.timers)[2]()
            # Stopping: answer what is pending now rather than leave writers blocked.
            while self.timers:
                heapq.heappop(self.timers)[2]()
        except Exception as e:  # reported by stop()
            self.failure = f"{type(e).__name__}: {e}"

    def _reply(self, m, unique, error=0, payload=b""):
        try:
            os.write(m.fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                raise

    def _receive(self, m):
        try:
            buf = os.read(m.fd, READ_BUFFER)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                return
            if e.errno == errno.ENODEV:  # unmounted
                self.selector.unregister(m.fd)
                return
            raise
        _, opcode, unique, _, _, _, _, _, _ = IN_HEADER.unpack_from(buf)
        body = buf[IN_HEADER.size :]
        if opcode in NO_REPLY:
            return
        if opcode == FUSE_INIT:
            major, minor, readahead, _ = struct.unpack_from("<IIII", body)
            if major != 7:
                return self._reply(m, unique, errno.EPROTO)
            out = struct.pack(
                "<IIIIHHIIHHII6I", 7, 31, readahead, 0, 16, 12, MAX_WRITE, 1, 1, 0, 0, 0, *[0] * 6
            )
            return self._reply(m, unique, 0, out)
        if opcode in (FUSE_GETATTR, FUSE_SETATTR):
            return self._reply(m, unique, 0, struct.pack("<QII", ATTR_VALID_S, 0, 0) + m.attr)
        if opcode == FUSE_OPEN:
            (flags,) = struct.unpack_from("<I", body)
            if flags & os.O_ACCMODE != os.O_WRONLY:
                return self._reply(m, unique, errno.EACCES)  # write-only, as kernfs refuses a read open
            opened = struct.pack("<QII", 0, FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES, 0)
            if m.kind != "unbind":
                return self._reply(m, unique, 0, opened)
            # The unbind's time is spent here, before the write that names the
            # device (see the module comment).
            with self.lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)

            def done_waiting():
                with self.lock:
                    self.in_flight -= 1
                self._reply(m, unique, 0, opened)

            return self._after(self.unbind_s, done_waiting)
        if opcode in (FUSE_FLUSH, FUSE_RELEASE, FUSE_FSYNC, FUSE_DESTROY):
            return self._reply(m, unique)
        if opcode == FUSE_STATFS:
            return self._reply(m, unique, 0, bytes(80))
        if opcode == FUSE_READ:
            return self._reply(m, unique, errno.EIO)
        if opcode == FUSE_WRITE:
            size = WRITE_IN.unpack_from(body)[2]
            data = body[WRITE_IN.size : WRITE_IN.size + size]
            return self._write(m, unique, size, data)
        if opcode == FUSE_LOOKUP:
            return self._reply(m, unique, errno.ENOENT)
        return self._reply(m, unique, errno.ENOSYS)

    def _write(self, m, unique, size, data):
        addr = data.decode("ascii", "replace").strip()
        if "/" in addr or addr in ("", ".", "..") or not os.path.lexists(self.p(f"sys/bus/pci/devices/{addr}")):
            return self._reply(m, unique, errno.ENODEV)
        done = struct.pack("<II", size, 0)
        if m.kind == "unbind":
            # unbind_store: -ENODEV unless the device is bound to this driver.
            if self.driver_of(addr) != m.driver:
                return self._reply(m, unique, errno.ENODEV)
            self.unbind(addr)
            self.note("unbound", addr, m.driver)
            return self._reply(m, unique, 0, done)
        # drivers_probe: bound (or not) before the write returns; -ENODEV only
        # for an unknown device, as drivers_probe_store.
        self.note("probe", addr, None)

        def probe():
            if self.driver_of(addr) is None:
                driver = self.probe_target(addr)
                if driver:
                    self.bind(addr, driver)
                    self.note("bound", addr, driver)
            self._reply(m, unique, 0, done)

        return self._after(self.probe_s, probe)


# --- the self-check (by hand; prints timings, exits 1 on a wrong outcome)


def _small_tree(root):
    """Two endpoints on "nvidia", each in its own IOMMU group; vfio-pci registered."""
    def link(path, target):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(path)), path)

    for d in ("sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups", "dev"):
        os.makedirs(os.path.join(root, d))
    open(os.path.join(root, "sys/bus/pci/drivers_probe"), "w").close()
    for driver in ("nvidia", "vfio-pci"):
        os.makedirs(os.path.join(root, f"sys/bus/pci/drivers/{driver}"))
        for f in ("bind", "unbind", "new_id", "remove_id", "uevent"):
            open(os.path.join(root, f"sys/bus/pci/drivers/{driver}/{f}"), "w").close()
    addrs = ["0000:01:00.0", "0000:02:00.0"]
    for group, addr in enumerate(addrs, start=10):
        dev = os.path.join(root, f"sys/devices/pci0000:00/{addr}")
        os.makedirs(dev)
        with open(os.path.join(dev, "driver_override"), "w") as f:
            f.write("(null)\n")
        with open(os.path.join(dev, "enable"), "w") as f:
            f.write("1\n")
        link(os.path.join(root, f"sys/bus/pci/devices/{addr}"), dev)
        gdir = os.path.join(root, f"sys/kernel/iommu_groups/{group}")
        link(os.path.join(gdir, f"devices/{addr}"), dev)
        link(os.path.join(dev, "iommu_group"), gdir)
        link(os.path.join(dev, "driver"), os.path.join(root, "sys/bus/pci/drivers/nvidia"))
        link(os.path.join(root, f"sys/bus/pci/drivers/nvidia/{addr}"), dev)
    return addrs


def _timed_sh(script):
    t0 = time.monotonic()
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    return time.monotonic() - t0, r.returncode, r.stderr.strip()


def self_check(unbind_s, outer_ns):
    if os.geteuid() != 0:
        sys.exit("self-check: needs root (mount)")
    if outer_ns is None:
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, __file__,
                              "--self-check", "--unbind-s", str(unbind_s),
                              "--outer-ns", os.readlink("/proc/self/ns/mnt")])
    if os.readlink("/proc/self/ns/mnt") == outer_ns:
        sys.exit("self-check: refusing to mount outside a private mount namespace")
    failures = []

    def check(what, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="simkernel-check-") as root:
        a, b = _small_tree(root)
        sim = SimKernel(root, unbind_s=unbind_s)
        sim.start()
        try:
            dev = lambda addr: f"{root}/sys/bus/pci/devices/{addr}"
            t, rc, err = _timed_sh(f"printf {a} > {dev(a)}/driver/unbind")
            check(f"printf > unbind blocks for the unbind time ({unbind_s:.1f} s)",
                  rc == 0 and unbind_s <= t < unbind_s + 0.5, f"{t:.3f} s, exit {rc} {err}")
            check("the device has no driver after it", sim.driver_of(a) is None
                  and not os.path.lexists(f"{root}/sys/bus/pci/drivers/nvidia/{a}"))
            t, rc, err = _timed_sh(f"printf {a} > {dev(a)}/driver/unbind")
            check("a second unbind finds no driver link to write through", rc != 0, f"exit {rc}: {err}")
            t0 = time.monotonic()
            fd = os.open(f"{root}/sys/bus/pci/drivers/vfio-pci/unbind", os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, b.encode())
                code = 0
            except OSError as e:
                code = e.errno
            finally:
                os.close(fd)
            check("unbind from a driver the device is not on: ENODEV (after the unbind time)",
                  code == errno.ENODEV, f"{time.monotonic() - t0:.3f} s, errno {code}")
            t, rc, err = _timed_sh(f"printf vfio-pci > {dev(a)}/driver_override && printf {a} > {root}/sys/bus/pci/drivers_probe")
            check("probe with the override binds vfio-pci and makes /dev/vfio/10",
                  rc == 0 and sim.driver_of(a) == "vfio-pci" and os.path.exists(f"{root}/dev/vfio/10"),
                  f"{t:.3f} s, driver {sim.driver_of(a)}")
            t, rc, err = _timed_sh(f"printf {a} > {dev(a)}/driver/unbind")
            check("unbind from vfio-pci removes /dev/vfio/10",
                  rc == 0 and not os.path.exists(f"{root}/dev/vfio/10"), f"{t:.3f} s")
            t, rc, err = _timed_sh(f"echo > {dev(a)}/driver_override && printf {a} > {root}/sys/bus/pci/drivers_probe")
            check("probe without an override binds the native driver", sim.driver_of(a) == "nvidia",
                  f"driver {sim.driver_of(a)}")
            sim.reset_stats()
            t, rc, err = _timed_sh(f"printf {a} > {dev(a)}/driver/unbind & printf {b} > {dev(b)}/driver/unbind & wait")
            count, peak = sim.stats()
            check("two unbinds at once (same driver) take one unbind time",
                  unbind_s <= t < 1.5 * unbind_s and count == 2 and peak == 2, f"{t:.3f} s, {count} unbinds, {peak} at once")
            sim.reset()
            check("reset puts both back on nvidia", sim.driver_of(a) == sim.driver_of(b) == "nvidia")
            t, rc, err = _timed_sh(f"printf {a} > {dev(a)}/driver/unbind; printf {b} > {dev(b)}/driver/unbind")
            count, peak = sim.stats()
            check("two unbinds one after the other take two",
                  2 * unbind_s <= t < 2 * unbind_s + 0.5 and count == 2 and peak == 1, f"{t:.3f} s, {count} unbinds, {peak} at once")
            fd = None
            try:
                fd = os.open(f"{root}/sys/bus/pci/drivers_probe", os.O_RDONLY)
                code = 0
            except OSError as e:
                code = e.errno
            finally:
                if fd is not None:
                    os.close(fd)
            check("a read open of drivers_probe: EACCES", code == errno.EACCES, f"errno {code}")
            sim.reset()
        finally:
            sim.stop()
        # The emulator killed while a writer waits: the writer's wait ends with an error, at once.
        child = subprocess.Popen([sys.executable, "-B", "-c", f"import simkernel, time; s = simkernel.SimKernel({root!r}, "
                                  f"unbind_s=60); s.start(); print('up', flush=True); time.sleep(120)"],
                                 stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        child.stdout.readline()
        check("reset put the device back on nvidia", os.path.lexists(f"{root}/sys/bus/pci/devices/{a}/driver"))
        writer = subprocess.Popen(["sh", "-c", f"printf {a} > {root}/sys/bus/pci/devices/{a}/driver/unbind"],
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        child.kill()
        child.wait()
        t0 = time.monotonic()
        try:
            rc = writer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            writer.kill()
            rc = "still waiting after 10 s"
        err = writer.stderr.read().strip()
        check("the emulator killed under a waiting writer: the write fails at once", rc not in (0, "still waiting after 10 s")
              and time.monotonic() - t0 < 2, f"exit {rc}, {time.monotonic() - t0:.3f} s: {err}")
        for path in [f"{root}/sys/bus/pci/drivers/{d}/unbind" for d in ("nvidia", "vfio-pci")] + [
                f"{root}/sys/bus/pci/drivers_probe"]:
            _libc.umount2(path.encode(), MNT_DETACH)
    print("self-check:", "FAILED: " + ", ".join(failures) if failures else "all passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--self-check", action="store_true", help="check the emulator on a small temporary tree")
    p.add_argument("--unbind-s", type=float, default=2.0)
    p.add_argument("--outer-ns", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.self_check:
        p.error("nothing to do: the benchmark imports this module; --self-check checks it by hand")
    self_check(args.unbind_s, args.outer_ns)
