# -*- test-case-name: allworx.tests.test_dns -*-
"""
The office's DNS server (SPEC 5, guide 6 and 10): the "dns" child.

Built on twisted.names: `OfficeDnsFactory` is a `DNSServerFactory` whose
resolver chain is the office zone (authority), the cache and the forwarders
(client) for LAN clients; for the WAN the zone and then REFUSED (no open
resolver); in stand-alone mode (`use_forwarders = no`) the zone and then an
authoritative NXDOMAIN. In front of the chain sits the fast path
(`dnsfast.FastAnswers`): zone and cache answers precomputed in wire form,
served from the raw datagram before any parsing.

Queries come over UDP and TCP on `[dns] port`. EDNS0 is honoured (the
client's size, at most 1232 bytes); an answer that does not fit a UDP reply
goes out with TC set. Anything malformed gets FORMERR, or silence when it is
not even a query header.
"""

import collections
import socket
import struct

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.names import dns, error, resolve, server
from twisted.names.common import ResolverBase
from twisted.protocols import policies

from allworx.listening import ListeningService
from allworx.office import ConfigChanged, LeaseEvent, WanAddressChanged
from allworx.protocols.dnscache import AnswerCache, NegativeAnswer
from allworx.protocols.dnsfast import (
    EDNS, MAX_UDP, PLAIN_UDP, RA, RD, FastAnswers, ResponseWire, error_reply, question_key)
from allworx.protocols.dnsupstream import ForwardingResolver
from allworx.protocols.dnszone import DhcpNames, ZoneKeeper

log = Logger()

BADVERS = 16
# Types a zone name is precomputed for, beyond the ones it holds: what
# clients ask most (AAAA next to A, HTTPS from browsers, MX and TXT from mail).
COMMON_TYPES = (dns.A, dns.AAAA, dns.MX, dns.TXT, dns.NS, dns.SOA, dns.CNAME, dns.PTR, 65)
REFUSED_TYPES = (dns.AXFR, dns.IXFR, dns.MAILA, dns.MAILB)
KINDS = ("zone", "cache", "forwarded", "refused", "nxdomain", "formerr", "servfail")
SIDE_MEMO = 4096
TCP_IDLE = 30
TCP_MAX_CONNECTIONS = 64
REBUILD_INTERVAL = 0.5   # seconds between zone rebuilds for lease events at most

# Plain in-process counters; the collector reads them when /metrics is scraped.
COUNTS = collections.Counter()


class DnsCollector:
    """Exports `allworx_dns_queries_total{kind}` and the cache size."""

    def __init__(self):
        self.fast = None
        self.cache = None

    def collect(self):
        counts = collections.Counter(COUNTS)
        if self.fast is not None:
            counts["zone"] += self.fast.zone_hits
            counts["cache"] += self.fast.cache_hits
        family = CounterMetricFamily("allworx_dns_queries", "DNS queries, by how they were "
                                     "answered", labels=["kind"])
        for kind in KINDS:
            family.add_metric([kind], counts[kind])
        yield family
        if self.cache is not None:
            yield GaugeMetricFamily("allworx_dns_cache_entries", "Answers in the DNS cache",
                                    value=len(self.cache))


COLLECTOR = DnsCollector()
REGISTRY.register(COLLECTOR)


# ---------------------------------------------------------------- resolvers

