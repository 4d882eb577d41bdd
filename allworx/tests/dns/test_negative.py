# -*- test-case-name: allworx.tests.dns.test_negative -*-
"""
Tests for the fast path's negative answers and the UDP read loop: the zone's
NXDOMAIN (RFC 2308: SOA in authority, AA) served from precomputed wire
bytes like its answers, per view, bounded, dropped when a name may have come
to exist; the cache's NXDOMAIN likewise; and `DnsUdpPort`, which answers
every datagram waiting at a wake-up in one loop.
"""

import errno
import ipaddress

from twisted.names import dns

from allworx.office import LeaseEvent
from allworx.protocols.dns import fast as dnsfast
from allworx.protocols.dns import server as dnsserver
from allworx.protocols.dns import zone as dnszone
from allworx.tests.dns.test_service import (
    LAN_PC, WAN_HOST, ServiceCase, parse, query, soa_rr, upstream_reply)
from allworx.tests.dns.test_sites import BRANCH, CONF as SITES_CONF, ForwarderCase, KEY2


def without_id(wire):
    return wire[2:]


class ZoneNegativeTests(ServiceCase):

    def raw(self, name, qtype=dns.A, peer=LAN_PC, **kw):
        before = len(self.port.sent)
        self.port.protocol.datagramReceived(query(name, qtype, **kw), peer)
        self.assertEqual(len(self.port.sent), before + 1)
        return self.port.sent[-1][0]

    def test_nxdomain_from_the_fast_path_is_the_full_paths_answer(self):
        for kw in ({}, {"edns": 1232}, {"rd": False}, {"edns": 600, "rd": False}):
            name = "nothing%d.example.com" % len(kw)
            full = self.raw(name, qid=1, **kw)
            hits = self.service.fast.nx_hits
            fast = self.raw(name, qid=2, **kw)
            self.assertEqual(self.service.fast.nx_hits, hits + 1, kw)
            self.assertEqual(without_id(fast), without_id(full), kw)
            m = parse(fast)
            self.assertEqual((m.id, m.rCode, m.auth), (2, dns.ENAME, True))
            self.assertEqual([(rr.name.name, rr.type) for rr in m.authority],
                             [(b"example.com", dns.SOA)])

    def test_the_soa_says_how_long_a_negative_answer_may_be_kept(self):
        # RFC 2308, section 3: the SOA's TTL is the lesser of its own and its minimum.
        for name, qtype, rcode in (("nothing.example.com", dns.A, dns.ENAME),
                                   ("files.example.com", dns.AAAA, dns.OK)):
            for qid in (1, 2):   # the full path, then the fast one
                m = parse(self.raw(name, qtype, qid=qid))
                self.assertEqual((m.rCode, m.answers), (rcode, []), name)
                soa = m.authority[0]
                self.assertEqual((soa.type, soa.ttl, soa.payload.minimum),
                                 (dns.SOA, dnszone.NEGATIVE_TTL, dnszone.NEGATIVE_TTL), name)
        # The SOA asked for itself keeps its own TTL.
        m = parse(self.raw("example.com", dns.SOA))
        self.assertEqual(m.answers[0].ttl, dnszone.TTL)

    def test_question_case_comes_back(self):
        self.raw("Nothing.example.com")
        m = parse(self.raw("NOTHING.Example.COM"))
        self.assertEqual(self.service.fast.nx_hits, 1)
        self.assertEqual(m.queries[0].name.name, b"NOTHING.Example.COM")
        self.assertEqual(m.rCode, dns.ENAME)

    def test_counted_as_nxdomain(self):
        self.raw("nothing.example.com")
        self.raw("nothing.example.com")
        families = {f.name: f for f in self.service.collector.collect()}
        samples = {s.labels["kind"]: s.value for s in families["allworx_dns_queries"].samples
                   if s.name.endswith("_total")}
        self.assertEqual(samples["nxdomain"], 2)
        self.assertEqual(samples["zone"], 0)

    def test_each_view_keeps_its_own(self):
        # corp is the LAN's alone: the WAN's view says it does not exist.
        self.assertEqual(parse(self.raw("corp.example.com", peer=WAN_HOST)).rCode, dns.ENAME)
        self.assertEqual(parse(self.raw("corp.example.com", peer=WAN_HOST)).rCode, dns.ENAME)
        self.assertEqual(self.service.fast.nx_hits, 1)
        m = parse(self.raw("corp.example.com"))
        self.assertEqual((m.rCode, len(m.answers)), (dns.OK, 1))
        self.assertEqual((self.service.fast.negatives(False), self.service.fast.negatives(True)),
                         (1, 0))

    def test_odd_types_and_other_names_go_the_full_path(self):
        self.raw("nothing.example.com", 99)
        self.raw("nothing.example.com", 99)
        self.assertEqual(self.service.fast.nx_hits, 0)
        self.assertEqual(self.service.fast.negatives(True), 0)

    def test_bounded_the_oldest_go_first(self):
        self.patch(dnsfast, "NEGATIVE_MAX", 3)
        for i in range(5):
            self.raw("gone%d.example.com" % i)
        self.assertEqual(self.service.fast.negatives(True), 3)
        self.raw("gone0.example.com")     # dropped: the full path again
        self.raw("gone4.example.com")     # kept
        self.assertEqual(self.service.fast.nx_hits, 1)
        self.assertEqual(len(self.service.fast.zone), 3)

    def test_a_record_added_live_answers_at_once(self):
        self.raw("later.example.com")
        self.office.put_record("record", "later", {"a": "192.168.2.31"})
        m = parse(self.raw("later.example.com"))
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.168.2.31")

    def test_a_lease_name_answers_at_once_and_the_serial_is_current(self):
        for name in ("pc1.example.com", "other.example.com"):
            self.raw(name)
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:01",
                                    ipaddress.IPv4Address("192.168.2.60"), "pc1",
                                    self.reactor.seconds() + 600))
        m = parse(self.raw("pc1.example.com"))
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.168.2.60")
        # The other names' NXDOMAIN carries the zone's SOA as it is now.
        serial = self.service.zone.serial
        m = parse(self.raw("other.example.com"))
        self.assertEqual((m.rCode, m.authority[0].payload.serial), (dns.ENAME, serial))


