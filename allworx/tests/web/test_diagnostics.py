# -*- test-case-name: allworx.tests.web.test_diagnostics -*-
"""
`POST /api/v1/diagnostics/{kind}` and the Diagnostics page (SPEC 20) over
in-memory HTTP with a fake child process: the lines reach the client as
the child writes them (chunked, before the run ends), a client that goes
away stops the child, 400 in the errors format, 401, 404, 415, 429 beyond
the cap, the page and its script, the menu, the OpenAPI document.
"""

import json
import os

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import server

from allworx.diagnostics import Check, Diagnostics
from allworx.protocols.web import diagnosticsapi
from allworx.protocols.web.admin import STATIC_DIR
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.core.test_diagnostics import FakeProcess
from allworx.tests.web.test_api import ApiCase
from allworx.tests.webhelpers import BASIC


class DiagnosticsCase(ApiCase):

    def setUp(self):
        ApiCase.setUp(self)
        self.processes = []
        self.runner = diagnosticsapi.install(self.c.ctx, Diagnostics(
            self.c.clock, lambda: self.c.office.config, spawn=self.spawn,
            which=lambda name, path=None: "/usr/bin/" + name))

    def spawn(self, proto, path, argv, env=None):
        p = FakeProcess(proto, path, argv, env)
        self.processes.append(p)
        return p

    def open_stream(self, kind, body):
        """A raw HTTP/1.1 connection posting `body`: (protocol, transport)."""
        site = server.Site(self.c.root, reactor=self.c.clock)
        peer = IPv4Address("TCP", "192.168.2.10", 50000)
        proto = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        proto.makeConnection(transport)
        data = json.dumps(body).encode()
        head = ("POST /api/v1/diagnostics/%s HTTP/1.1\r\nHost: admin\r\nAuthorization: %s\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (kind, BASIC[b"Authorization"][0].decode(), len(data)))
        proto.dataReceived(head.encode() + data)
        for _ in range(8):               # the login check
            self.c.clock.advance(0.25)
        return proto, transport


class StreamTests(DiagnosticsCase):

    def test_lines_arrive_before_the_end(self):
        proto, transport = self.open_stream("ping", {"target": "192.168.2.254"})
        head = transport.value()
        self.assertIn(b"HTTP/1.1 200 OK", head)
        self.assertIn(b"Content-Type: text/plain; charset=utf-8", head)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertIn(b"$ ping -n -c 4 -W 2 -- 192.168.2.254\n", head)
        p, = self.processes
        self.assertEqual(p.argv[-2:], ["--", "192.168.2.254"])
        transport.clear()
        p.out(b"64 bytes from 192.168.2.254: icmp_seq=1 ttl=64 time=0.3 ms\n")
        self.assertIn(b"icmp_seq=1", transport.value())
        self.assertNotIn(b"0\r\n\r\n", transport.value())        # not finished
        p.out(b"4 packets transmitted, 4 received, 0% packet loss, time 3003ms\n"
              b"rtt min/avg/max/mdev = 0.2/0.3/0.4/0.1 ms\n")
        p.exit(0)
        tail = transport.value()
        self.assertIn(b"4 sent, 4 received, 0% loss, avg 0.3 ms\n", tail)
        self.assertTrue(tail.endswith(b"0\r\n\r\n"), tail)
        self.assertEqual(self.runner.running, [])

    def test_a_client_that_goes_away_stops_the_child(self):
        proto, transport = self.open_stream("traceroute", {"target": "example.com"})
        p, = self.processes
        self.assertEqual(self.runner.running[0].check, Check("traceroute", "example.com"))
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(p.signals, ["TERM"])
        self.assertEqual(self.runner.running, [])
        self.c.clock.advance(5)
        self.assertEqual(p.signals, ["TERM", "KILL"])
        p.exit(0)                       # the child's end after that changes nothing
        self.flushLoggedErrors()
        self.assertEqual(self.flushLoggedErrors(), [])


class ApiTests(DiagnosticsCase):

    def test_bad_target_400_in_the_errors_format(self):
        for target in ("-c", "--help", "a b", "$(reboot)", "", "192.0.2.1;id"):
            r = self.call("POST", "/diagnostics/ping", {"target": target})
            self.assertEqual(r.code, 400, target)
            error = r.json["errors"][0]
            self.assertEqual((error["section"], error["key"]), ("diagnostics", "target"))
            self.assertTrue(error["message"])
        r = self.call("POST", "/diagnostics/tcp", {"target": "-p", "port": "x"})
        self.assertEqual([e["key"] for e in r.json["errors"]], ["target", "port"])
        r = self.call("POST", "/diagnostics/dns", {"target": "example.com", "server": "-x"})
        self.assertEqual([e["key"] for e in r.json["errors"]], ["server"])
        self.assertEqual(self.processes, [])

    def test_unknown_kind_404(self):
        r = self.call("POST", "/diagnostics/nmap", {"target": "example.com"})
        self.assertEqual(r.code, 404)

    def test_login_and_json_needed(self):
        self.assertEqual(self.call("POST", "/diagnostics/ping", {"target": "h"}, auth=False).code, 401)
        r = self.c.request("POST", "/api/v1/diagnostics/ping", data=b"target=h",
                           headers={**BASIC, b"Content-Type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(r.code, 415)
        self.assertEqual(self.processes, [])

    def test_page_session_needs_its_csrf_token(self):
        self.c.login()
        r = self.call("POST", "/diagnostics/ping", {"target": "h"}, auth=False)
        self.assertEqual(r.code, 403)
        self.assertEqual(self.processes, [])

    def test_busy_429(self):
        for n in range(2):
            self.runner.start(Check("ping", "192.0.2.%d" % n), lambda line: None)
        r = self.call("POST", "/diagnostics/ping", {"target": "192.0.2.9"})
        self.assertEqual((r.code, r.json["error"]), (429, "busy"))
        self.assertTrue(r.headers.getRawHeaders("retry-after"))
        self.assertEqual(len(self.processes), 2)

    def test_missing_program_503(self):
        self.runner.which = lambda name, path=None: None
        r = self.call("POST", "/diagnostics/traceroute", {"target": "example.com"})
        self.assertEqual(r.code, 503)
        self.assertIn("traceroute is not installed", r.json["reason"])

    def test_whole_answer(self):
        self.runner.spawn = lambda proto, path, argv, env=None: self.finished_child(proto, argv)
        r = self.call("POST", "/diagnostics/ping", {"target": "example.com"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.text.splitlines(), [
            "$ ping -n -c 4 -W 2 -- example.com", "PING example.com (192.0.2.80)",
            "1 packets transmitted, 1 received, 0% packet loss",
            "1 sent, 1 received, 0% loss"])

    def finished_child(self, proto, argv):
        p = FakeProcess(proto, argv[0], argv, None)
        self.c.clock.callLater(0.1, p.out, b"PING example.com (192.0.2.80)\n"
                               b"1 packets transmitted, 1 received, 0% packet loss\n")
        self.c.clock.callLater(0.2, p.exit, 0)
        return p

    def test_documented_and_listed(self):
        op = openapi_document()["paths"]["/api/v1/diagnostics/{kind}"]["post"]
        self.assertIn("text/plain", op["responses"]["200"]["content"])
        self.assertEqual(op["parameters"][0]["schema"]["enum"], ["ping", "dns", "tcp", "traceroute"])
        self.assertIn("/api/v1/diagnostics/{kind}", self.call("GET", "/").json["resources"])


class PageTests(DiagnosticsCase):

    def test_page_in_the_menu_with_its_script(self):
        self.c.login()
        r = self.c.get("/diagnostics")
        self.assertEqual(r.code, 200)
        self.assertIn("<h1>Diagnostics</h1>", r.text)
        self.assertIn('<script src="/static/diagnostics.js" defer></script>', r.text)
        self.assertIn('name="csrf-token"', r.text)
        self.assertIn('id="diag-output"', r.text)
        self.assertIn('value="192.168.2.254"', r.text)     # the LAN address to start with
        self.assertIn('href="/diagnostics"', self.c.get("/status").text)
        with open(os.path.join(STATIC_DIR, "diagnostics.js")) as f:
            script = f.read()
        for needed in ("getReader", "X-CSRF-Token", "/api/v1/diagnostics/", "AbortController"):
            self.assertIn(needed, script)

    def test_page_needs_login(self):
        r = self.c.get("/diagnostics")
        self.assertEqual(r.code, 303)
