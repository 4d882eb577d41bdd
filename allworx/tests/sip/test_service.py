"""Tests of the SIP core and service: bad input, OPTIONS, TCP framing, ports, live changes."""

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from allworx.protocols.sip import service as sip
from allworx.protocols.sip.message import parse
from allworx.tests.siphelpers import Harness, Phone, office


class CoreTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.alice = Phone(self.h, "101", "192.168.2.11")

    def test_garbage_gets_silence(self):
        for data in (b"\x00\xff" * 30, b"hello world\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n"):
            self.h.receive(data)
        self.assertEqual(self.h.sent, [])

    def test_broken_request_gets_400(self):
        data = self.alice.request("OPTIONS", "sip:example.com").replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        self.h.receive(data, self.alice.address)
        [(raw, dest)] = self.h.sent
        self.assertTrue(raw.startswith(b"SIP/2.0 400"))
        self.assertIn(("Call-ID: %s" % self.alice.call_id).encode(), raw)

    def test_options_and_unknown_methods(self):
        out = self.alice.send(self.alice.request("OPTIONS", "sip:example.com"))
        self.assertEqual(out[0][0].code, 200)
        self.assertIn("INVITE", out[0][0].get("Allow"))
        out = self.alice.send(self.alice.request("PUBLISH", "sip:example.com"))
        self.assertEqual(out[0][0].code, 405)
        out = self.alice.send(self.alice.request("BYE", "sip:example.com"))
        self.assertEqual(out[0][0].code, 481)

    def test_responses_go_back_to_the_source_port(self):
        data = self.alice.request("OPTIONS", "sip:example.com")
        self.h.receive(data, ("192.168.2.11", 40123))
        [(raw, dest)] = self.h.sent
        self.assertEqual((dest.host, dest.port), ("192.168.2.11", 40123))
        via = parse(raw).top_via
        self.assertEqual((via.params["received"], via.params["rport"]), ("192.168.2.11", "40123"))

    def test_retransmitted_non_invite_gets_the_kept_answer_until_timer_j(self):
        data = self.alice.request("OPTIONS", "sip:example.com")
        first = self.alice.send(data)
        self.assertEqual(self.h.core.server_tx, {})          # completed: only bytes are kept
        again = self.alice.send(data)
        self.assertEqual(again[0][0].to_bytes(), first[0][0].to_bytes())
        self.h.clock.advance(33)
        self.assertEqual(self.h.core.completed, {})
        later = self.alice.send(data)
        self.assertEqual(later[0][0].code, 200)
        self.assertNotEqual(later[0][0].to_tag, first[0][0].to_tag)  # a new transaction

    def test_wan_register_is_refused(self):
        out = Phone(self.h, "101", "203.0.113.9").register()
        self.assertEqual(out.code, 403)

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=300), st.integers(0, 400))
    def test_mutated_requests_never_raise(self, junk, at):
        base = self.alice.request("INVITE", "sip:102@example.com", body=b"v=0\r\n")
        self.h.receive(base[:at] + junk + base[at:], self.alice.address)
        self.h.clock.advance(100)
        self.h.sent = []


class StreamTests(unittest.TestCase):

    def test_tcp_framing_and_oversize(self):
        h = Harness(self.mktemp())
        seen = []
        h.core.receive = lambda data, dest: seen.append((data, dest.transport))
        factory = sip.SipStreamFactory(h.core)
        proto = factory.buildProtocol(None)
        tr = StringTransport(peerAddress=type("A", (), {"host": "192.168.2.11", "port": 5555})())
        proto.makeConnection(tr)
        msg = Phone(h, "101", "192.168.2.11").request("OPTIONS", "sip:example.com", body=b"abc")
        proto.dataReceived(b"\r\n\r\n" + msg[:20])
        proto.dataReceived(msg[20:] + msg)
        self.assertEqual(seen, [(msg, "TCP"), (msg, "TCP")])
        proto.dataReceived(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999999\r\n\r\n")
        self.assertIn(b"513", tr.value())
        self.assertTrue(tr.disconnecting)


class UdpMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock that also records listenUDP."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = {}

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        from allworx.tests.siphelpers import FakeUdpPort
        p = FakeUdpPort(port, protocol)
        self.udpPorts[port] = p
        return p


class ServiceTests(unittest.TestCase):

    def test_listens_udp_and_tcp_and_follows_port_changes(self):
        o = office(self.mktemp())
        reactor = UdpMemoryReactor()
        svc = sip.SipService(o, reactor)
        svc.core.ua.prompts.spoken = True      # no espeak in unit tests
        svc.startService()
        self.assertEqual(list(reactor.udpPorts), [5060])
        self.assertEqual([p[0] for p in reactor.tcpServers], [5060])
        self.assertIs(o.runtime.registrations, svc.core.registrar)
        self.assertEqual(o.status["sip"].state, "up")
        o.update_settings("sip", {"port": "5062"})
        self.assertIn(5062, reactor.udpPorts)
        o.update_settings("sip", {"enabled": "no"})
        self.assertEqual(o.status["sip"].state, "disabled")
        svc.stopService()


class ConnectionLimitTests(unittest.TestCase):

    def test_connections_per_host_are_bounded(self):
        h = Harness(self.mktemp())
        factory = sip.SipStreamFactory(h.core)
        Addr = type("A", (), {})
        made = []
        for port in range(sip.MAX_CONNECTIONS_PER_HOST + 1):
            addr = Addr()
            addr.host, addr.port = "192.168.2.11", 6000 + port
            proto = factory.buildProtocol(addr)
            if proto is not None:
                proto.makeConnection(StringTransport(peerAddress=addr))
            made.append(proto)
        self.assertEqual(sum(1 for p in made if p is not None), sip.MAX_CONNECTIONS_PER_HOST)
        other = Addr()
        other.host, other.port = "192.168.2.12", 6000
        self.assertIsNotNone(factory.buildProtocol(other))
