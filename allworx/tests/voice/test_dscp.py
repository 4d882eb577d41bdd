"""
RTP the server sends carries EF (allworx.dscp): a voicemail/attendant call's
`RtpEndpoint` (marked when its port opens) and both sockets of the outside
calls' relay (forwarded packets and music on hold). Real UDP on loopback.
"""

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from allworx.dscp import marked
from allworx.protocols.voice.relay import RelaySession
from allworx.protocols.voice.rtp import PortAllocator, RtpEndpoint, RtpPacket
from allworx.tests.dscphelpers import TosReceiver
from allworx.tests.voice.test_relay import INSIDE, OUTSIDE, PHONE, PROVIDER, Tone, free_range


class RtpMarkTests(unittest.TestCase):

    def receiver(self, host="127.0.0.1"):
        r = TosReceiver(host)
        self.addCleanup(r.close)
        return r

    @defer.inlineCallbacks
    def test_a_call_endpoint_sends_ef(self):
        phone = self.receiver()
        endpoint = RtpEndpoint(task.Clock(), 0)
        port = reactor.listenUDP(0, endpoint, interface="127.0.0.1")
        self.assertEqual(marked(port.socket), 0xB8)
        endpoint.set_remote(*phone.address)
        endpoint.source = lambda: b"\xff" * 160
        endpoint.start_sending()
        self.addCleanup(endpoint.stop)      # closes the port too
        [(packet, tos)] = yield phone.wait(1)
        self.assertEqual(RtpPacket.parse(packet).payload, b"\xff" * 160)
        self.assertEqual(tos, 0xB8)

    @defer.inlineCallbacks
    def test_the_relay_forwards_and_holds_with_ef(self):
        clock = task.Clock()
        session = RelaySession(reactor, INSIDE, OUTSIDE, free_range(), clock=clock,
                               allocator=PortAllocator())
        self.addCleanup(session.close)
        self.assertEqual([marked(leg.sock) for leg in (session.inside, session.outside)],
                         [0xB8, 0xB8])
        phone, provider = self.receiver(PHONE), self.receiver(PROVIDER)
        session.expect_inside(*phone.address)
        session.expect_outside(*provider.address)
        phone.sock.sendto(RtpPacket(0, 1, 160, 7, b"\x55" * 160).to_bytes(),
                          (INSIDE, session.inside_port))
        [(_, tos)] = yield provider.wait(1)
        self.assertEqual(tos, 0xB8)
        session.hold("inside", Tone())
        clock.advance(0.02)
        received = yield phone.wait(1)
        self.assertEqual({tos for _, tos in received}, {0xB8})
