# -*- test-case-name: allworx.tests.web.test_service -*-
"""
The "web" child service: the admin pages, API and `/metrics` on `[web]
admin_port` for LAN peers only, over HTTPS with the server's certificate
(plain HTTP there is redirected to https://), the intranet/public sites on
`[web] http_port`, and the intranet over HTTPS on 443 for LAN peers. Changing either port in the config makes it listen again at once.
What the pages show of the other services comes in as an
`allworx.interfaces.Views`.
"""

from twisted.internet import threads
from twisted.logger import Logger
from twisted.web import server

from allworx.servicebase import ListeningService
from allworx.protocols.web.admin import AdminContext, AdminRoot
from allworx.protocols.web.api import OfficeApi
from allworx.protocols.web.webauth import AdminOnly
from allworx.protocols.web.metrics import WEB_REFUSED, WEB_REQUESTS, MetricsPage, office_registry
from allworx.guards import PeerConnectionLimit, PeerLimit
from allworx.protocols.web.sites import SiteBySide, ensure_site_dirs
from allworx.protocols.web.vpnsites import VpnCollector
from allworx.protocols.web import sitesapi  # noqa: F401 (adds the sites' and devices' routes)
from allworx.protocols.web import statsapi  # noqa: F401 (adds the statistics' routes)
from allworx.protocols.web import diagnosticsapi  # noqa: F401 (adds /api/v1/diagnostics/{kind})
from allworx.protocols.web import logsapi  # noqa: F401 (adds GET /api/v1/logs)
from allworx.protocols.web import phonesapi  # noqa: F401 (adds /api/v1/phones, SPEC 19)
from allworx.protocols.web import backupweb  # (adds the backup and history routes)
from allworx.protocols.web.tlsport import HttpsLimit, RedirectToHttps, TlsOrRedirect

log = Logger()

# Simultaneous connections one peer may hold on the web ports, and all may.
MAX_CONNECTIONS_PER_PEER = 64
MAX_CONNECTIONS = 1024
HTTPS_PORT = 443        # the intranet over HTTPS (LAN peers)
# What a connection beyond them is told before it is closed.
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nConnection: close\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 32\r\n\r\ntoo many connections, try later\n")


# Connections the kernel may queue before the reactor accepts them (nginx's
# default on Linux). Twisted's default, 50, overflowed under a burst of
# clients: the kernel then drops their SYNs, and they wait 1, 3, 7 s... to retry.
LISTEN_BACKLOG = 511

RFC6585_REASONS = {428: b"Precondition Required", 429: b"Too Many Requests",
                   431: b"Request Header Fields Too Large",
                   511: b"Network Authentication Required"}


class BoundedRequest(server.Request):
    """
    A request whose body may not exceed the site's `max_body` bytes: a larger
    one (by Content-Length, or counted as chunks arrive) is answered 413 and
    the connection closed, before anything is buffered or rendered.
    """

    too_large = False
    _limit = None

    def setResponseCode(self, code, message=None):
        # twisted.web has no words for RFC 6585's codes: "429 Unknown Status" otherwise.
        server.Request.setResponseCode(self, code, message or RFC6585_REASONS.get(code))

    def _refuse_body(self, status=b"413 Request Entity Too Large", why=b"request body too large"):
        self.too_large = True
        WEB_REQUESTS.labels(self.channel.site.label, "%sxx" % status[:1].decode()).inc()
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n"
                        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(why) + why)
        transport.loseConnection()

    def gotLength(self, length):
        self._received = 0
        # A route that takes a large body (a backup to restore) names its own
        # limit and the file the body goes to (under data_dir, not /tmp).
        large = self.channel.site.large_bodies.get(
            (getattr(self.channel, "_command", None), getattr(self.channel, "_path", None)))
        self._limit = large[0] if large is not None else self.channel.site.max_body
        if length is not None and length > self._limit:
            server.Request.gotLength(self, 0)
            self._refuse_body()
            return
        if large is None:
            server.Request.gotLength(self, length)
            return
        try:
            self.content = large[1](length)
        except Exception as e:
            server.Request.gotLength(self, 0)
            self._refuse_body(b"507 Insufficient Storage", str(e).encode("utf-8", "replace"))

    def handleContentChunk(self, data):
        if self.too_large:
            return
        self._received += len(data)
        if self._received > (self._limit or self.channel.site.max_body):
            self._refuse_body()
            return
        server.Request.handleContentChunk(self, data)

    def process(self):
        if self.too_large:
            return  # already answered; the connection is closing
        server.Request.process(self)


