# -*- test-case-name: allworx.tests.voice.test_relay -*-
"""
The media anchor of a call that leaves the LAN: a `RelaySession` owns two UDP
sockets, one on the LAN address (the phone's side, "inside") and one on the
WAN address (the provider's side, "outside"), each on an even port of
`[sip] rtp_ports`. Whatever RTP arrives on one socket leaves by the other,
unchanged (RFC 4733 telephone-events included), to that side's peer.

Symmetric RTP (RFC 4961): a side's peer is the address its packets come
from, learnt from the first acceptable packet ("latching"): one from the
host its SDP named, or, when that SDP address is private (a phone behind a
NAT writes its own LAN address), any RTP-looking packet. Once latched only
that source is heard; when the latched peer has been silent for 2 s a new
source may latch the same way (a NAT that changed its mapping). Until a
side latches, what goes to it is sent to the address its SDP named.

`hold(side, source)` replaces what goes to a side with frames of `source`
(music on hold) under the relay's own SSRC, paced every 20 ms on the clock;
`resume(side)` forwards again.

The packet path runs in the reactor every service shares, 50 packets a
second each way per call. The relay's sockets are not Twisted ports (whose
`write` parses the address each time and whose reads cost a logging context
and an exception a packet): they sit in the media sockets' shared epoll set
(allworx.protocols.voice.pool), and a packet costs a `recvfrom`, a check of
the two header bits and the length, a comparison of the source with the
latched peer, a few counters and the other socket's `sendto`.
"""

import ipaddress
import os
import socket
import struct

from twisted.internet import defer, error
from twisted.logger import Logger

from allworx.dscp import RTP, mark
from allworx.protocols.voice.pool import pool_of
from allworx.protocols.voice.rtp import FRAME, FRAME_SECONDS, PORTS, MediaClock

log = Logger()

RELATCH_SECONDS = 2.0
SIDES = ("inside", "outside")
_HEADER = struct.Struct("!BBHII")


class NoRelayPorts(error.CannotListenError):
    """No two free even ports in `[sip] rtp_ports` on the addresses asked for."""

    def __init__(self, interface, port_range):
        error.CannotListenError.__init__(self, interface, "%d-%d" % port_range,
                                         "no free RTP port")


# Addresses behind a NAT: RFC 1918, shared CGNAT space (RFC 6598), loopback,
# link-local, IPv6 unique-local. Not Python's `is_private`, which also counts
# the documentation networks (the lab's WAN and provider live there).
_NATTED = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128"))


def is_private(host):
    """True for an address a NAT hides (what a phone behind one writes in its SDP)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in _NATTED if net.version == address.version)


class _Leg:
    """
    One socket of a session. `out` is `(sendto, address)` of where what this
    socket receives goes (the other socket's sendto and that side's peer),
    None while nothing can go there (no address yet, or the other side on
    hold); the session keeps it current, so the packet path only reads it.
    """

    def __init__(self, session, name):
        self.session = session
        self.name = name
        self.now = session.clock.seconds
        self.sock = None
        self.recvfrom = None
        self.peer = None            # latched source address (as recvfrom gives it)
        self.expected = None        # (host, port) from this side's SDP
        self.expected_private = False
        self.out = None
        self.packets = 0
        self.bytes = 0
        self.junk = 0
        self.refused = 0
        self.send_errors = 0
        self.last = None            # clock time of the last packet accepted
        self.held = None            # _Hold sending to this side, or None

    def bind(self, host, port):
        """Open this side's socket on host:port (OSError when taken)."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        mark(sock, RTP)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.recvfrom = sock.recvfrom
        return sock

    def readable(self):
        """The pool saw a packet waiting: read one."""
        try:
            data, addr = self.recvfrom(2048)
        except OSError:
            return
        self.datagramReceived(data, addr)

    def datagramReceived(self, data, addr):
        if addr != self.peer:
            if not self._latch(data, addr):
                return
        elif len(data) < 12 or data[0] & 0xC0 != 0x80:
            self.junk += 1
            return
        self.packets += 1
        self.bytes += len(data)
        self.last = self.now()
        out = self.out
        if out is not None:
            try:
                out[0](data, out[1])
            except OSError:
                self.send_errors += 1

    def _latch(self, data, addr):
        """A packet from a source other than the latched peer: latch it, or refuse it."""
        if len(data) < 12 or data[0] & 0xC0 != 0x80:
            self.junk += 1
            return False
        if self.peer is not None and self.now() - self.last < RELATCH_SECONDS:
            self.refused += 1
            return False
        expected = self.expected
        if expected is None or (addr[0] != expected[0] and not self.expected_private):
            self.refused += 1
            return False
        self.peer = addr
        self.session._routes_changed()
        return True


