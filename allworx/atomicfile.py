# -*- test-case-name: allworx.tests.core.test_atomicfile -*-
"""
Files replaced so that a crash leaves the old content or the new, never a
mix or nothing: `write_atomically` (a temporary file in the same directory,
written and fsynced, renamed over the old one, then the directory fsynced so
the new name itself is on disk; mode 0600 unless told otherwise) and
`fsync_directory`, once for the whole server; `ensure_directory` (a private
directory, 0700, parents included); and `JsonStateFile`, a small JSON file
of runtime state under data_dir (the WAN lease, what the network service
changed) written that way in a thread, one write after the other so an
older state never lands last.
"""

import itertools
import json
import os

from twisted.internet import defer, threads
from twisted.logger import Logger

log = Logger()

_temp_names = itertools.count(1)


def write_atomically(path, data, mode=0o600):
    """
    Replace `path` with `data` (bytes, or str written as UTF-8), durably
    (blocking: call it in a thread from the reactor). `mode` is the file's
    permission bits after every write, the umask applying as for open()
    (0o666 gives what open() would); the default, 0600, suits what the
    server keeps (tap.conf's hashes, mail, leases, keys): a replaced file
    never keeps a looser mode it had. On an error the old file is left as it
    was and the temporary file removed.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.tmp-%d-%d" % (os.path.basename(path), os.getpid(),
                                                     next(_temp_names)))
    try:
        write_synced(tmp, data, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_directory(directory)


def ensure_directory(path, mode=0o700, attempts=20):
    """
    Create the directory `path` and each missing parent with `mode` (the
    umask applying), where os.makedirs gives the parents the default mode;
    directories that exist are left as they are. A parent that another
    process removes meanwhile (a shared directory removed when empty) is
    made again, up to `attempts` times.
    """
    for attempt in range(attempts):
        try:
            return _make_directories(os.path.abspath(path), mode)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def _make_directories(path, mode):
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def write_synced(path, data, mode=0o600):
    """Create (or truncate) `path`, write all of `data` (bytes) and fsync it; no rename."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path):
    """Make the names in a directory (files created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonStateFile:
    """`load()` the saved value (None if absent or unreadable), `save(value)`, `clear()`."""

    def __init__(self, path, what, defer_to_thread=threads.deferToThread):
        self.path = path
        self.what = what            # for log lines: "the WAN lease", ...
        self._defer = defer_to_thread
        self._last = defer.succeed(None)   # the chain every write waits its turn on

    def load(self):
        """The saved JSON value, or None (missing; unreadable is logged)."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warn("ignoring {path} ({what}): {why}", path=self.path, what=self.what,
                     why=str(e))
            return None

    def save(self, value):
        """Write `value` after any earlier write; returns a Deferred."""
        text = json.dumps(value, indent=1, sort_keys=True) + "\n"
        return self._then(self._write, text)

    def clear(self):
        """Remove the file after any earlier write; returns a Deferred."""
        return self._then(self._remove)

    def _then(self, work, *args):
        done = defer.Deferred()

        def run(_):
            return self._defer(work, *args)

        def failed(f):
            log.failure("could not write {path} ({what})", f, path=self.path, what=self.what)

        def finished(_):
            done.callback(None)
        self._last.addBoth(run).addErrback(failed).addBoth(finished)
        return done

    def _write(self, text):
        ensure_directory(os.path.dirname(os.path.abspath(self.path)))
        write_atomically(self.path, text)

    def _remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
