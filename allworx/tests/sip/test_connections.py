"""
Tests of the SIP service's streams: RFC 5626 CRLF keep-alives on TCP and
TLS, the TLS listener on `[sip] tls_port`, and the connections the service
opens itself (a trunk over TCP or TLS), one per peer and made again on demand.
"""

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from allworx.protocols.sip import service as sip
from allworx.protocols.sip.core import Destination
from allworx.tests.siphelpers import FakeMailStore, Harness, Phone, UdpMemoryReactor, office

PROVIDER = "198.51.100.20"

TRUNK = """
[trunk provider]
registrar = sip.provider.example
username = office
secret = trunk-secret
transport = tls
numbers = +15551230000
"""


def addr(host, port):
    return type("A", (), {"host": host, "port": port})()


class KeepAliveFramingTests(unittest.TestCase):

    def setUp(self):
        h = Harness(self.mktemp())
        self.seen = []
        h.core.receive = lambda data, dest: self.seen.append((data, dest.transport))
        self.factory = sip.SipStreamFactory(h.core, transport="TLS")
        self.proto = self.factory.buildProtocol(addr("198.51.100.40", 5555))
        self.tr = StringTransport(peerAddress=addr("198.51.100.40", 5555))
        self.proto.makeConnection(self.tr)
        self.msg = Phone(h, "101", "198.51.100.40").request("OPTIONS", "sip:example.com")

    def test_a_double_crlf_ping_gets_one_crlf_pong(self):
        self.proto.dataReceived(b"\r\n\r\n")
        self.assertEqual(self.tr.value(), b"\r\n")
        self.proto.dataReceived(b"\r\n\r\n\r\n\r\n" + self.msg)
        self.assertEqual(self.tr.value(), b"\r\n\r\n\r\n")
        self.assertEqual(self.seen, [(self.msg, "TLS")])

    def test_a_ping_split_across_reads_is_answered_once(self):
        self.proto.dataReceived(b"\r\n")
        self.proto.dataReceived(b"\r")
        self.assertEqual(self.tr.value(), b"")
        self.proto.dataReceived(b"\n" + self.msg)
        self.assertEqual(self.tr.value(), b"\r\n")
        self.assertEqual(self.seen, [(self.msg, "TLS")])

    def test_a_lone_pong_is_dropped(self):
        self.proto.dataReceived(b"\r\n" + self.msg)
        self.assertEqual(self.tr.value(), b"")
        self.assertEqual(self.seen, [(self.msg, "TLS")])


class ServiceStreamTests(unittest.TestCase):

    def start(self, extra="", tls=True):
        o = office(self.mktemp(), extra)
        reactor = UdpMemoryReactor()
        options = object() if tls else None
        svc = sip.SipService(o, FakeMailStore(o), reactor, tls_options=lambda: options)
        svc.core.ua.prompts.spoken = True
        svc.startService()
        self.addCleanup(svc.stopService)
        return o, reactor, svc

    def test_tls_listens_on_tls_port_with_the_server_certificate(self):
        o, reactor, svc = self.start()
        [(port, factory, options, _, _)] = reactor.sslServers
        self.assertEqual(port, 5061)
        self.assertIs(factory, svc.tls_factory)
        o.update_settings("sip", {"tls_port": "5071"})
        self.assertEqual([s[0] for s in reactor.sslServers], [5061, 5071])

    def test_without_a_certificate_tls_does_not_listen(self):
        o, reactor, svc = self.start(tls=False)
        self.assertEqual(reactor.sslServers, [])
        self.assertEqual(o.status["sip"].state, "up")

    def test_a_tls_phone_is_answered_on_its_connection(self):
        o, reactor, svc = self.start()
        tr = StringTransport(peerAddress=addr("192.168.2.11", 5555))
        proto = svc.tls_factory.buildProtocol(addr("192.168.2.11", 5555))
        proto.makeConnection(tr)
        data = Phone(None, "101", "192.168.2.11", 5555).request("OPTIONS", "sip:example.com")
        proto.dataReceived(data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"))
        self.assertTrue(tr.value().startswith(b"SIP/2.0 200"), tr.value())

    def provider(self, svc):
        trunk = svc.office.config.trunks["provider"]
        svc.trunks.is_provider = lambda host: trunk if host == PROVIDER else None
        return trunk

    def test_a_trunk_over_tls_opens_one_connection_and_reads_it(self):
        o, reactor, svc = self.start(TRUNK)
        self.provider(svc)
        dest = Destination("TLS", PROVIDER, 5061)
        svc.core.send_raw(b"REGISTER one", dest)
        svc.core.send_raw(b"REGISTER two", dest)
        [(host, port, factory, options, timeout, _)] = reactor.sslClients
        self.assertEqual((host, port), (PROVIDER, 5061))
        self.assertIn("sip.provider.example", repr(options._hostnameASCII))
        # Connected: what waited goes out, what comes back reaches the core as TLS.
        seen = []
        svc.core.receive = lambda data, d: seen.append((data, d.transport, d.host, d.port))
        proto = factory.buildProtocol(addr(PROVIDER, 5061))
        tr = StringTransport(peerAddress=addr(PROVIDER, 5061))
        proto.makeConnection(tr)
        self.assertEqual(tr.value(), b"REGISTER oneREGISTER two")
        reply = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        proto.dataReceived(reply)
        self.assertEqual(seen, [(reply, "TLS", PROVIDER, 5061)])
        # Later messages use it; none more is opened.
        svc.core.send_raw(b"INVITE", dest)
        self.assertTrue(tr.value().endswith(b"INVITE"))
        self.assertEqual(len(reactor.sslClients), 1)
        # Lost: the next message connects again.
        proto.connectionLost(Failure(Exception("gone")))
        svc.core.send_raw(b"again", dest)
        self.assertEqual(len(reactor.sslClients), 2)

    def test_a_failed_connection_drops_what_waited_and_tries_again_later(self):
        o, reactor, svc = self.start(TRUNK)
        self.provider(svc)
        dest = Destination("TCP", PROVIDER, 5060)
        svc.core.send_raw(b"OPTIONS", dest)
        [(_, _, factory, _, _)] = reactor.tcpClients
        factory.clientConnectionFailed(None, Failure(Exception("refused")))
        self.assertEqual(factory.pending, [])
        svc.core.send_raw(b"OPTIONS", dest)
        self.assertEqual(len(reactor.tcpClients), 2)

    def test_no_connection_is_opened_to_strangers(self):
        o, reactor, svc = self.start(TRUNK)
        self.provider(svc)
        svc.core.send_raw(b"x", Destination("TCP", "198.51.100.99", 5060))
        svc.core.send_raw(b"x", Destination("TLS", "192.168.2.11", 5061))   # a LAN phone: no TLS out
        self.assertEqual((reactor.tcpClients, reactor.sslClients), ([], []))
        svc.core.send_raw(b"x", Destination("TCP", "192.168.2.11", 5060))   # a LAN phone over TCP
        self.assertEqual(len(reactor.tcpClients), 1)
