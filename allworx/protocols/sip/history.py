# -*- test-case-name: allworx.tests.sip.test_history -*-
"""
The call history (SPEC 15): every ended call, internal or outside, as one
line of JSON appended to a journal file (`DATA_DIR/calls.jsonl`, mode 0600).

- Nothing is lost on kill -9 once a call has ended: `record()` writes its
  line with one os.write on an O_APPEND descriptor before it returns, so the
  kernel has it whatever happens to the process next. Against a power cut
  the file is fsynced at most once a second (one fsync covers every line
  written since the last; it runs in a thread).
- A line torn by a crash in the middle of a write (the last one, without its
  newline) is cut off when the file is opened; any other line that is not a
  call is skipped and counted. Neither is ever fatal.
- Bounded: the newest `keep` calls (100,000) are kept. Once the file holds a
  tenth more lines than that it is rewritten with only those (a temporary
  file written in a thread, then the lines recorded meanwhile, fsync, rename
  over the old one, fsync of the directory), so a crash leaves the old file
  or the new one, each with every call recorded before it.
- Queries never read the file: it is read once when opened, and the calls
  kept are held in memory ordered by start time, so a page of the newest
  calls is a slice and a filtered one one pass over the list.
"""

import bisect
import json
import os
import re
import sys
import time

import attr
from attr.validators import in_, instance_of, optional
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from allworx.atomicfile import ensure_directory, fsync_directory, write_synced
from allworx.interfaces import CALL_DIRECTIONS, CALL_OUTCOMES, ICallHistory

log = Logger()

KEEP = 100000           # calls kept
SYNC_INTERVAL = 1.0     # seconds between fsyncs, at most one each
_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]+$")


def rfc3339(when):
    """A POSIX time as RFC 3339 UTC to the second (`2024-01-05T10:15:00Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _text(value):
    return None if value is None else sys.intern(str(value))


def _optional_text():
    return attr.ib(default=None, converter=_text, validator=optional(instance_of(str)))


def _seconds(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected POSIX seconds, not %r" % (value,))
    return float(value)


@attr.s(frozen=True, slots=True, kw_only=True)
class CallEntry:
    """
    One ended call. `start` and `end` are POSIX seconds (the start is when
    the call was offered, the end when it was over); `to` is what was dialled
    (E.164 for outside numbers, else the extension or group number);
    `answered_by` the extension that answered (None if nobody did); `trunk`
    the trunk's name for an outside call; `duration_s` the seconds talked
    (0 if not answered). `id` None: `CallHistory.record` gives one.
    """

    start = attr.ib(converter=_seconds)
    end = attr.ib(converter=_seconds)
    direction = attr.ib(validator=in_(CALL_DIRECTIONS))
    from_ = attr.ib(converter=_text, validator=instance_of(str))
    to = attr.ib(converter=_text, validator=instance_of(str))
    outcome = attr.ib(validator=in_(CALL_OUTCOMES))
    from_name = _optional_text()
    answered_by = _optional_text()
    trunk = _optional_text()
    duration_s = attr.ib(default=0, converter=lambda v: max(0, int(round(v))))
    id = attr.ib(default=None, converter=lambda v: None if v is None else str(v))

    def as_json(self):
        """SPEC 15's object: its names (`from`), times RFC 3339 UTC."""
        out = self.as_record()
        out["start"], out["end"] = rfc3339(self.start), rfc3339(self.end)
        return out

    def as_record(self):
        """The journal's object: as_json's names, times POSIX seconds."""
        return {"id": self.id, "start": self.start, "end": self.end,
                "direction": self.direction, "from": self.from_, "from_name": self.from_name,
                "to": self.to, "answered_by": self.answered_by, "trunk": self.trunk,
                "duration_s": self.duration_s, "outcome": self.outcome}

    @classmethod
    def from_record(cls, record):
        """The entry of a journal object; ValueError/TypeError/KeyError if it is not one."""
        if not isinstance(record, dict):
            raise TypeError("not an object")
        return cls(id=record["id"], start=record["start"], end=record["end"],
                   direction=record["direction"], from_=record["from"],
                   from_name=record.get("from_name"), to=record["to"],
                   answered_by=record.get("answered_by"), trunk=record.get("trunk"),
                   duration_s=record.get("duration_s", 0), outcome=record["outcome"])

    def line(self):
        """The journal line (bytes, newline-terminated)."""
        return (json.dumps(self.as_record(), separators=(",", ":")) + "\n").encode("utf-8")

    def matches(self, direction, outcome, search, digits):
        """Whether the entry passes the filters (`search` lower-case; `digits` its number form)."""
        if direction is not None and self.direction != direction:
            return False
        if outcome is not None and self.outcome != outcome:
            return False
        if search is None:
            return True
        for value in (self.from_, self.to, self.answered_by, self.from_name):
            if value is not None and (search in value.lower() or
                                      (digits is not None and digits in value)):
                return True
        return False


