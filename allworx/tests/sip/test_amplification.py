"""
SIP over UDP as an amplifier (issue 21, item 7): a request from an address
nobody verified drew answers of up to 8,285 bytes. Whatever such a request
holds (huge Via, To or From values, many Via lines, bytes that are not
UTF-8, any method, any number), everything the server sends back to its
source, retransmissions included, fits in `udp_limit` of the request: twice
its size, or `UDP_FLOOR` bytes for the smallest.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.sip.core import UDP_FLOOR, udp_limit
from allworx.protocols.sip.transaction import T1
from allworx.tests.siphelpers import Harness, Phone, offer

SOURCES = [("192.168.2.66", 5060), ("198.51.100.10", 5060)]     # a LAN stranger, the WAN


def build(method, ext, vias, pad_via, pad_from, pad_to, junk, compact, to_tag, max_forwards,
          body, source):
    host, port = source
    names = ({"Via": "v", "From": "f", "To": "t", "Call-ID": "i"} if compact
             else {"Via": "Via", "From": "From", "To": "To", "Call-ID": "Call-ID"})
    lines = ["%s sip:%s@192.168.2.254 SIP/2.0" % (method, ext)]
    for i in range(vias):
        lines.append("%s: SIP/2.0/UDP %s:%d;branch=z9hG4bK%d%s;rport"
                     % (names["Via"], host if i == 0 else "10.0.%d.1" % i, port, i, pad_via))
    lines += ["Max-Forwards: %d" % max_forwards,
              '%s: "%s" <sip:%s@example.com>;tag=f1' % (names["From"], pad_from, ext),
              '%s: "%s" <sip:%s@example.com>%s' % (names["To"], pad_to, ext,
                                                   ";tag=x1" if to_tag else ""),
              "%s: amp-%s" % (names["Call-ID"], ext),
              "CSeq: 1 %s" % method.upper(),
              "Contact: <sip:%s@%s:%d>" % (ext, host, port),
              "Event: message-summary"]
    data = body.encode() if body else b""
    if data:
        lines.append("Content-Type: application/sdp")
    lines.append("Content-Length: %d" % len(data))
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
    if junk:
        # Bytes that are not UTF-8 in the From value: the parse fails and
        # the salvaged 400 echoes what it can.
        raw = raw.replace(b'tag=f1', b'tag=f1' + b"\xff\xfe" * junk, 1)
    return raw


class AmplificationTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.assertEqual(Phone(self.h, "102", "192.168.2.12").register().code, 200)
        self.h.take()

    def answers(self, data, source):
        """Every datagram sent to `source` for `data`, all timers run out."""
        self.h.sent = []
        self.h.receive(data, source)
        self.h.clock.pump([T1] * 140)
        sent, self.h.sent = self.h.sent, []
        return [d for d, dest in sent if (dest.host, dest.port) == source]

    def assertBounded(self, data, source):
        out = self.answers(data, source)
        total = sum(len(d) for d in out)
        self.assertLessEqual(total, udp_limit(len(data)),
                             "%d bytes (%d datagrams: %r) answered a %d-byte request"
                             % (total, len(out), [d[:40] for d in out], len(data)))
        return out

    @settings(max_examples=150, deadline=None)
    @given(method=st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "BYE", "CANCEL",
                                   "ACK", "INFO", "FOO", "invite"]),
           ext=st.sampled_from(["101", "102", "999", "400", "alice"]),
           vias=st.integers(1, 60),
           pad_via=st.sampled_from([0, 10, 300, 3000]).map(lambda n: ";x=" + "v" * n if n else ""),
           pad_from=st.sampled_from([0, 500, 5000]).map(lambda n: "F" * n),
           pad_to=st.sampled_from([0, 500, 5000]).map(lambda n: "T" * n),
           junk=st.sampled_from([0, 0, 0, 1, 500, 2000]),
           compact=st.booleans(), to_tag=st.booleans(),
           max_forwards=st.sampled_from([70, 0]),
           body=st.sampled_from(["", offer("192.168.2.66")]),
           source=st.sampled_from(SOURCES))
    def test_every_udp_answer_to_a_stranger_is_bounded(self, **kwargs):
        self.assertBounded(build(**kwargs), kwargs["source"])

    def test_the_smallest_requests_get_at_most_the_floor(self):
        for method in ("OPTIONS", "REGISTER", "INVITE", "SUBSCRIBE"):
            data = ("%s sip:1@a SIP/2.0\r\nv:SIP/2.0/UDP a\r\nf:<sip:1@a>;tag=1\r\nt:<sip:1@a>\r\n"
                    "i:1\r\nCSeq:1 %s\r\n\r\n" % (method, method)).encode()
            self.assertLess(len(data), UDP_FLOOR // 2)
            out = self.assertBounded(data, SOURCES[0])
            self.assertTrue(out, "%s got no answer at all" % method)

    def test_not_utf8_is_echoed_byte_for_byte_not_tripled(self):
        data = build("OPTIONS", "101", 1, "", "", "", 3000, False, False, 70, "", SOURCES[0])
        [answer] = self.assertBounded(data, SOURCES[0])
        self.assertTrue(answer.startswith(b"SIP/2.0 400 "))
        self.assertIn(b"\xff\xfe" * 3000, answer)

    def test_an_answer_too_large_is_dropped_and_counted_unless_authenticated(self):
        from allworx.protocols.sip.core import ERRORS, Destination
        from allworx.protocols.sip.message import parse
        data = build("OPTIONS", "101", 1, "", "", "", 0, False, False, 70, "", SOURCES[0])
        request = parse(data)
        self.assertEqual(request.size, len(data))
        udp, tcp = Destination("UDP", *SOURCES[0]), Destination("TCP", *SOURCES[0])
        big = b"x" * (udp_limit(len(data)) + 1)
        counter = ERRORS.labels("oversized_answer")
        before = counter._value.get()
        self.assertIsNone(self.h.core.bounded(request, big, udp))
        self.assertEqual(counter._value.get(), before + 1)
        self.assertEqual(self.h.core.bounded(request, big, tcp), big)
        request.authenticated = True
        self.assertEqual(self.h.core.bounded(request, big, udp), big)
