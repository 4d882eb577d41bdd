# -*- test-case-name: allworx.tests.dhcp.test_journal -*-
"""
The DHCP leases on disk: an append-only journal under `data_dir`, so that
every lease the server ACKed is honoured after a restart or a kill -9.

Each line is `CRC32 JSON`: `{"op": "bind", "mac", "ip", "expires", "host"}`
(and `"vendor"`, the client's vendor class, when it sent one) or
`{"op": "free", "mac", "ip"}`. A line that is torn (a crash mid-write) or
damaged fails its checksum and is skipped on reading. On start the journal
is replayed and rewritten with one line per lease (compaction: temp file,
fsync, rename, fsync the directory); it is compacted again in the writer
thread whenever it has grown to many times the number of leases.

Writes are group commits: records handed in during one reactor turn (and
while the previous write is still in progress) go to disk in one write and
one fsync, in a thread, and each record's Deferred fires only once its bytes
are durable. The server sends its ACK from that callback.
"""

import ipaddress
import json
import os
import zlib

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from allworx.atomicfile import ensure_directory, write_atomically
from allworx.protocols.dhcp.codec import address_text
from allworx.protocols.dhcp.pool import BOUND, Lease

log = Logger()

KEEP_EXPIRED = 7 * 86400     # expired leases remembered (a client's old address)
COMPACT_FACTOR = 8           # compact when lines exceed this many times the leases
COMPACT_MINIMUM = 20000      # ... and at least this many lines


class JournalError(Exception):
    """The journal cannot be read or written; the message names the file and the reason."""


def encode_record(record):
    """One journal line (bytes) for a record dict."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def encode_bind(lease):
    """The journal line of a bound lease: `encode_record(bind_record(lease))`, made fast."""
    if lease.vendor_class is not None:
        return encode_record(bind_record(lease))
    host = lease.hostname
    body = ('{"expires":%r,"host":%s,"ip":"%s","mac":"%s","op":"bind"}' % (
        lease.expires, "null" if host is None else json.dumps(host),
        address_text(lease.address), lease.mac)).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_record(line):
    """The record dict of one journal line, or None if it is torn or damaged."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("op") not in ("bind", "free"):
        return None
    return record


def bind_record(lease):
    """The journal record dict of a bound lease."""
    record = {"op": "bind", "mac": lease.mac, "ip": str(lease.address),
              "expires": lease.expires, "host": lease.hostname}
    if lease.vendor_class is not None:
        record["vendor"] = lease.vendor_class
    return record


def lease_from_record(record):
    """A Lease from a bind record; ValueError if a field is wrong."""
    expires = record["expires"]
    if not isinstance(expires, (int, float)):
        raise ValueError("expires is not a number")
    host = record.get("host")
    vendor = record.get("vendor")
    return Lease(str(record["mac"]), ipaddress.IPv4Address(record["ip"]), expires, BOUND,
                 host if isinstance(host, str) else None,
                 vendor if isinstance(vendor, str) else None)


def replay(lines):
    """
    The leases a sequence of journal lines leaves (address text -> Lease),
    and how many lines were skipped as damaged.
    """
    state, skipped = {}, 0
    for line in lines:
        record = decode_record(line)
        if record is None:
            skipped += 1
            continue
        try:
            if record["op"] == "bind":
                lease = lease_from_record(record)
                state[str(lease.address)] = lease
            else:
                current = state.get(str(record["ip"]))
                if current is not None and current.mac == record.get("mac"):
                    del state[str(record["ip"])]
        except (KeyError, ValueError, TypeError):
            skipped += 1
    return state, skipped


