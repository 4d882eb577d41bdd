# -*- test-case-name: allworx.tests.core.test_stats -*-
"""
The dashboard's history (SPEC 20): a small round-robin store in the process.

Each series keeps three rings of fixed size, so the store never grows:

    hour   360 slots of 10 s
    day    288 slots of 5 min
    week   336 slots of 30 min

A sample (`add(name, when, value)`) goes into the slot of each ring that
holds `when` (slot times are epoch seconds aligned to the ring's step); a
slot keeps the sum and the count of what fell in it, so a day or week slot
is the average of the samples in its 5 or 30 minutes (and a slot still
filling shows the average so far). A slot is reused once its ring has gone
round, and a slot older than the ring's span is never shown.

The store is saved as compact JSON (`data_dir/stats.json`, written
atomically in a thread every minute, and at stop in the caller's thread)
and loaded at start, dropping what has grown older than its ring meanwhile.
`StatsStore` is the `IStats` the web reads (`Views.stats`).
"""

import json
import math
import os

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.interfaces import IStats

log = Logger()

# range -> (step in seconds, slots)
RANGES = {"hour": (10, 360), "day": (300, 288), "week": (1800, 336)}
FORMAT = 1
API_PATH = "/api/v1/stats/"


class Ring:
    """`size` slots of `step` seconds: slot time, sum and count of the samples in it."""

    def __init__(self, step, size):
        self.step = step
        self.size = size
        self.times = [None] * size
        self.sums = [0.0] * size
        self.counts = [0] * size

    def slot_of(self, when):
        return int(math.floor(when / self.step)) * self.step

    def add(self, when, value, count=1):
        slot = self.slot_of(when)
        i = (slot // self.step) % self.size
        if self.times[i] != slot:
            if self.times[i] is not None and self.times[i] > slot:
                return      # older than what this slot holds now: gone round already
            self.times[i], self.sums[i], self.counts[i] = slot, 0.0, 0
        self.sums[i] += value
        self.counts[i] += count

    def oldest_kept(self, now):
        """The first slot time still inside the ring's span at `now`."""
        return self.slot_of(now) - (self.size - 1) * self.step

    def points(self, now):
        """[[slot time, average], ...] of the slots inside the span, oldest first."""
        first, last = self.oldest_kept(now), self.slot_of(now)
        found = [(t, s / n) for t, s, n in zip(self.times, self.sums, self.counts)
                 if t is not None and n and first <= t <= last]
        found.sort()
        return [[t, round(v, 4)] for t, v in found]

    def saved(self):
        """[[slot time, sum, count], ...] of the slots in use."""
        return sorted([t, s, n] for t, s, n in zip(self.times, self.sums, self.counts)
                      if t is not None and n)

    def restore(self, entries, now):
        """Put saved slots back, leaving out those the ring has gone past by `now`."""
        first, last = self.oldest_kept(now), self.slot_of(now)
        for t, s, n in entries:
            if first <= t <= last and t % self.step == 0 and n > 0:
                self.add(t, float(s), int(n))


@implementer(IStats)
class StatsStore:
    """
    The series named in `series` ([(name, unit), ...], in the order listed),
    kept in `path`; `clock` (an IReactorTime) says what "now" is.
    """

    def __init__(self, path, series, clock, defer_to_thread=threads.deferToThread):
        self.path = path
        self.units = dict(series)
        self.names = [name for name, _ in series]
        self.clock = clock
        self._defer = defer_to_thread
        self.rings = {name: {r: Ring(step, size) for r, (step, size) in RANGES.items()}
                      for name in self.names}
        self._writing = defer.succeed(None)    # the chain each write waits its turn on

    # ---- IStats

    def series(self):
        return [{"name": name, "unit": self.units[name], "path": API_PATH + name}
                for name in self.names]

    def points(self, name, range="hour"):
        if name not in self.rings:
            raise KeyError(name)
        if range not in RANGES:
            raise ValueError("range is one of %s" % ", ".join(RANGES))
        ring = self.rings[name][range]
        return {"name": name, "unit": self.units[name], "step_s": ring.step,
                "points": ring.points(self.clock.seconds())}

    # ---- samples

    def add(self, name, when, value):
        """A sample of series `name` taken at `when` (epoch seconds); None is no sample."""
        if value is None or name not in self.rings:
            return
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return
        for ring in self.rings[name].values():
            ring.add(when, value)

    # ---- on disk

    def snapshot(self):
        """The store as the bytes of `path`."""
        data = {"format": FORMAT, "series": {
            name: {r: ring.saved() for r, ring in rings.items()}
            for name, rings in self.rings.items()}}
        return json.dumps(data, separators=(",", ":")).encode("ascii")

    def load(self):
        """Read `path` back (missing: nothing; unreadable: logged, nothing)."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read().decode("ascii"))
            if data.get("format") != FORMAT:
                raise ValueError("unknown format %r" % (data.get("format"),))
            saved = data["series"]
            now = self.clock.seconds()
            for name, rings in self.rings.items():
                for r, ring in rings.items():
                    ring.restore(saved.get(name, {}).get(r, []), now)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warn("statistics in {path} ignored: {why}", path=self.path, why=str(e))

    def _write(self, data):
        ensure_directory(os.path.dirname(os.path.abspath(self.path)))
        write_atomically(self.path, data)

    def save(self):
        """Write the store in a thread, after any write still going; a Deferred."""
        data = self.snapshot()
        return self._then(lambda: self._defer(self._write, data))

    def save_now(self):
        """
        Write the store once the write still going (if any) is done, in this
        thread (at stop, when the thread pool may be going away); a Deferred.
        """
        return self._then(lambda: self._write(self.snapshot()))

    def _then(self, work):
        done = defer.Deferred()

        def failed(f):
            log.failure("could not save the statistics to {path}", f, path=self.path)
        self._writing.addBoth(lambda _: work()).addErrback(failed).addBoth(
            lambda _: done.callback(None))
        return done
