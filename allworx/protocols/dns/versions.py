# -*- test-case-name: allworx.tests.dns.test_zoneamend -*-
"""
Dicts that a line of versions shares, so that making the next version costs
what it changes, not the size of the dicts (the office zone's indexes:
`allworx.protocols.dns.zone.OfficeZone.amended`).

The newest version of a line (its head) holds the dicts as they are. Making
a successor (`successor`) hands them on: each `put` of the successor writes
the dicts in place and keeps, on the version before it, the value the key
had (or that it had none). So every older version is its successor plus what
it keeps: one key is read through the newer versions (`get`), and the whole
of an older version (`maps`) is made once as a copy of its own, after which
it is the head of a line of its own. Nothing an older version answers ever
changes; only the cost of asking it does. One reactor, no threads: a
version is read or written by one caller at a time.
"""

GONE = object()   # `put(i, key, GONE)` takes the key out; kept, the key was not there


class _Line:
    __slots__ = ("maps", "head")

    def __init__(self, maps, head):
        self.maps = maps
        self.head = head


class MapVersion:
    """One version of a tuple of dicts (see the module's note)."""

    __slots__ = ("_line", "_newer", "_kept", "_writes", "__weakref__")

    def __init__(self, maps):
        self._line = _Line(tuple(maps), self)
        self._newer = None    # the version this one is told from (None at a head)
        self._kept = None     # per dict: key -> its value here (or GONE), where the newer differs
        self._writes = None   # while a successor is being made: the kept values of the one before

    def is_head(self):
        """Whether this version holds the dicts themselves (reading it costs nothing more)."""
        return self._line.head is self

    def maps(self):
        """The dicts as this version has them (made its own first when a newer one holds them)."""
        if self._line.head is not self:
            self._detach()
        return self._line.maps

    def get(self, i, key, default=None):
        """The value of `key` in dict `i` of this version, without copying anything."""
        v = self
        while v._line.head is not v:
            value = v._kept[i].get(key, v)
            if value is not v:
                return default if value is GONE else value
            v = v._newer
        return v._line.maps[i].get(key, default)

    def successor(self):
        """
        The next version, now the head: its `put`s change the dicts, and this
        version keeps what they were. `seal` it when it is made.
        """
        line = self._line
        if line.head is not self:
            self._detach()
            line = self._line
        new = MapVersion.__new__(MapVersion)
        new._line, new._newer, new._kept = line, None, None
        self._kept = tuple({} for _ in line.maps)
        self._newer = new
        new._writes = self._kept
        line.head = new
        return new

    def put(self, i, key, value):
        """Set `key` of dict `i` to `value` (GONE: take it out), while being made."""
        m, kept = self._line.maps[i], self._writes[i]
        if key not in kept:
            kept[key] = m.get(key, GONE)
        if value is GONE:
            m.pop(key, None)
        else:
            m[key] = value

    def seal(self):
        """Made: no more `put`s (and no hold on the version before)."""
        self._writes = None

    def _detach(self):
        chain, v = [], self
        while v._line.head is not v:
            chain.append(v._kept)
            v = v._newer
        maps = tuple(dict(m) for m in v._line.maps)
        for kept in reversed(chain):
            for m, values in zip(maps, kept):
                for key, value in values.items():
                    if value is GONE:
                        m.pop(key, None)
                    else:
                        m[key] = value
        self._line = _Line(maps, self)
        self._newer = self._kept = None

