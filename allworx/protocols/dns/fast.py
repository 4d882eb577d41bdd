# -*- test-case-name: allworx.tests.dns.test_fast -*-
"""
DNS responses as precomputed wire bytes, and the fast path that serves them.

A `ResponseWire` is one answer rendered once: the flags and counts for each
combination of the query's RD bit, EDNS and recursion-available, the records
after the question, a variant without the additional section and a truncated
(TC) variant for when a UDP answer does not fit. Serving it is slicing: the
query's ID and question bytes (so the client's letter case comes back) around
the precomputed parts. Records from the cache carry their TTLs' offsets so the
remaining TTL is patched in at most once a second.

`FastAnswers` maps (lower-cased question name, type, class) in wire form to
such responses: the zone's names in its inside view for the LAN side and in
its outside view for the WAN (two tables: the side picks one), with the
zone's NXDOMAIN answers for names it does not hold (at most NEGATIVE_MAX a
view, the oldest go first; a change of the zone retires them all at once,
and the retired ones are taken out of the tables a few at a time as new
ones come, so a lease costs the same however many there are), and the cache (answers and negative answers)
for the LAN. Each side also remembers, for the exact bytes of a query after
its ID (up to MEMO_QUERY bytes), the reply after the ID (at most MEMO_MAX
a side): the same question asked again, the usual case, costs one dict
lookup and one splice. Any change to a table empties its side's memo
(`_Table`); a cache answer's memo holds only for the second its TTLs were
aged to. Its
`answer` looks at the raw datagram only; anything unusual (other opcodes,
several questions, compression in the question, EDNS options it cannot
judge) returns None and goes to the full path.
"""

import collections
import io
import struct

from twisted.names import dns

MAX_UDP = 1232        # the EDNS payload size we advertise and the most we send
PLAIN_UDP = 512       # without EDNS (RFC 1035)
RD, EDNS, RA = 1, 2, 4  # bits of a variant's index
NEGATIVE_MAX = 5000   # the zone's NXDOMAIN answers kept per view
RETIRE_STEP = 2       # retired NXDOMAIN answers taken out of a table per one kept (and per drop)
MEMO_MAX = 4096       # replies remembered by the query's exact bytes, per side
MEMO_QUERY = 300      # ... for queries of at most this many bytes (a padded one is not kept)

_COUNTS = struct.Struct("!HHHH")
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"   # QD 1, AN 0, NS 0
_OPT_TAIL = struct.Struct("!HHBBHH")   # type, class (size), ext rcode, version, flags, rdlen


def opt_record(rcode=0):
    """Our OPT pseudo-record: root name, UDP size MAX_UDP, extended rcode bits."""
    return b"\x00" + _OPT_TAIL.pack(dns.OPT, MAX_UDP, (rcode >> 4) & 0xFF, 0, 0, 0)


def error_reply(data, rcode):
    """
    A header-only reply with `rcode` to a query we cannot parse, or None when
    the bytes are not a query at all (too short, or a response): silence.
    """
    if len(data) < 12 or data[2] & 0x80:
        return None
    return data[:2] + bytes((0x80 | (data[2] & 0x79), rcode & 0x0F)) + b"\x00" * 8


def question_key(name, qtype, qclass=dns.IN):
    """The lookup key of a question: lower-case wire name, type, class."""
    if isinstance(name, str):
        name = name.encode("ascii")
    out = io.BytesIO()
    dns.Name(name.lower().rstrip(b".")).encode(out)
    return out.getvalue() + struct.pack("!HH", qtype, qclass)


