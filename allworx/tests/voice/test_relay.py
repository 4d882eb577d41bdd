"""
Tests of the media relay of outside calls (real UDP on 127.0.0.x, latching
and hold pacing on a task.Clock) and of the SDP rewriting it goes with.
"""

import socket
import struct

from twisted.internet import defer, error, protocol, reactor, task
from twisted.trial import unittest

from allworx.protocols.voice.pool import pool_of
from allworx.protocols.voice.relay import NoRelayPorts, RelaySession, is_private
from allworx.protocols.voice.rtp import PortAllocator, RtpPacket
from allworx.protocols.voice.sdp import parse_offer, rewrite_sdp, sdp_direction

INSIDE, OUTSIDE = "127.0.0.1", "127.0.0.2"
PHONE, PROVIDER, STRANGER = "127.0.0.3", "127.0.0.4", "127.0.0.5"


def rtp(seq, pt=0, payload=b"\x55" * 160, ssrc=0x1234, marker=False):
    return RtpPacket(pt, seq, seq * 160, ssrc, payload, marker).to_bytes()


def free_range(width=40):
    """An even port range that is probably free (the kernel's pick, then its neighbours)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((INSIDE, 0))
    port = probe.getsockname()[1] & ~1
    probe.close()
    return (port, port + width)


class Peer(protocol.DatagramProtocol):
    """A phone or a provider: records what it receives; `wait(n)` fires once n packets came."""

    noisy = False

    def __init__(self):
        self.received = []       # (data, addr)
        self.waiting = []        # (count, Deferred)

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        for item in list(self.waiting):
            if len(self.received) >= item[0]:
                self.waiting.remove(item)
                item[1].callback(self.received)

    def wait(self, count):
        if len(self.received) >= count:
            return defer.succeed(self.received)
        d = defer.Deferred()
        self.waiting.append((count, d))
        return d

    @property
    def address(self):
        host = self.transport.getHost()
        return (host.host, host.port)

    def send(self, data, to):
        self.transport.write(data, to)


class Tone:
    """A hold source: numbered frames."""

    payload_type = 8

    def __init__(self):
        self.frames = 0

    def frame(self):
        self.frames += 1
        return bytes([self.frames & 0xFF]) * 160


class RelayTestBase(unittest.TestCase):

    timeout = 15

    def setUp(self):
        self.clock = task.Clock()
        self.allocator = PortAllocator()
        self.range = free_range()
        self.session = RelaySession(reactor, INSIDE, OUTSIDE, self.range, clock=self.clock,
                                    allocator=self.allocator)
        self.addCleanup(self.session.close)
        self.phone = self.peer(PHONE)
        self.provider = self.peer(PROVIDER)
        self.session.expect_inside(*self.phone.address)
        self.session.expect_outside(*self.provider.address)
        self.to_inside = (INSIDE, self.session.inside_port)
        self.to_outside = (OUTSIDE, self.session.outside_port)

    def peer(self, host):
        peer = Peer()
        port = reactor.listenUDP(0, peer, interface=host)
        self.addCleanup(port.stopListening)
        return peer


class ForwardingTests(RelayTestBase):

    def test_ports_even_in_range_on_each_address(self):
        low, high = self.range
        for port in (self.session.inside_port, self.session.outside_port):
            self.assertEqual(port % 2, 0)
            self.assertTrue(low <= port <= high, port)
        self.assertNotEqual(self.session.inside_port, self.session.outside_port)
        self.assertEqual(self.session.inside.sock.getsockname(), (INSIDE, self.session.inside_port))
        self.assertEqual(self.session.outside.sock.getsockname(), (OUTSIDE, self.session.outside_port))

    @defer.inlineCallbacks
    def test_forwards_both_ways_unchanged(self):
        out = rtp(1)
        self.phone.send(out, self.to_inside)
        [(data, addr)] = yield self.provider.wait(1)
        self.assertEqual(data, out)
        self.assertEqual(addr, self.to_outside)
        back = rtp(7, pt=8, ssrc=0x99)
        self.provider.send(back, self.to_outside)
        [(data, addr)] = yield self.phone.wait(1)
        self.assertEqual(data, back)
        self.assertEqual(addr, self.to_inside)
        stats = self.session.stats()
        self.assertEqual(stats["inside_to_outside"], {"packets": 1, "bytes": len(out)})
        self.assertEqual(stats["outside_to_inside"], {"packets": 1, "bytes": len(back)})
        self.assertEqual(stats["latched"], {"inside": self.phone.address,
                                            "outside": self.provider.address})
        self.assertEqual(stats["dropped"], 0)
        self.assertEqual(stats["last_packet"], {"inside": 0, "outside": 0})

    @defer.inlineCallbacks
    def test_telephone_events_pass_as_they_are(self):
        events = [RtpPacket(101, 10 + n, 8000, 0x4321, struct.pack("!BBH", 5, 0x0A | (0x80 if n > 1 else 0),
                                                                    160 * (n + 1)), n == 0).to_bytes()
                  for n in range(4)]
        for packet in events:
            self.phone.send(packet, self.to_inside)
        received = yield self.provider.wait(4)
        self.assertEqual([data for data, _ in received], events)

    @defer.inlineCallbacks
    def test_stranger_refused_after_latching(self):
        stranger = self.peer(STRANGER)
        self.phone.send(rtp(1), self.to_inside)
        yield self.provider.wait(1)
        stranger.send(rtp(500, ssrc=0x666), self.to_inside)
        self.phone.send(rtp(2), self.to_inside)
        received = yield self.provider.wait(2)
        self.assertEqual([RtpPacket.parse(d).seq for d, _ in received], [1, 2])
        self.assertEqual(self.session.stats()["refused"], 1)
        self.assertEqual(self.session.stats()["latched"]["inside"], self.phone.address)

    @defer.inlineCallbacks
    def test_relatch_after_two_seconds_of_silence(self):
        self.phone.send(rtp(1), self.to_inside)
        yield self.provider.wait(1)
        moved = self.peer(PHONE)            # the phone's NAT gave it a new port
        self.clock.advance(1.9)
        moved.send(rtp(2), self.to_inside)
        self.phone.send(rtp(3), self.to_inside)
        received = yield self.provider.wait(2)
        self.assertEqual(RtpPacket.parse(received[1][0]).seq, 3)
        self.clock.advance(2.0)
        moved.send(rtp(4), self.to_inside)
        self.phone.send(rtp(5), self.to_inside)    # the old mapping, now a stranger
        moved.send(rtp(6), self.to_inside)
        received = yield self.provider.wait(4)
        self.assertEqual([RtpPacket.parse(d).seq for d, _ in received], [1, 3, 4, 6])
        self.assertEqual(self.session.stats()["latched"]["inside"], moved.address)
        self.provider.send(rtp(9), self.to_outside)
        yield moved.wait(1)
        self.assertEqual(len(self.phone.received), 0)
        self.assertEqual(self.session.stats()["refused"], 2)

    @defer.inlineCallbacks
    def test_junk_dropped_and_counted(self):
        self.phone.send(b"hello", self.to_inside)                       # too short
        self.phone.send(b"\x40" + rtp(1)[1:], self.to_inside)           # version 1
        self.phone.send(rtp(2), self.to_inside)
        self.phone.send(b"\x00" * 11, self.to_inside)                   # after latching too
        self.phone.send(rtp(3), self.to_inside)
        received = yield self.provider.wait(2)
        self.assertEqual([RtpPacket.parse(d).seq for d, _ in received], [2, 3])
        stats = self.session.stats()
        self.assertEqual((stats["junk"], stats["dropped"]), (3, 3))
        self.assertEqual(stats["inside_to_outside"]["packets"], 2)

    @defer.inlineCallbacks
    def test_before_latching_sends_to_the_sdp_address(self):
        self.provider.send(rtp(1), self.to_outside)
        [(data, addr)] = yield self.phone.wait(1)
        self.assertEqual(addr, self.to_inside)
        self.assertEqual(self.session.stats()["latched"]["inside"], None)

    @defer.inlineCallbacks
    def test_sessions_share_one_reader_that_goes_with_the_last(self):
        other = RelaySession(reactor, INSIDE, OUTSIDE, self.range, clock=self.clock,
                             allocator=self.allocator)
        pool = pool_of(reactor)
        self.assertEqual([r for r in reactor.getReaders() if r is pool], [pool])
        self.assertEqual(len(pool.handlers), 4)
        yield other.close()
        self.assertIn(pool, reactor.getReaders())
        yield self.session.close()
        self.assertNotIn(pool, reactor.getReaders())

    @defer.inlineCallbacks
    def test_a_failing_packet_does_not_stop_the_relay(self):
        failed = defer.Deferred()

        def broken(data, addr):
            reactor.callLater(0, failed.callback, None)
            raise ZeroDivisionError("a defect")
        self.session.inside.datagramReceived = broken
        self.phone.send(rtp(1), self.to_inside)
        yield failed
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.provider.send(rtp(2), self.to_outside)
        [(data, _)] = yield self.phone.wait(1)
        self.assertEqual(data, rtp(2))

    @defer.inlineCallbacks
    def test_close_frees_both_ports(self):
        ports = (self.session.inside_port, self.session.outside_port)
        yield self.session.close()
        for host, port in zip((INSIDE, OUTSIDE), ports):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(probe.close)
            probe.bind((host, port))


class LatchingRuleTests(RelayTestBase):
    """Which first packet latches, by the SDP address (packets handed to the socket's protocol)."""

    def setUp(self):
        RelayTestBase.setUp(self)
        self.leg = self.session.outside

    def test_public_sdp_address_latches_only_that_host(self):
        self.session.expect_outside("198.51.100.20", 30000)
        self.leg.datagramReceived(rtp(1), ("203.0.113.9", 30000))
        self.assertEqual(self.session.stats()["latched"]["outside"], None)
        self.leg.datagramReceived(rtp(2), ("198.51.100.20", 31002))     # the host, another port
        self.assertEqual(self.session.stats()["latched"]["outside"], ("198.51.100.20", 31002))
        self.assertEqual(self.session.stats()["refused"], 1)

    def test_private_sdp_address_latches_the_first_rtp_packet(self):
        self.session.expect_outside("192.168.1.50", 10582)
        self.leg.datagramReceived(b"\x00" * 20, ("203.0.113.9", 4000))  # not RTP: no latch
        self.assertEqual(self.session.stats()["latched"]["outside"], None)
        self.leg.datagramReceived(rtp(1), ("203.0.113.9", 4000))
        self.assertEqual(self.session.stats()["latched"]["outside"], ("203.0.113.9", 4000))

    def test_nothing_latches_before_an_sdp_address(self):
        session = RelaySession(reactor, INSIDE, OUTSIDE, self.range, clock=self.clock,
                               allocator=self.allocator)
        self.addCleanup(session.close)
        session.outside.datagramReceived(rtp(1), (PROVIDER, 4000))
        self.assertEqual(session.stats()["latched"]["outside"], None)
        self.assertEqual(session.stats()["refused"], 1)

    def test_is_private(self):
        for host in ("10.1.2.3", "172.16.0.1", "192.168.0.9", "100.64.3.4", "127.0.0.3",
                     "169.254.1.1", "fd00::1"):
            self.assertTrue(is_private(host), host)
        for host in ("198.51.100.20", "203.0.113.2", "8.8.8.8", "2001:4860::1", "not an address"):
            self.assertFalse(is_private(host), host)

    def test_idle_for(self):
        self.assertEqual(self.session.idle_for(5.0), 5.0)
        self.clock.advance(3)
        self.leg.datagramReceived(rtp(1), (PROVIDER, self.provider.address[1]))
        self.assertEqual(self.session.idle_for(10.0), 7.0)


class HoldTests(RelayTestBase):

    @defer.inlineCallbacks
    def test_hold_sends_the_source_paced_then_resume_forwards(self):
        self.provider.send(rtp(1), self.to_outside)
        yield self.phone.wait(1)
        tone = Tone()
        self.session.hold("inside", tone)
        self.assertEqual(self.session.stats()["held"], ["inside"])
        # While held, what the provider sends does not reach the phone.
        self.session.outside.datagramReceived(rtp(2), self.provider.address)
        for _ in range(4):
            self.clock.advance(0.02)
        received = yield self.phone.wait(6)
        held = [RtpPacket.parse(d) for d, _ in received[1:]]
        self.assertEqual(len(held), 5)
        self.assertEqual({p.ssrc for p in held} & {0x1234}, set())
        self.assertEqual(len({p.ssrc for p in held}), 1)
        self.assertEqual({p.payload_type for p in held}, {8})
        self.assertEqual([p.payload for p in held], [bytes([n]) * 160 for n in range(1, 6)])
        self.assertEqual([(p.seq - held[0].seq) & 0xFFFF for p in held], list(range(5)))
        self.assertEqual([(p.timestamp - held[0].timestamp) & 0xFFFFFFFF for p in held],
                         [160 * n for n in range(5)])
        self.assertEqual([p.marker for p in held], [True] + [False] * 4)

        self.session.resume("inside")
        self.clock.advance(1.0)                 # nothing generated after resume
        self.provider.send(rtp(3), self.to_outside)
        received = yield self.phone.wait(7)
        self.assertEqual(RtpPacket.parse(received[6][0]).seq, 3)

        self.session.hold("inside", tone)
        self.clock.advance(0.02)
        received = yield self.phone.wait(9)
        again = [RtpPacket.parse(d) for d, _ in received[7:]]
        self.assertEqual(again[0].ssrc, held[0].ssrc)
        self.assertEqual([(p.seq - held[-1].seq) & 0xFFFF for p in again], [1, 2])
        # The clock went on 1 s since the last held frame: the timestamps say so.
        self.assertEqual((again[0].timestamp - held[-1].timestamp) & 0xFFFFFFFF, 8000)
        self.assertEqual((again[1].timestamp - again[0].timestamp) & 0xFFFFFFFF, 160)
        self.assertTrue(again[0].marker)
        yield self.session.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_hold_one_side_keeps_the_other_direction(self):
        self.session.hold("outside", Tone())
        self.session.inside.datagramReceived(rtp(1), self.phone.address)
        self.clock.advance(0.02)
        received = yield self.provider.wait(2)
        self.assertEqual([RtpPacket.parse(d).payload_type for d, _ in received], [8, 8])
        self.assertEqual(self.session.stats()["inside_to_outside"]["packets"], 1)
        self.provider.send(rtp(2), self.to_outside)
        [(data, _)] = yield self.phone.wait(1)
        self.assertEqual(data, rtp(2))


class PortTests(unittest.TestCase):

    def test_allocator_takes_even_ports_in_turn_and_skips_taken_ones(self):
        taken = {10004}
        calls = []

        def listen(port):
            calls.append(port)
            if port in taken:
                raise error.CannotListenError("", port, "in use")
            taken.add(port)
            return port

        allocator = PortAllocator()
        got = [allocator.bind((10001, 10010), listen) for _ in range(4)]
        self.assertEqual(got, [10002, 10006, 10008, 10010])
        self.assertIsNone(allocator.bind((10001, 10010), listen))
        taken.discard(10006)
        self.assertEqual(allocator.bind((10001, 10010), listen), 10006)

    def test_a_full_range_raises_and_keeps_nothing(self):
        low = free_range()[0]
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        try:
            blocker.bind((OUTSIDE, low))
        except OSError as e:
            self.fail("port %d not free for the test: %s" % (low, e))
        allocator = PortAllocator()
        self.assertRaises(NoRelayPorts, RelaySession, reactor, INSIDE, OUTSIDE, (low, low + 1),
                          allocator=allocator)
        # The inside port the failed session had taken is free again.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(probe.close)
        probe.bind((INSIDE, low))


BARESIP = (
    "v=0\r\n"
    "o=- 2890844526 2890844527 IN IP4 192.168.1.50\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.50\r\n"
    "t=0 0\r\n"
    "m=audio 10582 RTP/AVP 0 8 101\r\n"
    "b=AS:64\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=ssrc:3011893476 cname:0c5d7e3b-0b8f-4a43-9e6a-2b17b6f2f4a1\r\n"
    "a=rtcp-rsize\r\n"
    "a=ptime:20\r\n").encode()

# A carrier's offer: origin, session and media c= all different, RTCP named,
# a T.38 stream beside the audio.
PROVIDER_OFFER = (
    "v=0\r\n"
    "o=SBC 1160 8311 IN IP4 198.51.100.20\r\n"
    "s=SIP Media Capabilities\r\n"
    "c=IN IP4 198.51.100.21\r\n"
    "t=0 0\r\n"
    "m=audio 23400 RTP/AVP 18 0 101\r\n"
    "c=IN IP4 198.51.100.22\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp:23401 IN IP4 198.51.100.22\r\n"
    "a=sendrecv\r\n"
    "a=maxptime:20\r\n"
    "m=image 23402 udptl t38\r\n"
    "c=IN IP4 198.51.100.22\r\n"
    "a=T38FaxVersion:0\r\n"
    "a=T38FaxRateManagement:transferredTCF\r\n").encode()


def lines(body):
    return body.decode().split("\r\n")


class RewriteSdpTests(unittest.TestCase):

    def test_baresip_offer(self):
        out = rewrite_sdp(BARESIP, "203.0.113.2", 20000)
        before, after = lines(BARESIP), lines(out)
        self.assertEqual(after[1], "o=- 2890844526 2890844527 IN IP4 203.0.113.2")
        self.assertEqual(after[3], "c=IN IP4 203.0.113.2")
        self.assertEqual(after[5], "m=audio 20000 RTP/AVP 0 8 101")
        self.assertEqual([line for n, line in enumerate(after) if n not in (1, 3, 5)],
                         [line for n, line in enumerate(before) if n not in (1, 3, 5)])
        offer = parse_offer(out)
        self.assertEqual((offer.host, offer.port, offer.payload_type, offer.event_type),
                         ("203.0.113.2", 20000, 0, 101))

    def test_provider_offer_with_two_streams_and_both_c_levels(self):
        out = rewrite_sdp(PROVIDER_OFFER, "10.0.0.1", 10010)
        after = lines(out)
        self.assertEqual(after[1], "o=SBC 1160 8311 IN IP4 10.0.0.1")
        self.assertEqual([line for line in after if line.startswith("c=")], ["c=IN IP4 10.0.0.1"] * 3)
        self.assertIn("m=audio 10010 RTP/AVP 18 0 101", after)
        self.assertIn("m=image 0 udptl t38", after)            # the relay carries one stream
        self.assertFalse([line for line in after if line.startswith("a=rtcp:")])
        kept = [line for line in lines(PROVIDER_OFFER)
                if line[:2] not in ("o=", "c=", "m=") and not line.startswith("a=rtcp:")]
        self.assertEqual([line for line in after if line[:2] not in ("o=", "c=", "m=")], kept)
        self.assertEqual(parse_offer(out).host, "10.0.0.1")

    def test_line_endings_and_hold_address_kept(self):
        body = BARESIP.replace(b"\r\n", b"\n").replace(b"c=IN IP4 192.168.1.50", b"c=IN IP4 0.0.0.0")
        out = rewrite_sdp(body, "10.0.0.1", 10002)
        self.assertNotIn(b"\r", out)
        self.assertIn(b"c=IN IP4 0.0.0.0\n", out)
        self.assertIn(b"m=audio 10002 RTP/AVP", out)

    def test_first_audio_with_a_port_is_the_relayed_one(self):
        body = BARESIP.replace(b"m=audio 10582 RTP/AVP 0 8 101\r\n",
                               b"m=audio 0 RTP/SAVP 0\r\nm=audio 10582 RTP/AVP 0 8 101\r\n")
        out = lines(rewrite_sdp(body, "10.0.0.1", 10002))
        self.assertEqual([line for line in out if line.startswith("m=")],
                         ["m=audio 0 RTP/SAVP 0", "m=audio 10002 RTP/AVP 0 8 101"])

    def test_ipv6_relay_address(self):
        out = lines(rewrite_sdp(BARESIP, "2001:db8::1", 10002))
        self.assertEqual(out[3], "c=IN IP6 2001:db8::1")
        self.assertTrue(out[1].endswith(" IN IP6 2001:db8::1"))


class DirectionTests(unittest.TestCase):

    def test_directions(self):
        self.assertEqual(sdp_direction(BARESIP), "sendrecv")
        self.assertEqual(sdp_direction(BARESIP.replace(b"a=sendrecv", b"a=sendonly")), "sendonly")
        self.assertEqual(sdp_direction(BARESIP.replace(b"a=sendrecv", b"a=recvonly")), "recvonly")
        self.assertEqual(sdp_direction(BARESIP.replace(b"a=sendrecv", b"a=inactive")), "inactive")
        self.assertEqual(sdp_direction(BARESIP.replace(b"a=sendrecv\r\n", b"")), "sendrecv")

    def test_session_level_attribute_unless_the_stream_has_its_own(self):
        body = BARESIP.replace(b"a=sendrecv\r\n", b"").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
        self.assertEqual(sdp_direction(body), "sendonly")
        body = BARESIP.replace(b"t=0 0\r\n", b"t=0 0\r\na=inactive\r\n")
        self.assertEqual(sdp_direction(body), "sendrecv")

    def test_the_old_hold_address(self):
        held = BARESIP.replace(b"c=IN IP4 192.168.1.50", b"c=IN IP4 0.0.0.0")
        self.assertEqual(sdp_direction(held), "sendonly")
        self.assertEqual(sdp_direction(held.replace(b"a=sendrecv", b"a=recvonly")), "inactive")
        media = PROVIDER_OFFER.replace(b"m=audio 23400 RTP/AVP 18 0 101\r\nc=IN IP4 198.51.100.22",
                                       b"m=audio 23400 RTP/AVP 18 0 101\r\nc=IN IP4 0.0.0.0")
        self.assertEqual(sdp_direction(media), "sendonly")

    def test_a_later_stream_does_not_count(self):
        body = PROVIDER_OFFER + b"a=inactive\r\n"          # on the image stream
        self.assertEqual(sdp_direction(body), "sendrecv")
        self.assertEqual(sdp_direction(BARESIP.replace(b"m=audio 10582", b"m=audio 0")), "inactive")
