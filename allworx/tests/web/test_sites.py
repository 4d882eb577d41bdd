# -*- test-case-name: allworx.tests.web.test_sites -*-
"""
The intranet and public sites: chosen by the peer's side, static files with
content types and conditional GET, default pages, and no way out of the site
directory.
"""

import os

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web import server
from twisted.web.http_headers import Headers

from allworx.tests.webhelpers import office_on_disk
from allworx.protocols.web import sites
LAN_PEER, WAN_PEER = "192.168.2.10", "198.51.100.10"


class SiteCase(unittest.TestCase):
    def setUp(self):
        self.office = office_on_disk(self)
        self.intranet, self.www = sites.site_dirs(self.office.config)
        sites.ensure_site_dirs(self.office.config)
        self.secret = os.path.join(self.office.config.system.data_dir, "secret.txt")
        with open(self.secret, "w") as f:
            f.write("private")

    def write(self, site_dir, name, data):
        path = os.path.join(site_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def get(self, path, peer=LAN_PEER, headers=None):
        """Send the request line exactly as given (no client-side clean-up of `..`)."""
        return raw_get(sites.SiteBySide(self.office), path, peer, headers)


class Response:
    """What raw_get read back: code, headers (like treq's), body."""

    def __init__(self, code, headers):
        self.code = code
        self.headers = Headers()
        for name, value in headers:
            self.headers.addRawHeader(name, value)


@defer.inlineCallbacks
def raw_get(resource, path, peer, headers=None):
    """
    GET over twisted.web's real HTTP channel on a StringTransport. static.File
    sends with a pull producer that twisted.web drives through the global
    cooperator, so this waits a few reactor turns (no network involved).
    """
    site = server.Site(resource)
    addr = IPv4Address("TCP", peer, 40000)
    proto = site.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "192.168.2.254", 80))
    proto.makeConnection(transport)
    lines = ["GET %s HTTP/1.1" % path, "Host: corp.example.com", "Connection: close"]
    for name, values in (headers or {}).items():
        lines.extend("%s: %s" % (name, v) for v in values)
    proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    for _ in range(1000):
        if transport.disconnecting:
            break
        yield task.deferLater(reactor, 0, lambda: None)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    code = int(status.split()[1])
    parsed = [tuple(h.split(": ", 1)) for h in header_lines]
    proto.connectionLost(None)
    return Response(code, parsed), body


class SideTests(SiteCase):
    @defer.inlineCallbacks
    def test_lan_sees_intranet_wan_sees_www(self):
        self.write(self.intranet, "index.html", b"<h1>intranet</h1>")
        self.write(self.www, "index.html", b"<h1>public</h1>")
        self.assertEqual((yield self.get("/", LAN_PEER))[1], b"<h1>intranet</h1>")
        self.assertEqual((yield self.get("/", WAN_PEER))[1], b"<h1>public</h1>")
        self.assertEqual((yield self.get("/", "127.0.0.1"))[1], b"<h1>intranet</h1>")

    @defer.inlineCallbacks
    def test_intranet_files_never_reach_the_wan(self):
        self.write(self.intranet, "plans.txt", b"office plans")
        self.assertEqual((yield self.get("/plans.txt", LAN_PEER))[0].code, 200)
        self.assertEqual((yield self.get("/plans.txt", WAN_PEER))[0].code, 404)

    @defer.inlineCallbacks
    def test_default_pages(self):
        r, body = (yield self.get("/", LAN_PEER))
        self.assertEqual(r.code, 200)
        self.assertIn(b"corp.example.com", body)
        r, body = (yield self.get("/", WAN_PEER))
        self.assertIn(b"www.example.com", body)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])

    @defer.inlineCallbacks
    def test_default_page_without_directory(self):
        os.rmdir(self.www)
        r, body = (yield self.get("/", WAN_PEER))
        self.assertEqual(r.code, 200)
        self.assertIn(b"www.example.com", body)


