# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The resolver's cache: upstream answers kept for their TTL, and negative
answers (no such name, no such record) for the SOA's minimum (RFC 2308), on
an injected clock. Each entry is also rendered once to wire format and put in
the fast path's table, so a cache hit from the LAN costs a dict lookup.

`AnswerCache` is an IResolver (twisted.names' `ResolverBase`) that sits in
the resolver chain between the zone and the forwarders: a hit answers, a
negative hit ends the chain with `NegativeAnswer`, a miss passes on.
"""

from twisted.internet import defer
from twisted.names import dns, error
from twisted.names.common import ResolverBase

from allworx.protocols.dns.fast import ResponseWire, question_key

MAX_TTL = 86400          # nothing is kept longer than a day
MAX_NEGATIVE_TTL = 3600  # nor a "does not exist" longer than an hour
MAX_ENTRIES = 20000


class NegativeAnswer(error.AuthoritativeDomainError):
    """
    The name does not exist (NXDOMAIN), with the authority section that says
    so (the zone's SOA) and whether we are the authority (the AA bit).
    Ends a twisted.names resolver chain, unlike a plain DomainError.
    """

    def __init__(self, name, authority=(), authoritative=False):
        error.AuthoritativeDomainError.__init__(self, name)
        self.name = name
        self.authority = list(authority)
        self.authoritative = authoritative


def negative_ttl(authority):
    """How long a negative answer may be kept: min(SOA TTL, SOA minimum), or 0."""
    for rr in authority:
        if rr.type == dns.SOA:
            return min(rr.ttl, rr.payload.minimum, MAX_NEGATIVE_TTL)
    return 0


def answer_ttl(rcode, answers, authority):
    """Seconds an upstream answer may be cached (0: not at all)."""
    if rcode == dns.ENAME or (rcode == dns.OK and not answers):
        return negative_ttl(authority)
    if rcode != dns.OK:
        return 0
    return min(min(rr.ttl for rr in answers), MAX_TTL)


class _Entry:
    __slots__ = ("rcode", "answers", "authority", "additional", "stored", "expires")

    def __init__(self, rcode, answers, authority, additional, stored, expires):
        self.rcode = rcode
        self.answers = answers
        self.authority = authority
        self.additional = additional
        self.stored = stored
        self.expires = expires


def _aged(records, age):
    return [dns.RRHeader(rr.name.name, rr.type, rr.cls, max(0, rr.ttl - age), rr.payload)
            for rr in records]


class AnswerCache(ResolverBase):
    """
    Upstream answers by question, for their TTL on `clock`; bounded to
    `max_entries` (the oldest go first). `fast`, if given, is a FastAnswers
    whose `cache` table mirrors this one in wire form.
    """

    def __init__(self, clock, fast=None, max_entries=MAX_ENTRIES):
        ResolverBase.__init__(self)
        self.clock = clock
        self.fast = fast
        self.max_entries = max_entries
        self.entries = {}
        self.hits = 0

    def __len__(self):
        return len(self.entries)

    def store(self, query, rcode, answers, authority, additional):
        """Keep an upstream answer to `query` (a dns.Query) if its TTLs allow."""
        ttl = answer_ttl(rcode, answers, authority)
        if ttl <= 0:
            return
        name = query.name.name.lower()
        key = (name, query.type, query.cls)
        now = self.clock.seconds()
        if len(self.entries) >= self.max_entries and key not in self.entries:
            self._evict(now)
        self.entries[key] = _Entry(rcode, list(answers), list(authority), list(additional),
                                   now, now + ttl)
        if self.fast is not None:
            wire = ResponseWire(name, query.type, query.cls, rcode, False, answers, authority,
                                additional, stored=now, expires=now + ttl)
            self.fast.cache[question_key(name, query.type, query.cls)] = wire

    def _evict(self, now):
        expired = [k for k, e in self.entries.items() if e.expires <= now]
        for k in expired or list(self.entries)[:max(1, self.max_entries // 10)]:
            self._drop(k)

    def _drop(self, key):
        self.entries.pop(key, None)
        if self.fast is not None:
            self.fast.cache.pop(question_key(*key), None)

    def clear(self):
        """Forget everything (the forwarders changed)."""
        self.entries.clear()
        if self.fast is not None:
            self.fast.cache.clear()

    def _lookup(self, name, cls, type, timeout):
        if isinstance(name, str):
            name = name.encode("ascii", "replace")
        key = (name.lower(), type, cls)
        entry = self.entries.get(key)
        if entry is None:
            return defer.fail(error.DomainError(name))
        now = self.clock.seconds()
        if now >= entry.expires:
            self._drop(key)
            return defer.fail(error.DomainError(name))
        self.hits += 1
        age = int(now - entry.stored)
        if entry.rcode == dns.ENAME:
            return defer.fail(NegativeAnswer(name, _aged(entry.authority, age)))
        return defer.succeed((_aged(entry.answers, age), _aged(entry.authority, age),
                              _aged(entry.additional, age)))
