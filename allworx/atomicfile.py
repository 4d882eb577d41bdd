# -*- test-case-name: allworx.tests.network.test_service -*-
"""
A small JSON file of runtime state under data_dir (the WAN lease, what the
network service changed), written atomically (temp, fsync, rename) in a
thread, one write after the other so an older state never lands last.
"""

import json
import os

from twisted.internet import defer, threads
from twisted.logger import Logger

from allworx.inifile import atomic_write

log = Logger()


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
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write(self.path, text)

    def _remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
