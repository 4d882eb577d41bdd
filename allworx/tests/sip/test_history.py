"""
Tests for allworx.protocols.sip.history: the call history's journal (every
ended call in the file when record() returns, even across kill -9; fsync at
most once a second; a torn last line; the bound and its compaction) and its
paged, filtered queries.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

from twisted.internet import defer, task
from twisted.trial import unittest

from allworx.interfaces import CALL_FIELDS, ICallHistory
from allworx.protocols.sip.history import CallEntry, CallHistory, rfc3339

T0 = 1_700_000_000     # 2023-11-14T22:13:20Z


def entry(n, **kw):
    """Call number n: started n minutes after T0, lasted 30 s."""
    values = dict(start=T0 + 60 * n, end=T0 + 60 * n + 30, direction="internal",
                  from_="10%d" % (n % 10), to="200", outcome="answered", answered_by="200",
                  duration_s=25)
    values.update(kw)
    return CallEntry(**values)


def now(f, *args):
    """deferToThread stand-in: run at once."""
    return defer.maybeDeferred(f, *args)


class ManualThread:
    """Runs the blocking work only when the test says so."""

    def __init__(self):
        self.calls = []

    def __call__(self, f, *args):
        d = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def finish(self):
        f, args, d = self.calls.pop(0)
        try:
            result = f(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)


class Case(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        self.path = os.path.join(self.dir, "data", "calls.jsonl")
        self.clock = task.Clock()
        self.fsyncs = []
        self.open_histories = []
        self.addCleanup(self.close_all)

    def fsync(self, fd):
        self.fsyncs.append(self.clock.seconds())
        os.fsync(fd)

    def history(self, keep=1000, thread=now):
        h = CallHistory(self.path, self.clock, keep=keep, defer_to_thread=thread, fsync=self.fsync)
        self.open_histories.append(h)
        return h

    def close_all(self):
        for h in self.open_histories:
            if h._fd is not None and not h._syncing:
                h.close()

    def lines(self):
        with open(self.path, "rb") as f:
            return f.read().splitlines()

    def ids(self, entries):
        return [e.id for e in entries]


class EntryTests(unittest.TestCase):

    def test_json_has_specs_names_in_order_and_rfc3339_utc(self):
        e = entry(0, id="7", from_="+15557770001", from_name="Alice", trunk="itsp",
                  direction="inbound", to="+15551230000", end=T0 + 95.6, duration_s=61.4)
        out = e.as_json()
        self.assertEqual(tuple(out), CALL_FIELDS)
        self.assertEqual(out, {"id": "7", "start": "2023-11-14T22:13:20Z",
                               "end": "2023-11-14T22:14:55Z", "direction": "inbound",
                               "from": "+15557770001", "from_name": "Alice", "to": "+15551230000",
                               "answered_by": "200", "trunk": "itsp", "duration_s": 61,
                               "outcome": "answered"})
        self.assertNotIn("from_", out)
        json.dumps(out)

    def test_record_round_trip(self):
        e = entry(3, id="x", from_name=None, answered_by=None, outcome="missed", duration_s=0)
        self.assertEqual(CallEntry.from_record(json.loads(e.line())), e)

    def test_bad_values_refused(self):
        self.assertRaises(ValueError, entry, 0, direction="sideways")
        self.assertRaises(ValueError, entry, 0, outcome="lost")
        self.assertRaises(TypeError, entry, 0, from_=None)
        self.assertRaises(TypeError, entry, 0, start="yesterday")

    def test_rfc3339(self):
        self.assertEqual(rfc3339(0), "1970-01-01T00:00:00Z")


class RecordAndPageTests(Case):

    def test_provides_the_interface(self):
        self.assertTrue(ICallHistory.providedBy(self.history()))

    def test_newest_first_with_total_and_ids(self):
        h = self.history()
        kept = [h.record(entry(n)) for n in range(5)]
        self.assertEqual(self.ids(kept), ["1", "2", "3", "4", "5"])
        entries, total = h.page()
        self.assertEqual((self.ids(entries), total), (["5", "4", "3", "2", "1"], 5))
        self.assertEqual(h.record(entry(9, id="call-abc")).id, "call-abc")

    def test_ordered_by_start_whatever_the_order_of_ending(self):
        h = self.history()
        h.record(entry(5, id="late"))
        h.record(entry(1, id="long", end=T0 + 60 * 6))    # started first, ended last
        h.record(entry(5, id="same start, recorded later"))
        self.assertEqual(self.ids(h.page()[0]), ["same start, recorded later", "late", "long"])

    def test_paging(self):
        h = self.history()
        for n in range(12):
            h.record(entry(n))
        self.assertEqual(self.ids(h.page(limit=5)[0]), ["12", "11", "10", "9", "8"])
        self.assertEqual(self.ids(h.page(limit=5, offset=10)[0]), ["2", "1"])
        self.assertEqual(h.page(limit=5, offset=12), ([], 12))
        self.assertEqual(h.page(limit=5, offset=50), ([], 12))
        self.assertEqual(len(h.page(limit=None)[0]), 12)
        self.assertEqual(h.page(limit=0), ([], 12))

    def test_filters(self):
        h = self.history()
        h.record(entry(1, id="in", direction="inbound", from_="+15557770001", from_name="Alice Smith",
                       trunk="itsp", to="+15551230000"))
        h.record(entry(2, id="out", direction="outbound", from_="101", to="+15557770002",
                       trunk="itsp"))
        h.record(entry(3, id="missed", outcome="missed", answered_by=None, from_="102", to="103"))
        h.record(entry(4, id="vm", direction="inbound", outcome="voicemail", from_="+15557770002",
                       to="+15551230000", answered_by=None))

        def ids(**kw):
            entries, total = h.page(**kw)
            self.assertEqual(total, len(entries))
            return self.ids(entries)
        self.assertEqual(ids(direction="inbound"), ["vm", "in"])
        self.assertEqual(ids(outcome="missed"), ["missed"])
        self.assertEqual(ids(direction="inbound", outcome="answered"), ["in"])
        self.assertEqual(ids(search="alice"), ["in"])                   # a name, any case
        self.assertEqual(ids(search="SMITH"), ["in"])
        self.assertEqual(ids(search="7770002"), ["vm", "out"])          # from or to
        self.assertEqual(ids(search="(555) 777-0001"), ["in"])          # written as people do
        self.assertEqual(ids(search="103"), ["missed"])
        self.assertEqual(ids(search="  "), ["vm", "missed", "out", "in"])
        self.assertEqual(ids(search="nobody"), [])
        self.assertEqual(ids(since=T0 + 120, until=T0 + 240), ["missed", "out"])
        self.assertEqual(ids(since=T0 + 121), ["vm", "missed"])
        self.assertEqual(ids(until=T0), [])

    def test_filtered_paging_counts_every_match(self):
        h = self.history()
        for n in range(20):
            h.record(entry(n, direction="inbound" if n % 2 else "outbound"))
        entries, total = h.page(limit=3, offset=2, direction="inbound")
        self.assertEqual((self.ids(entries), total), (["16", "14", "12"], 10))

    def test_bad_arguments(self):
        h = self.history()
        for kw in ({"limit": -1}, {"offset": -1}, {"offset": "2"}, {"direction": "up"},
                   {"outcome": "lost"}):
            self.assertRaises(ValueError, h.page, **kw)


class DurabilityTests(Case):

    def test_the_line_is_in_the_file_when_record_returns(self):
        h = self.history()
        h.record(entry(1, from_name="Zoë"))
        self.assertEqual(self.fsyncs, [])       # not waiting for any fsync
        self.assertEqual([json.loads(l)["from_name"] for l in self.lines()], ["Zoë"])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

    def test_persists_across_reopen(self):
        h = self.history()
        for n in range(3):
            h.record(entry(n, trunk="itsp" if n == 1 else None))
        self.successResultOf(h.close())
        again = self.history()
        entries, total = again.page()
        self.assertEqual((self.ids(entries), total), (["3", "2", "1"], 3))
        self.assertEqual(entries[1], entry(1, trunk="itsp", id="2"))
        self.assertEqual(again.record(entry(5)).id, "4")

    def test_torn_last_line_is_cut_off(self):
        h = self.history()
        h.record(entry(1))
        h.record(entry(2))
        self.successResultOf(h.close())
        whole = os.path.getsize(self.path)
        with open(self.path, "ab") as f:
            f.write(entry(3, id="3").line()[:40])     # kill -9 in the middle of a write
        again = self.history()
        self.assertEqual(self.ids(again.page()[0]), ["2", "1"])
        self.assertEqual(os.path.getsize(self.path), whole)
        again.record(entry(4))
        self.successResultOf(again.close())
        self.assertEqual(self.ids(self.history().page()[0]), ["3", "2", "1"])

    def test_damaged_lines_skipped(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as f:
            f.write(entry(1, id="1").line() + b"garbage\n\n" + b'{"id": "2"}\n' + b"[]\n"
                    + entry(2, id="5").line())
        h = self.history()
        self.assertEqual(self.ids(h.page()[0]), ["5", "1"])
        self.assertEqual(h.skipped, 3)
        self.assertEqual(h.record(entry(3)).id, "6")

    def test_kill_9_right_after_record(self):
        child = textwrap.dedent("""
            import sys
            from twisted.internet import task
            from allworx.protocols.sip.history import CallEntry, CallHistory
            fsyncs = []
            h = CallHistory(sys.argv[1], task.Clock(), fsync=fsyncs.append)
            e = h.record(CallEntry(start=1700000000, end=1700000042, direction="outbound",
                                   from_="101", to="+15557770001", outcome="answered",
                                   answered_by="+15557770001", trunk="itsp", duration_s=40))
            print("recorded", e.id, len(fsyncs), flush=True)
            sys.stdin.read()    # until killed
        """)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))]
            + sys.path))
        proc = subprocess.Popen([sys.executable, "-c", child, self.path], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: (proc.stdin.close(), proc.stdout.close(), proc.stderr.close()))
        line = proc.stdout.readline()
        if line != b"recorded 1 0\n":
            proc.kill()
            self.fail("the child said %r; stderr: %s" % (line, proc.communicate()[1].decode()))
        os.kill(proc.pid, signal.SIGKILL)
        self.assertEqual(proc.wait(), -signal.SIGKILL)
        entries, total = self.history().page()
        self.assertEqual(total, 1)
        self.assertEqual(entries[0].as_json()["to"], "+15557770001")
        self.assertEqual(entries[0].trunk, "itsp")


class FsyncTests(Case):

    def test_one_fsync_a_second_at_most(self):
        h = self.history()
        self.clock.advance(100)
        for _ in range(5):
            h.record(entry(1))
        self.assertEqual(self.fsyncs, [])
        self.clock.advance(0)
        self.assertEqual(self.fsyncs, [100])                # the first batch at once
        self.clock.advance(0.25)
        h.record(entry(2))
        self.clock.advance(0.5)
        h.record(entry(3))
        self.clock.advance(0.125)
        self.assertEqual(self.fsyncs, [100])
        self.clock.advance(0.125)
        self.assertEqual(self.fsyncs, [100, 101])           # both, a second after the last
        self.clock.advance(10)
        self.assertEqual(self.fsyncs, [100, 101])           # nothing new, no fsync
        h.record(entry(4))
        self.clock.advance(0)
        self.assertEqual(self.fsyncs, [100, 101, 111])

    def test_never_two_within_a_second(self):
        h = self.history()
        for n in range(400):
            h.record(entry(n))
            self.clock.advance(0.0125 * (n % 7))
        self.clock.advance(2)
        gaps = [b - a for a, b in zip(self.fsyncs, self.fsyncs[1:])]
        self.assertTrue(gaps and min(gaps) >= 1.0, self.fsyncs)
        self.assertGreater(len(self.fsyncs), 5)
        self.assertFalse(h._dirty)

    def test_a_slow_fsync_is_not_overlapped(self):
        thread = ManualThread()
        h = self.history(thread=thread)
        h.record(entry(1))
        self.clock.advance(0)
        self.assertEqual(len(thread.calls), 1)
        h.record(entry(2))
        self.clock.advance(5)
        self.assertEqual(len(thread.calls), 1)              # the first still running
        thread.finish()
        self.clock.advance(0)
        self.assertEqual(len(thread.calls), 1)              # then one for the second
        thread.finish()
        self.assertEqual(len(self.fsyncs), 2)

    def test_close_fsyncs_what_is_left_and_closes(self):
        h = self.history()
        h.record(entry(1))
        self.successResultOf(h.close())
        self.assertEqual(len(self.fsyncs), 1)
        self.assertIsNone(h._fd)
        self.assertRaises(RuntimeError, h.record, entry(2))
        self.clock.advance(5)
        self.assertEqual(len(self.fsyncs), 1)
        self.successResultOf(h.close())

    def test_close_waits_for_a_running_fsync(self):
        thread = ManualThread()
        h = self.history(thread=thread)
        h.record(entry(1))
        self.clock.advance(0)
        h.record(entry(2))
        d = h.close()
        self.assertNoResult(d)
        thread.finish()
        self.successResultOf(d)
        self.assertEqual(len(self.fsyncs), 2)               # the running one, then the last
        self.assertIsNone(h._fd)


class CompactionTests(Case):

    def test_bounded_to_the_newest(self):
        h = self.history(keep=10)
        for n in range(35):
            h.record(entry(n))
            self.assertLessEqual(len(self.lines()), 11)     # keep + a tenth
            self.assertLessEqual(len(h), 10)
        entries, total = h.page(limit=None)
        self.assertEqual(total, 10)
        self.assertEqual(self.ids(entries), [str(n) for n in range(35, 25, -1)])
        self.successResultOf(h.close())
        self.assertEqual(self.ids(self.history(keep=10).page(limit=None)[0]),
                         [str(n) for n in range(35, 25, -1)])
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.path))), ["calls.jsonl"])

    def test_calls_recorded_during_compaction_are_kept(self):
        thread = ManualThread()
        h = self.history(keep=10, thread=thread)
        for n in range(12):                     # the 12th line starts a compaction
            h.record(entry(n))
        self.clock.advance(0)
        compaction = [c for c in thread.calls if c[0] is not h._fsync]
        self.assertEqual(len(compaction), 1)
        for n in range(12, 15):                 # while its thread writes
            h.record(entry(n))
        while thread.calls:
            thread.finish()
        self.assertEqual([json.loads(l)["id"] for l in self.lines()],
                         [str(n) for n in range(3, 16)])
        self.successResultOf(h.close())
        self.assertEqual(self.ids(self.history(keep=20).page(limit=None)[0]),
                         [str(n) for n in range(15, 2, -1)])

    def test_a_file_over_the_bound_is_compacted_at_open(self):
        h = self.history()
        for n in range(30):
            h.record(entry(n))
        self.successResultOf(h.close())
        smaller = self.history(keep=5)
        self.assertEqual(len(self.lines()), 5)
        self.assertEqual(smaller.page()[1], 5)

    def test_a_failed_compaction_leaves_the_file(self):
        def failing(f, *args):
            if f is self.fsync:
                return now(f, *args)
            return defer.fail(OSError(28, "No space left on device"))
        h = self.history(keep=10, thread=failing)
        for n in range(15):
            h.record(entry(n))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 4)    # tried at 12..15 lines
        self.assertEqual(len(self.lines()), 15)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.path))), ["calls.jsonl"])

    def test_a_left_over_temporary_file_is_removed_at_open(self):
        os.makedirs(os.path.dirname(self.path))
        stale = os.path.join(os.path.dirname(self.path), ".calls.jsonl.compact-4242")
        with open(stale, "w") as f:
            f.write("half")
        self.history()
        self.assertFalse(os.path.exists(stale))
