"""Shared by the web tests: an office on a temporary tap.conf and an in-memory HTTP client."""

import base64

import argon2
import os
import re

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.web import resource
from treq.testing import StubTreq

from allworx.config import load_config
from allworx.office import Office
from allworx.tests.confs import MINIMAL, PW_HASH
from allworx.protocols.web.service import admin_resource

# The same password ("admin-demo") hashed with argon2's cheapest settings: the
# tests log in hundreds of times, and verify reads the cost from the hash.
CHEAP_HASH = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("admin-demo")
CHEAP = MINIMAL.replace(PW_HASH, CHEAP_HASH)

BASIC = {b"Authorization": [b"Basic " + base64.b64encode(b"admin:admin-demo")]}
JSON = {b"Content-Type": [b"application/json"]}


def sync_thread(f, *args, **kwargs):
    """deferToThread stand-in for tests: run at once."""
    return defer.maybeDeferred(f, *args, **kwargs)


def office_on_disk(testcase, text=CHEAP):
    """An Office whose tap.conf is a real file in the test's temp dir."""
    base = testcase.mktemp()
    os.makedirs(base)
    path = os.path.join(base, "tap.conf")
    with open(path, "w") as f:
        f.write(text)
    return Office(load_config(path), data_dir=os.path.join(base, "data"))


class PeerAs(resource.Resource):
    """Makes every request look as if it came from `host` (treq's stub is always 127.0.0.1)."""

    def __init__(self, wrapped, host):
        resource.Resource.__init__(self)
        self.wrapped = wrapped
        self.host = host

    def getChildWithDefault(self, path, request):
        request.client = IPv4Address("TCP", self.host, 50000)
        return self.wrapped.getChildWithDefault(path, request)

    def render(self, request):
        request.client = IPv4Address("TCP", self.host, 50000)
        return self.wrapped.render(request)


class AdminClient:
    """A browser stand-in: a StubTreq with its cookie jar, on a task.Clock."""

    def __init__(self, testcase, text=CHEAP, peer=None):
        self.office = office_on_disk(testcase, text)
        self.clock = task.Clock()
        self.root, self.ctx = admin_resource(self.office, self.clock, sync_thread)
        self.stub = StubTreq(PeerAs(self.root, peer) if peer else self.root)

    def request(self, method, url, **kw):
        kw.setdefault("allow_redirects", False)
        d = self.stub.request(method, "http://admin.example.com" + url, **kw)
        result = []
        d.addCallback(lambda r: r.content().addCallback(lambda body: result.append((r, body))))
        d.addErrback(result.append)
        self.stub.flush()
        self.waited = 0
        while not result and self.waited < 60:     # a login the throttle holds back
            self.clock.advance(0.25)
            self.waited += 0.25
            self.stub.flush()
        assert result, "no response to %s %s" % (method, url)
        if not isinstance(result[0], tuple):
            result[0].raiseException()
        response, body = result[0]
        response.body = body
        response.text = body.decode("utf-8", "replace")
        return response

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, data, **kw):
        return self.request("POST", url, data=data, **kw)

    def csrf(self, url="/status"):
        """The CSRF token in the page at `url`."""
        m = re.search(r'name="csrf" value="([^"]+)"', self.get(url).text)
        return m.group(1) if m else None

    def login(self, password="admin-demo", user="admin"):
        token = self.csrf("/login")
        return self.post("/login", {"csrf": token, "username": user, "password": password,
                                    "next": "/status"})

    def upload(self, url, fields, name, filename, content):
        """POST a multipart form with one file, as a browser does."""
        boundary = "allworxtestboundary"
        parts = []
        for k, v in fields.items():
            parts.append('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                         % (boundary, k, v))
        parts.append('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     'Content-Type: text/plain\r\n\r\n' % (boundary, name, filename))
        body = "".join(parts).encode() + content + ("\r\n--%s--\r\n" % boundary).encode()
        return self.request("POST", url, data=body, headers={
            b"Content-Type": [("multipart/form-data; boundary=%s" % boundary).encode()]})

    def tap_conf(self):
        with open(self.office.path) as f:
            return f.read()