class ZoneAuthority(ResolverBase):
    """
    The office zone as an IResolver: answers its names, passes on the rest.
    Each answer for a name that exists is also rendered into the fast path's
    zone table, so the next such question is served from there; the table is
    emptied whenever the zone changes.
    """

    def __init__(self, keeper, fast=None):
        ResolverBase.__init__(self)
        self.keeper = keeper
        self.fast = fast

    def _lookup(self, name, cls, type, timeout):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        zone = self.keeper.zone
        result = zone.answer(name, type) if zone is not None and cls == dns.IN else None
        if result is None:
            return defer.fail(error.DomainError(name))
        if result.rcode == dns.ENAME:
            COUNTS["nxdomain"] += 1
            return defer.fail(NegativeAnswer(name, list(result.answers) + list(result.authority),
                                             authoritative=True))
        COUNTS["zone"] += 1
        if self.fast is not None and (type in COMMON_TYPES or type in zone.types_at(
                name.lower().rstrip("."))):
            # Bounded: names that exist, types they hold or that are common.
            self.fast.zone[question_key(name, type)] = ResponseWire(
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


# ---------------------------------------------------------------- the server

class OfficeDnsFactory(server.DNSServerFactory):
    """
    The controller of the UDP and TCP protocols: LAN or WAN side of a peer,
    the fast path, then the resolver chain for that side, and the reply in
    wire form with EDNS and truncation.
    """

    protocol = None  # set below: DnsStreamProtocol

    def __init__(self, office, keeper, cache, fast, forwarders, reactor):
        zone = ZoneAuthority(keeper, fast)
        self.office = office
        self.fast = fast
        self.cache = cache
        self.reactor = reactor
        self.forwarder = forwarders
        if forwarders is not None:
            lan = [zone, cache, forwarders]
            server.DNSServerFactory.__init__(self, authorities=[zone], caches=[cache],
                                             clients=[forwarders])
        else:
            lan = [zone, StandAlone()]
            server.DNSServerFactory.__init__(self, authorities=[zone])
        self.resolver = OfficeChain(lan)
        self.wan_resolver = OfficeChain([zone, Refusing()])
        fast.ra_lan = RA if forwarders is not None else 0
        self._sides = {}

    # -- who is asking

    def is_lan(self, host):
        """Is `host` on the LAN side (memoised: asked for every query)?"""
        side = self._sides.get(host)
        if side is None:
            if len(self._sides) >= SIDE_MEMO:
                self._sides.clear()
            side = self._sides[host] = self.office.is_lan_peer(host)
        return side

    # -- the full path

    def handle(self, data, lan, send, stream=False):
        """Answer one query `data` (bytes) through the chain; `send(bytes)` the reply."""
        m = dns.Message()
        try:
            m.fromStr(data)
        except Exception:
            return self._error(data, dns.EFORMAT, send)
        if m.answer:
            return None
        # twisted.names stops quietly at the end of the data: the counts in
        # the header must match what was really there.
        if struct.unpack("!HHHH", data[4:12]) != (len(m.queries), len(m.answers),
                                                  len(m.authority), len(m.additional)):
            return self._error(data, dns.EFORMAT, send)
        if m.opCode != dns.OP_QUERY:
            return self._error(data, dns.ENOTIMP, send)
        opts = [rr for rr in m.additional if rr.type == dns.OPT]
        if len(m.queries) != 1 or len(opts) > 1 or m.answers or m.authority:
            return self._error(data, dns.EFORMAT, send)
        q = m.queries[0]
        idx = (RD if m.recDes else 0) | (EDNS if opts else 0) | (self.fast.ra_lan if lan else 0)
        if stream:
            limit = 65535
        elif opts:
            limit = min(max(opts[0].cls, PLAIN_UDP), MAX_UDP)
        else:
            limit = PLAIN_UDP

        def reply(rcode, aa=False, ans=(), auth=(), add=()):
            wire = ResponseWire(q.name.name, q.type, q.cls, rcode, aa, ans, auth, add)
            send(wire.render(m.id, idx, limit))

        if opts and (opts[0].ttl >> 16) & 0xFF:
            return reply(BADVERS)
        if q.type in (0, dns.OPT) or not 1 <= q.cls <= 4 and q.cls != dns.ANY:
            COUNTS["formerr"] += 1
            return reply(dns.EFORMAT)
        if q.cls != dns.IN or q.type in REFUSED_TYPES:
            COUNTS["refused"] += 1
            return reply(dns.EREFUSED)
        chain = self.resolver if lan else self.wan_resolver
        d = chain.query(q)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(reply,),
                       errbackArgs=(reply, q))
        d.addErrback(lambda f: log.failure("dns: reply to {name!r} failed", f,
                                           name=q.name.name))
        return d

    @staticmethod
    def _answered(result, reply):
        ans, auth, add = result
        aa = any(rr.auth for rr in ans) or (not ans and any(rr.auth for rr in auth))
        reply(dns.OK, aa, ans, auth, add)

    @staticmethod
    def _failed(reason, reply, q):
        if reason.check(NegativeAnswer):
            e = reason.value
            authority = [rr for rr in e.authority if rr.type == dns.SOA]
            answers = [rr for rr in e.authority if rr.type != dns.SOA]
            reply(dns.ENAME, e.authoritative, answers, authority)
        elif reason.check(error.DNSQueryRefusedError):
            reply(dns.EREFUSED)
        else:
            COUNTS["servfail"] += 1
            log.debug("dns: no answer for {name!r}: {why}", name=q.name.name,
                      why=reason.getErrorMessage())
            reply(dns.ESERVER)

    @staticmethod
    def _error(data, rcode, send):
        COUNTS["formerr" if rcode == dns.EFORMAT else "refused"] += 1
        wire = error_reply(data, rcode)
        if wire is not None:
            send(wire)

    def buildProtocol(self, addr):
        if len(self.connections) >= TCP_MAX_CONNECTIONS:
            return None
        p = DnsStreamProtocol(self)
        p.factory = self
        return p


