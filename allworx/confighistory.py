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

A version's file is either the whole tap.conf (as earlier releases wrote
every version) or, so that a change costs what it touches rather than the
size of the office, a delta against the version before it: the line
`DELTA_MAGIC base start end`, then the bytes that replace `[start, end)` of
the base's UTF-8 text. A whole copy is written every `full_every` versions
(and when a delta would not be much smaller), so reading a version applies
at most `full_every - 1` deltas; the files a kept version is built from are
kept until no kept version needs them, the others removed with their entries.
"""

import difflib
import json
import os
import time

from allworx.atomicfile import ensure_directory, write_atomically

KEEP = 50
INDEX = "index.json"
FULL_EVERY = 16
# A NUL cannot start a tap.conf the office writes: a file starting so is a delta.
DELTA_MAGIC = b"\0allworx-config-delta"
CHUNK = 4096


def rfc3339(when):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class ConfigHistory:
    """The kept versions of tap.conf with who changed what, newest last on disk."""

    def __init__(self, directory, keep=KEEP, now=time.time):
        self.directory = directory
        self.keep = keep
        self.now = now
        self._index = None
        # A whole copy at least every keep - 1 versions: a dropped version's
        # file never outlives its entry by more than that.
        self.full_every = max(1, min(FULL_EVERY, keep - 1))
        self._latest = None        # (id, bytes, deltas since the last whole copy)
        self._lines = {}           # id -> (its entry, the entry's line in the index file)

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
        return self._bytes(number)[0].decode("utf-8")

    def _read(self, number):
        """(base, start, end, bytes) of a delta's file, or (None, 0, 0, bytes) of a whole copy."""
        try:
            with open(self._path(number), "rb") as f:
                data = f.read()
        except OSError:
            raise KeyError("config version %s" % number)
        if not data.startswith(DELTA_MAGIC):
            return None, 0, 0, data
        head, _, body = data.partition(b"\n")
        try:
            base, start, end = (int(x) for x in head.split()[1:])
        except ValueError:
            raise KeyError("config version %s (its file is damaged)" % number)
        return base, start, end, body

    def _bytes(self, number):
        """(the bytes of version `number`, how many deltas it was built with)."""
        if self._latest is not None and self._latest[0] == number:
            return self._latest[1], self._latest[2]
        chain = []
        seen = set()
        while True:
            if number in seen:
                raise KeyError("config version %s (its deltas loop)" % number)
            seen.add(number)
            base, start, end, data = self._read(number)
            if base is None:
                break
            chain.append((start, end, data))
            number = base
        for start, end, replacement in reversed(chain):
            data = b"".join((data[:start], replacement, data[end:]))
        return data, len(chain)

    def _base_of(self, number):
        """The version `number`'s file is a delta against, or None (a whole copy or no file)."""
        try:
            with open(self._path(number), "rb") as f:
                head = f.readline()
        except OSError:
            return None
        if not head.startswith(DELTA_MAGIC):
            return None
        try:
            return int(head.split()[1])
        except (ValueError, IndexError):
            return None

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
        """Keep `text` (str, or its UTF-8 bytes) as a new version; returns its entry. Blocks (small, fsynced writes)."""
        index = list(self._load())
        number = (index[-1]["id"] + 1) if index else 1
        ensure_directory(self.directory)
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        previous = self._previous_bytes(index)
        chain = 0
        if previous is not None and previous[2] + 1 < self.full_every:
            start, end, replacement = delta(previous[1], data)
            if len(replacement) < len(data) // 2:
                chain = previous[2] + 1
                write_atomically(self._path(number), b"".join((
                    b"%s %d %d %d\n" % (DELTA_MAGIC, previous[0], start, end), replacement)))
        if not chain:
            write_atomically(self._path(number), data)
        self._latest = (number, data, chain)
        entry = {"id": number, "time": self.now(), "actor": actor, "via": via,
                 "sections": sorted(sections)}
        index.append(entry)
        dropped, index = index[:-self.keep], index[-self.keep:]
        write_atomically(os.path.join(self.directory, INDEX), self._index_text(index))
        self._index = index
        if dropped:
            self._remove_unneeded(index[0]["id"])
        return dict(entry, time=rfc3339(entry["time"]))

    def _index_text(self, index):
        """
        The index file: a JSON list, one entry a line. Each entry's line is
        made once, by json's C encoder (`indent` takes its pure-Python one:
        about 0.3 ms of every change for 50 entries, on the reactor thread).
        """
        made, out = self._lines, []
        for e in index:
            known = made.get(e["id"])
            if known is None or known[0] is not e:
                known = made[e["id"]] = (e, json.dumps(e, sort_keys=True))
            out.append(known[1])
        if len(made) > len(index):
            kept = {e["id"] for e in index}
            for number in [n for n in made if n not in kept]:
                del made[number]
        return "[\n" + ",\n".join(out) + "\n]\n"

    def _previous_bytes(self, index):
        """(id, bytes, deltas since a whole copy) of the newest version, or None."""
        if not index:
            return None
        newest = index[-1]["id"]
        if self._latest is None or self._latest[0] != newest:
            try:
                data, chain = self._bytes(newest)
            except KeyError:
                return None
            self._latest = (newest, data, chain)
        return self._latest

    def _remove_unneeded(self, oldest):
        """Remove the files older than the oldest kept version that it is not built from."""
        needed = set()
        number = oldest
        while number is not None and number not in needed:
            needed.add(number)
            number = self._base_of(number)
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            stem, dot, ext = name.partition(".")
            if ext != "conf" or not stem.isdigit() or len(stem) < 6:
                continue
            if int(stem) < oldest and int(stem) not in needed:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass


def _narrow(same, low, high):
    """The largest n in [low, high] with same(n) true, same(low) being true (binary search)."""
    while low < high:
        mid = (low + high + 1) // 2
        if same(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _common_prefix(a, b, limit):
    """How many leading bytes (at most `limit`) `a` and `b` share, compared a block at a time."""
    i = 0
    while i < limit and a[i:i + CHUNK] == b[i:i + CHUNK]:
        i += CHUNK
    if i >= limit:
        return limit
    return _narrow(lambda n: a[i:n] == b[i:n], i, min(i + CHUNK, limit))


def _common_suffix(a, b, limit):
    """How many trailing bytes (at most `limit`) `a` and `b` share."""
    la, lb = len(a), len(b)
    i = 0
    while i < limit and a[la - i - CHUNK if la - i > CHUNK else 0:la - i] == \
            b[lb - i - CHUNK if lb - i > CHUNK else 0:lb - i]:
        i += CHUNK
    if i >= limit:
        return limit
    return _narrow(lambda n: a[la - n:la - i] == b[lb - n:lb - i], i, min(i + CHUNK, limit))


def delta(old, new):
    """(start, end, replacement): `new` is `old` with `old[start:end]` replaced."""
    start = _common_prefix(old, new, min(len(old), len(new)))
    # The shared tail never overlaps the shared head.
    tail = _common_suffix(old, new, min(len(old), len(new)) - start)
    return start, len(old) - tail, new[start:len(new) - tail]
