"""
Tests of allworx.dscp: the marks on a plain socket, a Twisted port (the
packets arrive with the mark), a listening TCP port (accepted connections
inherit it) and an outgoing connector (marked before it connects).
"""

import socket

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from allworx import dscp
from allworx.tests.dscphelpers import TosReceiver


class Accepting(protocol.ServerFactory):
    """Fires `accepted` with the server side's socket of the first connection."""

    def __init__(self):
        self.accepted = defer.Deferred()

    def buildProtocol(self, addr):
        factory = self

        class Side(protocol.Protocol):
            def connectionMade(self):
                if not factory.accepted.called:
                    factory.accepted.callback(self.transport.getHandle())
        return Side()


class MarkTests(unittest.TestCase):

    def udp(self, family=socket.AF_INET):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        return sock

    def test_values_are_ef_and_cs3(self):
        self.assertEqual((dscp.EF, dscp.CS3), (0xB8, 0x60))

    def test_a_socket_gets_the_mark_of_its_kind(self):
        rtp, sip = self.udp(), self.udp()
        self.assertIs(dscp.mark(rtp, dscp.RTP), rtp)
        dscp.mark(sip, dscp.SIP)
        self.assertEqual(dscp.marked(rtp), 0xB8)
        self.assertEqual(dscp.marked(sip), 0x60)

    def test_an_ipv6_socket_gets_the_traffic_class(self):
        try:
            sock = self.udp(socket.AF_INET6)
        except OSError as e:
            self.fail("no IPv6 sockets here: %s" % (e,))
        dscp.mark(sock, dscp.RTP)
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, dscp.IPV6_TCLASS), 0xB8)

    def test_something_without_a_socket_is_left_alone(self):
        fake = object()
        self.assertIs(dscp.mark(fake, dscp.SIP), fake)
        self.assertIsNone(dscp.socket_of(type("Port", (), {"socket": None})()))

    def test_a_socket_that_refuses_is_used_unmarked(self):
        sock = self.udp()
        sock.close()
        self.assertIs(dscp.mark(sock, dscp.SIP), sock)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    @defer.inlineCallbacks
    def test_a_twisted_udp_port_sends_marked_packets(self):
        receiver = TosReceiver()
        self.addCleanup(receiver.close)
        port = dscp.mark(reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1"),
                         dscp.RTP)
        self.addCleanup(port.stopListening)
        port.write(b"voice", receiver.address)
        received = yield receiver.wait(1)
        self.assertEqual(received, [(b"voice", 0xB8)])

    @defer.inlineCallbacks
    def test_connections_accepted_by_a_marked_listener_inherit_the_mark(self):
        factory = Accepting()
        port = dscp.mark(reactor.listenTCP(0, factory, interface="127.0.0.1"), dscp.SIP)
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        accepted = yield factory.accepted
        self.assertEqual(dscp.marked(accepted), 0x60)
        self.assertEqual(dscp.marked(client), 0)

    @defer.inlineCallbacks
    def test_a_connector_is_marked_before_it_connects(self):
        factory = Accepting()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        connector = dscp.mark(reactor.connectTCP("127.0.0.1", port.getHost().port,
                                                 protocol.ClientFactory.forProtocol(
                                                     protocol.Protocol)), dscp.SIP)
        self.addCleanup(connector.disconnect)
        self.assertEqual(dscp.marked(connector.transport.socket), 0x60)
        accepted = yield factory.accepted
        self.assertEqual(dscp.marked(accepted), 0)
