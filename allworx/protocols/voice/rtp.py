# -*- test-case-name: allworx.tests.voice.test_voice, allworx.tests.voice.test_relay -*-
"""
RTP (RFC 3550) for the server's own calls (voicemail): the packet header,
a jitter buffer that puts packets back in sequence-number order, and a media
endpoint that sends 20 ms frames on the reactor clock and hands what it
receives, in order, to its user.
"""

import os
import socket
import struct

import attr
from prometheus_client import Counter
from twisted.internet import error, protocol, udp
from twisted.logger import Logger

from allworx.dscp import RTP, mark
from allworx.protocols.voice.pool import pool_of

log = Logger()

RTP_PACKETS = Counter("allworx_sip_rtp_packets_total", "RTP packets of voicemail calls",
                      ["direction"])
RTP_LOST = Counter("allworx_sip_rtp_lost_total", "RTP packets missing when played out")
# The labelled series, looked up once: `labels()` costs more than the count.
_SENT = RTP_PACKETS.labels("sent")
_RECEIVED = RTP_PACKETS.labels("received")

FRAME = 160                 # samples per 20 ms at 8 kHz
FRAME_SECONDS = 0.02
# Packets still waiting in a call's socket taken in when it ends, at most (5 s).
DRAIN_MOST = 250
_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    """Bytes that are not an RTP packet."""


@attr.s(slots=True, frozen=True)
class RtpPacket:
    """One RTP packet: payload type, marker, sequence number, timestamp, SSRC, payload."""

    payload_type = attr.ib()
    seq = attr.ib()
    timestamp = attr.ib()
    ssrc = attr.ib()
    payload = attr.ib()
    marker = attr.ib(default=False)

    @classmethod
    def parse(cls, data):
        if len(data) < 12:
            raise RtpError("shorter than an RTP header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpError("not RTP version 2")
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if len(data) < offset + 4:
                raise RtpError("truncated header extension")
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        end = len(data)
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or pad > end - offset:
                raise RtpError("bad padding")
            end -= pad
        if offset > end:
            raise RtpError("header longer than the packet")
        return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[offset:end]), bool(b1 & 0x80))

    def to_bytes(self):
        return _HEADER.pack(0x80, (0x80 if self.marker else 0) | self.payload_type,
                            self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                            self.ssrc) + self.payload


class JitterBuffer:
    """
    Reorders packets by sequence number (with 16-bit wrap). `push` returns
    the packets now playable in order; a gap is skipped once `depth` later
    packets are waiting (counted in `lost`). Duplicates and packets older
    than what was played are dropped.
    """

    def __init__(self, depth=8):
        self.depth = depth
        self.pending = {}       # extended seq -> packet
        self.next = None        # extended seq expected next
        self.last_ext = None
        self.lost = 0
        self.received = 0
        self.duplicates = 0

    def _extend(self, seq):
        if self.last_ext is None:
            return seq
        base = self.last_ext
        delta = (seq - base) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return base + delta

    def push(self, packet):
        return self.add(packet.seq, packet)

    def add(self, seq, item):
        """`push` of anything (a packet, a payload) by its sequence number."""
        ext = self._extend(seq)
        nxt = self.next
        if nxt is None:
            self.next = nxt = ext
        if ext == nxt and not self.pending:
            # In order, nothing waiting: the common case, played at once.
            self.received += 1
            if self.last_ext is None or ext > self.last_ext:
                self.last_ext = ext
            self.next = ext + 1
            return [item]
        if ext < nxt or ext in self.pending:
            self.duplicates += 1
            return []
        self.received += 1
        self.last_ext = max(self.last_ext if self.last_ext is not None else ext, ext)
        self.pending[ext] = item
        out = self._drain()
        if not out and len(self.pending) > self.depth:
            first = min(self.pending)
            self.lost += first - self.next
            self.next = first
            out = self._drain()
        return out

    def _drain(self):
        out = []
        while self.next in self.pending:
            out.append(self.pending.pop(self.next))
            self.next += 1
        return out

    def flush(self):
        """Everything still waiting, in order, gaps counted as lost."""
        out = []
        for ext in sorted(self.pending):
            self.lost += ext - self.next
            out.append(self.pending.pop(ext))
            self.next = ext + 1
        return out


