"""
The SIP service's sockets carry CS3 (allworx.dscp): UDP (an answer arrives
marked), TCP and TLS listeners and the connections they accept, and the
connections it opens. Real sockets on loopback: the service's reactor
listens and connects for real, on ports the kernel picks.
"""

from twisted.internet import defer, protocol, reactor, ssl
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.dscp import marked
from allworx.protocols.sip import service as sip
from allworx.protocols.sip.core import Destination
from allworx.tests.dscphelpers import TosReceiver
from allworx.tests.siphelpers import FakeMailStore, Phone, office


class LoopbackPorts(MemoryReactorClock):
    """A clock whose listen and connect calls open real sockets on 127.0.0.1 (any port)."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.opened = []

    def _keep(self, port):
        self.opened.append(port)
        return port

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        return self._keep(reactor.listenUDP(0, protocol, interface="127.0.0.1"))

    def listenTCP(self, port, factory, backlog=50, interface=""):
        return self._keep(reactor.listenTCP(0, factory, interface="127.0.0.1"))

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=""):
        return self._keep(reactor.listenSSL(0, factory, contextFactory, interface="127.0.0.1"))

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        return reactor.connectTCP(host, port, factory, timeout=timeout)


class SipMarkTests(unittest.TestCase):

    def setUp(self):
        o = office(self.mktemp())
        self.ports = LoopbackPorts()
        self.svc = sip.SipService(o, FakeMailStore(o), self.ports,
                                  tls_options=lambda: ssl.CertificateOptions())
        self.svc.core.ua.prompts.spoken = True
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        self.udp, self.tcp, self.tls = self.ports.opened

    @defer.inlineCallbacks
    def test_answers_over_udp_are_marked_cs3(self):
        self.assertEqual(marked(self.udp.socket), 0x60)
        phone = TosReceiver()
        self.addCleanup(phone.close)
        options = Phone(None, "101", *phone.address).request("OPTIONS", "sip:example.com")
        phone.sock.sendto(options, ("127.0.0.1", self.udp.getHost().port))
        [(answer, tos)] = yield phone.wait(1)
        self.assertTrue(answer.startswith(b"SIP/2.0 200"), answer)
        self.assertEqual(tos, 0x60)

    @defer.inlineCallbacks
    def test_answers_to_a_host_checked_once_go_straight_to_the_socket_still_marked(self):
        phone = TosReceiver()
        self.addCleanup(phone.close)
        for n in range(3):
            options = Phone(None, "101", *phone.address).request("OPTIONS", "sip:example.com")
            phone.sock.sendto(options, ("127.0.0.1", self.udp.getHost().port))
            [(answer, tos)] = yield phone.wait(1)
            self.assertTrue(answer.startswith(b"SIP/2.0 200"), answer)
            self.assertEqual(tos, 0x60)
        self.assertEqual(self.svc.udp_hosts, {"127.0.0.1"})

    def test_a_name_instead_of_an_address_is_refused_every_time(self):
        for n in range(2):
            self.assertRaises(ValueError, self.svc._send_raw, b"x", Destination("UDP", "localhost", 5060))
        self.assertEqual(self.svc.udp_hosts, set())

    def test_tcp_and_tls_listeners_are_marked_cs3(self):
        self.assertEqual(marked(self.tcp.socket), 0x60)
        self.assertEqual(marked(self.tls.socket), 0x60)

    @defer.inlineCallbacks
    def test_an_accepted_tcp_connection_is_marked(self):
        answered = defer.Deferred()

        class TcpPhone(protocol.Protocol):
            def dataReceived(self, data):
                if not answered.called:
                    answered.callback(data)
        client = yield protocol.ClientCreator(reactor, TcpPhone).connectTCP(
            "127.0.0.1", self.tcp.getHost().port)
        self.addCleanup(client.transport.loseConnection)
        host = client.transport.getHost()
        client.transport.write(Phone(None, "101", host.host, host.port).request(
            "OPTIONS", "sip:example.com").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        answer = yield answered
        self.assertTrue(answer.startswith(b"SIP/2.0 200"), answer)
        [stream] = self.svc.tcp_factory.connections.values()
        self.assertEqual(marked(stream.transport.getHandle()), 0x60)
        self.assertEqual(marked(client.transport.getHandle()), 0)

    @defer.inlineCallbacks
    def test_a_connection_the_server_opens_is_marked(self):
        accepted = defer.Deferred()

        class Listening(protocol.Protocol):
            def dataReceived(self, data):
                if not accepted.called:
                    accepted.callback(data)
        listener = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(Listening),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        dest = Destination("TCP", "127.0.0.1", listener.getHost().port)
        self.svc.core.send_raw(b"OPTIONS sip:x SIP/2.0\r\n\r\n", dest)
        data = yield accepted
        self.assertTrue(data.startswith(b"OPTIONS"))
        stream = self.svc.tcp_factory.connections[("127.0.0.1", dest.port)]
        self.addCleanup(stream.transport.loseConnection)
        self.assertEqual(marked(stream.transport.getHandle()), 0x60)
