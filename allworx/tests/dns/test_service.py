"""
Tests for allworx.protocols.dns.service (with dnscache and dnsupstream): the service
on a memory reactor with fake UDP ports, the LAN and WAN sides, the cache on
the clock, forwarding and failover, stand-alone mode, TCP, malformed input,
live reconfiguration.
"""

import ipaddress
import struct

from hypothesis import given, settings, strategies as st
from twisted.internet import error as net_error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import LeaseEvent, Office
from allworx.protocols.dns import service as dnsservice
from allworx.protocols.dns import metrics as dnsmetrics
from allworx.protocols.dns import server as dnsserver
from allworx.protocols.dns import upstream as dnsupstream
from allworx.tests.confs import MINIMAL, with_sections

LAN_PC = ("192.168.2.10", 40000)
WAN_HOST = ("198.51.100.10", 40000)
PRIMARY = ("203.0.113.1", 53)
SECONDARY = ("203.0.113.3", 53)

CONF = with_sections("""
[record files]
a = 192.168.2.20

[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150
""", MINIMAL.replace("primary = 203.0.113.1",
                     "primary = 203.0.113.1\nsecondary = 203.0.113.3"))


class FakeUDPPort:
    """A UDP port of the fake reactor: records what is written."""

    def __init__(self, reactor, number, protocol):
        self.reactor = reactor
        self.number = number
        self.protocol = protocol
        self.sent = []

    def write(self, data, addr):
        self.sent.append((data, addr))

    def stopListening(self):
        if self.reactor.udp.get(self.number) is self:
            del self.reactor.udp[self.number]
        self.protocol.doStop()

    def getHost(self):
        return ("0.0.0.0", self.number)


class UdpMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock with listenUDP."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udp = {}
        self.upstream = []   # every outgoing port, in order

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.udp:
            raise net_error.CannotListenError(interface, port, OSError("in use"))
        p = FakeUDPPort(self, port, protocol)
        self.udp[port] = p
        if port != 53:
            self.upstream.append(p)
        protocol.makeConnection(p)
        return p


def query(name, qtype=dns.A, qid=1000, edns=None, rd=True):
    if edns is None:
        m = dns.Message(id=qid, recDes=rd)
    else:
        m = dns._EDNSMessage(id=qid, recDes=rd, maxSize=edns)
    m.queries = [dns.Query(name, qtype, dns.IN)]
    return m.toStr()


def parse(wire):
    m = dns._EDNSMessage()
    m.fromStr(wire)
    return m


def upstream_reply(port, rcode=dns.OK, answers=(), authority=(), qid=None, question=None,
                   trunc=False):
    """The reply to the query `port` sent, as the forwarder would send it."""
    data, server = port.sent[-1]
    q = parse(data)
    m = dns.Message(id=q.id if qid is None else qid, answer=True, recAv=True, rCode=rcode,
                    trunc=trunc)
    m.queries = [question or q.queries[0]]
    m.answers = list(answers)
    m.authority = list(authority)
    return m.toStr(), server


def a_rr(name, address, ttl=300):
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address, ttl))


def soa_rr(zone, minimum=30, ttl=600):
    return dns.RRHeader(zone, dns.SOA, dns.IN, ttl, dns.Record_SOA(
        mname="ns." + zone, rname="hostmaster." + zone, minimum=minimum, ttl=ttl))