class DnsDatagramProtocol(protocol.DatagramProtocol):
    """UDP: the fast path on the raw datagram, else the factory's full path."""

    noisy = False

    def __init__(self, factory):
        self.factory = factory
        self.fast = factory.fast
        self._sendto = None

    def startProtocol(self):
        # Straight to the socket: the transport's write checks the address
        # form on every call, which costs more than the whole fast answer.
        sock = getattr(self.transport, "socket", None)
        self._sendto = sock.sendto if sock is not None else self.transport.write

    def stopProtocol(self):
        self._sendto = None

    def datagramReceived(self, data, addr):
        factory = self.factory
        lan = factory._sides.get(addr[0])
        if lan is None:
            lan = factory.is_lan(addr[0])
        reply = self.fast.answer(data, lan)
        if reply is not None:
            try:
                self._sendto(reply, addr)
            except OSError:
                pass  # the client's socket is gone, or the send buffer is full: as lost
            return
        factory.handle(data, lan, lambda wire: self._send(wire, addr))

    def _send(self, wire, addr):
        if self._sendto is None:
            return
        try:
            self._sendto(wire, addr)
        except OSError as e:
            log.debug("dns: reply to {peer} not sent: {why}", peer=addr[0], why=e)


class DnsStreamProtocol(protocol.Protocol, policies.TimeoutMixin):
    """TCP: two-byte length framing, an idle timeout, replies in order of answers."""

    MAX_PENDING = 32

    def __init__(self, factory):
        self.factory = factory
        self.callLater = factory.reactor.callLater   # TimeoutMixin's timer, on our clock
        self._buffer = b""
        self.lan = False
        self.pending = 0

    def connectionMade(self):
        self.factory.connectionMade(self)
        self.lan = self.factory.is_lan(self.transport.getPeer().host)
        self.setTimeout(TCP_IDLE)

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self in self.factory.connections:
            self.factory.connectionLost(self)

    def dataReceived(self, data):
        self.resetTimeout()
        self._buffer += data
        while len(self._buffer) >= 2:
            (size,) = struct.unpack("!H", self._buffer[:2])
            if len(self._buffer) < 2 + size:
                return
            message, self._buffer = self._buffer[2:2 + size], self._buffer[2 + size:]
            if self.pending >= self.MAX_PENDING:
                self.transport.loseConnection()
                return
            reply = self.factory.fast.answer(message, self.lan, stream=True)
            if reply is not None:
                self._send(reply)
            else:
                self.pending += 1
                d = self.factory.handle(message, self.lan, self._send, stream=True)
                if isinstance(d, defer.Deferred):
                    d.addBoth(self._done)
                else:
                    self.pending -= 1

    def _done(self, result):
        self.pending -= 1

    def _send(self, wire):
        if self.transport is not None:
            self.transport.write(struct.pack("!H", len(wire)) + wire)

    def timeoutConnection(self):
        self.transport.loseConnection()


OfficeDnsFactory.protocol = DnsStreamProtocol


# ---------------------------------------------------------------- the service

