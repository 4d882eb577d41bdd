"""
The web service's TLS (SPEC 17): the admin port speaks HTTPS with the
server's certificate and redirects plain HTTP to it; the intranet on 443;
/ca.crt on the sites.
"""

import time

from twisted.internet import defer, endpoints, protocol, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from allworx.certificates import CertificateKeeper
from allworx.protocols.web.service import WebService
from allworx.protocols.web.tlsport import FIRST_BYTE_TIMEOUT
from allworx.tests.webhelpers import office_on_disk, sync_thread

LAN_PEER = IPv4Address("TCP", "192.168.2.200", 40000)
WAN_PEER = IPv4Address("TCP", "198.51.100.10", 40000)


@implementer(IHandshakeListener)
class HttpsClient(protocol.Protocol):
    """Sends one request once TLS is up; keeps what comes back and the server's certificate."""

    def __init__(self, request):
        self.request = request
        self.peer = None
        self.received = b""
        self.closed = defer.Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)

    def connectionMade(self):
        self.transport.write(self.request)      # sent once the handshake is done

    def handshakeCompleted(self):
        self.peer = self.transport.getPeerCertificate().to_cryptography()

    def dataReceived(self, data):
        self.received += data


class WebTlsTests(unittest.TestCase):

    def setUp(self):
        self.office = office_on_disk(self)
        clock = Clock()
        clock.advance(time.time())
        self.keeper = CertificateKeeper(lambda: self.office.config, clock)
        self.keeper.start()
        self.addCleanup(self.keeper.stop)
        self.reactor = MemoryReactorClock()
        self.svc = WebService(self.office, reactor=self.reactor, defer_to_thread=sync_thread,
                              certificates=self.keeper)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def admin_factory(self):
        return {p[0]: p[1] for p in self.reactor.tcpServers}[8080]

    def plain(self, factory, peer, request):
        proto = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer,
                                    hostAddress=IPv4Address("TCP", "192.168.2.254", 8080))
        proto.makeConnection(transport)
        proto.dataReceived(request)
        return transport.value()

    @defer.inlineCallbacks
    def https(self, factory, request):
        """
        `request` over TLS to `factory` listening on loopback (a LAN peer),
        verified against the server's CA: the client, once the server closed.
        """
        from twisted.internet import reactor
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        ca = ssl.Certificate.loadPEM(self.keeper.ca_pem())
        # offering ALPN as curl and browsers do (the handshake fails without a common protocol)
        options = ssl.optionsForClientTLS(self.keeper.leaf.names[0], trustRoot=ca,
                                          acceptableProtocols=[b"h2", b"http/1.1"])
        client = HttpsClient(request)
        endpoint = endpoints.SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, options)
        yield endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        yield client.closed
        return client

    @defer.inlineCallbacks
    def test_intranet_over_https(self):
        factory = [p[1] for p in self.reactor.sslServers if p[0] == 443][0]
        from twisted.protocols.tls import TLSMemoryBIOFactory
        client = yield self.https(TLSMemoryBIOFactory(self.keeper.current(), False, factory),
                                  b"GET /ca.crt HTTP/1.1\r\nHost: corp.example.com\r\n"
                                  b"Connection: close\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200"), client.received[:300])
        self.assertTrue(client.received.endswith(self.keeper.ca_pem()))

    def test_ports(self):
        self.assertEqual(sorted(p[0] for p in self.reactor.tcpServers), [80, 8080])
        self.assertEqual([p[0] for p in self.reactor.sslServers], [443])
        self.assertIs(self.reactor.sslServers[0][2], self.keeper.current())
        self.assertIn("admin pages on tcp/8080 (https)", self.office.status["web"].detail)
        self.assertIn("intranet on https/443", self.office.status["web"].detail)

    def test_plain_http_on_the_admin_port_redirects(self):
        out = self.plain(self.admin_factory(), LAN_PEER,
                         b"GET /users?x=1 HTTP/1.1\r\nHost: 192.168.2.254:8080\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 301"), out)
        self.assertIn(b"\r\nLocation: https://192.168.2.254:8080/users?x=1\r\n", out)

    def test_redirect_without_a_usable_host(self):
        out = self.plain(self.admin_factory(), LAN_PEER,
                         b"GET / HTTP/1.1\r\nHost: evil/\"><x\r\n\r\n")
        self.assertIn(b"\r\nLocation: https://192.168.2.254:8080/\r\n", out)

    def test_wan_peer_refused_before_a_byte(self):
        self.assertIsNone(self.admin_factory().buildProtocol(WAN_PEER))

    def test_silent_connection_closed(self):
        proto = self.admin_factory().buildProtocol(LAN_PEER)
        transport = StringTransport(peerAddress=LAN_PEER)
        proto.makeConnection(transport)
        self.reactor.advance(FIRST_BYTE_TIMEOUT + 1)
        self.assertTrue(transport.disconnecting)

    @defer.inlineCallbacks
    def test_https_on_the_admin_port(self):
        client = yield self.https(self.admin_factory(), b"GET /login HTTP/1.1\r\n"
                                  b"Host: 192.168.2.254:8080\r\nConnection: close\r\n\r\n")
        self.assertEqual(client.peer.serial_number, self.keeper.leaf.cert.serial_number)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 200"), client.received[:300])

    @defer.inlineCallbacks
    def test_admin_port_serves_the_renewed_certificate(self):
        factory = self.admin_factory()
        first = self.keeper.leaf.cert.serial_number
        self.keeper.renew()
        client = yield self.https(factory, b"GET /login HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
        self.assertNotEqual(client.peer.serial_number, first)
        self.assertEqual(client.peer.serial_number, self.keeper.leaf.cert.serial_number)

    def test_ca_certificate_on_the_sites(self):
        out = self.plain(self.svc.public_site, LAN_PEER,
                         b"GET /ca.crt HTTP/1.1\r\nHost: corp.example.com\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        self.assertTrue(out.endswith(self.keeper.ca_pem()))
        self.assertIn(b"application/x-x509-ca-cert", out)

    def test_intranet_page_links_the_ca(self):
        out = self.plain(self.svc.public_site, LAN_PEER,
                         b"GET / HTTP/1.1\r\nHost: corp.example.com\r\n\r\n")
        domain = self.office.config.system.domain.encode()
        self.assertIn(b'href="http://corp.' + domain + b'/ca.crt"', out)
        for system in (b"Windows", b"macOS", b"iOS", b"Android", b"Firefox"):
            self.assertIn(system, out)

    def test_intranet_over_https_lan_only(self):
        self.assertIsNone(self.svc.intranet_site.buildProtocol(WAN_PEER))
        self.assertIsNotNone(self.svc.intranet_site.buildProtocol(LAN_PEER))


class WithoutCertificateTests(unittest.TestCase):

    def test_plain_admin_port_as_before(self):
        office = office_on_disk(self)
        reactor = MemoryReactorClock()
        svc = WebService(office, reactor=reactor, defer_to_thread=sync_thread)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(reactor.sslServers, [])
        factory = {p[0]: p[1] for p in reactor.tcpServers}[8080]
        self.assertIsNotNone(factory.buildProtocol(LAN_PEER))