class FileTests(SiteCase):
    @defer.inlineCallbacks
    def test_content_types(self):
        for name, ctype in (("a.html", "text/html"), ("s.css", "text/css"), ("p.png", "image/png"),
                            ("d.pdf", "application/pdf")):
            self.write(self.www, name, b"x")
            r, _ = (yield self.get("/" + name, WAN_PEER))
            self.assertEqual(r.code, 200, name)
            self.assertTrue(r.headers.getRawHeaders("content-type")[0].startswith(ctype), name)

    @defer.inlineCallbacks
    def test_conditional_get_by_date_and_etag(self):
        self.write(self.www, "page.html", b"hello")
        r, _ = (yield self.get("/page.html", WAN_PEER))
        last_modified = r.headers.getRawHeaders("last-modified")[0]
        etag = r.headers.getRawHeaders("etag")[0]
        r, body = (yield self.get("/page.html", WAN_PEER, {"If-Modified-Since": [last_modified]}))
        self.assertEqual((r.code, body), (304, b""))
        r, body = (yield self.get("/page.html", WAN_PEER, {"If-None-Match": [etag]}))
        self.assertEqual((r.code, body), (304, b""))
        r, body = (yield self.get("/page.html", WAN_PEER, {"If-None-Match": ['"other"']}))
        self.assertEqual((r.code, body), (200, b"hello"))

    @defer.inlineCallbacks
    def test_subdirectory_index_and_no_listing(self):
        self.write(self.www, "docs/index.html", b"docs")
        self.write(self.www, "files/a.txt", b"a")
        self.assertEqual((yield self.get("/docs/", WAN_PEER))[1], b"docs")
        self.assertIn((yield self.get("/docs", WAN_PEER))[0].code, (301, 302))
        self.assertEqual((yield self.get("/files/", WAN_PEER))[0].code, 404)


class TraversalTests(SiteCase):
    @defer.inlineCallbacks
    def test_dot_dot_in_every_spelling(self):
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
                     "/a/../../secret.txt", "/..%5csecret.txt", "/%00", "/.%2e/secret.txt",
                     "/../www/../secret.txt"):
            r, body = (yield self.get(path, WAN_PEER))
            self.assertNotEqual(body, b"private", path)
            self.assertIn(r.code, (400, 404), path)

    @defer.inlineCallbacks
    def test_www_cannot_reach_intranet(self):
        self.write(self.intranet, "plans.txt", b"office plans")
        for path in ("/../intranet/plans.txt", "/%2e%2e/intranet/plans.txt"):
            r, body = (yield self.get(path, WAN_PEER))
            self.assertNotEqual(body, b"office plans", path)

    @defer.inlineCallbacks
    def test_symlink_out_of_the_site(self):
        os.symlink(self.secret, os.path.join(self.www, "link.txt"))
        os.symlink(os.path.dirname(self.secret), os.path.join(self.www, "up"))
        self.assertEqual((yield self.get("/link.txt", WAN_PEER))[0].code, 404)
        self.assertEqual((yield self.get("/up/secret.txt", WAN_PEER))[0].code, 404)

    @defer.inlineCallbacks
    def test_dot_files_hidden(self):
        self.write(self.www, ".htpasswd", b"admin:x")
        self.assertEqual((yield self.get("/.htpasswd", WAN_PEER))[0].code, 404)

    def test_inside(self):
        self.assertTrue(sites.inside("/srv/www", "/srv/www/a/b"))
        self.assertTrue(sites.inside("/srv/www", "/srv/www"))
        self.assertFalse(sites.inside("/srv/www", "/srv/www2/a"))
        self.assertFalse(sites.inside("/srv/www", "/srv/www/../x"))


class HostileBytesTests(unittest.TestCase):
    """Garbage on the HTTP ports gets an error or a hang-up, never an exception."""

    def setUp(self):
        self.office = office_on_disk(self)

    def feed(self, data):
        from allworx.guards import PeerConnectionLimit
        site = server.Site(sites.SiteBySide(self.office), reactor=task.Clock())
        factory = PeerConnectionLimit(site, 4, "test")
        addr = IPv4Address("TCP", "198.51.100.10", 1)
        proto = factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        proto.dataReceived(data)
        proto.dataReceived(b"\r\n\r\n")
        proto.connectionLost(None)
        return transport

    def test_header_before_request_line(self):
        # twisted.web raises AttributeError on this input; the guard closes instead.
        transport = self.feed(b"a: b\r\n")
        self.assertTrue(transport.disconnecting)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400))
    def test_garbage(self, data):
        self.feed(data)