class CacheNegativeTests(ServiceCase):

    def test_upstream_nxdomain_from_the_fast_path_with_ttls_running_down(self):
        self.assertIsNone(self.ask("gone.internet.example"))
        port = self.open_upstream()[0]
        port.protocol.datagramReceived(*upstream_reply(
            port, rcode=dns.ENAME, authority=[soa_rr("internet.example", minimum=60)]))
        first = self.last_reply()
        self.assertEqual(first.rCode, dns.ENAME)
        self.reactor.advance(10)
        hits = self.service.fast.cache_hits
        m = self.ask("gone.internet.example")
        self.assertEqual(self.service.fast.cache_hits, hits + 1)
        self.assertEqual((m.rCode, m.authority[0].type, m.authority[0].ttl),
                         (dns.ENAME, dns.SOA, first.authority[0].ttl - 10))
        self.reactor.advance(50)
        self.assertIsNone(self.ask("gone.internet.example"))   # expired: asked again


class SiteAddedTests(ForwarderCase):

    conf = SITES_CONF

    def test_a_site_added_takes_names_the_zone_said_were_not_there(self):
        self.office.delete_record("site", "branch")
        for qid in (1, 2):
            m = self.ask("pc7.branch.example.com", qid=qid)
            self.assertEqual(m.rCode, dns.ENAME)
        self.assertEqual(self.service.fast.nx_hits, 1)
        self.office.put_record("site", "branch", {
            "public_key": KEY2, "address": BRANCH[0], "networks": "192.168.3.0/24",
            "extensions": "200-299", "domain": "branch.example.com"})
        self.to_site("pc7.branch.example.com")


class FakeSocket:
    """recvfrom from a list of datagrams (then EAGAIN); sendto recorded."""

    def __init__(self, datagrams):
        self.datagrams = list(datagrams)
        self.sent = []

    def recvfrom(self, size):
        if not self.datagrams:
            raise OSError(errno.EAGAIN, "nothing")
        item = self.datagrams.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendto(self, data, addr):
        self.sent.append((data, addr))


