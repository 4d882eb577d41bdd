# -*- test-case-name: allworx.tests.core.test_hostfacts -*-
"""
What the machine and this process look like, for the dashboard (SPEC 20):
CPU use from the deltas of `/proc/stat` (and the process's own ticks in
`/proc/self/stat`), memory (`/proc/meminfo`, the process's `VmRSS`), the
disk holding the data dir (`statvfs`), uptimes, and whether the clock is
synchronised (the kernel's `adjtimex` status, STA_UNSYNC: the same truth
the time server answers by). Every reader takes its paths so the tests give it files of their
own; a file that cannot be read gives None, never an exception.
"""

import ctypes
import ctypes.util
import os

PROC = "/proc"
TIME_ERROR = 5          # adjtimex(2): the clock is not synchronised


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_ticks(proc=PROC):
    """(busy, total) jiffies of the whole machine since boot, or None."""
    text = _read(os.path.join(proc, "stat"))
    if not text:
        return None
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                values = [int(v) for v in fields[1:]]
            except ValueError:
                return None
            # user nice system idle iowait irq softirq steal (guest is inside user)
            values = values[:8]
            idle = sum(values[3:5])
            return sum(values) - idle, sum(values)
    return None


def process_ticks(proc=PROC):
    """utime + stime of this process in clock ticks, or None."""
    text = _read(os.path.join(proc, "self", "stat"))
    if not text or ")" not in text:
        return None
    # The command name may hold spaces: the fields start after its ')'.
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


class CpuMeter:
    """
    CPU use between two readings: `read()` gives {"machine": percent,
    "process": percent of one CPU, "window_s": seconds}, measured since the
    reading before (the first since boot, window None); a reading within
    `min_interval` seconds of the last one answers the last result again.
    """

    def __init__(self, clock, proc=PROC, min_interval=2.0):
        self.clock = clock
        self.proc = proc
        self.min_interval = min_interval
        self._last = None       # (time, machine (busy, total), process ticks)
        self._result = None

    def read(self):
        now = self.clock.seconds()
        if self._last is not None and self._result is not None and (
                now - self._last[0] < self.min_interval):
            return self._result
        machine, process = cpu_ticks(self.proc), process_ticks(self.proc)
        result = {"machine": None, "process": None, "window_s": None}
        if self._last is not None:
            then, old_machine, old_process = self._last
            result["window_s"] = round(now - then, 1)
            if machine and old_machine and machine[1] > old_machine[1]:
                result["machine"] = round(100.0 * (machine[0] - old_machine[0])
                                          / (machine[1] - old_machine[1]), 1)
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            if process is not None and old_process is not None and now > then:
                result["process"] = round(100.0 * (process - old_process) / hz / (now - then), 1)
        elif machine and machine[1]:
            result["machine"] = round(100.0 * machine[0] / machine[1], 1)
        self._last = (now, machine, process)
        self._result = result
        return result


def memory(proc=PROC):
    """{"total", "available", "used_percent", "process_rss"} in bytes; None for what is unknown."""
    out = {"total": None, "available": None, "used_percent": None, "process_rss": None}
    info = {}
    for line in (_read(os.path.join(proc, "meminfo")) or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[name] = int(parts[0]) * 1024
    out["total"] = info.get("MemTotal")
    out["available"] = info.get("MemAvailable", info.get("MemFree"))
    if out["total"] and out["available"] is not None:
        out["used_percent"] = round(100.0 * (out["total"] - out["available"]) / out["total"], 1)
    for line in (_read(os.path.join(proc, "self", "status")) or "").splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out["process_rss"] = int(parts[1]) * 1024
    return out


def disk(path, statvfs=os.statvfs):
    """{"path", "total", "free", "used_percent"} (bytes) of the file system holding `path`."""
    out = {"path": path, "total": None, "free": None, "used_percent": None}
    try:
        st = statvfs(path)
    except OSError:
        return out
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    out["total"], out["free"] = total, free
    if total:
        # As df counts it: what users may still write is what is not used.
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        out["used_percent"] = round(100.0 * used / (used + free), 1) if used + free else None
    return out


def machine_uptime(proc=PROC):
    """Seconds since the machine booted, or None."""
    text = _read(os.path.join(proc, "uptime"))
    try:
        return float(text.split()[0])
    except (AttributeError, IndexError, ValueError):
        return None


def process_started(proc=PROC):
    """The POSIX time this process started (boot time + its start ticks), or None."""
    boot = None
    for line in (_read(os.path.join(proc, "stat")) or "").splitlines():
        if line.startswith("btime "):
            try:
                boot = int(line.split()[1])
            except (IndexError, ValueError):
                return None
    text = _read(os.path.join(proc, "self", "stat"))
    if boot is None or not text or ")" not in text:
        return None
    try:
        ticks = int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None
    return boot + ticks / float(os.sysconf("SC_CLK_TCK"))


class _Timex(ctypes.Structure):
    """struct timex (adjtimex(2)), with the spare room the kernel may fill."""
    _fields_ = ([("modes", ctypes.c_uint)] +
                [(n, ctypes.c_long) for n in ("offset", "freq", "maxerror", "esterror")] +
                [("status", ctypes.c_int)] +
                [(n, ctypes.c_long) for n in ("constant", "precision", "tolerance",
                                              "tv_sec", "tv_usec", "tick", "ppsfreq",
                                              "jitter")] +
                [("shift", ctypes.c_int)] +
                [(n, ctypes.c_long) for n in ("stabil", "jitcnt", "calcnt", "errcnt",
                                              "stbcnt")] +
                [("tai", ctypes.c_int)] + [("pad%d" % i, ctypes.c_int) for i in range(11)])


STA_UNSYNC = 0x0040     # adjtimex(2) status: the clock is not synchronised


def kernel_clock():
    """
    What the kernel says of the system clock (a read-only adjtimex(2)):
    {"state", "synchronised" (STA_UNSYNC clear), "max_error_s", "est_error_s"},
    or None when it cannot be asked.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return {"state": state, "synchronised": not tx.status & STA_UNSYNC,
            "max_error_s": tx.maxerror / 1e6, "est_error_s": tx.esterror / 1e6}


def adjtimex_state():
    """The kernel clock state adjtimex(2) returns for a read-only call, or None."""
    found = kernel_clock()
    return None if found is None else found["state"]


def clock_synchronised(read=kernel_clock):
    """
    {"synchronised": bool or None (unknown), "source"}: the kernel's word
    (STA_UNSYNC), the one the time server answers by (SPEC 6).
    """
    found = read()
    if found is None:
        return {"synchronised": None, "source": "unknown"}
    return {"synchronised": found["synchronised"], "source": "kernel"}


class HostFacts:
    """The readers above bound to one `/proc` and clock: what the dashboard asks."""

    def __init__(self, clock, proc=PROC, statvfs=os.statvfs, clock_state=None):
        self.clock = clock
        self.proc = proc
        self.statvfs = statvfs
        self.cpu = CpuMeter(clock, proc)
        self._clock_state = clock_state or clock_synchronised

    def memory(self):
        return memory(self.proc)

    def disk(self, path):
        return disk(path, self.statvfs)

    def uptime(self):
        """{"machine_s", "process_s"}: seconds since boot and since this server started."""
        started = process_started(self.proc)
        return {"machine_s": machine_uptime(self.proc),
                "process_s": None if started is None else max(0.0, self.clock.seconds() - started)}

    def clock_state(self):
        return self._clock_state()
