"""
Fuzzers of the DNS server (issue 21) beyond random bytes (those are in
test_service's MalformedTests): queries whose header is well formed and
whose counts match what follows, with fuzzed flags, opcodes, names, types,
classes and EDNS records, from the LAN and the WAN, over UDP and TCP; and
fuzzed answers from the forwarder to the queries the server sent on. Every
reply must parse, carry the query's id and question, fit the UDP size the
client allowed, and nothing may log a traceback.
"""

import struct

from hypothesis import example, given, settings, strategies as st
from twisted.internet.testing import StringTransport
from twisted.names import dns

from allworx.tests.dns.test_service import LAN_PC, WAN_HOST, ServiceCase, parse
from allworx.tests.logwatch import LogWatch

NAMES = [b"www.example.com", b"WWW.Example.COM", b"nothing.example.com", b"web.internet.example",
         b"files.example.com", b"printer.example.com", b"example.com", b"", b"2.168.192.in-addr.arpa",
         b"10.2.168.192.in-addr.arpa", b"a" * 63 + b".example.com", b"x.local"]
labels = st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4)
qtypes = st.sampled_from([dns.A, dns.AAAA, dns.MX, dns.TXT, dns.SOA, dns.NS, dns.PTR, dns.CNAME, dns.SRV,
                          dns.ANY, dns.AXFR, dns.IXFR, dns.OPT, 0, 65, 255, 65535]) | st.integers(0, 65535)
qclasses = st.sampled_from([dns.IN, dns.IN, dns.IN, dns.CH, dns.HS, dns.ANY, 0, 254, 65535])
opcodes = st.sampled_from([0, 0, 0, 0, 1, 2, 4, 5, 15])


def wire_name(labels_):
    return b"".join(bytes([len(label)]) + label for label in labels_) + b"\x00"


def names():
    return st.sampled_from(NAMES).map(lambda n: [l for l in n.split(b".") if l]) | labels


@st.composite
def queries(draw):
    """(wire, id, question or None, the UDP size the client allows)."""
    qid = draw(st.integers(0, 65535))
    flags = draw(opcodes) << 11 | draw(st.integers(0, 1)) << 10 | draw(st.integers(0, 1)) << 9 | \
        draw(st.integers(0, 1)) << 8 | draw(st.integers(0, 15)) << 4 | draw(st.integers(0, 15))
    questions = draw(st.lists(st.tuples(names(), qtypes, qclasses), max_size=2)) \
        if draw(st.integers(0, 9)) == 0 else [draw(st.tuples(names(), qtypes, qclasses))]
    body = b"".join(wire_name(n) + struct.pack("!HH", t, c) for n, t, c in questions)
    additional = 0
    size = 512
    if draw(st.booleans()):
        udp = draw(st.sampled_from([0, 512, 1232, 4096, 65535]) | st.integers(0, 65535))
        version = draw(st.sampled_from([0, 0, 0, 1, 255]))
        options = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in draw(
            st.lists(st.tuples(st.sampled_from([3, 8, 10, 12, 15, 65001]), st.binary(max_size=12)),
                     max_size=2)))
        body += b"\x00" + struct.pack("!HHBBHH", dns.OPT, udp, 0, version,
                                      draw(st.sampled_from([0, 0x8000])), len(options)) + options
        additional = 1 + draw(st.sampled_from([0, 0, 0, 1]))         # sometimes two OPTs
        if additional == 2:
            body += body[-(11 + len(options)):]
        size = min(max(udp, 512), 1232)
    header = struct.pack("!HHHHHH", qid, flags, len(questions), 0, 0, additional)
    q = questions[0] if len(questions) == 1 else None
    return header + body, qid, q, size


rr_types = st.sampled_from([dns.A, dns.AAAA, dns.CNAME, dns.MX, dns.TXT, dns.NS, dns.SOA, dns.PTR])
ttls = st.sampled_from([0, 1, 60, 86400, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])


ASKED = object()      # stands for the name the server asked the forwarder