class MediaClock:
    """
    One 20 ms timer for every call's sender: each tick asks each endpoint to
    send the frames now due, so a hundred calls cost fifty timer events a
    second rather than five thousand.
    """

    def __init__(self, clock):
        self.clock = clock
        self.endpoints = []
        self.call = None

    def add(self, endpoint):
        self.endpoints.append(endpoint)
        if self.call is None:
            self.call = self.clock.callLater(FRAME_SECONDS, self._run)

    def remove(self, endpoint):
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)
        if not self.endpoints and self.call is not None:
            if self.call.active():
                self.call.cancel()
            self.call = None

    def _run(self):
        self.call = None
        for endpoint in list(self.endpoints):
            endpoint.catch_up()
        if self.endpoints:
            self.call = self.clock.callLater(FRAME_SECONDS, self._run)


class PortAllocator:
    """
    Hands out the even ports of `[sip] rtp_ports` in turn (a port just freed
    is the last to come round again, so late packets of an ended call do not
    reach the next one). `bind(port_range, listen)` calls `listen(port)` on
    each candidate until one binds and returns what it returned, or None
    when every port of the range is taken. One allocator (`PORTS`) serves
    every user of the range, so they do not keep trying each other's ports.
    """

    def __init__(self):
        self.next_port = None

    def bind(self, port_range, listen):
        low, high = port_range
        first = low + (low % 2)
        if first > high:
            return None
        if self.next_port is None or not first <= self.next_port <= high:
            self.next_port = first
        for _ in range((high - first) // 2 + 1):
            port = self.next_port
            self.next_port = port + 2 if port + 2 <= high else first
            try:
                return listen(port)
            except (error.CannotListenError, OSError):
                continue
        return None


PORTS = PortAllocator()


class RtpEndpoint(protocol.DatagramProtocol):
    """
    One call's media socket. Sends the frames its `source` gives (a callable
    returning 160 payload bytes or None for nothing to send) every 20 ms,
    catching up by the clock so timer jitter does not stretch the audio, and
    passes received packets in order to `on_audio(payload)` and RFC 4733
    events to `on_event(packet)`. Only the negotiated peer is listened to.

    On a real UDP port (listenUDP) the socket is read from the media
    sockets' shared epoll set (allworx.protocols.voice.pool) rather than by
    the port, and written with its own `sendto`: no per-packet cost of
    Twisted's port. Fakes in tests keep the port's `write`.
    """

    def __init__(self, clock, payload_type, event_type=None, on_audio=None, on_event=None):
        self.clock = clock
        self.payload_type = payload_type
        self.event_type = event_type
        self.on_audio = on_audio or (lambda payload: None)
        self.on_event = on_event or (lambda packet: None)
        self.remote = None
        self.source = None
        self.jitter = JitterBuffer()
        self.ssrc = struct.unpack("!I", os.urandom(4))[0]
        self.seq = struct.unpack("!H", os.urandom(2))[0]
        self.timestamp = struct.unpack("!I", os.urandom(4))[0]
        self.sent_frames = 0
        self.started = None
        self.call = None
        self.marker = True
        self.last_received = None      # reactor time of the last packet from the peer
        self._send = None               # sendto of the socket, or the transport's write
        self._recvfrom = None
        self._pooled = None             # (pool, socket) while the pool reads the socket

    def startProtocol(self):
        port = self.transport
        mark(port, RTP)                 # the socket was just made (listenUDP)
        # A real UDP port's own sendto: Twisted's write checks the address
        # every time; ours is the negotiated peer, checked once (set_remote).
        sock = getattr(port, "socket", None)
        self._send = sock.sendto if isinstance(sock, socket.socket) else port.write
        if isinstance(port, udp.Port) and isinstance(sock, socket.socket):
            # The port starts reading when this returns: the pool takes over
            # on the reactor's next turn (packets before that are read by the port).
            port.reactor.callLater(0, self._join_pool, port)

    def _join_pool(self, port):
        if self.transport is not port or self._pooled is not None or not port.connected:
            return                      # stopped meanwhile
        port.stopReading()
        pool = pool_of(port.reactor)
        self._recvfrom = port.socket.recvfrom
        pool.add(port.socket, self._readable)
        self._pooled = (pool, port.socket)

    def _leave_pool(self):
        if self._pooled is not None:
            (pool, sock), self._pooled = self._pooled, None
            pool.remove(sock)

    def _readable(self):
        """The pool saw a packet waiting: read one."""
        try:
            data, addr = self._recvfrom(2048)
        except OSError:
            return
        self.datagramReceived(data, addr[:2])

    def _drain(self, most=DRAIN_MOST):
        sock = getattr(self.transport, "socket", None)
        if not isinstance(sock, socket.socket):
            return
        for _ in range(most):
            try:
                data, addr = sock.recvfrom(2048)
            except OSError:     # nothing left (EAGAIN), or the socket is gone
                return
            self.datagramReceived(data, addr[:2])

    def stopProtocol(self):
        self._leave_pool()              # the port closes its socket next

    def set_remote(self, host, port):
        self.remote = (host, port)

    def start_sending(self, media_clock=None):
        """Send a frame every 20 ms: on the shared `media_clock`, or on a timer of its own."""
        if self.call is None and self.started is None:
            self.started = self.clock.seconds()
            self.sent_frames = 0
            self.media_clock = media_clock
            if media_clock is not None:
                self.catch_up()
                media_clock.add(self)
            else:
                self._tick()

    def catch_up(self):
        """Send the frames due by now (at most 10 at once after a stall)."""
        due = int((self.clock.seconds() - self.started) / FRAME_SECONDS + 1e-6) + 1
        if due > self.sent_frames + 10:
            # Far behind (a stall): skip ahead rather than burst.
            self.sent_frames = due - 10
        while self.sent_frames < due:
            self._send_frame()
            self.sent_frames += 1

    def _tick(self):
        self.catch_up()
        next_at = self.started + self.sent_frames * FRAME_SECONDS
        self.call = self.clock.callLater(max(0.001, next_at - self.clock.seconds()), self._tick)

    def _send_frame(self):
        payload = self.source() if self.source is not None else None
        self.timestamp = (self.timestamp + FRAME) & 0xFFFFFFFF
        if payload is None or self.remote is None or self.transport is None:
            self.marker = True
            return
        data = _HEADER.pack(0x80, (0x80 if self.marker else 0) | self.payload_type, self.seq,
                            self.timestamp, self.ssrc) + payload
        self.marker = False
        self.seq = (self.seq + 1) & 0xFFFF
        try:
            (self._send or self.transport.write)(data, self.remote)
            _SENT.inc()
        except OSError:
            pass

    def datagramReceived(self, data, addr):
        if self.remote is not None and addr[0] != self.remote[0]:
            return
        if len(data) > 12 and data[0] == 0x80 and data[1] & 0x7F == self.payload_type:
            # The common case, a plain audio packet (version 2, no padding,
            # extension or CSRCs): the payload follows the fixed header.
            _RECEIVED.inc()
            self.last_received = self.clock.seconds()
            for payload in self.jitter.add((data[2] << 8) | data[3], data[12:]):
                self.on_audio(payload)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        _RECEIVED.inc()
        self.last_received = self.clock.seconds()
        if self.event_type is not None and packet.payload_type == self.event_type:
            self.on_event(packet)
            return
        if packet.payload_type != self.payload_type:
            return
        for payload in self.jitter.add(packet.seq, packet.payload):
            self.on_audio(payload)

    def stop(self):
        """
        Stop sending; take in what is already waiting in the socket (sent
        before the call ended, not yet read: the reactor may be behind),
        deliver what the jitter buffer holds, close the socket.
        """
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if getattr(self, "media_clock", None) is not None:
            self.media_clock.remove(self)
        self._leave_pool()
        self._drain()
        for payload in self.jitter.flush():
            self.on_audio(payload)
        RTP_LOST.inc(self.jitter.lost)
        if self.transport is not None:
            port, self.transport = self.transport, None
            port.stopListening()
