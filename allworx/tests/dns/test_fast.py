"""Tests for allworx.protocols.dns.fast: precomputed wire answers and the fast path."""

import struct

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from allworx.protocols.dns import fast as dnsfast
def a_record(name=b"www.example.com", address="203.0.113.2", ttl=300, auth=True):
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address, ttl), auth=auth)


def query(name=b"www.example.com", qtype=dns.A, qid=4242, rd=True, edns=None, cls=dns.IN):
    if edns is None:
        m = dns.Message(id=qid, recDes=rd)
    else:
        m = dns._EDNSMessage(id=qid, recDes=rd, maxSize=edns)
    m.queries = [dns.Query(name, qtype, cls)]
    return m.toStr()


def parse(wire):
    m = dns._EDNSMessage()
    m.fromStr(wire)
    return m


class ResponseWireTests(unittest.TestCase):

    def test_render_round_trips(self):
        wire = dnsfast.ResponseWire(b"www.example.com", dns.A, dns.IN, dns.OK, True,
                                    [a_record()])
        m = parse(wire.render(7, dnsfast.RD))
        self.assertEqual((m.id, m.answer, m.auth, m.recDes, m.recAv), (7, True, True, True, False))
        self.assertEqual(m.answers[0].payload.dottedQuad(), "203.0.113.2")

    def test_extended_rcode_goes_in_the_opt_record(self):
        wire = dnsfast.ResponseWire(b"x.example.com", dns.A, dns.IN, 16, False)
        raw = wire.render(1, dnsfast.EDNS)
        self.assertEqual(raw[3] & 0x0F, 0)
        self.assertEqual(raw[-11:][5], 1)   # extended rcode bits: 16 >> 4

    def test_too_big_drops_additional_first_then_truncates(self):
        answers = [a_record(address="192.168.2.%d" % i) for i in range(1, 20)]
        extra = [a_record(b"extra.example.com", "192.168.2.%d" % i) for i in range(1, 20)]
        wire = dnsfast.ResponseWire(b"www.example.com", dns.A, dns.IN, dns.OK, True,
                                    answers, (), extra)
        full = parse(wire.render(1, 0, 65535))
        self.assertEqual((len(full.answers), len(full.additional), full.trunc), (19, 19, False))
        trimmed = parse(wire.render(1, 0, 512))
        self.assertEqual((len(trimmed.answers), len(trimmed.additional), trimmed.trunc),
                         (19, 0, False))
        many = [a_record(address="10.0.%d.%d" % (i // 200, i % 200)) for i in range(40)]
        wire = dnsfast.ResponseWire(b"www.example.com", dns.A, dns.IN, dns.OK, True, many)
        cut = parse(wire.render(1, 0, 512))
        self.assertEqual((len(cut.answers), cut.trunc), (0, True))

    def test_aging_patches_every_ttl(self):
        wire = dnsfast.ResponseWire(b"www.example.com", dns.A, dns.IN, dns.OK, False,
                                    [a_record(ttl=300), a_record(ttl=100)], stored=1000.0,
                                    expires=1100.0)
        wire.age_to(1040)
        m = parse(wire.render(1, 0))
        self.assertEqual([rr.ttl for rr in m.answers], [260, 60])
        wire.age_to(2000)
        self.assertEqual([rr.ttl for rr in parse(wire.render(1, 0)).answers], [0, 0])


    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 120), st.integers(0, 40), st.integers(512, 1232),
           st.sampled_from([0, dnsfast.RD, dnsfast.EDNS, dnsfast.RD | dnsfast.EDNS | dnsfast.RA]))
    def test_a_reply_never_exceeds_the_limit(self, answers, extra, limit, idx):
        wire = dnsfast.ResponseWire(
            b"www.example.com", dns.A, dns.IN, dns.OK, True,
            [a_record(address="10.0.%d.%d" % (i // 200, i % 200)) for i in range(answers)], (),
            [a_record(b"glue.example.com", "10.1.0.%d" % i) for i in range(extra)])
        raw = wire.render(1, idx, limit)
        self.assertLessEqual(len(raw), limit)
        m = parse(raw)
        self.assertEqual(bool(m.trunc), len(m.answers) < answers)
        self.assertIn(len(m.answers), (0, answers))
        self.assertIn(len(m.additional), (0, extra))


class FastAnswerTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.fast = dnsfast.FastAnswers(self.clock)
        www = dnsfast.ResponseWire(b"www.example.com", dns.A, dns.IN, dns.OK, True, [a_record()])
        # A public name: in the inside view's table and the outside view's.
        self.fast.zone[dnsfast.question_key("www.example.com", dns.A)] = www
        self.fast.outside[dnsfast.question_key("www.example.com", dns.A)] = www

    def test_id_and_question_case_come_back(self):
        raw = self.fast.answer(query(b"wWw.ExAmple.COM", qid=0xBEEF), True)
        m = parse(raw)
        self.assertEqual(m.id, 0xBEEF)
        self.assertEqual(m.queries[0].name.name, b"wWw.ExAmple.COM")
        self.assertEqual(m.answers[0].payload.dottedQuad(), "203.0.113.2")
        self.assertTrue(m.auth)
        self.assertEqual(self.fast.zone_hits, 1)

    def test_rd_copied_and_ra_only_for_the_lan(self):
        lan = parse(self.fast.answer(query(rd=True), True))
        self.assertEqual((lan.recDes, lan.recAv), (True, True))
        wan = parse(self.fast.answer(query(rd=False), False))
        self.assertEqual((wan.recDes, wan.recAv), (False, False))
        self.fast.ra_lan = 0
        self.assertFalse(parse(self.fast.answer(query(), True)).recAv)

    def test_each_side_reads_its_own_view(self):
        key = dnsfast.question_key("pc1.example.com", dns.A)
        self.fast.zone[key] = dnsfast.ResponseWire(b"pc1.example.com", dns.A, dns.IN, dns.OK,
                                                   True, [a_record(b"pc1.example.com", "192.168.2.10")])
        self.assertIsNotNone(self.fast.answer(query(b"pc1.example.com"), True))
        self.assertIsNone(self.fast.answer(query(b"pc1.example.com"), False))

    def test_edns_query_gets_an_opt_record(self):
        m = parse(self.fast.answer(query(edns=4096), True))
        self.assertEqual(m.maxSize, dnsfast.MAX_UDP)
        self.assertEqual(m.ednsVersion, 0)

    def test_edns_with_options_is_served(self):
        # dig sends a COOKIE option; the answer simply carries none.
        raw = query(edns=1232)
        cookie = struct.pack("!HH", 10, 8) + b"\x01" * 8
        raw = raw[:-2] + struct.pack("!H", len(cookie)) + cookie
        self.assertIsNotNone(self.fast.answer(raw, True))

    def test_unusual_queries_go_to_the_full_path(self):
        self.assertIsNone(self.fast.answer(query(b"other.example.com"), True))
        self.assertIsNone(self.fast.answer(query(qtype=dns.AAAA), True))
        notify = bytearray(query())
        notify[2] |= dns.OP_NOTIFY << 3
        self.assertIsNone(self.fast.answer(bytes(notify), True))
        response = bytearray(query())
        response[2] |= 0x80
        self.assertIsNone(self.fast.answer(bytes(response), True))
        self.assertIsNone(self.fast.answer(query(edns=1232)[:-1], True))
        self.assertIsNone(self.fast.answer(query() + b"\x00", True))
        v1 = bytearray(query(edns=1232))
        v1[-5] = 1  # EDNS version 1: BADVERS, the full path's job
        self.assertIsNone(self.fast.answer(bytes(v1), True))

    def test_cache_entries_for_the_lan_only_and_until_they_expire(self):
        key = dnsfast.question_key("web.internet.example", dns.A)
        self.fast.cache[key] = dnsfast.ResponseWire(
            b"web.internet.example", dns.A, dns.IN, dns.OK, False,
            [a_record(b"web.internet.example", "198.51.100.10", 60, False)],
            stored=0.0, expires=60.0)
        q = query(b"web.internet.example")
        self.assertIsNone(self.fast.answer(q, False))
        self.clock.advance(20.5)
        m = parse(self.fast.answer(q, True))
        self.assertEqual((m.answers[0].ttl, m.auth), (40, False))
        self.clock.advance(39.5)
        self.assertIsNone(self.fast.answer(q, True))
        self.assertNotIn(key, self.fast.cache)

    def test_a_query_asked_again_is_answered_from_the_memo_alike(self):
        q = query(b"WWW.example.com", qid=1, edns=1232)
        first = self.fast.answer(q, True)
        self.assertEqual(len(self.fast._memo_lan), 1)
        again = self.fast.answer(b"\x00\x02" + q[2:], True)
        self.assertEqual((again[:2], again[2:]), (b"\x00\x02", first[2:]))
        self.assertEqual(self.fast.zone_hits, 2)
        # The WAN's side has its own; any change to a table empties its side's.
        self.assertEqual(self.fast.answer(q, False)[2:], first[2:].replace(b"\x85\x80", b"\x85\x00"))
        self.fast.zone.pop(dnsfast.question_key("www.example.com", dns.A))
        self.assertEqual((len(self.fast._memo_lan), len(self.fast._memo_wan)), (0, 1))
        self.assertIsNone(self.fast.answer(q, True))

    def test_memo_of_a_cache_answer_holds_for_its_second_only(self):
        key = dnsfast.question_key("web.internet.example", dns.A)
        self.fast.cache[key] = dnsfast.ResponseWire(
            b"web.internet.example", dns.A, dns.IN, dns.OK, False,
            [a_record(b"web.internet.example", "198.51.100.10", 60, False)],
            stored=0.0, expires=60.0)
        q = query(b"web.internet.example")
        self.assertEqual(parse(self.fast.answer(q, True)).answers[0].ttl, 60)
        self.clock.advance(0.5)
        self.assertEqual(parse(self.fast.answer(q, True)).answers[0].ttl, 60)
        self.clock.advance(0.5)
        self.assertEqual(parse(self.fast.answer(q, True)).answers[0].ttl, 59)
        self.assertEqual(self.fast.cache_hits, 3)
        # Another spelling ages the entry; the first one's memo is of the second before.
        other = query(b"WEB.internet.example")
        self.assertEqual(parse(self.fast.answer(other, True)).answers[0].ttl, 59)
        self.clock.advance(1)
        self.assertEqual(parse(self.fast.answer(other, True)).answers[0].ttl, 58)
        self.assertEqual(parse(self.fast.answer(q, True)).answers[0].ttl, 58)
        self.clock.advance(58)
        self.assertIsNone(self.fast.answer(q, True))
        # A new answer for the question replaces the remembered one.
        self.fast.cache[key] = dnsfast.ResponseWire(
            b"web.internet.example", dns.A, dns.IN, dns.OK, False,
            [a_record(b"web.internet.example", "198.51.100.11", 60, False)],
            stored=60.0, expires=120.0)
        self.assertEqual(parse(self.fast.answer(q, True)).answers[0].payload.dottedQuad(),
                         "198.51.100.11")

    def test_memo_is_bounded_and_tcp_not_remembered(self):
        self.patch(dnsfast, "MEMO_MAX", 2)
        for qid in range(3):
            self.fast.answer(query(b"www.example.com", edns=600 + qid), True)
            self.assertLessEqual(len(self.fast._memo_lan), 2)
        self.fast._memo_lan.clear()
        self.fast.answer(query(), True, stream=True)
        self.assertEqual(len(self.fast._memo_lan), 0)
        # Nor a query padded out to more than MEMO_QUERY bytes (answered all the same).
        raw = query(edns=1232)
        pad = struct.pack("!HH", 12, 400) + bytes(400)
        raw = raw[:-2] + struct.pack("!H", len(pad)) + pad
        self.assertIsNotNone(self.fast.answer(raw, True))
        self.assertEqual(len(self.fast._memo_lan), 0)

    def test_tcp_is_never_truncated(self):
        many = [a_record(address="10.0.%d.%d" % (i // 200, i % 200)) for i in range(100)]
        self.fast.zone[dnsfast.question_key("big.example.com", dns.A)] = dnsfast.ResponseWire(
            b"big.example.com", dns.A, dns.IN, dns.OK, True, many)
        udp = parse(self.fast.answer(query(b"big.example.com"), True))
        self.assertTrue(udp.trunc)
        tcp = parse(self.fast.answer(query(b"big.example.com"), True, stream=True))
        self.assertEqual((tcp.trunc, len(tcp.answers)), (False, 100))
        edns = parse(self.fast.answer(query(b"big.example.com", edns=4096), True))
        self.assertEqual((bool(edns.trunc), len(edns.answers)), (True, 0))

    def test_error_reply(self):
        self.assertIsNone(dnsfast.error_reply(b"\x00" * 11, dns.EFORMAT))
        self.assertIsNone(dnsfast.error_reply(b"\x12\x34\x80" + b"\x00" * 9, dns.EFORMAT))
        raw = dnsfast.error_reply(b"\x12\x34\x01\x00" + b"\xff" * 8, dns.EFORMAT)
        self.assertEqual(raw, b"\x12\x34\x81\x01" + b"\x00" * 8)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=80), st.booleans())
    def test_random_bytes_never_raise(self, data, lan):
        reply = self.fast.answer(data, lan)
        if reply is not None:
            self.assertEqual(reply[:2], data[:2])
            parse(reply)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 80), st.binary(min_size=1, max_size=4))
    def test_mutated_queries_never_raise(self, position, junk):
        raw = bytearray(query(edns=1232))
        position = min(position, len(raw) - 1)
        raw[position:position + len(junk)] = junk
        reply = self.fast.answer(bytes(raw), True)
        if reply is not None:
            parse(reply)