class DnsService(ListeningService):
    """
    The "dns" child: keeps the zone current (configuration, WAN address, DHCP
    names), the resolvers in line with `[dns]`, and listens on `[dns] port`
    over UDP and TCP while `[dns] enabled`.
    """

    def __init__(self, office, reactor=None, forwarder_port=53, timeout=2.0):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "dns", office)
        self.reactor = reactor
        self.forwarder_port = forwarder_port
        self.timeout = timeout
        self.keeper = ZoneKeeper(reactor)
        self.names = DhcpNames()
        self.fast = FastAnswers(reactor)
        self.cache = CountedCache(reactor, self.fast)
        self.factory = None
        self._subscriptions = []
        self._expiry = None
        self._pending = None
        self._built_at = float("-inf")
        COLLECTOR.fast, COLLECTOR.cache = self.fast, self.cache

    # -- building

    def _forwarders(self, config):
        if not config.dns.use_forwarders:
            return None
        servers = [(str(ip), self.forwarder_port) for ip in (config.dns.primary,
                                                             config.dns.secondary) if ip]
        if not servers:
            return None
        return ForwardingResolver(servers, self.reactor, self.timeout,
                                  on_answer=self.cache.store)

    def _build_factory(self):
        self.factory = OfficeDnsFactory(self.office, self.keeper, self.cache, self.fast,
                                        self._forwarders(self.office.config), self.reactor)

    def rebuild_zone(self):
        """Make the zone from the current facts; publish it if it changed."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._built_at = self.reactor.seconds()
        self.names.expire(self._built_at)
        if self.keeper.rebuild(self.office.config, self.office.wan_ip, self.names.current()):
            zone = self.keeper.zone
            self.fast.zone = {}
            self.office.runtime.zone = zone
            log.info("dns: zone {domain} serial {serial}: {count} records",
                     domain=zone.domain, serial=zone.serial, count=len(zone.entries))
        self._schedule_expiry()

    def request_rebuild(self):
        """
        Rebuild soon: at once if the last rebuild is `REBUILD_INTERVAL` old,
        else at the end of that interval, so a burst of lease events (the
        office switching on in the morning) costs a few rebuilds, not one each.
        """
        if self._pending is not None:
            return
        wait = self._built_at + REBUILD_INTERVAL - self.reactor.seconds()
        if wait <= 0:
            self.rebuild_zone()
        else:
            self._pending = self.reactor.callLater(wait, self.rebuild_zone)

    def _schedule_expiry(self):
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        due = self.names.next_expiry()
        if due is not None and due != float("inf"):
            delay = max(0.0, due - self.reactor.seconds())
            self._expiry = self.reactor.callLater(delay, self.rebuild_zone)

    # -- listening

    def _listeners(self):
        port = self.office.config.dns.port
        udp = DnsDatagramProtocol(self.factory)

        def listen_udp():
            p = self.reactor.listenUDP(port, udp, maxPacketSize=4096)
            sock = getattr(p, "socket", None)
            if sock is not None:
                # Room for bursts: a full buffer loses queries.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            return p
        return [("udp %d" % port, port, listen_udp),
                ("tcp %d" % port, port, lambda: self.reactor.listenTCP(port, self.factory))]

    def startService(self):
        if not self._subscriptions:
            self._subscriptions = [
                self.office.subscribe(ConfigChanged, self._config_changed),
                self.office.subscribe(LeaseEvent, self._lease_event),
                self.office.subscribe(WanAddressChanged, lambda e: self.request_rebuild()),
            ]
            leases = self.office.runtime.leases
            if leases is not None:
                self.names.load(leases.active_leases())
        self.rebuild_zone()
        self._build_factory()
        if not self.office.config.dns.enabled:
            service.Service.startService(self)
            self.ports, self.failed = [], []
            self.office.set_status("dns", "disabled", "DNS server disabled in [dns]")
            return
        self.listeners = self._listeners()
        ListeningService.startService(self)

    def stopService(self):
        for unsubscribe in self._subscriptions:
            unsubscribe()
        self._subscriptions = []
        for call in (self._expiry, self._pending):
            if call is not None and call.active():
                call.cancel()
        self._expiry = self._pending = None
        return ListeningService.stopService(self)

    # -- events

    def _lease_event(self, event):
        if self.names.apply(event):
            self.request_rebuild()

    def _config_changed(self, event):
        new, old = event.new, event.old
        if event.touches("system", "lan", "wan", "host", "record"):
            self.rebuild_zone()
        if event.touches("lan") and self.factory is not None:
            self.factory._sides.clear()   # which peers are on the LAN may have changed
        if not event.touches("dns"):
            return
        if (old.dns.primary, old.dns.secondary, old.dns.use_forwarders) != (
                new.dns.primary, new.dns.secondary, new.dns.use_forwarders):
            self.cache.clear()
            log.info("dns: forwarders now {servers}", servers=", ".join(
                str(ip) for ip in (new.dns.primary, new.dns.secondary) if ip)
                if new.dns.use_forwarders else "none (stand-alone)")
        if (old.dns.enabled, old.dns.port) == (new.dns.enabled, new.dns.port):
            self._rewire()
            return
        d = ListeningService.stopService(self)
        d.addCallback(lambda _: self._restart())

    def _rewire(self):
        """New resolvers behind the ports already listening."""
        old = self.factory
        self._build_factory()
        for port in self.ports:
            proto = getattr(port, "protocol", None)
            if isinstance(proto, DnsDatagramProtocol):
                proto.factory = self.factory
            elif getattr(port, "factory", None) is old:
                port.factory = self.factory

    def _restart(self):
        self.running = False
        self.startService()


def make_service(office):
    """The "dns" child of the allworx server."""
    return DnsService(office)
