# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The DNS server's protocols and their controller, on twisted.names.

`OfficeDnsFactory` is a `DNSServerFactory` whose resolver chain is, for LAN
clients (the LAN, the tunnel, other sites: `office.is_lan_peer`), the other
sites' names (`dnssites`, the conditional forwarder), the office zone's
inside view (authority), the cache and the forwarders (client); for the WAN
the zone's outside view and then REFUSED (no open resolver); in stand-alone
mode (`use_forwarders = no`) the sites, the inside view and then an
authoritative NXDOMAIN. In front of the chain sits the fast path
(`dnsfast.FastAnswers`): zone (per view) and cache answers precomputed in
wire form, served from the raw datagram before any parsing. On a real
reactor the UDP port is a `DnsUdpPort`, whose read loop answers what the
fast path knows in place, for every datagram waiting at a wake-up.

UDP and TCP. EDNS0 is honoured (the client's size, at most 1232 bytes); an
answer that does not fit a UDP reply goes out with TC set. Anything
malformed gets FORMERR, or silence when it is not even a query header; so
does a question this server could only answer as another name (a label
holding a dot).
"""

import errno
import io
import socket
import struct

from twisted.internet import defer, posixbase, protocol, udp
from twisted.logger import Logger
from twisted.names import dns, error, server
from twisted.protocols import policies

from allworx.protocols.dns.cache import NegativeAnswer
from allworx.protocols.dns.chain import OfficeChain, Refusing, StandAlone, ZoneAuthority
from allworx.protocols.dns.fast import (
    EDNS, MAX_UDP, PLAIN_UDP, RA, RD, ResponseWire, error_reply)
from allworx.protocols.dns.metrics import COUNTS

log = Logger()

BADVERS = 16
REFUSED_TYPES = (dns.AXFR, dns.IXFR, dns.MAILA, dns.MAILB)
SIDE_MEMO = 4096
TCP_IDLE = 30
TCP_MAX_CONNECTIONS = 64


def _question_as_sent(data, query):
    """
    True when the question's name, written out again, is the bytes that came:
    twisted.names keeps a name as dotted text, so a label holding a dot (or a
    question compressed into the header) would be answered as another name.
    """
    out = io.BytesIO()
    query.name.encode(out)
    wire = out.getvalue()
    return data[12:12 + len(wire)] == wire


class OfficeDnsFactory(server.DNSServerFactory):
    """
    The controller of the UDP and TCP protocols: LAN or WAN side of a peer,
    the fast path, then the resolver chain for that side, and the reply in
    wire form with EDNS and truncation.
    """

    protocol = None  # set below: DnsStreamProtocol

    def __init__(self, office, keeper, cache, fast, forwarders, reactor, sites=None):
        zone = ZoneAuthority(keeper, fast, lan=True)
        self.office = office
        self.fast = fast
        self.cache = cache
        self.reactor = reactor
        self.forwarder = forwarders
        head = [sites] if sites is not None else []
        if forwarders is not None:
            lan = head + [zone, cache, forwarders]
            server.DNSServerFactory.__init__(self, authorities=[zone], caches=[cache],
                                             clients=[forwarders])
        else:
            lan = head + [zone, StandAlone()]
            server.DNSServerFactory.__init__(self, authorities=[zone])
        self.resolver = OfficeChain(lan)
        self.wan_resolver = OfficeChain([ZoneAuthority(keeper, fast, lan=False), Refusing()])
        fast.ra_lan = RA if forwarders is not None else 0
        self._sides = {}

    # -- who is asking

    def lan_changed(self):
        """The LAN's, the tunnel's or the sites' addresses changed: ask again who is where."""
        self._sides.clear()

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
        if not _question_as_sent(data, q):
            return self._error(data, dns.EFORMAT, send)
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
        self.full_path(data, addr, lan)

    def full_path(self, data, addr, lan):
        """Answer `data` from `addr` through the factory's resolver chain."""
        self.factory.handle(data, lan, lambda wire: self._send(wire, addr))

    def _send(self, wire, addr):
        if self._sendto is None:
            return
        try:
            self._sendto(wire, addr)
        except OSError as e:
            log.debug("dns: reply to {peer} not sent: {why}", peer=addr[0], why=e)


# recvfrom found nothing more (or an ICMP error for an earlier send): done for now.
_READ_DONE = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED))


class DnsUdpPort(udp.Port):
    """
    The DNS server's UDP port. Each wake-up reads every datagram waiting (up
    to `maxThroughput` bytes, as Twisted's port does, so the other sockets
    get their turn) and answers those the fast path knows in the same loop:
    per query one recvfrom, one dict lookup, one sendto; the rest go to the
    protocol's full path. Same answers as `DnsDatagramProtocol.datagramReceived`.
    """

    def doRead(self):
        sock = self.socket
        recvfrom, sendto = sock.recvfrom, sock.sendto
        proto = self.protocol
        answer = proto.fast.answer
        size, budget = self.maxPacketSize, self.maxThroughput
        v6 = self.addressFamily == socket.AF_INET6
        factory = proto.factory
        sides = factory._sides   # emptied in place when the LAN changes
        read = 0
        while read < budget:
            try:
                data, addr = recvfrom(size)
            except OSError as e:
                if e.errno in _READ_DONE:
                    return
                raise
            read += len(data)
            try:
                if v6:
                    addr = addr[:2]
                lan = sides.get(addr[0])
                if lan is None:
                    lan = factory.is_lan(addr[0])
                reply = answer(data, lan)
                if reply is None:
                    proto.full_path(data, addr, lan)
                    factory = proto.factory
                    sides = factory._sides
                    continue
                try:
                    sendto(reply, addr)
                except OSError:
                    pass  # the client's socket is gone, or the send buffer is full: as lost
            except Exception:
                log.failure("dns: query from {peer} not answered", peer=addr[0])


def listen_dns_udp(reactor, port, proto, max_packet=4096):
    """Listen on UDP `port` with `proto`: a `DnsUdpPort` on a real reactor."""
    if isinstance(reactor, posixbase.PosixReactorBase):
        p = DnsUdpPort(port, proto, maxPacketSize=max_packet, reactor=reactor)
        p.startListening()
        return p
    return reactor.listenUDP(port, proto, maxPacketSize=max_packet)


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
