"""Tests for allworx.protocols.dhcp.journal: durability order, batching, recovery, compaction."""

import ipaddress
import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx.protocols.dhcp import journal as lj
from allworx.protocols.dhcp.pool import Lease

IP = ipaddress.IPv4Address
NOW = 1_700_000_000


def lease(n, mac=None, expires=NOW + 3600, host="pc%d"):
    return Lease(mac or "02:00:00:00:00:%02x" % n, IP("192.168.2.%d" % n), expires,
                 hostname=host % n if host else None)


class ManualThread:
    """Runs the journal's blocking work only when the test says so."""

    def __init__(self):
        self.calls = []

    def __call__(self, f, *args):
        d = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def finish(self):
        f, args, d = self.calls.pop(0)
        try:
            f(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(None)


class JournalTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        self.path = os.path.join(self.dir, "dhcp", "leases.journal")
        self.clock = Clock()
        self.thread = ManualThread()

    def journal(self):
        j = lj.LeaseJournal(self.path, self.clock, self.thread)
        self.addCleanup(lambda: j._fd is not None and os.close(j._fd))
        return j

    def test_empty_start(self):
        self.assertEqual(self.journal().load(NOW), [])
        self.assertTrue(os.path.exists(self.path))

    def test_fires_only_after_fsync_and_batches(self):
        j = self.journal()
        j.load(NOW)
        fired = []
        for n in (1, 2, 3):
            j.bound(lease(n)).addCallback(lambda _, n=n: fired.append(n))
        self.assertEqual(self.thread.calls, [])
        self.clock.advance(0)
        self.assertEqual(len(self.thread.calls), 1)       # one write for the three
        j.bound(lease(4)).addCallback(lambda _: fired.append(4))
        self.clock.advance(0)
        self.assertEqual(len(self.thread.calls), 1)       # waits for the write in progress
        self.assertEqual(fired, [])
        self.thread.finish()
        self.assertEqual(fired, [1, 2, 3])
        self.assertEqual(len(self.thread.calls), 1)       # the next batch started at once
        self.thread.finish()
        self.assertEqual(fired, [1, 2, 3, 4])
        self.assertEqual(j.writes, 2)

    def test_recovery_after_crash(self):
        j = self.journal()
        j.load(NOW)
        for n in (1, 2, 3):
            j.bound(lease(n))
        j.freed(lease(2))
        self.clock.advance(0)
        self.thread.finish()
        os.close(j._fd)
        j._fd = None
        # A torn line at the end, as a kill -9 mid-write would leave.
        with open(self.path, "ab") as f:
            f.write(lj.encode_record(lj.bind_record(lease(9)))[:-7])
        again = self.journal().load(NOW)
        self.assertEqual(sorted(l.address for l in again), [IP("192.168.2.1"), IP("192.168.2.3")])
        self.assertEqual([l.hostname for l in sorted(again, key=lambda l: l.address)], ["pc1", "pc3"])

    def test_compaction_on_start(self):
        j = self.journal()
        j.load(NOW)
        for _ in range(5):
            j.bound(lease(1))
        j.bound(lease(2, expires=NOW - lj.KEEP_EXPIRED - 1))
        self.clock.advance(0)
        self.thread.finish()
        os.close(j._fd)
        j._fd = None
        self.assertEqual(len(open(self.path, "rb").readlines()), 6)
        self.assertEqual(len(self.journal().load(NOW)), 1)
        self.assertEqual(len(open(self.path, "rb").readlines()), 1)

    def test_damaged_line_skipped(self):
        os.makedirs(os.path.dirname(self.path))
        good = lj.encode_record(lj.bind_record(lease(1)))
        bad = good.replace(b"192.168.2.1", b"192.168.2.7")
        with open(self.path, "wb") as f:
            f.write(bad + b"garbage\n" + good + b'00000000 {"op":"bind"}\n')
        self.assertEqual([l.address for l in self.journal().load(NOW)], [IP("192.168.2.1")])

    def test_free_of_other_mac_ignored_on_replay(self):
        lines = [lj.encode_record(lj.bind_record(lease(1))),
                 lj.encode_record({"op": "free", "mac": "02:99:00:00:00:00", "ip": "192.168.2.1"})]
        state, skipped = lj.replay(lines)
        self.assertEqual((list(state), skipped), (["192.168.2.1"], 0))

    def test_write_failure_errbacks(self):
        j = self.journal()
        j.load(NOW)
        d = j.bound(lease(1))
        os.close(j._fd)   # the disk goes away
        self.clock.advance(0)
        self.thread.finish()
        j._fd = None
        self.failureResultOf(d, lj.JournalError)
        self.flushLoggedErrors()

    def test_bound_then_answers_after_fsync_in_order_beside_deferreds(self):
        j = self.journal()
        j.load(NOW)
        told = []

        def done(n):
            told.append(("done", n))
            if n == 2:
                raise RuntimeError("a reply that cannot be sent")
        failed = lambda error, n: told.append(("failed", n))      # noqa: E731
        j.bound_then(lease(1), done, failed, 1)
        j.bound(lease(2)).addCallback(lambda _: told.append(("deferred", 2)))
        j.bound_then(lease(3, host=None), done, failed, 2)
        j.bound_then(lease(4), done, failed, 4)
        self.clock.advance(0)
        self.assertEqual(told, [])
        self.thread.finish()
        self.assertEqual(told, [("done", 1), ("deferred", 2), ("done", 2), ("done", 4)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(sorted(lj.replay(open(self.path, "rb").readlines())[0]),
                         ["192.168.2.1", "192.168.2.2", "192.168.2.3", "192.168.2.4"])

    def test_bound_then_tells_a_failed_write_and_a_closed_journal(self):
        j = self.journal()
        j.load(NOW)
        told = []
        j.bound_then(lease(1), lambda n: told.append(("done", n)),
                     lambda error, n: told.append((type(error), n)), 1)
        os.close(j._fd)   # the disk goes away
        self.clock.advance(0)
        self.thread.finish()
        j._fd = None
        self.assertEqual(told, [(lj.JournalError, 1)])
        j.bound_then(lease(2), lambda n: told.append(("done", n)),
                     lambda error, n: told.append((type(error), n)), 2)
        self.assertEqual(told, [(lj.JournalError, 1), (lj.JournalError, 2)])
        self.flushLoggedErrors()

    def test_runtime_compaction(self):
        self.patch(lj, "COMPACT_MINIMUM", 10)
        j = self.journal()
        j.load(NOW)
        for i in range(12):
            j.bound(lease(1, expires=NOW + i))
            self.clock.advance(0)
            self.thread.finish()
        self.assertLessEqual(len(open(self.path, "rb").readlines()), 11)
        self.assertEqual(lj.replay(open(self.path, "rb").readlines())[0]["192.168.2.1"].expires,
                         NOW + 11)

    def test_close_waits_for_writer(self):
        j = self.journal()
        j.load(NOW)
        d1 = j.bound(lease(1))
        closed = j.close()
        self.assertNoResult(closed)
        self.thread.finish()
        self.successResultOf(d1)
        self.successResultOf(closed)
        self.assertIsNone(j._fd)
        self.assertEqual(len(lj.LeaseJournal(self.path, self.clock, self.thread).load(NOW)), 1)

    def test_unreadable_directory(self):
        open(self.dir, "w").close()  # a file where the directory should be
        j = lj.LeaseJournal(self.path, self.clock, self.thread)
        e = self.assertRaises(lj.JournalError, j.load, NOW)
        self.assertIn(self.path, str(e))
