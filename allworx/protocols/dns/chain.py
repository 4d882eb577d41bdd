# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The links of the resolver chain (twisted.names `ResolverChain`) behind the
DNS server: the office zone as an authority, the cache, the forwarders, and
the two ends that are not forwarders: REFUSED for the WAN (no open
resolver) and an authoritative NXDOMAIN in stand-alone mode. Each counts
what it answers in `dnsmetrics.COUNTS`.
"""

import attr
from twisted.internet import defer
from twisted.names import dns, error, resolve
from twisted.names.common import ResolverBase
from twisted.python import failure

from allworx.protocols.dns.cache import AnswerCache, NegativeAnswer
from allworx.protocols.dns.fast import ResponseWire, question_key
from allworx.protocols.dns.metrics import COUNTS
from allworx.protocols.dns.upstream import ForwardingResolver

# Types a zone name's answer is kept in wire form for, beyond the ones it
# holds: what clients ask most (AAAA next to A, HTTPS from browsers, MX and
# TXT from mail).
COMMON_TYPES = (dns.A, dns.AAAA, dns.MX, dns.TXT, dns.NS, dns.SOA, dns.CNAME, dns.PTR, 65)


def negative_soa(rr):
    """
    The zone's SOA as the authority of a negative answer (NXDOMAIN, NODATA):
    its TTL is the lesser of its own and its minimum (RFC 2308, section 3),
    how long a resolver may keep the "does not exist".
    """
    ttl = min(rr.ttl, rr.payload.minimum)
    if ttl == rr.ttl:
        return rr
    return dns.RRHeader(rr.name.name, rr.type, rr.cls, ttl, rr.payload, auth=rr.auth)


class ZoneAuthority(ResolverBase):
    """
    One view of the office zone as an IResolver (`lan`: the inside view of
    `keeper`, a `views.ViewKeeper`, else the outside one): answers its
    names, passes on the rest. Each answer for a name that exists is also
    rendered into the fast path's table of that view (`zone` or `outside`),
    so the next such question is served from there, and so is each NXDOMAIN
    it gives for a common type (a bounded number of them: `put_negative`);
    the tables are emptied whenever the zone changes.
    """

    def __init__(self, keeper, fast=None, lan=True):
        ResolverBase.__init__(self)
        self.keeper = keeper
        self.fast = fast
        self.lan = lan

    def _lookup(self, name, cls, type, timeout):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        zone = self.keeper.view(self.lan)
        result = zone.answer(name, type) if zone is not None and cls == dns.IN else None
        if result is None:
            return defer.fail(error.DomainError(name))
        if result.authority:
            # Only negative answers carry the SOA in authority.
            result = attr.evolve(result, authority=tuple(
                negative_soa(rr) if rr.type == dns.SOA else rr for rr in result.authority))
        if result.rcode == dns.ENAME:
            COUNTS["nxdomain"] += 1
            if self.fast is not None and type in COMMON_TYPES and name.isascii():
                # What the server's full path sends: the CNAMEs followed, the SOA.
                self.fast.put_negative(self.lan, question_key(name, type), ResponseWire(
                    name.lower().rstrip(".").encode("ascii"), type, dns.IN, dns.ENAME, True,
                    result.answers, result.authority))
            return defer.fail(NegativeAnswer(name, list(result.answers) + list(result.authority),
                                             authoritative=True))
        COUNTS["zone"] += 1
        if self.fast is not None and (type in COMMON_TYPES or type in zone.types_at(
                name.lower().rstrip("."))):
            # Bounded: names that exist, types they hold or that are common.
            table = self.fast.zone if self.lan else self.fast.outside
            table[question_key(name, type)] = ResponseWire(
                name.lower().rstrip(".").encode("ascii"), type, dns.IN, result.rcode, True,
                result.answers, result.authority, result.additional)
        return defer.succeed((list(result.answers), list(result.authority),
                              list(result.additional)))


class Refusing(ResolverBase):
    """The end of the WAN's chain: no recursion for the Internet (REFUSED)."""

    def _lookup(self, name, cls, type, timeout):
        COUNTS["refused"] += 1
        return defer.fail(error.DNSQueryRefusedError(name))


class StandAlone(ResolverBase):
    """The end of the chain in stand-alone mode: every other name does not exist (AA)."""

    def _lookup(self, name, cls, type, timeout):
        COUNTS["nxdomain"] += 1
        return defer.fail(NegativeAnswer(name, authoritative=True))


class CountedCache(AnswerCache):
    """The cache, counted as `cache` in the metrics."""

    def _lookup(self, name, cls, type, timeout):
        hits = self.hits
        d = AnswerCache._lookup(self, name, cls, type, timeout)
        if self.hits != hits:
            COUNTS["cache"] += 1
        return d


class OfficeChain(resolve.ResolverChain):
    """
    A ResolverChain that hands each resolver the question as it came (bytes
    name, any type) rather than through the lookupXXX methods, which decode
    names as IDNA and would fail on labels a query may legally carry.
    """

    def query(self, query, timeout=None):
        return self._lookup(query.name.name, query.cls, query.type, timeout)

    def _lookup(self, name, cls, type, timeout):
        if not self.resolvers:
            return defer.fail(error.DomainError())
        d = defer.maybeDeferred(self.resolvers[0]._lookup, name, cls, type, timeout)
        for r in self.resolvers[1:]:
            d.addErrback(self._next, r, name, cls, type, timeout)
        return d

    @staticmethod
    def _next(reason, r, name, cls, type, timeout):
        reason.trap(error.DomainError, defer.TimeoutError, NotImplementedError)
        return r._lookup(name, cls, type, timeout)


class CountedForwarder(ForwardingResolver):
    """The forwarders, counted as `forwarded` in the metrics."""

    def _lookup(self, name, cls, type, timeout):
        d = ForwardingResolver._lookup(self, name, cls, type, timeout)

        def count(result):
            if not isinstance(result, failure.Failure) or result.check(NegativeAnswer):
                COUNTS["forwarded"] += 1
            return result
        d.addBoth(count)
        return d
