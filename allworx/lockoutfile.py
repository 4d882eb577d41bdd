# -*- test-case-name: allworx.tests.core.test_guards -*-
"""
The login lock-outs on disk, under data_dir, shared by the server and the
`allworx unlock` command:

- `lockouts.json`: the lock-outs in force as the server last wrote them
  (`{"lockouts": [{"source", "user", "until", "failures"}]}`, `user` null
  for a whole source, `until` in POSIX seconds), so that they survive a
  restart and the command can show them;
- `unlock-requests/`: one small JSON file per `allworx unlock`
  (`{"user", "source"}`), which the running server takes (within a second)
  and removes, or applies at its next start. The server alone writes the
  lock-outs, so a request and a new lock-out never overwrite each other.
"""

import json
import os
import time

from twisted.internet import threads
from twisted.logger import Logger

from allworx.atomicfile import JsonStateFile, write_atomically

log = Logger()

STATE_NAME = "lockouts.json"
REQUESTS_NAME = "unlock-requests"


class LockoutFile:
    """The lock-outs and unlock requests under `data_dir`."""

    def __init__(self, data_dir, defer_to_thread=threads.deferToThread):
        self.path = os.path.join(data_dir, STATE_NAME)
        self.requests = os.path.join(data_dir, REQUESTS_NAME)
        self._file = JsonStateFile(self.path, "login lock-outs", defer_to_thread)

    # ---- the server's side

    def load(self):
        """The saved lock-outs (dicts; an unreadable file is logged and counts as none)."""
        value = self._file.load()
        entries = value.get("lockouts") if isinstance(value, dict) else None
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict)]

    def save(self, entries):
        """Write the lock-outs in force (a Deferred; written 0600 in a thread, in order)."""
        return self._file.save({"lockouts": entries})

    def take_requests(self):
        """The unlock requests waiting, oldest first, as (user, source); each file removed."""
        try:
            names = sorted(n for n in os.listdir(self.requests)
                           if n.endswith(".json") and not n.startswith("."))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            path = os.path.join(self.requests, name)
            try:
                with open(path) as f:
                    value = json.load(f)
            except (OSError, ValueError) as e:
                log.warn("ignoring the unlock request {path}: {why}", path=path, why=str(e))
                value = None
            try:
                os.unlink(path)
            except OSError:
                pass
            request = _request_of(value)
            if request is None:
                if value is not None:
                    log.warn("ignoring the unlock request {path}: it names no user or source",
                             path=path)
                continue
            out.append(request)
        return out

    # ---- the command's side

    def read(self, now=None):
        """The saved lock-outs still in force at `now` (POSIX seconds), soonest to end first."""
        now = time.time() if now is None else now
        out = []
        for e in self.load():
            try:
                until = float(e["until"])
                source = str(e["source"])
            except (KeyError, TypeError, ValueError):
                continue
            if until > now:
                out.append({"source": source, "user": e.get("user"), "until": until,
                            "failures": e.get("failures", 0)})
        return sorted(out, key=lambda e: e["until"])

    def has_request(self, path):
        """True while the request at `path` waits for the server."""
        return os.path.exists(path)

    def request_unlock(self, user=None, source=None):
        """Leave a request for the server; the path of its file (gone once taken)."""
        if user is None and source is None:
            raise ValueError("an unlock names a user, a source or both")
        try:
            os.mkdir(self.requests, 0o700)      # in the data dir, which must exist
        except FileExistsError:
            pass
        name = "%014d-%d-%s.json" % (int(time.time() * 1000), os.getpid(), os.urandom(4).hex())
        path = os.path.join(self.requests, name)
        write_atomically(path, json.dumps({"user": user, "source": source}) + "\n", 0o600)
        return path


def _request_of(value):
    if not isinstance(value, dict):
        return None
    user, source = value.get("user"), value.get("source")
    if not all(v is None or (isinstance(v, str) and v.strip()) for v in (user, source)):
        return None
    if user is None and source is None:
        return None
    return user, source
