# -*- test-case-name: allworx.tests.web.test_service -*-
"""The "web" child: its ports, LAN-only admin, live port changes, /metrics."""

import base64

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from allworx.tests.webhelpers import AdminClient, office_on_disk, sync_thread
from allworx.protocols.web.service import WebService


class ServiceTests(unittest.TestCase):
    def setUp(self):
        self.office = office_on_disk(self)
        self.reactor = MemoryReactorClock()
        self.svc = WebService(self.office, reactor=self.reactor, defer_to_thread=sync_thread)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)

    def test_listens_on_both_ports(self):
        ports = sorted(p[0] for p in self.reactor.tcpServers)
        self.assertEqual(ports, [80, 8080])
        self.assertEqual(self.office.status["web"].state, "up")
        self.assertIn("admin pages on tcp/8080", self.office.status["web"].detail)
        # A burst of clients queues in the kernel rather than having its SYNs dropped.
        self.assertEqual([p[2] for p in self.reactor.tcpServers], [511, 511])

    def test_admin_port_lan_only(self):
        site = self.svc.admin_site
        self.assertIsNone(site.buildProtocol(IPv4Address("TCP", "198.51.100.10", 1)))
        self.assertIsNone(site.buildProtocol(IPv4Address("TCP", "203.0.113.1", 1)))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "192.168.2.200", 1)))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))

    def test_sites_port_open_to_all(self):
        site = self.svc.public_site
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "198.51.100.10", 1)))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "192.168.2.10", 1)))

    def test_port_change_listens_again(self):
        self.office.update_settings("web", {"admin_port": "8443"})
        self.assertEqual(self.reactor.tcpServers[-2][0], 8443)
        self.assertTrue(self.svc.running)

    def test_site_directories_made(self):
        import os
        data = self.office.config.system.data_dir
        self.assertTrue(os.path.isdir(os.path.join(data, "intranet")))
        self.assertTrue(os.path.isdir(os.path.join(data, "www")))

    def test_named_web(self):
        self.assertEqual(self.svc.name, "web")


class MetricsTests(unittest.TestCase):
    def test_metrics_page(self):
        import allworx.protocols.ldap.service  # noqa: F401  (its metrics live in the default registry)
        c = AdminClient(self)
        c.office.set_status("dns", "up", "x")
        c.login("wrong")
        self.assertEqual(c.get("/metrics").code, 401)
        c.login()
        r = c.get("/metrics")
        self.assertEqual(r.code, 200)
        self.assertIn('allworx_office_service_up{service="dns"} 1.0', r.text)
        self.assertIn('allworx_office_records{kind="user"} 2.0', r.text)
        self.assertIn("allworx_web_logins_total", r.text)
        self.assertIn("allworx_ldap_requests_total", r.text)

    def test_runtime_gauges(self):
        from allworx.tests.web.test_pages import FakeLeases, FakeLog, FakeQueue, FakeRegistrar, Lease
        c = AdminClient(self)
        rt = c.ctx.views
        rt.leases = FakeLeases([Lease("02:00:00:00:00:01", "192.168.2.10", "pc1", 99)])
        rt.connections = FakeLog([], {"allow": 3, "drop": 1})
        rt.registrations = rt.calls = FakeRegistrar()
        rt.mail_queue = FakeQueue()
        c.login()
        text = c.get("/metrics").text
        self.assertIn('allworx_office_dhcp_leases{state="active"} 1.0', text)
        self.assertIn('allworx_office_flows_total{verdict="drop"} 1.0', text)
        self.assertIn("allworx_office_sip_registrations 1.0", text)
        self.assertIn("allworx_office_sip_calls 1.0", text)
        self.assertIn("allworx_office_mail_queue 1.0", text)