class ServiceCase(unittest.TestCase):

    conf = CONF

    def setUp(self):
        self.reactor = UdpMemoryReactor()
        self.reactor.advance(1_700_000_000)
        self.office = Office(parse_config(self.conf))
        self.service = dnsservice.DnsService(self.office, reactor=self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        dnsmetrics.COUNTS.clear()

    @property
    def port(self):
        return self.reactor.udp[53]

    def ask(self, name, qtype=dns.A, peer=LAN_PC, **kw):
        """Send a query from `peer`; the reply (parsed) or None if none yet."""
        before = len(self.port.sent)
        self.port.protocol.datagramReceived(query(name, qtype, **kw), peer)
        if len(self.port.sent) == before:
            return None
        data, addr = self.port.sent[-1]
        self.assertEqual(addr, peer)
        return parse(data)

    def last_reply(self):
        return parse(self.port.sent[-1][0])

    def open_upstream(self):
        return [p for p in self.reactor.upstream if self.reactor.udp.get(p.number) is p]


class ZoneServiceTests(ServiceCase):

    def test_listens_udp_and_tcp(self):
        self.assertEqual(self.office.status["dns"].state, "up")
        self.assertEqual([p[0] for p in self.reactor.tcpServers], [53])

    def test_zone_names_for_lan_and_wan(self):
        for peer in (LAN_PC, WAN_HOST):
            m = self.ask("www.example.com", peer=peer)
            self.assertEqual(m.answers[0].payload.dottedQuad(), "203.0.113.2")
            self.assertTrue(m.auth)
            self.assertEqual(m.recAv, peer is LAN_PC)
        self.assertEqual(self.open_upstream(), [])

    def test_the_zone_is_served(self):
        zone = self.service.zone
        self.assertIn("files.example.com.\t300\tIN\tA\t192.168.2.20", zone.as_text())

    def test_nxdomain_in_the_zone(self):
        m = self.ask("nothing.example.com")
        self.assertEqual((m.rCode, m.auth), (dns.ENAME, True))
        self.assertEqual(m.authority[0].type, dns.SOA)

    def test_wan_refused_outside_the_zone(self):
        m = self.ask("web.internet.example", peer=WAN_HOST)
        self.assertEqual(m.rCode, dns.EREFUSED)
        self.assertEqual(self.open_upstream(), [])
        self.assertEqual(dnsmetrics.COUNTS["refused"], 1)

    def test_wan_gets_no_cache_hits(self):
        self.ask("web.internet.example")
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("web.internet.example", "198.51.100.10")]))
        self.assertEqual(self.ask("web.internet.example", peer=WAN_HOST).rCode, dns.EREFUSED)

    def test_zone_answers_move_to_the_fast_path(self):
        self.ask("files.example.com")
        hits = self.service.fast.zone_hits
        self.ask("FILES.example.com")
        self.assertEqual(self.service.fast.zone_hits, hits + 1)
        self.office.put_record("record", "files", {"a": "192.168.2.21"})
        self.assertEqual(self.ask("files.example.com").answers[0].payload.dottedQuad(),
                         "192.168.2.21")
        # Bounded: odd types are not memorised; unknown names are, as
        # NXDOMAIN answers, up to NEGATIVE_MAX (test_negative).
        self.ask("nothing.example.com")
        self.ask("files.example.com", 99)
        self.assertEqual(self.service.fast.negatives(True), 1)
        self.assertEqual(len(self.service.fast.zone), 2)

    def test_wan_address_change_follows(self):
        self.office.set_wan_address(ipaddress.IPv4Interface("203.0.113.40/24"), "dhcp")
        self.reactor.advance(dnsservice.REBUILD_INTERVAL)
        self.assertEqual(self.ask("www.example.com").answers[0].payload.dottedQuad(),
                         "203.0.113.40")

    def test_live_record_change_and_serial(self):
        serial = self.service.zone.serial
        self.reactor.advance(5)
        self.office.put_record("record", "intranet", {"a": "192.168.2.30"})
        self.assertEqual(self.ask("intranet.example.com").answers[0].payload.dottedQuad(),
                         "192.168.2.30")
        self.assertEqual(self.service.zone.serial, serial + 5)
        self.office.delete_record("record", "intranet")
        self.assertEqual(self.ask("intranet.example.com").rCode, dns.ENAME)

    def test_lan_change_moves_the_sides(self):
        self.ask("corp.example.com")   # 192.168.2.10 is remembered as a LAN peer
        self.office.replace_text(self.conf.replace("192.168.2.", "10.0.2."))
        m = self.ask("web.internet.example")
        self.assertEqual(m.rCode, dns.EREFUSED)
        self.assertIsNone(self.ask("web.internet.example", peer=("10.0.2.7", 1000)))

    def test_a_stopped_service_follows_nothing(self):
        zone = self.service.zone
        self.service.stopService()
        self.office.put_record("record", "intranet", {"a": "192.168.2.30"})
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:01",
                                    ipaddress.IPv4Address("192.168.2.10"), "pc1",
                                    self.reactor.seconds() + 600))
        self.office.set_wan_address(ipaddress.IPv4Interface("203.0.113.40/24"), "dhcp")
        self.assertIs(self.service.zone, zone)
        self.assertEqual(self.reactor.udp, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_domain_change(self):
        self.office.update_settings("system", {"domain": "office.test"})
        self.assertEqual(self.ask("www.office.test").answers[0].payload.dottedQuad(),
                         "203.0.113.2")

    def test_disable_and_enable(self):
        self.office.update_settings("dns", {"enabled": "no"})
        self.assertNotIn(53, self.reactor.udp)
        self.assertEqual(self.office.status["dns"].state, "disabled")
        self.office.update_settings("dns", {"enabled": "yes", "port": "5353"})
        self.assertIn(5353, self.reactor.udp)
        self.assertEqual(self.office.status["dns"].state, "up")

    def test_unknown_class_and_zone_transfer(self):
        m = dns.Message(id=5)
        m.queries = [dns.Query("www.example.com", dns.A, dns.CH)]
        self.port.protocol.datagramReceived(m.toStr(), LAN_PC)
        self.assertEqual(self.last_reply().rCode, dns.EREFUSED)
        m.queries = [dns.Query("www.example.com", dns.A, 77)]
        self.port.protocol.datagramReceived(m.toStr(), LAN_PC)
        self.assertEqual(self.last_reply().rCode, dns.EFORMAT)
        self.assertEqual(self.ask("example.com", dns.AXFR).rCode, dns.EREFUSED)

    def test_edns_version_1_is_badvers(self):
        raw = bytearray(query("www.example.com", edns=1232))
        raw[-5] = 1
        self.port.protocol.datagramReceived(bytes(raw), LAN_PC)
        m = self.last_reply()
        self.assertEqual(m.rCode, 16)

    def test_metrics(self):
        self.ask("www.example.com")
        self.ask("nothing.example.com")
        self.ask("web.internet.example", peer=WAN_HOST)
        families = {f.name: f for f in self.service.collector.collect()}
        samples = {s.labels["kind"]: s.value for s in families["allworx_dns_queries"].samples
                   if s.name.endswith("_total")}
        self.assertGreaterEqual(samples["zone"], 1)
        self.assertEqual(samples["nxdomain"], 1)
        self.assertEqual(samples["refused"], 1)

    def test_forwarded_is_counted(self):
        self.ask("web.internet.example")
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("web.internet.example", "198.51.100.10")]))
        self.assertEqual(dnsmetrics.COUNTS["forwarded"], 1)
        self.ask("web.internet.example")
        families = {f.name: f for f in self.service.collector.collect()}
        self.assertEqual(families["allworx_dns_cache_entries"].samples[0].value, 1)