class ResponseWire:
    """
    One response rendered to bytes (see the module docstring). `expires` is
    None for zone answers; cache answers expire and age.
    """

    __slots__ = ("question", "variants", "trimmed", "truncated", "expires", "second",
                 "stored", "negative", "_body", "_ttls", "_noadd", "_opt", "_pre",
                 "_pre_trim", "_pre_tc")

    def __init__(self, qname, qtype, qclass, rcode, aa, answers=(), authority=(),
                 additional=(), stored=None, expires=None):
        # Body only: twisted's name compression adds the 12 header bytes itself.
        out = io.BytesIO()
        comp = {}
        dns.Query(qname, qtype, qclass).encode(out, comp)
        qend = out.tell()
        ttls = []
        counts = []
        noadd = None
        for i, section in enumerate((answers, authority, additional)):
            if i == 2:
                noadd = out.tell() - qend
            for rr in section:
                _encode_rr(out, comp, rr, ttls, qend)
            counts.append(len(section))
        wire = out.getvalue()
        self.question = wire[:qend]
        self._body = bytearray(wire[qend:])
        self._ttls = ttls
        self._noadd = noadd
        self._opt = opt_record(rcode)
        self.stored = stored
        self.expires = expires
        self.negative = rcode == dns.ENAME
        self.second = None if stored is None else int(stored)
        flags = 0x80 | (0x04 if aa else 0)
        an, ns, ar = counts
        self._headers(flags, rcode & 0x0F, an, ns, ar)

    def _headers(self, flags, rcode, an, ns, ar):
        def head(idx, counts, tc=0):
            b2 = flags | tc | (idx & RD)
            b3 = (0x80 if idx & RA else 0) | rcode
            qd, an_, ns_, ar_ = counts
            return bytes((b2, b3)) + _COUNTS.pack(qd, an_, ns_, ar_ + (1 if idx & EDNS else 0))
        self._pre = [head(i, (1, an, ns, ar)) for i in range(8)]
        self._pre_trim = [head(i, (1, an, ns, 0)) for i in range(8)]
        self._pre_tc = [head(i, (1, 0, 0, 0), 0x02) for i in range(8)]
        self._render()

    def _render(self):
        # Each distinct tail once: the variants share them.
        body = bytes(self._body)
        trim = body[:self._noadd]
        opt = self._opt
        body_opt, trim_opt = body + opt, trim + opt
        self.variants = [(self._pre[i], body_opt if i & EDNS else body) for i in range(8)]
        self.trimmed = [(self._pre_trim[i], trim_opt if i & EDNS else trim) for i in range(8)]
        self.truncated = [(self._pre_tc[i], opt if i & EDNS else b"") for i in range(8)]

    def age_to(self, second):
        """Patch the TTLs to what remains at `second` (cache answers)."""
        age = max(0, second - int(self.stored))
        body = self._body
        for offset, ttl in self._ttls:
            struct.pack_into("!I", body, offset, max(0, ttl - age))
        self.second = second
        self._render()

    def pick(self, idx, length, limit):
        """(flags+counts, records) for variant `idx` whose question is `length` bytes."""
        pre, suf = self.variants[idx]
        if 12 + length + len(suf) <= limit:
            return pre, suf
        pre, suf = self.trimmed[idx]
        if 12 + length + len(suf) <= limit:
            return pre, suf
        return self.truncated[idx]

    def render(self, query_id, idx, limit=65535):
        """The whole response with its own question (for the full path and tests)."""
        pre, suf = self.pick(idx, len(self.question), limit)
        return struct.pack("!H", query_id) + pre + self.question + suf



def _encode_rr(out, comp, rr, ttls, qend):
    rr.name.encode(out, comp)
    start = out.tell()
    out.write(struct.pack("!HHIH", rr.type, rr.cls, rr.ttl, 0))
    ttls.append((start + 4 - qend, rr.ttl))
    payload_start = out.tell()
    rr.payload.encode(out, comp)
    end = out.tell()
    out.seek(payload_start - 2)
    out.write(struct.pack("!H", end - payload_start))
    out.seek(end)


class _Table(dict):
    """A question -> ResponseWire table; every change empties the memos in `memos`."""

    __slots__ = ("memos",)

    def __init__(self, *memos):
        dict.__init__(self)
        self.memos = memos

    def _changed(self):
        for memo in self.memos:
            memo.clear()

    def __setitem__(self, key, value):
        self._changed()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        self._changed()
        dict.__delitem__(self, key)

    def pop(self, *args):
        self._changed()
        return dict.pop(self, *args)

    def popitem(self):
        self._changed()
        return dict.popitem(self)

    def setdefault(self, key, default=None):
        self._changed()
        return dict.setdefault(self, key, default)

    def update(self, *args, **kw):
        self._changed()
        dict.update(self, *args, **kw)

    def clear(self):
        self._changed()
        dict.clear(self)

    def __ior__(self, other):
        self._changed()
        return dict.__ior__(self, other)