class _Hold:
    """Frames of a source sent to one side every 20 ms, its own SSRC, sequence and clock."""

    def __init__(self, session, leg):
        self.session = session
        self.leg = leg
        self.ssrc = struct.unpack("!I", os.urandom(4))[0]
        self.seq = struct.unpack("!H", os.urandom(2))[0]
        self.ts_base = struct.unpack("!I", os.urandom(4))[0]
        self.time_base = None       # clock time that ts_base stands for
        self.frame_index = -1       # frames since time_base of the last packet sent
        self.source = None
        self.started = None
        self.sent = 0
        self.marker = True

    def start(self, source):
        now = self.session.clock.seconds()
        if self.time_base is None:
            self.time_base = now
        self.source = source
        self.started = now
        self.sent = 0
        self.marker = True
        self.catch_up()

    def catch_up(self):
        """Send the frames due by now (after a stall, at most 10 at once)."""
        due = int((self.session.clock.seconds() - self.started) / FRAME_SECONDS + 1e-6) + 1
        if due > self.sent + 10:
            self.sent = due - 10
        while self.sent < due:
            self._send(self.started + self.sent * FRAME_SECONDS)
            self.sent += 1

    def _send(self, at):
        leg = self.leg
        address = leg.peer or leg.expected
        payload = self.source.frame()
        if address is None or leg.sock is None:
            return
        index = max(self.frame_index + 1, int(round((at - self.time_base) / FRAME_SECONDS)))
        self.frame_index = index
        ts = (self.ts_base + index * FRAME) & 0xFFFFFFFF
        header = _HEADER.pack(0x80, (0x80 if self.marker else 0) | self.source.payload_type,
                              self.seq, ts, self.ssrc)
        self.marker = False
        self.seq = (self.seq + 1) & 0xFFFF
        try:
            leg.sock.sendto(header + payload, address)
        except OSError:
            leg.send_errors += 1


class RelaySession:
    """
    One call's media anchor. `reactor` watches the sockets (`addReader` of
    the relays' shared epoll set), `clock` (default the reactor) times
    latching, idleness and hold pacing; `port_range` is `[sip] rtp_ports`.
    Raises NoRelayPorts when the range has no two free ports. `allocator`
    (default the one shared with voicemail) picks the ports.

    `stats()` is a dict:
    ``{"inside_to_outside": {"packets", "bytes"}, "outside_to_inside": {...},
    "dropped": total, "junk": n, "refused": n, "send_errors": n,
    "latched": {"inside": (host, port) or None, "outside": ...},
    "last_packet": {"inside": clock time or None, "outside": ...},
    "held": [sides on hold], "ports": {"inside": port, "outside": port}}``.
    """

    def __init__(self, reactor, inside_host, outside_host, port_range, clock=None,
                 allocator=PORTS):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.created = self.clock.seconds()
        self.legs = {name: _Leg(self, name) for name in SIDES}
        self.inside, self.outside = self.legs["inside"], self.legs["outside"]
        self.ports = {}
        self._pool = pool_of(reactor)
        self._media_clock = None
        self._holds = {}
        for name, host in (("inside", inside_host), ("outside", outside_host)):
            leg = self.legs[name]
            sock = allocator.bind(port_range, lambda p: leg.bind(host, p))
            if sock is None:
                self.close()
                raise NoRelayPorts(host, tuple(port_range))
            self.ports[name] = sock.getsockname()[1]
            self._pool.add(sock, leg.readable)

    @property
    def inside_port(self):
        return self.ports["inside"]

    @property
    def outside_port(self):
        return self.ports["outside"]

    # ------------------------------------------------------------ addresses

    def expect_inside(self, host, port):
        self._expect(self.legs["inside"], host, port)

    def expect_outside(self, host, port):
        self._expect(self.legs["outside"], host, port)

    def _expect(self, leg, host, port):
        if leg.expected is not None and leg.expected != (host, port):
            # Another endpoint (a transferred call): latch afresh, at once.
            leg.peer = None
        leg.expected = (host, port)
        leg.expected_private = is_private(host)
        self._routes_changed()

    def _routes_changed(self):
        """Point each socket's `out` at the other side's current address (or nothing)."""
        for leg, other in ((self.inside, self.outside), (self.outside, self.inside)):
            address = other.peer or other.expected
            if address is None or other.sock is None or other.held is not None:
                leg.out = None
            else:
                leg.out = (other.sock.sendto, address)

    # ------------------------------------------------------------ hold

    def hold(self, side, source):
        """Send `source`'s frames to `side` instead of what the other side sends."""
        leg = self.legs[side]
        if self._media_clock is None:
            self._media_clock = MediaClock(self.clock)
        held = self._holds.get(side)
        if held is None:
            held = self._holds[side] = _Hold(self, leg)
        if leg.held is not None:
            self._media_clock.remove(held)
        leg.held = held
        self._routes_changed()
        held.start(source)
        self._media_clock.add(held)

    def resume(self, side):
        """Forward to `side` again what the other side sends."""
        leg = self.legs[side]
        if leg.held is not None:
            self._media_clock.remove(leg.held)
            leg.held = None
            self._routes_changed()

    # ------------------------------------------------------------ state

    def stats(self):
        inside, outside = self.legs["inside"], self.legs["outside"]
        legs = (inside, outside)
        junk = sum(leg.junk for leg in legs)
        refused = sum(leg.refused for leg in legs)
        return {
            "inside_to_outside": {"packets": inside.packets, "bytes": inside.bytes},
            "outside_to_inside": {"packets": outside.packets, "bytes": outside.bytes},
            "dropped": junk + refused,
            "junk": junk,
            "refused": refused,
            "send_errors": sum(leg.send_errors for leg in legs),
            "latched": {leg.name: leg.peer and leg.peer[:2] for leg in legs},
            "last_packet": {leg.name: leg.last for leg in legs},
            "held": [leg.name for leg in legs if leg.held is not None],
            "ports": dict(self.ports),
        }

    def idle_for(self, now):
        """Seconds since the last packet from either side (since the start if none came)."""
        lasts = [leg.last for leg in self.legs.values() if leg.last is not None]
        return now - max(lasts or [self.created])

    def close(self):
        """Stop holds and free both ports (at once); a Deferred, fired, for the caller's chain."""
        for side in list(self._holds):
            self.resume(side)
        for leg in self.legs.values():
            leg.out = None
            if leg.sock is not None:
                self._pool.remove(leg.sock)
                leg.sock.close()
                leg.sock = None
        self.ports = {}
        return defer.succeed(None)