class ForwardingTests(ServiceCase):

    def forward(self, name="web.internet.example", qtype=dns.A, **reply):
        """Ask from the LAN, check the upstream query, answer it; the client's reply."""
        self.assertIsNone(self.ask(name, qtype))
        port = self.open_upstream()[-1]
        data, server = port.sent[-1]
        q = parse(data)
        self.assertEqual((q.queries[0].name.name, q.recDes), (name.encode(), True))
        self.assertEqual(q.maxSize, dnsupstream.EDNS_SIZE)
        port.protocol.datagramReceived(*upstream_reply(port, **reply))
        return self.last_reply(), server

    def test_forwarded_then_cached_with_falling_ttl_then_expired(self):
        m, server = self.forward(answers=[a_rr("web.internet.example", "198.51.100.10", 60)])
        self.assertEqual(server, PRIMARY)
        self.assertEqual((m.rCode, m.auth, m.recAv), (dns.OK, False, True))
        self.assertEqual(self.open_upstream(), [])
        self.reactor.advance(20)
        cached = self.ask("web.internet.example")
        self.assertEqual(cached.answers[0].ttl, 40)
        self.assertEqual(self.open_upstream(), [])
        self.reactor.advance(40)
        self.assertIsNone(self.ask("web.internet.example"))
        self.assertEqual(len(self.open_upstream()), 1)

    def test_negative_caching_for_the_soa_minimum(self):
        m, _ = self.forward("gone.internet.example", rcode=dns.ENAME,
                            authority=[soa_rr("internet.example", minimum=30)])
        self.assertEqual((m.rCode, m.auth), (dns.ENAME, False))
        self.reactor.advance(29)
        cached = self.ask("gone.internet.example")
        self.assertEqual(cached.rCode, dns.ENAME)
        self.assertEqual(cached.authority[0].type, dns.SOA)
        self.reactor.advance(1)
        self.assertIsNone(self.ask("gone.internet.example"))

    def test_nodata_is_cached_too(self):
        self.forward("web.internet.example", dns.AAAA,
                     authority=[soa_rr("internet.example", minimum=30)])
        self.assertEqual(self.ask("web.internet.example", dns.AAAA).rCode, dns.OK)

    def test_zero_ttl_is_not_cached(self):
        self.forward(answers=[a_rr("web.internet.example", "198.51.100.10", 0)])
        self.assertIsNone(self.ask("web.internet.example"))

    def test_replies_that_do_not_match_are_ignored(self):
        self.assertIsNone(self.ask("web.internet.example"))
        port = self.open_upstream()[0]
        good, server = upstream_reply(port, answers=[a_rr("web.internet.example", "1.1.1.1")])
        sent = len(self.port.sent)
        wrong_id, _ = upstream_reply(port, qid=(parse(port.sent[-1][0]).id + 1) % 65536)
        wrong_q, _ = upstream_reply(port, question=dns.Query("evil.example", dns.A, dns.IN))
        port.protocol.datagramReceived(wrong_id, server)
        port.protocol.datagramReceived(wrong_q, server)
        port.protocol.datagramReceived(good, ("203.0.113.66", 53))
        port.protocol.datagramReceived(b"\x00garbage", server)
        self.assertEqual(len(self.port.sent), sent)
        port.protocol.datagramReceived(good, server)
        self.assertEqual(self.last_reply().answers[0].payload.dottedQuad(), "1.1.1.1")

    def test_random_ids_and_ports(self):
        ids, ports = set(), set()
        for i in range(8):
            self.ask("n%d.internet.example" % i)
        for port in self.open_upstream():
            ids.add(parse(port.sent[0][0]).id)
            ports.add(port.number)
        self.assertGreater(len(ids), 4)
        self.assertGreater(len(ports), 4)

    def test_same_question_in_flight_is_asked_once(self):
        self.ask("web.internet.example", qid=1)
        self.ask("web.internet.example", qid=2)
        self.assertEqual(len(self.open_upstream()), 1)
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("web.internet.example", "198.51.100.10")]))
        self.assertEqual(sorted(parse(d).id for d, _ in self.port.sent), [1, 2])

    def test_failover_to_secondary_and_back(self):
        self.ask("a.internet.example")
        self.assertEqual(self.open_upstream()[0].sent[0][1], PRIMARY)
        self.reactor.advance(2.0)   # the primary stays silent
        port = self.open_upstream()[0]
        self.assertEqual(port.sent[0][1], SECONDARY)
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("a.internet.example", "198.51.100.1")]))
        self.assertEqual(self.last_reply().rCode, dns.OK)
        # Now the secondary is asked first.
        self.ask("b.internet.example")
        self.assertEqual([p.sent[0][1] for p in self.open_upstream()], [SECONDARY])
        self.open_upstream()[0].protocol.datagramReceived(*upstream_reply(
            self.open_upstream()[0], answers=[a_rr("b.internet.example", "198.51.100.2")]))
        # After the probe interval the primary is asked alongside, and takes over.
        self.reactor.advance(31)
        self.ask("c.internet.example")
        ports = self.open_upstream()
        self.assertEqual(sorted(p.sent[0][1] for p in ports), sorted([PRIMARY, SECONDARY]))
        primary = [p for p in ports if p.sent[0][1] == PRIMARY][0]
        primary.protocol.datagramReceived(*upstream_reply(
            primary, answers=[a_rr("c.internet.example", "198.51.100.3")]))
        self.assertEqual(self.open_upstream(), [])
        self.ask("d.internet.example")
        self.assertEqual([p.sent[0][1] for p in self.open_upstream()], [PRIMARY])

    def test_questions_in_flight_are_bounded(self):
        self.service.factory.forwarder.max_in_flight = 3
        for i in range(5):
            self.ask("n%d.internet.example" % i, qid=i)
        self.assertEqual(len(self.open_upstream()), 3)
        self.assertEqual([parse(d).rCode for d, _ in self.port.sent], [dns.ESERVER] * 2)
        self.reactor.advance(2.0)   # the three time out at both servers; room again
        self.reactor.advance(2.0)
        self.assertIsNone(self.ask("n9.internet.example"))

    def test_all_silent_is_servfail(self):
        self.ask("a.internet.example")
        self.reactor.advance(2.0)
        self.reactor.advance(2.0)
        self.assertEqual(self.last_reply().rCode, dns.ESERVER)
        self.assertEqual(self.open_upstream(), [])

    def test_truncated_upstream_reply_is_asked_again_over_tcp(self):
        self.ask("big.internet.example")
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(port, trunc=True))
        host, number, factory = self.reactor.tcpClients[-1][:3]
        self.assertEqual((host, number), PRIMARY)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        sent = transport.value()
        q = parse(sent[2:])
        self.assertEqual(q.queries[0].name.name, b"big.internet.example")
        m = dns.Message(id=q.id, answer=True, maxSize=0)
        m.queries = q.queries
        m.answers = [a_rr("big.internet.example", "198.51.100.%d" % i) for i in range(1, 60)]
        wire = m.toStr()
        proto.dataReceived(struct.pack("!H", len(wire)) + wire)
        reply = self.last_reply()
        self.assertEqual(reply.rCode, dns.OK)
        # 59 addresses do not fit 512 bytes: the client is told to use TCP itself.
        self.assertTrue(reply.trunc)
        self.assertEqual(len(self.service.cache), 1)

    def test_upstream_servfail_tries_the_next(self):
        self.ask("a.internet.example")
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(port, rcode=dns.ESERVER))
        port = self.open_upstream()[0]
        self.assertEqual(port.sent[0][1], SECONDARY)

    def test_forwarders_change_clears_the_cache(self):
        self.forward(answers=[a_rr("web.internet.example", "198.51.100.10")])
        self.office.update_settings("dns", {"primary": "203.0.113.7"})
        self.assertIsNone(self.ask("web.internet.example"))
        self.assertEqual(self.open_upstream()[0].sent[0][1], ("203.0.113.7", 53))
        self.assertEqual(self.reactor.udp[53], self.port)  # still the same port


