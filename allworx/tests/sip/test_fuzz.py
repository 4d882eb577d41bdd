"""
Fuzzers of SIP (issue 21): messages built from odd but plausible parts
(start lines, compact and folded headers, odd values of Via, From, To,
CSeq, Contact, Route, Expires, Authorization), parsed on their own and
handed to the core as a phone on the LAN would send them, one after another
on shared Call-IDs and branches so transactions and dialogs meet. The parser
returns a message or raises SipParseError; the core answers with parseable
SIP, never raises, never logs a traceback.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.sip.message import NameAddr, SipParseError, SipUri, make_response, parse
from allworx.tests.logwatch import LogWatch
from allworx.tests.siphelpers import Harness, Phone, offer

METHODS = ["INVITE", "REGISTER", "ACK", "CANCEL", "BYE", "OPTIONS", "SUBSCRIBE", "NOTIFY", "INFO",
           "PRACK", "UPDATE", "MESSAGE", "REFER", "invite", "X-Y"]
URIS = ["sip:102@example.com", "sip:101@192.168.2.1", "sip:example.com", "sips:102@example.com",
        "tel:+1234", "sip:102@192.168.2.1:5060;transport=tcp", "sip:@", "sip:[::1]", "sip:a@b:0",
        "sip:a@b:99999", "sip:*97@example.com", "x:y", "sip:103@example.com;lr", "sip:102@192.168.2.12"]
HOSTS = ["192.168.2.11", "192.168.2.11:5060", "192.168.2.1:5060", "127.0.0.1", "[::1]:5060", "pc1",
         "a b", "", "192.168.2.11:0", "192.168.2.11:70000", "192.168.2.11:x"]
VIA_PARAMS = ["", ";rport", ";rport=5", ";rport=x", ";received=192.168.2.99", ";maddr=10.0.0.1", ";branch",
              ";branch=", ";ttl=1", ";branch=z9hG4bKawf1", ";branch=z9hG4bKawr2"]
NAME_ADDRS = ["<sip:101@example.com>", "sip:101@example.com", '"Al" <sip:101@example.com>',
              "<sip:102@example.com>", "<sip:101@example.com", "*", "<>", "<tel:1>", "sip:x@y;tag",
              "<sip:101@192.168.2.11:5060>", "<sip:101@192.168.2.11:5060>;expires=0",
              "<sip:101@192.168.2.11>;expires=x", "<sip:101@[::1]:5060>", "<sip:a@b:0>", ""]
TAGS = ["", ";tag=a1", ";tag=b2", ";tag=", ";tag=\"q\""]
EXTRA = st.tuples(
    st.sampled_from(["Expires", "Max-Forwards", "Route", "Record-Route", "Event", "Authorization",
                     "Proxy-Authorization", "Content-Type", "Require", "Supported", "Allow", "m", "v", "x-a",
                     "Subscription-State", "Refer-To", "Accept"]),
    st.sampled_from(["0", "1", "70", "3600", "-1", "x", "99999999999", "<sip:192.168.2.1;lr>",
                     "<sip:example.com;lr>", "<sip:102@192.168.2.12:5060>", "message-summary", "presence",
                     "application/sdp", "100rel", "", ",", "a,b",
                     'Digest username="101", realm="example.com", nonce="n", uri="sip:example.com", '
                     'response="0", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"',
                     'Digest username="101"', "Basic eA==", 'Digest nonce="', "active;expires=10"])
    | st.tuples(st.text("abcXYZ-", min_size=1, max_size=6), st.text(max_size=12)))


def _mostly(usual, odd):
    """The usual value three times in four, else one of the odd ones."""
    return st.sampled_from([usual] * 3 * len(odd) + list(odd))


_methods = st.sampled_from(METHODS)
_uris = _mostly("sip:102@example.com", URIS)
_hosts = _mostly("192.168.2.11:5060", HOSTS)
_via_params = _mostly(";rport", VIA_PARAMS)
_from = _mostly("<sip:101@example.com>;tag=a1", [n + t for n in NAME_ADDRS[:6] for t in TAGS[1:3]])
_to = _mostly("<sip:102@example.com>", [n + t for n in NAME_ADDRS[:6] for t in TAGS])
_contacts = _mostly("<sip:101@192.168.2.11:5060>", NAME_ADDRS)
_tags = st.sampled_from(TAGS)
_call_ids, _branches = st.sampled_from(["c1@pc", "c2@pc", "c3"]), st.sampled_from(["z9hG4bK1", "z9hG4bK2", "abc"])
_transports = _mostly("UDP", ["TCP", "udp", "XYZ"])
_numbers = _mostly("1", ["2", "0", "2147483647", "x"])
_bodies = st.sampled_from([b"", offer().encode(), b"v=0\r\n", b"\xff\x00"])
_extras = st.lists(EXTRA, max_size=3)
_dice = st.integers(0, 9)


@st.composite
def requests(draw):
    """One request as bytes: a start line, the mandatory headers (some odd), extras, a body."""
    method = draw(_methods)
    via = "SIP/2.0/%s %s;branch=%s%s" % (draw(_transports), draw(_hosts), draw(_branches), draw(_via_params))
    cseq_method = method.upper() if draw(_dice) else draw(_methods)
    headers = [
        ("Via", via),
        ("From", draw(_from)),
        ("To", draw(_to)),
        ("Call-ID", draw(_call_ids)),
        ("CSeq", "%s %s" % (draw(_numbers), cseq_method)),
        ("Contact", draw(_contacts)),
        ("Max-Forwards", "70"),
    ] + draw(_extras)
    if draw(_dice) < 2:
        headers.insert(0, ("Via", "SIP/2.0/UDP %s;branch=z9hG4bKx" % draw(_hosts)))
    if draw(_dice) == 0:
        headers = draw(st.permutations(headers))
    body = draw(_bodies)
    lines = ["%s %s SIP/2.0" % (method, draw(_uris))] + ["%s: %s" % kv for kv in headers]
    if draw(_dice):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class SipParseFuzzTests(unittest.TestCase):

    @settings(max_examples=300, deadline=None)
    @given(requests())
    def test_parse_and_read_every_header(self, data):
        """A message or SipParseError; what parses serializes back to the same message."""
        try:
            msg = parse(data)
        except SipParseError:
            return
        again = parse(msg.to_bytes())
        self.assertEqual((again.headers, again.body, again.method, again.uri),
                         (msg.headers, msg.body, msg.method, msg.uri))
        for read in (lambda: msg.top_via, lambda: msg.from_tag, lambda: msg.to_tag,
                     lambda: SipUri.parse(msg.uri), lambda: [NameAddr.parse(v) for v in msg.get_all("Contact")]):
            try:
                read()
            except SipParseError:
                pass


CALL = (b"INVITE sip:102@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.2.11:5060;branch=z9hG4bKc1;rport\r\n"
        b"From: <sip:101@example.com>;tag=a1\r\nTo: <sip:102@example.com>\r\nCall-ID: call@pc\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:101@192.168.2.11:5060>\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n")
_answers = st.tuples(st.sampled_from([100, 180, 183, 200, 202, 302, 401, 407, 480, 486, 487, 500, 603, 699]),
                     _tags, _contacts, _bodies)


class SipCoreFuzzTests(unittest.TestCase):
    """Requests from phones on the LAN (and one on the WAN), and odd answers to what the core sent."""

    def setUp(self):
        self.h = Harness(self.mktemp())
        for ext, ip in (("101", "192.168.2.11"), ("102", "192.168.2.12")):
            self.assertEqual(Phone(self.h, ext, ip).register().code, 200)
        self.logs = LogWatch(self)

    def answer(self, code, tag, contact, body):
        """A phone's answer to the last request the core sent out, or None."""
        for raw, dest in reversed(self.h.sent):
            if raw.strip() and not raw.startswith(b"SIP/2.0"):
                request = parse(raw, stream=dest.transport != "UDP")
                response = make_response(request, code, to_tag=tag[5:] or None,
                                         extra=[("Contact", contact)] if contact else ())
                response.body = body
                return response.to_bytes(), (dest.host, dest.port), dest.transport
        return None

    def check_sent(self):
        """What the core sent is SIP (a 400 repeats what it could read of a broken request)."""
        for raw, dest in self.h.sent:
            if raw.strip() and not raw.startswith(b"SIP/2.0 400 "):
                try:
                    parse(raw, stream=dest.transport != "UDP")
                except SipParseError as e:
                    self.fail("sent %r: %s" % (raw, e))

    @settings(max_examples=250, deadline=None)
    @given(st.lists(requests() | _answers, min_size=1, max_size=5), st.sampled_from(["UDP", "TCP"]),
           st.sampled_from([("192.168.2.11", 5060), ("192.168.2.12", 5062), ("127.0.0.1", 5070),
                            ("203.0.113.9", 5060)]))
    def test_requests_from_a_phone(self, steps, transport, source):
        self.logs.clear()
        self.h.sent = []
        for step in steps:
            if isinstance(step, bytes):
                message = (step, source, transport)
            else:
                message = self.answer(*step)
                if message is None:
                    continue
            self.h.sent = []
            self.h.receive(*message)
            self.h.clock.advance(1)
            self.check_sent()
        self.h.sent = []
        self.h.clock.advance(64)     # every timer runs out
        self.check_sent()
        self.logs.assert_no_traceback()

    def test_invite_whose_contact_is_not_a_sip_uri(self):
        """A call's remote target is its Contact: `*` or a tel: URI there is a 400 (RFC 3261 8.1.1.8)."""
        for contact in (b"*", b"<tel:1234>", b"<sip:101@>"):
            self.h.sent = []
            self.h.receive(CALL.replace(b"<sip:101@192.168.2.11:5060>", contact), ("192.168.2.11", 5060))
            self.h.clock.advance(64)
            # The 400 (retransmitted until an ACK, over UDP) and nothing else: no call, no BYE.
            answers = {(m.code, m.reason) if not m.is_request else m.method for m, _ in self.h.take()}
            self.assertEqual(answers, {(400, "Bad Request (Contact)")})
        self.logs.assert_no_traceback()
