"""The machine's and the process's facts for the dashboard, read from a /proc of the test's own."""

import os

from twisted.internet import task
from twisted.trial import unittest

from allworx import hostfacts

STAT = ("cpu  100 0 100 700 100 0 0 0 0 0\n"
        "cpu0 100 0 100 700 100 0 0 0 0 0\n"
        "btime 1700000000\n")
# pid (comm with a space) state ... utime=14th, stime=15th, starttime=22nd field
SELF_STAT = ("42 (twistd x) S 1 42 42 0 -1 4194560 100 0 0 0 %d %d 0 0 20 0 3 0 %d 100 200\n")
MEMINFO = "MemTotal:       8000000 kB\nMemFree:         500000 kB\nMemAvailable:   2000000 kB\n"
STATUS = "Name:\ttwistd\nVmRSS:\t   51200 kB\n"


def fake_proc(testcase, stat=STAT, self_stat=SELF_STAT % (50, 50, 1000)):
    root = testcase.mktemp()
    os.makedirs(os.path.join(root, "self"))
    for name, text in (("stat", stat), ("self/stat", self_stat), ("meminfo", MEMINFO),
                       ("self/status", STATUS), ("uptime", "3725.5 7000.0\n")):
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    return root


def rewrite(root, name, text):
    with open(os.path.join(root, name), "w") as f:
        f.write(text)


class StatVfs:
    f_frsize = 4096
    f_blocks = 1000
    f_bfree = 50
    f_bavail = 40


class CpuTests(unittest.TestCase):
    def test_since_boot_then_between_readings(self):
        proc, clock = fake_proc(self), task.Clock()
        self.assertEqual(hostfacts.cpu_ticks(proc), (200, 1000))
        meter = hostfacts.CpuMeter(clock, proc)
        first = meter.read()
        self.assertEqual(first["machine"], 20.0)
        self.assertIsNone(first["window_s"])
        hz = os.sysconf("SC_CLK_TCK")
        rewrite(proc, "stat", "cpu  400 0 100 1000 100 0 0 0 0 0\nbtime 1700000000\n")
        rewrite(proc, "self/stat", SELF_STAT % (50 + hz, 50, 1000))
        clock.advance(10)
        second = meter.read()
        self.assertEqual(second["machine"], 50.0)      # 300 busy of 600 ticks
        self.assertEqual(second["process"], 10.0)      # one second of CPU in ten
        self.assertEqual(second["window_s"], 10.0)

    def test_a_reading_soon_after_gives_the_same_answer(self):
        proc, clock = fake_proc(self), task.Clock()
        meter = hostfacts.CpuMeter(clock, proc)
        meter.read()
        clock.advance(10)
        answer = meter.read()
        rewrite(proc, "stat", "cpu  900 0 100 1000 100 0 0 0 0 0\n")
        clock.advance(0.5)
        self.assertIs(meter.read(), answer)

    def test_unreadable_proc(self):
        clock = task.Clock()
        meter = hostfacts.CpuMeter(clock, self.mktemp())
        self.assertEqual(meter.read()["machine"], None)
        clock.advance(10)
        self.assertEqual(meter.read(), {"machine": None, "process": None, "window_s": 10.0})
        self.assertIsNone(hostfacts.process_ticks(self.mktemp()))


class MemoryDiskUptimeTests(unittest.TestCase):
    def test_memory(self):
        m = hostfacts.memory(fake_proc(self))
        self.assertEqual(m["total"], 8000000 * 1024)
        self.assertEqual(m["available"], 2000000 * 1024)
        self.assertEqual(m["used_percent"], 75.0)
        self.assertEqual(m["process_rss"], 51200 * 1024)
        self.assertEqual(hostfacts.memory(self.mktemp())["total"], None)

    def test_disk_counts_as_df(self):
        d = hostfacts.disk("/data", statvfs=lambda path: StatVfs())
        self.assertEqual(d["total"], 4096 * 1000)
        self.assertEqual(d["free"], 4096 * 40)
        self.assertEqual(d["used_percent"], round(100.0 * 950 / 990, 1))

    def test_disk_unreadable(self):
        def fails(path):
            raise OSError("gone")
        self.assertEqual(hostfacts.disk("/x", fails),
                         {"path": "/x", "total": None, "free": None, "used_percent": None})

    def test_uptimes(self):
        proc = fake_proc(self)
        clock = task.Clock()
        hz = os.sysconf("SC_CLK_TCK")
        rewrite(proc, "self/stat", SELF_STAT % (1, 1, 100 * hz))
        clock.advance(1700000000 + 100 + 3600)
        up = hostfacts.HostFacts(clock, proc).uptime()
        self.assertEqual(up["machine_s"], 3725.5)
        self.assertEqual(up["process_s"], 3600.0)
        self.assertEqual(hostfacts.HostFacts(clock, self.mktemp()).uptime(),
                         {"machine_s": None, "process_s": None})

    def test_the_real_proc_reads(self):
        self.assertIsNotNone(hostfacts.cpu_ticks())
        self.assertGreater(hostfacts.memory()["process_rss"], 0)
        self.assertIsNotNone(hostfacts.process_started())


class ClockTests(unittest.TestCase):
    def test_kernel_state(self):
        def kernel(synced):
            return lambda: {"state": 0 if synced else hostfacts.TIME_ERROR,
                            "synchronised": synced, "max_error_s": 0.1, "est_error_s": 0.01}
        self.assertEqual(hostfacts.clock_synchronised(kernel(False)),
                         {"synchronised": False, "source": "kernel"})
        self.assertEqual(hostfacts.clock_synchronised(kernel(True)),
                         {"synchronised": True, "source": "kernel"})
        self.assertEqual(hostfacts.clock_synchronised(lambda: None)["synchronised"], None)

    def test_kernel_clock_reads_status(self):
        found = hostfacts.kernel_clock()
        self.assertIn(found["state"], range(0, 6))
        self.assertIsInstance(found["synchronised"], bool)
        self.assertGreaterEqual(found["max_error_s"], 0)

    def test_adjtimex_reads_a_state(self):
        self.assertIn(hostfacts.adjtimex_state(), range(0, 6))