class StandAloneTests(ServiceCase):

    conf = CONF.replace("primary = 203.0.113.1", "primary = 203.0.113.1\nuse_forwarders = no")

    def test_outside_names_are_authoritative_nxdomain_at_once(self):
        m = self.ask("web.internet.example")
        self.assertEqual((m.rCode, m.auth, m.recAv), (dns.ENAME, True, False))
        self.assertEqual(self.open_upstream(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_zone_still_answers(self):
        m = self.ask("corp.example.com")
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.168.2.254")
        self.assertFalse(m.recAv)

    def test_switching_forwarders_back_on(self):
        self.office.update_settings("dns", {"use_forwarders": "yes"})
        self.assertIsNone(self.ask("web.internet.example"))
        self.assertEqual(len(self.open_upstream()), 1)


BIG = with_sections("[record big]\na = %s\n" % " ".join(
    "192.168.2.%d" % i for i in range(1, 101)), CONF)


class TcpAndTruncationTests(ServiceCase):

    conf = BIG

    def connect(self, host="192.168.2.10"):
        proto = self.service.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=type("A", (), {"host": host, "port": 4000})())
        proto.makeConnection(transport)
        return proto, transport

    def frames(self, transport):
        data, out = transport.value(), []
        while data:
            (n,) = struct.unpack("!H", data[:2])
            out.append(parse(data[2:2 + n]))
            data = data[2 + n:]
        return out

    def test_udp_truncates_tcp_does_not(self):
        udp = self.ask("big.example.com")
        self.assertTrue(udp.trunc)
        self.assertEqual(udp.answers, [])
        proto, transport = self.connect()
        raw = query("big.example.com", qid=9)
        proto.dataReceived(struct.pack("!H", len(raw)) + raw)
        (m,) = self.frames(transport)
        self.assertEqual((m.id, len(m.answers), m.trunc), (9, 100, False))

    def test_tcp_split_and_pipelined(self):
        proto, transport = self.connect()
        raws = [query("www.example.com", qid=1), query("nothing.example.com", qid=2),
                query("web.internet.example", qid=3)]
        stream = b"".join(struct.pack("!H", len(r)) + r for r in raws)
        for i in range(len(stream)):
            proto.dataReceived(stream[i:i + 1])
        replies = self.frames(transport)
        self.assertEqual([(m.id, m.rCode) for m in replies], [(1, dns.OK), (2, dns.ENAME)])

    def test_tcp_from_the_wan_refused_outside_the_zone(self):
        proto, transport = self.connect("198.51.100.10")
        raw = query("web.internet.example")
        proto.dataReceived(struct.pack("!H", len(raw)) + raw)
        self.assertEqual(self.frames(transport)[0].rCode, dns.EREFUSED)

    def test_idle_tcp_is_closed(self):
        proto, transport = self.connect()
        self.reactor.advance(dnsserver.TCP_IDLE + 1)
        self.assertTrue(transport.disconnecting)


class MalformedTests(ServiceCase):

    def test_short_header_is_silence(self):
        self.assertIsNone(self.ask_raw(b"\x01\x02\x03"))

    def ask_raw(self, data, peer=LAN_PC):
        before = len(self.port.sent)
        self.port.protocol.datagramReceived(data, peer)
        return parse(self.port.sent[-1][0]) if len(self.port.sent) > before else None

    def test_truncated_question_is_formerr(self):
        raw = query("www.example.com")[:-3]
        self.assertEqual(self.ask_raw(raw).rCode, dns.EFORMAT)

    def test_compression_loop_is_formerr(self):
        header = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
        self.assertEqual(self.ask_raw(header + b"\xc0\x0c\x00\x01\x00\x01").rCode, dns.EFORMAT)

    def test_huge_counts_are_formerr(self):
        header = struct.pack("!HHHHHH", 7, 0x0100, 65535, 65535, 65535, 65535)
        self.assertEqual(self.ask_raw(header + b"\x00\x00\x01\x00\x01").rCode, dns.EFORMAT)

    def test_two_questions_is_formerr(self):
        m = dns.Message(id=3)
        m.queries = [dns.Query("www.example.com"), dns.Query("corp.example.com")]
        self.assertEqual(self.ask_raw(m.toStr()).rCode, dns.EFORMAT)

    def test_responses_are_ignored(self):
        raw = bytearray(query("www.example.com"))
        raw[2] |= 0x80
        self.assertIsNone(self.ask_raw(bytes(raw)))

    def test_other_opcodes_not_implemented(self):
        raw = bytearray(query("www.example.com"))
        raw[2] |= dns.OP_STATUS << 3
        self.assertEqual(self.ask_raw(bytes(raw)).rCode, dns.ENOTIMP)

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=120), st.booleans())
    def test_random_bytes_never_escape(self, data, lan):
        peer = LAN_PC if lan else WAN_HOST
        before = len(self.port.sent)
        self.port.protocol.datagramReceived(data, peer)
        for reply, _ in self.port.sent[before:]:
            self.assertEqual(reply[:2], data[:2])
            parse(reply)
        self.reactor.advance(5)
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(["www.example.com", "nothing.example.com", "web.internet.example"]),
           st.sampled_from([None, 512, 4096]), st.integers(0, 60), st.binary(min_size=1,
                                                                              max_size=6),
           st.booleans())
    def test_mutated_queries_never_escape(self, name, edns, position, junk, lan):
        raw = bytearray(query(name, edns=edns))
        position = min(position, len(raw) - 1)
        raw[position:position + len(junk)] = junk
        before = len(self.port.sent)
        self.port.protocol.datagramReceived(bytes(raw), LAN_PC if lan else WAN_HOST)
        for reply, _ in self.port.sent[before:]:
            parse(reply)
        self.reactor.advance(5)   # let any forwarded query time out
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=60), max_size=6))
    def test_random_tcp_frames_never_escape(self, frames):
        proto = self.service.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=type("A", (), {"host": "192.168.2.9"})())
        proto.makeConnection(transport)
        proto.dataReceived(b"".join(struct.pack("!H", len(f)) + f for f in frames))
        proto.connectionLost(None)