class LeaseJournal:
    """
    The append-only lease file at `path`. `load()` once at start; then
    `bound()` / `freed()` return Deferreds that fire when the record is on
    disk. `run_in_thread(f, *args) -> Deferred` does the blocking work
    (deferToThread in the server; a synchronous stand-in in tests).
    """

    def __init__(self, path, reactor, run_in_thread=None):
        self.path = path
        self.reactor = reactor
        if run_in_thread is None:
            from twisted.internet import threads

            def run_in_thread(f, *args):
                return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        self.run_in_thread = run_in_thread
        self._fd = None
        self._state = {}        # address text -> journal line of its current lease
        self._lines = 0
        self._pending = []      # lines waiting for the next write
        self._waiters = []      # their Deferreds
        self._scheduled = None
        self._writing = False
        self._idle = []         # Deferreds of close() waiting for the writer
        self.writes = 0         # group commits done (for metrics and tests)
        # Called with (seconds, records) after each group commit, for metrics.
        self.on_commit = None
        self._started = None

    # ------------------------------------------------------------ start

    def load(self, now):
        """
        Read the journal, compact it, open it for appending; returns the leases
        worth restoring (live ones, and ones expired less than a week ago).
        Runs before the server answers anyone, so it may block briefly.
        """
        directory = os.path.dirname(self.path)
        try:
            ensure_directory(directory)
            try:
                with open(self.path, "rb") as f:
                    lines = f.readlines()
            except FileNotFoundError:
                lines = []
        except OSError as e:
            raise JournalError("cannot read the lease journal %s: %s" % (self.path, e.strerror))
        state, skipped = replay(lines)
        if skipped:
            log.warn("dhcp: skipped {count} damaged line(s) of {path}", count=skipped,
                     path=self.path)
        keep = {ip: lease for ip, lease in state.items() if lease.expires > now - KEEP_EXPIRED}
        self._state = {ip: encode_record(bind_record(l)) for ip, l in keep.items()}
        try:
            self._rewrite(b"".join(self._state.values()))
        except OSError as e:
            raise JournalError("cannot write the lease journal %s: %s" % (self.path, e.strerror))
        log.info("dhcp: lease journal {path}: {leases} lease(s) from {lines} line(s)",
                 path=self.path, leases=len(keep), lines=len(lines))
        return list(keep.values())

    def _rewrite(self, data):
        """Replace the file with `data`, durably, and reopen it for appending."""
        write_atomically(self.path, data, mode=0o600)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = data.count(b"\n")

    # ------------------------------------------------------------ records

    def bound(self, lease):
        """Record a granted or renewed lease; the Deferred fires when it is durable."""
        return self._append(self._bind_line(lease))

    def _bind_line(self, lease):
        line = encode_bind(lease)
        self._state[address_text(lease.address)] = line
        return line

    def bound_then(self, lease, done, failed, *args):
        """
        As `bound`, without a Deferred a lease (the DHCP server's hot path):
        `done(*args)` once the record is durable, or `failed(JournalError,
        *args)` if it cannot be. An exception either raises is logged; the
        other records of the batch are answered all the same.
        """
        line = self._bind_line(lease)
        if self._fd is None:
            failed(JournalError("the lease journal %s is not open" % self.path), *args)
            return
        self._queue(line, (done, failed, args))

    def freed(self, lease):
        """Record that a lease ended early (release, decline)."""
        key = str(lease.address)
        current = self._state.get(key)
        if current is not None and decode_record(current).get("mac") == lease.mac:
            del self._state[key]
        return self._append(encode_record({"op": "free", "mac": lease.mac, "ip": key}))

    def _append(self, line):
        if self._fd is None:
            return defer.fail(JournalError("the lease journal %s is not open" % self.path))
        d = defer.Deferred()
        self._queue(line, d)
        return d

    def _queue(self, line, waiter):
        """`waiter` (a Deferred, or (done, failed, args)) is told once `line` is durable."""
        self._pending.append(line)
        self._waiters.append(waiter)
        if not self._writing and self._scheduled is None:
            # Collect everything that arrives in this reactor turn.
            self._scheduled = self.reactor.callLater(0, self._flush)

    def _flush(self):
        self._scheduled = None
        if self._writing or not self._pending:
            return
        data, waiters = b"".join(self._pending), self._waiters
        self._pending, self._waiters = [], []
        self._lines += len(waiters)
        snapshot = None
        if self._lines > max(COMPACT_MINIMUM, COMPACT_FACTOR * len(self._state)):
            snapshot = b"".join(self._state.values())
        self._writing = True
        self._started = self.reactor.seconds()
        d = self.run_in_thread(self._write, data, snapshot)
        d.addBoth(self._written, waiters)

    def _write(self, data, snapshot):
        """In the writer thread: append and fsync; or write the compacted snapshot."""
        if snapshot is not None:
            self._rewrite(snapshot)
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def _written(self, result, waiters):
        self._writing = False
        self.writes += 1
        failed = isinstance(result, Failure)
        if self.on_commit is not None and not failed:
            self.on_commit(self.reactor.seconds() - self._started, len(waiters))
        if failed:
            log.failure("dhcp: writing the lease journal {path} failed", result, path=self.path)
        error = JournalError("lease journal %s: %s" % (self.path, result.value)) if failed else None
        for w in waiters:
            if w.__class__ is not tuple:
                if failed:
                    w.errback(error)
                else:
                    w.callback(None)
                continue
            try:
                if failed:
                    w[1](error, *w[2])
                else:
                    w[0](*w[2])
            except Exception:
                log.failure("dhcp: answering a journaled lease failed")
        if self._pending:
            self._flush()
        else:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def close(self):
        """Finish pending writes and close the file; a Deferred."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._pending and not self._writing:
            self._flush()
        if self._writing:
            done = defer.Deferred()
            self._idle.append(done)
        else:
            done = defer.succeed(None)

        def shut(_):
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        return done.addCallback(shut)