def _start(entry):
    return entry.start


def read_journal(path):
    """
    (entries in file order, lines skipped, length of the whole lines): the
    calls in the journal at `path` ([] if there is none). A last line without
    its newline is torn and left out of the length.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0, 0
    whole = data.rfind(b"\n") + 1
    entries, skipped = [], 0
    for raw in data[:whole].splitlines():
        if not raw.strip():
            continue
        try:
            entries.append(CallEntry.from_record(json.loads(raw)))
        except (ValueError, TypeError, KeyError):
            skipped += 1
    return entries, skipped, whole


@implementer(ICallHistory)
class CallHistory:
    """
    The journal of ended calls at `path`, read when made. How the SIP service
    uses it: make one at start (`CallHistory(os.path.join(data_dir,
    "calls.jsonl"), reactor)`), hand it to the web as `Views.call_history`,
    call `record(CallEntry(...))` once at the end of each call (whatever the
    outcome; the line is in the file when it returns), and `close()` at stop
    (a Deferred: the last fsync done, the file closed).

    `clock` schedules the fsyncs (the reactor; task.Clock in tests);
    `defer_to_thread` runs the fsync and the compaction's bulk write;
    `fsync` is os.fsync (tests count the calls).
    """

    def __init__(self, path, clock=None, keep=KEEP, defer_to_thread=threads.deferToThread,
                 fsync=os.fsync):
        if clock is None:
            from twisted.internet import reactor as clock
        self.path = path
        self.clock = clock
        self.keep = keep
        self._defer = defer_to_thread
        self._fsync = fsync
        self._entries = []          # the newest `keep`, oldest start first
        self._next_id = 1
        self._fd = None
        self._lines = 0             # lines in the file
        self._dirty = False         # written since the last fsync began
        self._sync_call = None
        self._syncing = False
        self._last_sync = None
        self._retired = []          # descriptors to close once the fsync running ends
        self._compacting = None     # lines recorded since the snapshot, while compacting
        self._idle = []             # close() waiting for the fsync running
        self._closed = False
        self.skipped = 0            # lines of the file that were not calls
        self._open()

    # ---- start

    def _temp_prefix(self):
        return os.path.join(os.path.dirname(os.path.abspath(self.path)),
                            ".%s.compact-" % os.path.basename(self.path))

    def _open(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        ensure_directory(directory)
        prefix = self._temp_prefix()
        for name in os.listdir(directory):      # a compaction a stop or crash cut short
            if os.path.join(directory, name).startswith(prefix):
                _unlink(os.path.join(directory, name))
        entries, self.skipped, whole = read_journal(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size > whole:
            # A line torn by a crash: cut it off, or the next line would join it.
            log.warn("call history {path}: a torn last line ({n} bytes) cut off",
                     path=self.path, n=os.fstat(self._fd).st_size - whole)
            os.ftruncate(self._fd, whole)
            self._dirty = True
            self._schedule_sync()
        if self.skipped:
            log.warn("call history {path}: {n} damaged line(s) skipped", path=self.path,
                     n=self.skipped)
        self._lines = len(entries) + self.skipped
        for entry in entries:
            if entry.id.isdigit():
                self._next_id = max(self._next_id, int(entry.id) + 1)
        entries.sort(key=_start)        # stable: calls of one start keep the file's order
        self._entries = entries[-self.keep:] if self.keep else []
        log.info("call history {path}: {n} call(s)", path=self.path, n=len(self._entries))
        self._maybe_compact()

    # ---- recording

    def record(self, entry):
        """
        Keep one ended call (a CallEntry; one without an id gets the next
        number). Its line is in the file when this returns; returns the
        entry as kept.
        """
        if self._closed:
            raise RuntimeError("the call history %s is closed" % self.path)
        if entry.id is None:
            entry = attr.evolve(entry, id=str(self._next_id))
        if entry.id.isdigit():
            self._next_id = max(self._next_id, int(entry.id) + 1)
        line = entry.line()
        try:
            _write_all(self._fd, line)
        except OSError as e:
            # A full disk must not break the call that just ended: it stays in memory.
            log.error("call history {path}: call {id} not written: {why}", path=self.path,
                      id=entry.id, why=e.strerror)
        else:
            self._lines += 1
            self._dirty = True
            if self._compacting is not None:
                self._compacting.append(line)
            self._schedule_sync()
        self._remember(entry)
        self._maybe_compact()
        return entry

    def _remember(self, entry):
        entries = self._entries
        if not entries or entry.start >= entries[-1].start:
            entries.append(entry)
        else:
            bisect.insort_right(entries, entry, key=_start)
        if len(entries) > self.keep:
            del entries[:len(entries) - self.keep]

    # ---- fsync, at most once a second

    def _schedule_sync(self):
        if self._sync_call is not None or self._closed:
            return
        now = self.clock.seconds()
        delay = 0 if self._last_sync is None else max(0, self._last_sync + SYNC_INTERVAL - now)
        self._sync_call = self.clock.callLater(delay, self._sync)

    def _sync(self):
        self._sync_call = None
        if not self._dirty or self._syncing or self._fd is None:
            return      # a running fsync reschedules when it ends
        self._dirty = False
        self._syncing = True
        self._last_sync = self.clock.seconds()
        d = self._defer(self._fsync, self._fd)
        d.addErrback(lambda f: log.failure("call history {path}: fsync failed", f, path=self.path))
        d.addBoth(self._synced)

    def _synced(self, _):
        self._syncing = False
        retired, self._retired = self._retired, []
        for fd in retired:
            os.close(fd)
        if self._closed:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
        elif self._dirty:
            self._schedule_sync()

    # ---- compaction

    def _maybe_compact(self):
        if (self._compacting is not None or self._closed
                or self._lines <= self.keep + max(1, self.keep // 10)):
            return
        self._compacting = []
        snapshot = list(self._entries)
        tmp = self._temp_prefix() + str(os.getpid())
        d = self._defer(_write_lines, tmp, snapshot)
        d.addCallbacks(self._compacted, self._compact_failed, callbackArgs=(tmp, len(snapshot)),
                       errbackArgs=(tmp,))

    def _compacted(self, _, tmp, count):
        """Back in the reactor: add what came meanwhile, then put the new file in place."""
        since, self._compacting = self._compacting, None
        if self._closed:
            _unlink(tmp)
            return
        fd = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
            _write_all(fd, b"".join(since))
            self._fsync(fd)
            os.rename(tmp, self.path)
        except OSError as e:
            if fd is not None:
                os.close(fd)
            _unlink(tmp)
            log.error("call history {path}: compaction failed: {why}", path=self.path,
                      why=e.strerror)
            return
        old, self._fd = self._fd, fd
        if self._syncing:
            self._retired.append(old)
        else:
            os.close(old)
        self._lines = count + len(since)
        self._dirty = False     # the new file was fsynced whole
        try:
            fsync_directory(os.path.dirname(os.path.abspath(self.path)))
        except OSError as e:
            log.error("call history {path}: fsync of its directory failed: {why}",
                      path=self.path, why=e.strerror)
        log.info("call history {path}: compacted to {n} call(s)", path=self.path, n=self._lines)

    def _compact_failed(self, failure, tmp):
        self._compacting = None
        _unlink(tmp)
        log.failure("call history {path}: compaction failed", failure, path=self.path)

    # ---- queries

    def page(self, limit=50, offset=0, direction=None, outcome=None, search=None, since=None,
             until=None):
        """See ICallHistory.page."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError("limit must be a whole number >= 0 or None")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be a whole number >= 0")
        if direction is not None and direction not in CALL_DIRECTIONS:
            raise ValueError("direction must be one of %s" % ", ".join(CALL_DIRECTIONS))
        if outcome is not None and outcome not in CALL_OUTCOMES:
            raise ValueError("outcome must be one of %s" % ", ".join(CALL_OUTCOMES))
        entries = self._entries
        low = 0 if since is None else bisect.bisect_left(entries, since, key=_start)
        high = len(entries) if until is None else bisect.bisect_left(entries, until, key=_start)
        high = max(low, high)
        search = (search or "").strip().lower() or None
        if direction is None and outcome is None and search is None:
            total = high - low
            top = high - offset
            bottom = low if limit is None else max(low, top - limit)
            return entries[bottom:top][::-1] if top > low else [], total
        digits = None
        if search is not None and _PHONE_LIKE.match(search):
            digits = re.sub(r"[\s().-]", "", search)
        found, total = [], 0
        stop = None if limit is None else offset + limit
        for i in range(high - 1, low - 1, -1):
            entry = entries[i]
            if entry.matches(direction, outcome, search, digits):
                if total >= offset and (stop is None or total < stop):
                    found.append(entry)
                total += 1
        return found, total

    def __len__(self):
        return len(self._entries)

    # ---- stop

    def close(self):
        """Stop: fsync what is not yet, close the file. A Deferred."""
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        if self._sync_call is not None:
            self._sync_call.cancel()
            self._sync_call = None
        done = defer.Deferred()
        if self._syncing:
            self._idle.append(done)
        else:
            done.callback(None)

        def shut(_):
            fd, self._fd = self._fd, None
            try:
                if self._dirty:
                    self._dirty = False
                    self._fsync(fd)
            finally:
                os.close(fd)
        return done.addCallback(shut)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_lines(path, entries):
    """In a thread: the compacted journal, written and fsynced (not yet in place)."""
    write_synced(path, b"".join(e.line() for e in entries))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