class BodyLimitTests(unittest.TestCase):
    """Request bodies are bounded on both ports: 413, connection closed, nothing rendered."""

    def exchange(self, site, data):
        from twisted.internet.testing import StringTransport
        addr = IPv4Address("TCP", "192.168.2.10", 1)
        proto = site.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        proto.dataReceived(data)
        out = transport.value()
        proto.connectionLost(None)
        return out, transport.disconnecting

    def setUp(self):
        office = office_on_disk(self)
        self.svc = WebService(office, reactor=MemoryReactorClock(), defer_to_thread=sync_thread)

    def test_declared_length_too_large(self):
        out, closed = self.exchange(self.svc.public_site, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 10000000\r\n\r\n" + b"x" * 1000)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:60])
        self.assertTrue(closed)

    def test_chunked_too_large(self):
        chunk = b"%x\r\n%s\r\n" % (40000, b"y" * 40000)
        out, closed = self.exchange(self.svc.public_site, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:60])
        self.assertEqual(out.count(b"HTTP/1.1"), 1)

    def test_admin_takes_a_backup_sized_body(self):
        body = b"x" * 200000
        out, _ = self.exchange(self.svc.admin_site, b"POST /login HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.assertNotIn(b"413", out.split(b"\r\n")[0])


class ReasonPhraseTests(unittest.TestCase):
    """The status line names the codes twisted.web has no words for (RFC 6585)."""

    exchange = BodyLimitTests.exchange
    setUp = BodyLimitTests.setUp

    def test_a_locked_out_client_hears_429_too_many_requests(self):
        for n in range(20):
            self.svc.ctx.throttle.failed("192.168.2.10", "guess%d" % n)
        auth = b"Authorization: Basic " + base64.b64encode(b"admin:admin-demo") + b"\r\n"
        out, _ = self.exchange(self.svc.admin_site, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
                               + auth + b"\r\n")
        head = out.split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 429 Too Many Requests")
        self.assertIn(b"retry-after: 900", [h.lower() for h in head])


class PeerLimitTests(unittest.TestCase):
    """At most N connections at once per peer address (the limit itself: tests/core/test_guards)."""

    def test_guards_may_be_given(self):
        from allworx.guards import LoginThrottle, PeerLimit
        from twisted.internet import task
        throttle, peers = LoginThrottle(task.Clock()), PeerLimit(1)
        svc = WebService(office_on_disk(self), reactor=MemoryReactorClock(),
                         defer_to_thread=sync_thread, throttle=throttle, peer_limit=peers)
        self.assertIs(svc.ctx.throttle, throttle)
        svc.startService()
        self.addCleanup(svc.stopService)
        admin, sites = [p[1] for p in svc.reactor.tcpServers]
        lan = IPv4Address("TCP", "192.168.2.10", 1)
        self.assertIsNotNone(admin.buildProtocol(lan))
        refused = sites.buildProtocol(lan)              # one limit for both ports
        t = StringTransport(peerAddress=lan)
        refused.makeConnection(t)
        self.assertTrue(t.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), t.value())
        self.assertTrue(t.disconnecting)
        self.assertEqual(peers.counts, {"192.168.2.10": 1})

    def test_a_greedy_host_leaves_room_for_the_others(self):
        from allworx.guards import PeerLimit
        peers = PeerLimit(3, cap=8, reserve=2)
        svc = WebService(office_on_disk(self), reactor=MemoryReactorClock(),
                         defer_to_thread=sync_thread, peer_limit=peers)
        svc.startService()
        self.addCleanup(svc.stopService)
        admin, sites = [p[1] for p in svc.reactor.tcpServers]

        def connect(factory, host):
            addr = IPv4Address("TCP", host, 1)
            proto = factory.buildProtocol(addr)
            t = StringTransport(peerAddress=addr)
            proto.makeConnection(t)
            return t
        for host in ("192.168.2.10", "192.168.2.11"):
            for factory in (admin, sites, admin):
                self.assertFalse(connect(factory, host).disconnecting)
        self.assertIn(b"503", connect(sites, "192.168.2.10").value())
        self.assertFalse(connect(admin, "192.168.2.12").disconnecting)   # the reserve
        self.assertFalse(connect(sites, "192.168.2.13").disconnecting)
        busy = connect(admin, "192.168.2.14")                            # the cap
        self.assertTrue(busy.value().startswith(b"HTTP/1.1 503"))
        self.assertEqual(peers.total(), 8)

    def test_refused_by_the_inner_factory_not_counted(self):
        from allworx.guards import PeerConnectionLimit
        office = office_on_disk(self)
        svc = WebService(office, reactor=MemoryReactorClock(), defer_to_thread=sync_thread)
        limited = PeerConnectionLimit(svc.admin_site, 1)
        wan = IPv4Address("TCP", "198.51.100.10", 1)
        self.assertIsNone(limited.buildProtocol(wan))
        self.assertEqual(limited.counts, {})
