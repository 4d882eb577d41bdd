# -*- test-case-name: allworx.tests.mail.test_store -*-
"""
Files that are on disk before anyone is told so: group commit in a thread.

Every mail the server accepts is written through one `DurableWriter`: each
caller hands over a few files (a message for three mailboxes, a queue entry)
and gets a Deferred that fires once those files and their directories are
fsynced. One batch is written at a time, in a worker thread; the writes
that arrive meanwhile wait and go together in the next batch, sharing its
two journal commits. (Batches in parallel threads made more, smaller
batches whose commits the journal takes one after the other: under
smtp-source, 10 sessions, the median went from 1,138 messages/s with four
at once to 1,760 with one; with another process fsyncing beside, one is
as good as four.) The reactor never waits for a disk.
"""

import os

import attr
from twisted.internet import defer, threads
from twisted.logger import Logger

from allworx.atomicfile import fsync_directory

log = Logger()


@attr.s(frozen=True, slots=True)
class PendingFile:
    """One file to write: `data` goes to `tmp_path`, fsynced, renamed to `final_path`."""

    tmp_path = attr.ib()
    final_path = attr.ib()
    data = attr.ib(repr=False)


def write_files(groups):
    """
    Write each group of PendingFiles durably (runs in a worker thread).
    Returns, per group, None or the exception that stopped it; a failed group
    leaves none of its files behind.

    The batch goes in phases, so that its journal commits are shared: every
    file is created and written, then every file is fsynced (the first fsync
    commits the lot, the others find their data already there), then every
    file is renamed into place, then each directory is fsynced once. Two
    journal commits a batch however many files it holds, where a file at a
    time took one commit a file and one more; and no name appears before its
    data is on disk.
    """
    failed = [None] * len(groups)
    opened = [[] for _ in groups]       # per group: (fd, PendingFile)
    try:
        for i, files in enumerate(groups):
            try:
                for f in files:
                    fd = os.open(f.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    opened[i].append((fd, f))
                    _write_all(fd, f.data)
            except OSError as e:
                failed[i] = e
        for i, pairs in enumerate(opened):
            if failed[i] is None:
                try:
                    for fd, _ in pairs:
                        os.fsync(fd)
                except OSError as e:
                    failed[i] = e
    finally:
        for pairs in opened:
            for fd, _ in pairs:
                os.close(fd)
    directories = set()
    for i, files in enumerate(groups):
        if failed[i] is None:
            done = []
            try:
                for f in files:
                    os.rename(f.tmp_path, f.final_path)
                    done.append(f.final_path)
                directories.update(os.path.dirname(p) for p in done)
                continue
            except OSError as e:
                failed[i] = e
                for path in done:
                    _unlink(path)
        for f in files:
            _unlink(f.tmp_path)
    dir_error = None
    for directory in sorted(directories):
        try:
            fsync_directory(directory)
        except OSError as e:
            dir_error = e
    if dir_error is not None:
        return [e if e is not None else dir_error for e in failed]
    return failed


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class DurableWriter:
    """
    Group commit: `write(files)` returns a Deferred that fires (with None) once
    the files are fsynced and renamed into place, or fails with the OSError.
    Up to `parallel` batches are in worker threads at a time; the rest queue.
    """

    def __init__(self, defer_to_thread=threads.deferToThread, max_batch=512, parallel=1):
        self._defer = defer_to_thread
        self._max_batch = max_batch
        self._parallel = parallel
        self._waiting = []      # (files, Deferred)
        self._busy = 0
        self.batches = 0

    def write(self, files):
        d = defer.Deferred()
        self._waiting.append((list(files), d))
        self._next()
        return d

    def _next(self):
        while self._waiting and self._busy < self._parallel:
            self._busy += 1
            batch = self._waiting[:self._max_batch]
            del self._waiting[:self._max_batch]
            self.batches += 1
            d = self._defer(write_files, [files for files, _ in batch])
            d.addBoth(self._done, batch)

    def _done(self, results, batch):
        if not isinstance(results, list):   # the thread itself failed
            results = [results.value] * len(batch)
        for (files, d), error in zip(batch, results):
            if error is None:
                d.callback(None)
            else:
                log.error("could not write {count} file(s) durably: {error}",
                          count=len(files), error=error)
                d.errback(error)
        self._busy -= 1
        self._next()