class CountingSite(server.Site):
    """
    A twisted.web Site that counts its answers, bounds request bodies to
    `max_body`, and, if `lan_only`, refuses connections from WAN peers.
    """

    requestFactory = BoundedRequest

    def __init__(self, resource, office, label, lan_only, max_body=64 * 1024, **kw):
        server.Site.__init__(self, resource, **kw)
        self.displayTracebacks = False  # a failure is logged, never shown to the client
        self.office = office
        self.label = label
        self.lan_only = lan_only
        self.max_body = max_body
        # (method, path) -> (most bytes, callable(length) -> a file for the body)
        self.large_bodies = {}

    def refuses(self, addr):
        """Whether a connection from `addr` is refused (a WAN peer on a LAN-only site); logged."""
        host = getattr(addr, "host", None)
        if self.lan_only and not self.office.is_lan_peer(host):
            WEB_REFUSED.labels(self.label).inc()
            log.info("web: {site} refused a connection from {peer} (not on the LAN)",
                     site=self.label, peer=host)
            return True
        return False

    def buildProtocol(self, addr):
        if self.refuses(addr):
            return None
        return server.Site.buildProtocol(self, addr)

    def log(self, request):
        WEB_REQUESTS.labels(self.label, "%dxx" % (request.code // 100)).inc()


def admin_resource(office, clock, defer_to_thread=threads.deferToThread, views=None,
                   throttle=None):
    """The admin port's resource tree (pages, /api, /metrics) and its context."""
    ctx = AdminContext(office, clock, defer_to_thread, views=views, throttle=throttle)
    api = OfficeApi(ctx).resource()
    registry = office_registry(office, ctx.views)
    tunnel = VpnCollector(office, ctx.views, clock)
    registry.register(tunnel)
    metrics = AdminOnly(ctx, MetricsPage(registry, prepare=tunnel.refresh))
    return AdminRoot(ctx, api=api, metrics=metrics), ctx


class WebService(ListeningService):
    """
    Listens on the admin and web ports and follows their changes live. The
    guards (a LoginThrottle for the admin login, a PeerLimit for both ports:
    each peer's share and a cap in all, beyond which a 503 is the answer)
    may be given, to share them with other services.
    """

    def __init__(self, office, views=None, reactor=None, defer_to_thread=threads.deferToThread,
                 throttle=None, peer_limit=None, certificates=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        ListeningService.__init__(self, "web", office)
        self.peers = peer_limit if peer_limit is not None else PeerLimit(
            MAX_CONNECTIONS_PER_PEER, cap=MAX_CONNECTIONS)
        root, self.ctx = admin_resource(office, reactor, defer_to_thread, views, throttle)
        # A restore uploads a whole tap.conf: the admin port takes up to 2 MB.
        self.admin_site = CountingSite(root, office, "admin", lan_only=True,
                                       max_body=2 * 1024 * 1024, reactor=reactor)
        if self.ctx.views.backup is not None:
            self.admin_site.large_bodies.update(backupweb.large_bodies(self.ctx.views.backup))
        # The server's certificate (an allworx.certificates keeper), if any.
        self.tls_options = certificates.current if certificates is not None else (lambda: None)
        sites = SiteBySide(office, certificates.ca_pem if certificates is not None else None,
                           certificates.answer if certificates is not None else None)
        self.public_site = CountingSite(sites, office, "sites", lan_only=False, reactor=reactor)
        self.intranet_site = CountingSite(sites, office, "sites", lan_only=True, reactor=reactor)
        redirect = RedirectToHttps(lambda: office.config.web.admin_port,
                                   lambda: str(office.config.lan_ip))
        self.redirect_site = CountingSite(redirect, office, "admin", lan_only=True,
                                          reactor=reactor)

    def bound_settings(self, config):
        return (config.web.admin_port, config.web.http_port, self.tls_options() is not None)

    def build_listeners(self, config):
        try:
            ensure_site_dirs(config)
        except OSError as e:
            log.warn("web: cannot create the site directories: {why}", why=e)
        admin, http = config.web.admin_port, config.web.http_port
        admin_factory = PeerConnectionLimit(self.admin_site, self.peers, "web admin", BUSY)
        sites_factory = PeerConnectionLimit(self.public_site, self.peers, "web sites", BUSY)
        options = self.tls_options()
        if options is not None:
            # HTTPS, and a redirect to it for plain HTTP, on the one port.
            admin_factory = TlsOrRedirect(
                HttpsLimit(self.admin_site, self.peers, "web admin", BUSY), PeerConnectionLimit(self.redirect_site, self.peers, "web admin",
                                                   BUSY), self.tls_options, self.reactor,
                refuses=self.admin_site.refuses)
        out = [
            ("admin pages on tcp/%d%s" % (admin, " (https)" if options else ""), admin,
             lambda: self.reactor.listenTCP(admin, admin_factory, LISTEN_BACKLOG, interface="")),
            ("web sites on tcp/%d" % http, http,
             lambda: self.reactor.listenTCP(http, sites_factory, LISTEN_BACKLOG, interface="")),
        ]
        if options is not None:
            https_factory = HttpsLimit(self.intranet_site, self.peers, "web sites", BUSY)
            out.append(("intranet on https/%d" % HTTPS_PORT, HTTPS_PORT,
                        lambda: self.reactor.listenSSL(HTTPS_PORT, https_factory, options,
                                                       LISTEN_BACKLOG, interface="")))
        return out
