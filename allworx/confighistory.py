# -*- test-case-name: allworx.tests.core.test_confighistory -*-
"""
The history of tap.conf: the last `keep` versions under
`data_dir/config-history/`, each `NNNNNN.conf` (0600: it holds the same
hashes as tap.conf) with an entry in `index.json`: its number, when, who
(`actor`: the admin's name, "cli", "server", or "file" for a change made
to the file while the server was not looking), through what (`via`: "web",
"api", "cli", "server", "file", "restore") and which sections changed.

`Office` records each change it writes (`record`); when the history is
attached (`Office.keep_history`, at start) a tap.conf edited by hand since
the newest version is kept as a version too.
Reverting is an ordinary change through the office (`Office.replace_text`)
with the text of a version (`text(id)`), so it is validated like any other
and is itself recorded.
"""

import difflib
import json
import os
import time

from allworx.atomicfile import ensure_directory, write_atomically

KEEP = 50
INDEX = "index.json"


def rfc3339(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class ConfigHistory:
    """The kept versions of tap.conf with who changed what, newest last on disk."""

    def __init__(self, directory, keep=KEEP, now=time.time):
        self.directory = directory
        self.keep = keep
        self.now = now
        self._index = None

    # ------------------------------------------------------------ reading

    def _load(self):
        if self._index is None:
            try:
                with open(os.path.join(self.directory, INDEX)) as f:
                    index = json.load(f)
                self._index = [e for e in index if isinstance(e, dict) and "id" in e]
            except (OSError, ValueError):
                self._index = []
        return self._index

    def _path(self, number):
        return os.path.join(self.directory, "%06d.conf" % number)

    def entries(self):
        """The versions, newest first: {id, time (RFC 3339), actor, via, sections}."""
        return [dict(e, time=rfc3339(e["time"])) for e in reversed(self._load())]

    def entry(self, number):
        """One version's entry (as `entries`); KeyError if not kept."""
        for e in self._load():
            if e["id"] == number:
                return dict(e, time=rfc3339(e["time"]))
        raise KeyError("config version %s" % number)

    def text(self, number):
        """The tap.conf text of version `number`; KeyError if it is not kept."""
        self.entry(number)
        try:
            with open(self._path(number), encoding="utf-8") as f:
                return f.read()
        except OSError:
            raise KeyError("config version %s" % number)

    def previous(self, number):
        """The number of the version before `number`, or None (the oldest kept)."""
        earlier = [e["id"] for e in self._load() if e["id"] < number]
        return max(earlier) if earlier else None

    def diff(self, number):
        """The unified diff from the version before `number` to it ("" for the oldest kept)."""
        before_id = self.previous(number)
        after = self.text(number)
        if before_id is None:
            return ""
        try:
            before = self.text(before_id)
        except KeyError:
            return ""
        return "".join(difflib.unified_diff(
            before.splitlines(True), after.splitlines(True),
            "tap.conf (version %d)" % before_id, "tap.conf (version %d)" % number))

    def latest_text(self):
        """The text of the newest version, or None."""
        index = self._load()
        if not index:
            return None
        try:
            return self.text(index[-1]["id"])
        except KeyError:
            return None

    # ------------------------------------------------------------ writing

    def record(self, text, sections, actor, via):
        """Keep `text` as a new version; returns its entry. Blocks (small, fsynced writes)."""
        index = list(self._load())
        number = (index[-1]["id"] + 1) if index else 1
        ensure_directory(self.directory)
        write_atomically(self._path(number), text)
        entry = {"id": number, "time": self.now(), "actor": actor, "via": via,
                 "sections": sorted(sections)}
        index.append(entry)
        dropped, index = index[:-self.keep], index[-self.keep:]
        write_atomically(os.path.join(self.directory, INDEX),
                         json.dumps(index, indent=1, sort_keys=True) + "\n")
        self._index = index
        for old in dropped:
            try:
                os.unlink(self._path(old["id"]))
            except OSError:
                pass
        return dict(entry, time=rfc3339(entry["time"]))