class FastAnswers:
    """
    Precomputed answers keyed by question: `zone` (the inside view's, for
    LAN clients), `outside` (the outside view's, for the WAN) and `cache`
    (LAN clients only, expiring on `clock`). `answer(data, lan)` returns the
    response bytes or None (not here, or a query it leaves to the full path).
    Hits are counted: `zone_hits`, `nx_hits` (the zone's NXDOMAIN) and
    `cache_hits` (the cache's answers, negative ones too).
    """

    def __init__(self, clock):
        self.clock = clock
        # query bytes after the ID -> (ResponseWire, reply after the ID, the
        # second its TTLs are aged to: None for the zone's)
        self._memo_lan = {}
        self._memo_wan = {}
        self.zone = _Table(self._memo_lan)
        self.outside = _Table(self._memo_wan)
        self.cache = _Table(self._memo_lan)
        self._ra_lan = RA
        self.zone_hits = 0
        self.nx_hits = 0
        self.cache_hits = 0
        self._negatives = {True: collections.OrderedDict(),
                           False: collections.OrderedDict()}
        # Per side: the NXDOMAIN answers of older zones (never served), as
        # they were retired, still in the tables until taken out.
        self._retired = {True: collections.deque(), False: collections.deque()}

    @property
    def ra_lan(self):
        """Recursion available to the LAN (RA; 0 in stand-alone mode)."""
        return self._ra_lan

    @ra_lan.setter
    def ra_lan(self, value):
        self._ra_lan = value
        self._memo_lan.clear()

    def clear_zone(self):
        """Forget every zone answer, both views' (the zone or who sees it changed)."""
        self.zone.clear()
        self.outside.clear()
        for order in self._negatives.values():
            order.clear()
        for retired in self._retired.values():
            retired.clear()

    def put_negative(self, lan, key, wire):
        """
        Keep the zone's NXDOMAIN answer `wire` to the question `key` for the
        LAN's view (`lan`) or the WAN's: at most NEGATIVE_MAX a view (names
        that do not exist are endless), the oldest go first.
        """
        table = self.zone if lan else self.outside
        order = self._negatives[lan]
        order.pop(key, None)
        order[key] = wire
        table[key] = wire
        while len(order) > NEGATIVE_MAX:
            old_key, old = order.popitem(last=False)
            if table.get(old_key) is old:
                del table[old_key]
        self._take_out_retired(lan, RETIRE_STEP)

    def drop_negatives(self):
        """
        Forget the zone's NXDOMAIN answers (they carry the SOA, whose serial
        moved on; and a name may now exist): retired at once (never served
        again, `answer` tells them by `_negatives`), taken out of the tables
        a few at a time (`put_negative`, and here), so that this costs the
        same however many there are. The tables hold at most NEGATIVE_MAX
        retired ones a side besides the NEGATIVE_MAX kept.
        """
        self._memo_lan.clear()   # a memorised reply may be a retired answer
        self._memo_wan.clear()
        for lan, order in self._negatives.items():
            if order:
                self._retired[lan].append(order)
                self._negatives[lan] = collections.OrderedDict()
            self._take_out_retired(lan, RETIRE_STEP)

    def _take_out_retired(self, lan, count):
        retired = self._retired[lan]
        table = self.zone if lan else self.outside
        while count > 0 and retired:
            order = retired[0]
            if not order:
                retired.popleft()
                continue
            key, wire = order.popitem(last=False)
            if dict.get(table, key) is wire:
                dict.__delitem__(table, key)   # never served: no memo holds it
            count -= 1

    def negatives(self, lan):
        """How many NXDOMAIN answers of the zone are kept for that side."""
        table = self.zone if lan else self.outside
        return sum(1 for key, wire in self._negatives[lan].items() if table.get(key) is wire)

    def answer(self, data, lan, stream=False):
        """
        The reply to the raw query `data` from a LAN (`lan`) or WAN peer, or
        None to leave it to the full path. Over TCP (`stream`) nothing is
        truncated. The question's end is the first zero byte after the
        header: a key that matches was a well-formed, uncompressed name.
        """
        # Every query goes through here: the common case first, few calls.
        if not stream:
            memo = self._memo_lan if lan else self._memo_wan
            seen = memo.get(data[2:])
            if seen is not None:
                entry, tail, second = seen
                if second is None:
                    if entry.negative:
                        self.nx_hits += 1
                    else:
                        self.zone_hits += 1
                    return data[:2] + tail
                now = self.clock.seconds()
                if now < entry.expires and int(now) == second:
                    self.cache_hits += 1
                    return data[:2] + tail
        n = len(data)
        if n < 17 or data[4:10] != _ONE_QUESTION or data[2] & 0xF8:
            return None
        qend = data.find(0, 12) + 5
        if qend < 17:
            return None
        key = data[12:qend].lower()
        entry = (self.zone if lan else self.outside).get(key)
        if entry is not None and entry.negative and self._negatives[lan].get(key) is not entry:
            entry = None   # an NXDOMAIN answer of an older zone, retired (drop_negatives)
        if entry is None:
            if not lan:
                return None
            entry = self.cache.get(key)
            if entry is None:
                return None
            now = self.clock.seconds()
            if now >= entry.expires:
                del self.cache[key]
                return None
            second = int(now)
            if second != entry.second:
                entry.age_to(second)
            self.cache_hits += 1
        elif entry.negative:
            self.nx_hits += 1
        else:
            self.zone_hits += 1
        ar = data[10:12]
        if ar == b"\x00\x00":
            if qend != n:
                return None
            idx, limit = data[2] & RD, PLAIN_UDP
        elif ar == b"\x00\x01":
            # Exactly one OPT record after the question, version 0.
            if data[qend:qend + 3] != b"\x00\x00\x29" or n < qend + 11 or data[qend + 6]:
                return None
            if qend + 11 + (data[qend + 9] << 8 | data[qend + 10]) != n:
                return None
            size = data[qend + 3] << 8 | data[qend + 4]
            idx = (data[2] & RD) | EDNS
            limit = MAX_UDP if size >= MAX_UDP else (size if size > PLAIN_UDP else PLAIN_UDP)
        else:
            return None
        if lan:
            idx |= self._ra_lan
        if stream:
            limit = 65535
        pre, suf = entry.variants[idx]
        if qend + len(suf) > limit:
            pre, suf = entry.pick(idx, qend - 12, limit)
        tail = pre + data[12:qend] + suf
        if not stream and n <= MEMO_QUERY:
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[data[2:]] = (entry, tail, entry.second)
        return data[:2] + tail