class UdpPortTests(ServiceCase):

    def port_with(self, datagrams):
        p = dnsserver.DnsUdpPort(0, self.port.protocol, maxPacketSize=4096,
                                 reactor=self.reactor)
        p.socket = FakeSocket(datagrams)
        return p

    def test_every_waiting_datagram_answered_in_one_wake_up(self):
        self.ask("files.example.com")           # now on the fast path
        self.ask("nothing.example.com")
        waiting = [(query("files.example.com", qid=i), LAN_PC) for i in range(50)]
        waiting += [(query("nothing.example.com", qid=100), WAN_HOST),
                    (query("printer.example.com", qid=101), LAN_PC),   # full path
                    (b"\x00\x09\x01\x00" + bytes(8), LAN_PC)]     # no question: FORMERR
        p = self.port_with(waiting)
        full_before = len(self.port.sent)
        p.doRead()
        self.assertEqual(p.socket.datagrams, [])
        fast = [parse(data).id for data, addr in p.socket.sent]
        self.assertEqual(fast, list(range(50)))
        full = [data for data, addr in self.port.sent[full_before:]]
        self.assertEqual([parse(d).id for d in full[:2]], [100, 101])
        self.assertEqual(parse(full[0]).rCode, dns.ENAME)   # the WAN's view: not yet kept
        self.assertEqual(len(full), 3)

    def test_the_same_bytes_as_datagram_received(self):
        self.ask("files.example.com")
        data = query("FILES.example.com", qid=7, edns=1232)
        self.port.protocol.datagramReceived(data, LAN_PC)
        p = self.port_with([(data, LAN_PC)])
        p.doRead()
        self.assertEqual(p.socket.sent, [self.port.sent[-1]])

    def test_a_refused_send_or_a_failing_query_does_not_stop_the_loop(self):
        self.ask("files.example.com")
        p = self.port_with([(query("files.example.com", qid=1), LAN_PC),
                            (query("files.example.com", qid=2), LAN_PC)])

        def broken(data, addr):
            raise OSError(errno.ENOBUFS, "full")
        p.socket.sendto = broken
        p.doRead()
        self.assertEqual(p.socket.datagrams, [])

        def failing(data, lan):
            raise ValueError("bug")
        p = self.port_with([(query("a.example.com"), LAN_PC), (query("files.example.com"),
                                                               LAN_PC)])
        self.port.protocol.fast.answer = failing
        p.doRead()
        self.assertEqual(p.socket.datagrams, [])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_other_read_errors_are_raised(self):
        p = self.port_with([OSError(errno.EBADF, "gone")])
        self.assertRaises(OSError, p.doRead)

    def test_a_real_reactor_gets_the_dns_port(self):
        from twisted.internet import reactor
        p = dnsserver.listen_dns_udp(reactor, 0, dnsserver.DnsDatagramProtocol(
            self.service.factory))
        self.addCleanup(p.stopListening)
        self.assertIsInstance(p, dnsserver.DnsUdpPort)
        other = dnsserver.listen_dns_udp(self.reactor, 5353, dnsserver.DnsDatagramProtocol(
            self.service.factory))
        self.assertIsInstance(other, type(self.port))   # the fake reactor's own



class RetiredNegativeTests(ServiceCase):
    """
    A lease drops the zone's NXDOMAIN answers (`drop_negatives`): at once,
    never served again, whatever their number, at a cost that does not grow
    with it; the tables stay bounded however often it happens.
    """

    def setUp(self):
        ServiceCase.setUp(self)
        self.patch(dnsfast, "NEGATIVE_MAX", 100)
        self.fast = self.service.fast

    def nxdomain(self, name):
        self.port.protocol.datagramReceived(query(name), LAN_PC)
        return parse(self.port.sent[-1][0]).rCode

    def test_a_drop_takes_out_a_bounded_number_of_answers(self):
        for i in range(100):
            self.assertEqual(self.nxdomain("gone%d.example.com" % i), dns.ENAME)
        self.assertEqual(self.fast.negatives(True), 100)
        held = len(self.fast.zone)
        self.fast.drop_negatives()
        self.assertEqual(self.fast.negatives(True), 0)
        self.assertGreaterEqual(len(self.fast.zone), held - dnsfast.RETIRE_STEP)

    def test_a_retired_answer_is_never_served(self):
        raw = query("gone.example.com", qid=7)
        self.assertEqual(self.nxdomain("gone.example.com"), dns.ENAME)   # the full path; kept
        self.assertEqual(parse(self.fast.answer(raw, True)).rCode, dns.ENAME)
        self.assertEqual(parse(self.fast.answer(raw, True)).rCode, dns.ENAME)   # the memo's
        self.fast.drop_negatives()
        self.assertIsNone(self.fast.answer(raw, True))
        # The name given by a lease answers at once.
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:09", ipaddress.IPv4Address(
            "192.168.2.40"), "gone", self.reactor.seconds() + 600))
        self.assertEqual(self.nxdomain("gone.example.com"), dns.OK)

    def test_the_tables_stay_bounded(self):
        for round in range(30):
            for i in range(100):
                self.nxdomain("r%d-%d.example.com" % (round, i))
            self.fast.drop_negatives()
            self.assertLessEqual(len(self.fast.zone), 2 * 100 + 10, round)
        self.assertEqual(self.fast.negatives(True), 0)
