# -*- test-case-name: allworx.tests.web.test_tlsport -*-
"""
One port for HTTPS and a redirect to it (the admin port, SPEC 17): the first
byte a client sends tells which it speaks. A TLS record starts with 0x16 (a
handshake: the ClientHello); that connection is handed to TLS with the
server's live certificate and then to the admin site. Anything else is
plain HTTP, answered by a small site whose every answer is a redirect to
the same path on https:// at this port.
"""

import re

from twisted.internet import protocol
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource
from zope.interface import implementer

from allworx.guards import PeerConnectionLimit

TLS_HANDSHAKE = 0x16
FIRST_BYTE_TIMEOUT = 30          # a connection that says nothing is closed after this
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")


@implementer(IProtocolNegotiationFactory)
class HttpsLimit(PeerConnectionLimit):
    """
    A PeerConnectionLimit in front of a web site over TLS that answers ALPN
    with HTTP/1.1: a client offering ALPN (curl, browsers) must find a
    protocol in common, or the TLS handshake fails.
    """

    def acceptableProtocols(self):
        return [b"http/1.1"]


class RedirectToHttps(resource.Resource):
    """Every request: 301 to the same path on `https://HOST:PORT` (HOST from the request)."""

    isLeaf = True

    def __init__(self, port, fallback_host):
        resource.Resource.__init__(self)
        self.port = port                    # callable: the port of the moment
        self.fallback_host = fallback_host  # callable: the host when the request names none

    def render(self, request):
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        m = _HOST.match(host)
        name = m.group(1) if m else self.fallback_host()
        port = self.port()
        path = request.uri.decode("latin-1") if request.uri[:1] == b"/" else "/"
        url = "https://%s%s%s" % (name, "" if port == 443 else ":%d" % port, path)
        request.setResponseCode(301)
        request.setHeader(b"location", url.encode("latin-1"))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"connection", b"close")
        return ("this port speaks HTTPS: %s\n" % url).encode("latin-1")


class _Sniff(protocol.Protocol):
    """Waits for the first byte, then hands the connection (and that byte) on."""

    def __init__(self, factory, addr):
        self.factory = factory
        self.addr = addr
        self.inner = None
        self.timeout = None

    def connectionMade(self):
        self.timeout = self.factory.reactor.callLater(
            FIRST_BYTE_TIMEOUT, self.transport.loseConnection)

    def dataReceived(self, data):
        if self.inner is None:
            if self.timeout is not None and self.timeout.active():
                self.timeout.cancel()
            self.inner = self.factory.inner_for(data[0] == TLS_HANDSHAKE, self.addr)
            if self.inner is None:
                self.transport.loseConnection()
                return
            self.inner.makeConnection(self.transport)
        self.inner.dataReceived(data)

    def connectionLost(self, reason):
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        if self.inner is not None:
            self.inner.connectionLost(reason)


class TlsOrRedirect(protocol.ServerFactory):
    """
    Listens for both: `secure` (a factory, e.g. the admin site behind its
    limits) gets TLS connections under `tls_options()`, `plain` (the redirect
    site) the others. Without a certificate (tls_options() is None) every
    connection goes to `secure` in plain HTTP, as before there were certificates.
    """

    def __init__(self, secure, plain, tls_options, reactor, refuses=lambda addr: False):
        self.refuses = refuses      # refused at once, before a byte is read (WAN peers)
        self.secure = secure
        self.plain = plain
        self.tls_options = tls_options
        self.reactor = reactor

    def buildProtocol(self, addr):
        if self.tls_options() is None:
            return self.secure.buildProtocol(addr)
        if self.refuses(addr):
            return None
        return _Sniff(self, addr)

    def inner_for(self, tls, addr):
        """The protocol that takes the connection: TLS-wrapped `secure`, or `plain`."""
        if not tls:
            return self.plain.buildProtocol(addr)
        app = self.secure.buildProtocol(addr)
        if app is None:
            return None
        wrapper = TLSMemoryBIOFactory(self.tls_options(), False, self.secure)
        return wrapper.protocol(wrapper, app)