@st.composite
def records(draw):
    """A record of the forwarder's answer, as a function of the name asked."""
    name = draw(st.sampled_from([ASKED, b"web.internet.example", b"www.example.com", b"other.example", b""]))
    target = draw(st.sampled_from([ASKED, b"www.example.com", b"x.example"]))
    kind, ttl, minimum = draw(rr_types), draw(ttls), draw(ttls)
    address = draw(st.sampled_from(["198.51.100.10", "192.168.2.1", "0.0.0.0"]))
    text = draw(st.binary(max_size=300))

    def build(asked):
        pick = (lambda n: asked if n is ASKED else n)
        payload = {
            dns.A: lambda: dns.Record_A(address, ttl),
            dns.AAAA: lambda: dns.Record_AAAA("2001:db8::1", ttl),
            dns.CNAME: lambda: dns.Record_CNAME(pick(target), ttl),
            dns.MX: lambda: dns.Record_MX(10, b"mx.example", ttl),
            dns.TXT: lambda: dns.Record_TXT(text, ttl=ttl),
            dns.NS: lambda: dns.Record_NS(b"ns.example", ttl),
            dns.SOA: lambda: dns.Record_SOA(mname=b"ns.example", rname=b"h.example", minimum=minimum, ttl=ttl),
            dns.PTR: lambda: dns.Record_PTR(b"p.example", ttl),
        }[kind]()
        return dns.RRHeader(pick(name), kind, dns.IN, ttl, payload)
    return build


# The forwarder's answer: right id or not, rcode, TC, answer and authority records.
upstream_answers = st.none() | st.tuples(st.sampled_from([None] * 9 + [7]), st.sampled_from([0, 0, 0, 2, 3, 5]),
                                         st.sampled_from([False] * 9 + [True]),
                                         st.lists(records(), max_size=3), st.lists(records(), max_size=2))


class DnsFuzzTests(ServiceCase):

    def setUp(self):
        ServiceCase.setUp(self)
        self.logs = LogWatch(self)

    def check_replies(self, replies, qid, question, size, stream=False):
        """Each reply parses, answers this query, fits, and repeats the question byte for byte."""
        for reply in replies:
            m = parse(reply)
            self.assertEqual((m.id, m.answer), (qid, True), repr(reply))
            if not stream:
                self.assertLessEqual(len(reply), size, repr(reply))
            if question is not None and m.queries:
                name, qtype, qclass = question
                asked = wire_name(name) + struct.pack("!HH", qtype, qclass)
                self.assertEqual(reply[12:12 + len(asked)], asked, repr(reply))

    @settings(max_examples=300, deadline=None)
    @given(queries(), st.sampled_from([LAN_PC, WAN_HOST]), st.booleans(), upstream_answers)
    @example((struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 2) + wire_name([b"www", b"example", b"com"]) +
              b"\x00\x01\x00\x01" + (b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00") * 2, 9, None, 1232),
             LAN_PC, False, None)
    @example((b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wire_name([b"www.example", b"com"]) +
              b"\x00\x01\x00\x01", 7, ([b"www.example", b"com"], 1, 1), 512), LAN_PC, False, None)
    def test_queries_with_a_valid_header(self, query, peer, tcp, upstream):
        self.logs.clear()
        wire, qid, question, size = query
        upstream_before = {p.number: len(p.sent) for p in self.reactor.upstream}
        if tcp:
            proto = self.service.factory.buildProtocol(None)
            transport = StringTransport(peerAddress=type("A", (), {"host": peer[0]})())
            proto.makeConnection(transport)
            proto.dataReceived(struct.pack("!H", len(wire)) + wire)
        else:
            before = len(self.port.sent)
            self.port.protocol.datagramReceived(wire, peer)
        # What the server asked the forwarder gets a fuzzed answer.
        for port in self.open_upstream():
            if upstream is not None and len(port.sent) > upstream_before.get(port.number, 0):
                qid_upstream, rcode, trunc, answers, authority = upstream
                asked = parse(port.sent[-1][0])
                name = asked.queries[0].name.name
                m = dns.Message(id=asked.id if qid_upstream is None else qid_upstream, answer=True,
                                recAv=True, rCode=rcode, trunc=trunc)
                m.queries = asked.queries
                m.answers = [build(name) for build in answers]
                m.authority = [build(name) for build in authority]
                port.protocol.datagramReceived(m.toStr(), port.sent[-1][1])
        for _ in range(3):
            self.reactor.advance(5)      # every forwarder's timeout runs out within the example
        if tcp:
            out, replies = transport.value(), []
            while len(out) >= 2:
                (n,) = struct.unpack("!H", out[:2])
                replies.append(out[2:2 + n])
                out = out[2 + n:]
            proto.connectionLost(None)
            self.check_replies(replies, qid, question, size, stream=True)
        else:
            sent = self.port.sent[before:]
            self.assertTrue(all(addr == peer for _, addr in sent))
            self.assertLessEqual(len(sent), 1)
            self.check_replies([r for r, _ in sent], qid, question, size)
        self.logs.assert_no_traceback()
