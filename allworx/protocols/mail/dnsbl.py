# -*- test-case-name: allworx.tests.mail.test_dnsbl -*-
"""
DNS block lists (SPEC 18): is a WAN client's address listed?

The address is asked about in each zone (`d.c.b.a.ZONE`, or the reversed
nibbles of an IPv6 address) through the server's own resolver, all zones at
once, each cut after ZONE_TIMEOUT seconds (that zone is skipped, and logged).
An answer in 127.0.0.0/8 other than 127.255.255.0/24 (the zones' own error
codes, such as "you asked through a public resolver": logged, so the admin
learns that the zone refuses us) means listed; the zone's TXT record at the
same name is its reason (control characters made spaces, at most 200
characters: it becomes a line of the 554 reply and of the log). Answers are kept per
address for CACHE_TTL seconds (at most CACHE_SIZE addresses).
"""

import collections
import ipaddress
import re

import attr
from twisted.internet import defer
from twisted.logger import Logger

from allworx.protocols.mail import dnslookup

log = Logger()

ZONE_TIMEOUT = 2.0
CACHE_TTL = 300.0
CACHE_SIZE = 4096
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ZONE_ERRORS = ipaddress.ip_network("127.255.255.0/24")


@attr.s(frozen=True, slots=True)
class Listing:
    """The client is listed in `zone` with this answer (127.0.0.x) and reason (TXT or "")."""

    zone = attr.ib()
    answer = attr.ib()
    reason = attr.ib(default="")


def query_name(ip, zone):
    ip = ipaddress.ip_address(ip)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        labels = reversed(str(ip).split("."))
    else:
        labels = reversed(ip.exploded.replace(":", ""))
    return "%s.%s" % (".".join(labels), zone.rstrip("."))


def is_listing(answer):
    try:
        address = ipaddress.ip_address(answer)
    except ValueError:
        return False
    return address in _LISTED and address not in _ZONE_ERRORS


def _is_zone_error(answer):
    try:
        return ipaddress.ip_address(answer) in _ZONE_ERRORS
    except ValueError:
        return False


class Dnsbl:
    """The lookups and their cache; `clock` cuts slow zones and ages the cache."""

    def __init__(self, clock):
        self.clock = clock
        self.cache = collections.OrderedDict()     # (ip, zones) -> (expires, Listing or None)

    def _cut(self, d):
        return d.addTimeout(ZONE_TIMEOUT, self.clock)

    def check(self, resolver, zones, ip):
        """Fires with the first Listing (in the order of `zones`) or None."""
        key = (ip, tuple(zones))
        cached = self.cache.get(key)
        now = self.clock.seconds()
        if cached is not None and cached[0] > now:
            return defer.succeed(cached[1])
        asked = [self._zone(resolver, zone, ip) for zone in zones]
        d = defer.gatherResults(asked)

        def done(listings):
            found = next((x for x in listings if x is not None), None)
            self.cache[key] = (self.clock.seconds() + CACHE_TTL, found)
            self.cache.move_to_end(key)
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
            return found
        return d.addCallback(done)

    @defer.inlineCallbacks
    def _zone(self, resolver, zone, ip):
        name = query_name(ip, zone)
        try:
            answers = yield self._cut(dnslookup.addresses_v4(resolver, name))
        except Exception as e:
            log.warn("dnsbl: {zone} did not answer about {ip} ({error}): skipped",
                     zone=zone, ip=ip, error=str(e) or type(e).__name__)
            return None
        refused = [a for a in answers if _is_zone_error(a)]
        if refused:
            log.warn("dnsbl: {zone} answered {answer} about {ip}: the zone's error code (it "
                     "refuses queries from our resolver?); not counted as a listing",
                     zone=zone, ip=ip, answer=refused[0])
        listed = [a for a in answers if is_listing(a)]
        if not listed:
            return None
        try:
            reasons = yield self._cut(dnslookup.txt(resolver, name))
        except Exception:
            reasons = []
        reason = re.sub(r"[\x00-\x1f\x7f]+", " ", " ".join(reasons[:1])).strip()[:200]
        return Listing(zone, listed[0], reason)
