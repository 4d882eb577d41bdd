# -*- test-case-name: allworx.tests.provisioning.test_http -*-
"""
The phones' files over HTTP (and HTTPS on the next port): `GET /NAME` for a
name of the set, answered from `files.Provisioner` (200, 403, 404; 429 when
an address asks too often). No listing, no sub-paths, no other method; only
LAN peers are served (the socket is on the LAN address as well).
"""

from twisted.web import resource, server

from allworx.guards import PeerConnectionLimit, PeerLimit

MAX_CONNECTIONS_PER_PEER = 8
MAX_CONNECTIONS = 128
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nConnection: close\r\n"
        b"Content-Length: 0\r\n\r\n")


class ProvisioningRoot(resource.Resource):
    """`/NAME`: one file of the set; everything else 404 (or 405 for a method)."""

    isLeaf = True

    def __init__(self, provisioner, via="http"):
        resource.Resource.__init__(self)
        self.provisioner = provisioner
        self.via = via

    def render(self, request):
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._error(request, 405, "only GET and HEAD")
        host = request.getClientAddress().host
        if not self.provisioner.allow(host):
            request.setHeader(b"retry-after", b"5")
            return self._error(request, 429, "too many requests from this address")
        path = request.path.decode("utf-8", "replace")
        name = path[1:] if path.startswith("/") else path
        if "/" in name or not name:
            return self._error(request, 404, "no such file")
        agent = request.getHeader(b"user-agent")
        answer = self.provisioner.fetch(name, host, agent.decode("utf-8", "replace")
                                        if agent else None, via=self.via)
        if answer.code != 200:
            return self._error(request, answer.code, answer.why)
        request.setHeader(b"content-type", answer.content_type.encode("ascii"))
        return answer.body

    def _error(self, request, code, why):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (why + "\n").encode("utf-8")


class ProvisioningSite(server.Site):
    """The site: connections only from LAN peers (`is_lan(host)`), no tracebacks shown."""

    def __init__(self, root, is_lan, **kw):
        server.Site.__init__(self, root, **kw)
        self.displayTracebacks = False
        self.is_lan = is_lan

    def buildProtocol(self, addr):
        if not self.is_lan(getattr(addr, "host", None)):
            return None
        return server.Site.buildProtocol(self, addr)


def limited(site, peers=None, label="provisioning"):
    """`site` behind each peer's share of connections and a cap in all."""
    peers = peers if peers is not None else PeerLimit(MAX_CONNECTIONS_PER_PEER,
                                                      cap=MAX_CONNECTIONS)
    return PeerConnectionLimit(site, peers, label, BUSY)
