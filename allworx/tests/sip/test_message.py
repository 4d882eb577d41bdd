"""Tests of the SIP message codec: round trips, RFC 4475-style torture, hypothesis."""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.sip.message import (
    MAX_MESSAGE, NameAddr, Request, SipParseError, SipUri, Via, canonical, make_response,
    parse, split_commas)

INVITE = (b"INVITE sip:102@example.com SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bK1;rport\r\n"
          b"Max-Forwards: 70\r\n"
          b"From: \"Alice\" <sip:101@example.com>;tag=a1\r\n"
          b"To: <sip:102@example.com>\r\n"
          b"Call-ID: abc@192.168.2.11\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Contact: <sip:101@192.168.2.11>\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length: 4\r\n\r\nv=0\n")


class ParseTests(unittest.TestCase):

    def test_request_fields(self):
        m = parse(INVITE)
        self.assertTrue(m.is_request)
        self.assertEqual((m.method, m.uri), ("INVITE", "sip:102@example.com"))
        self.assertEqual(m.cseq, (1, "INVITE"))
        self.assertEqual(m.from_tag, "a1")
        self.assertIsNone(m.to_tag)
        self.assertEqual(m.body, b"v=0\n")
        self.assertEqual(m.top_via.branch, "z9hG4bK1")

    def test_round_trip(self):
        m = parse(INVITE)
        again = parse(m.to_bytes())
        self.assertEqual(again.headers, m.headers)
        self.assertEqual(again.body, m.body)

    def test_compact_names_folding_and_case(self):
        data = (b"OPTIONS sip:a@b SIP/2.0\r\n"
                b"v: SIP/2.0/UDP h1;branch=z9hG4bKx\r\n"
                b"V: SIP/2.0/TCP h2:5070;branch=z9hG4bKy,\r\n SIP/2.0/UDP h3;branch=z9hG4bKz\r\n"
                b"f: <sip:a@b>;tag=1\r\nt:<sip:c@d>\r\ni: x\r\n"
                b"cSeQ  :   7\r\n\t OPTIONS\r\nl: 0\r\n\r\n")
        m = parse(data)
        self.assertEqual(len(m.vias), 3)
        self.assertEqual(Via.parse(m.vias[1]).port, 5070)
        self.assertEqual(m.cseq, (7, "OPTIONS"))
        self.assertEqual(m.call_id, "x")
        self.assertEqual(canonical("CALL-id"), "Call-ID")

    def test_response(self):
        m = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                  b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
        self.assertFalse(m.is_request)
        self.assertEqual(m.code, 180)
        self.assertEqual(m.to_tag, "2")

    def test_content_length_checks(self):
        too_long = INVITE.replace(b"Content-Length: 4", b"Content-Length: 40")
        self.assertRaises(SipParseError, parse, too_long)
        shorter = parse(INVITE.replace(b"Content-Length: 4", b"Content-Length: 2"))
        self.assertEqual(shorter.body, b"v=")
        self.assertRaises(SipParseError, parse, INVITE.replace(b"Content-Length: 4", b"Content-Length: -1"))
        no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
        self.assertEqual(parse(no_length).body, b"v=0\n")
        self.assertRaises(SipParseError, parse, no_length, stream=True)

    def test_torture(self):
        bad = [
            b"",
            b"\x00\x01garbage",
            b"INVITE sip:a@b SIP/3.0\r\n\r\n",
            INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
            INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"),
            INVITE.replace(b"Call-ID: abc@192.168.2.11\r\n", b""),
            INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: abc"),
            INVITE.replace(b"To: <sip:102@example.com>", b"To <sip:102@example.com>"),
            INVITE.replace(b"INVITE sip:102@example.com", b"INVITE 102"),
            INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nContent-Length: 5"),
            b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 300 + b"\r\n",
            INVITE + b"x" * MAX_MESSAGE,
        ]
        for data in bad:
            self.assertRaises(SipParseError, parse, data)

    def test_escaped_and_quoted_values(self):
        values = split_commas('"Doe, John" <sip:j@x>;q=1, <sip:k@y,z>, sip:l@w')
        self.assertEqual(values, ['"Doe, John" <sip:j@x>;q=1', "<sip:k@y,z>", "sip:l@w"])
        na = NameAddr.parse('"Doe, John" <sip:j@x;transport=tcp>;tag=9;expires=60')
        self.assertEqual((na.display, na.uri, na.params["tag"]), ("Doe, John", "sip:j@x;transport=tcp", "9"))
        uri = SipUri.parse("sip:101:pw@[::1]:5070;transport=tcp?h=1")
        self.assertEqual((uri.user, uri.host, uri.port), ("101", "[::1]", 5070))
        self.assertRaises(SipParseError, SipUri.parse, "tel:+1555")
        self.assertRaises(SipParseError, Via.parse, "SIP/2.0 nonsense")

    def test_make_response(self):
        req = parse(INVITE)
        resp = make_response(req, 486, to_tag="zz")
        self.assertEqual(resp.code, 486)
        self.assertEqual(resp.to_tag, "zz")
        self.assertEqual(resp.vias, req.vias)
        self.assertIn(b"SIP/2.0 486 Busy Here", resp.to_bytes())

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=600))
    def test_garbage_never_escapes(self, data):
        try:
            parse(data)
        except SipParseError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(
        st.sampled_from(["Subject", "X-Thing", "User-Agent", "Accept", "Expires"]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                       blacklist_characters=","), min_size=1, max_size=30)),
        max_size=8),
        st.binary(max_size=200),
        st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE"]))
    def test_round_trip_any_headers(self, extra, body, method):
        req = parse(INVITE.replace(b"INVITE", method.encode()).replace(b"Content-Length: 4\r\n\r\nv=0\n", b"\r\n"))
        for k, v in extra:
            req.add(k, v)
        req.body = body
        again = parse(req.to_bytes())
        self.assertEqual(again.headers, req.headers)
        self.assertEqual(again.body, body)
        self.assertEqual(again.method, method)

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, len(INVITE)), st.binary(min_size=1, max_size=8))
    def test_mutations_never_escape(self, at, junk):
        data = INVITE[:at] + junk + INVITE[at:]
        try:
            m = parse(data)
            m.to_bytes()
        except SipParseError:
            pass

    def test_request_serialises_with_length(self):
        r = Request([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")], b"abc", method="MESSAGE", uri="sip:a@b")
        self.assertTrue(r.to_bytes().endswith(b"Content-Length: 3\r\n\r\nabc"))
