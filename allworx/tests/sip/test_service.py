"""Tests of the SIP core and service: bad input, OPTIONS, TCP framing, ports, live changes."""

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.protocols.sip import service as sip
from allworx.protocols.sip.message import parse
from allworx.tests.siphelpers import FakeMailStore, Harness, Phone, UdpMemoryReactor, offer, office


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


class UdpWire:
    """What a Phone needs to talk to a started SipService through its UDP port."""

    def __init__(self, service):
        self.service = service

    def receive(self, data, source):
        self.service.udp.protocol.datagramReceived(data, source)

    def take(self):
        out = [(parse(data), addr) for data, addr in self.service.udp.written]
        del self.service.udp.written[:]
        return out


class TcpPhoneLine:
    """A phone connected to the service's TCP factory; `transport` holds what it got."""

    def __init__(self, factory, host, port):
        addr = type("A", (), {"host": host, "port": port})()
        self.transport = StringTransport(peerAddress=addr)
        self.protocol = factory.buildProtocol(addr)
        self.protocol.makeConnection(self.transport)


class ServiceTests(unittest.TestCase):

    def start(self):
        o = office(self.mktemp())
        reactor = UdpMemoryReactor()
        svc = sip.SipService(o, FakeMailStore(o), reactor)
        svc.core.ua.prompts.spoken = True      # no espeak in unit tests
        svc.startService()
        return o, reactor, svc

    def test_listens_udp_and_tcp_and_follows_port_changes(self):
        o, reactor, svc = self.start()
        self.assertEqual(list(reactor.udpPorts), [5060])
        self.assertEqual([p[0] for p in reactor.tcpServers], [5060])
        self.assertEqual(o.status["sip"].state, "up")
        o.update_settings("sip", {"port": "5062"})
        self.assertIn(5062, reactor.udpPorts)
        o.update_settings("sip", {"enabled": "no"})
        self.assertEqual(o.status["sip"].state, "disabled")
        svc.stopService()

    def test_a_trunk_added_changed_and_removed_registers_live(self):
        o, reactor, svc = self.start()
        self.addCleanup(svc.stopService)
        self.assertEqual(svc.trunks.status(), [])
        o.put_record("trunk", "itsp", {"registrar": "198.51.100.20", "username": "office",
                                       "secret": "s3cret", "numbers": "+15551230000"}, create=True)
        [status] = svc.trunks.status()
        self.assertEqual((status["name"], status["state"]), ("itsp", "registering"))
        sent = [data for data, addr in reactor.udpPorts[5060].written if addr[0] == "198.51.100.20"]
        self.assertTrue(sent and sent[0].startswith(b"REGISTER sip:198.51.100.20 SIP/2.0"), sent)
        o.patch_record("trunk", "itsp", {"register": "no"})
        self.assertEqual([t["state"] for t in svc.trunks.status()], ["not_registering"])
        o.delete_record("trunk", "itsp")
        self.assertEqual(svc.trunks.status(), [])

    def test_the_parts_are_attributes_of_the_service(self):
        o, reactor, svc = self.start()
        self.addCleanup(svc.stopService)
        self.assertIs(svc.registrations, svc.core.registrar)
        self.assertIs(svc.calls, svc.core.calls)
        self.assertIs(svc.voicemail, svc.core.ua)

    def test_other_settings_keep_the_sockets_and_the_tcp_phones(self):
        """Issue 14, defect 3: only a port change may listen again."""
        o, reactor, svc = self.start()
        self.addCleanup(svc.stopService)
        ports = list(svc.ports)
        udp = reactor.udpPorts[5060]
        line = TcpPhoneLine(reactor.tcpServers[0][1], "192.168.2.11", 5555)
        o.update_settings("sip", {"voicemail_timeout": "5"})
        o.update_settings("sip", {"voicemail_number": "444", "rtp_ports": "20000-20020"})
        self.assertEqual([id(p) for p in svc.ports], [id(p) for p in ports])
        self.assertFalse(udp.closed)
        self.assertEqual([p[0] for p in reactor.tcpServers], [5060])    # no second listenTCP
        self.assertFalse(line.transport.disconnecting)
        # The TCP phone is still heard and answered on its connection.
        line.protocol.dataReceived(Phone(None, "101", "192.168.2.11", 5555).request(
            "OPTIONS", "sip:example.com"))
        self.assertTrue(line.transport.value().startswith(b"SIP/2.0 200"), line.transport.value())
        # The new timeout takes effect: after 5 s of ringing, voicemail answers.
        wire = UdpWire(svc)
        alice = Phone(wire, "101", "192.168.2.11")
        bob = Phone(wire, "102", "192.168.2.12")
        for phone in (alice, bob):
            self.assertEqual(phone.register().code, 200)
        out = alice.send(alice.request("INVITE", "sip:102@example.com",
                                       ["Content-Type: application/sdp"], offer()))
        self.assertEqual([m.code if not m.is_request else m.method for m, _ in out], [100, "INVITE"])
        reactor.advance(4.9)        # bob's phone hears retransmitted INVITEs; alice nothing
        self.assertEqual([m.code for m, _ in wire.take() if not m.is_request], [])
        reactor.advance(0.2)
        answers = [m for m, _ in wire.take() if not m.is_request]
        self.assertEqual([m.code for m in answers], [200])
        self.assertIn("voicemail@", answers[0].get("Contact"))

    def test_message_waiting_follows_the_mailboxes_while_running(self):
        o, reactor, svc = self.start()
        wire = UdpWire(svc)
        bob = Phone(wire, "102", "192.168.2.12")
        self.assertEqual(bob.register().code, 200)
        out = bob.send(bob.request("SUBSCRIBE", "sip:102@example.com",
                                   ["Event: message-summary", "Expires: 600"]))
        self.assertEqual([m.code if not m.is_request else m.method for m, _ in out], [200, "NOTIFY"])
        svc.mail_store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nhello")
        out = wire.take()
        self.assertEqual([m.method for m, _ in out], ["NOTIFY"])
        self.assertIn(b"Voice-Message: 1/0", out[0][0].body)
        svc.stopService()
        sent = []
        svc.core.send_raw = lambda data, dest: sent.append(data)
        svc.mail_store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nagain")
        self.assertEqual(sent, [])

    def test_the_store_given_takes_voicemail(self):
        o = office(self.mktemp())
        store = FakeMailStore(o)
        svc = sip.SipService(o, store)
        self.assertIs(svc.mail_store, store)
        self.assertIs(svc.calls.mail_store, store)
        self.assertIs(svc.voicemail.mail_store, store)
        self.assertIs(svc.core.mwi.mail_store, store)
        self.assertTrue(svc.calls.takes_messages)
        self.assertFalse(sip.SipService(o, None).calls.takes_messages)

    def test_a_port_change_listens_again(self):
        o, reactor, svc = self.start()
        self.addCleanup(svc.stopService)
        old = reactor.udpPorts[5060]
        o.update_settings("sip", {"port": "5062"})
        self.assertTrue(old.closed)
        self.assertIs(svc.udp, reactor.udpPorts[5062])
        self.assertEqual([p[0] for p in reactor.tcpServers], [5060, 5062])
        self.assertEqual(o.status["sip"].state, "up")


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

    def test_the_cap_leaves_room_for_other_hosts(self):
        from allworx.guards import PeerLimit
        h = Harness(self.mktemp())
        factory = sip.SipStreamFactory(h.core, PeerLimit(2, cap=5, reserve=1))
        Addr = type("A", (), {})

        def connect(host, port):
            addr = Addr()
            addr.host, addr.port = host, port
            proto = factory.buildProtocol(addr)
            if proto is not None:
                proto.makeConnection(StringTransport(peerAddress=addr))
            return proto
        for host in ("192.168.2.11", "192.168.2.12"):
            self.assertIsNotNone(connect(host, 6000))
            self.assertIsNotNone(connect(host, 6001))
        self.assertIsNone(connect("192.168.2.11", 6002))        # its share
        self.assertIsNotNone(connect("192.168.2.13", 6000))     # the reserve, for a newcomer
        self.assertIsNone(connect("192.168.2.13", 6001))        # the cap
        first = factory.connections[("192.168.2.11", 6000)]
        first.connectionLost(None)
        self.assertIsNotNone(connect("192.168.2.14", 6000))
