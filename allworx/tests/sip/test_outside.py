"""
Tests of outside calls through the B2BUA (outside.py, legs.py): a phone
dialling out through a trunk, the provider calling in to an office number,
refusals, hold with music, and the call records they leave.
"""

import hashlib
import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import make_response, parse
from allworx.protocols.sip.outside import OutsideCalls
from allworx.protocols.sip.credentials import parse_authorization
from allworx.protocols.sip.registrar import Binding
from allworx.tests.confs import PW_HASH
from allworx.tests.siphelpers import Harness, Phone, offer

PROVIDER = ("198.51.100.20", 5060)
FAR = "198.51.100.31"

TRUNK = """
[trunk provider]
registrar = 198.51.100.20
username = office
secret = trunk-secret
numbers = +15551230000 +15551230001
channels = 2

[number +15551230000]
to = 101

[user dave]
extension = 104
password = {pw}
outside = no
"""


class FakeTrunks:
    """What the B2BUA asks of the trunk manager."""

    def __init__(self, office):
        self.office = office
        self.in_use = {}

    def _trunk(self):
        return self.office.config.trunks["provider"]

    def is_provider(self, host):
        return self._trunk() if host == PROVIDER[0] else None

    def pick_outbound(self):
        t = self._trunk()
        return t if self.in_use.get(t.name, 0) < t.channels else None

    def acquire(self, trunk):
        if self.in_use.get(trunk.name, 0) >= trunk.channels:
            return False
        self.in_use[trunk.name] = self.in_use.get(trunk.name, 0) + 1
        return True

    def release(self, trunk):
        self.in_use[trunk.name] -= 1

    def destination(self, trunk):
        return Destination("UDP", *PROVIDER)


class FakeRelay:
    inside_port = 30000
    outside_port = 30002

    def __init__(self):
        self.expected = {}
        self.held = None
        self.closed = False

    def expect_inside(self, host, port):
        self.expected["inside"] = (host, port)

    def expect_outside(self, host, port):
        self.expected["outside"] = (host, port)

    def hold(self, side, source):
        self.held = (side, source)

    def resume(self, side):
        self.held = None

    def idle_for(self, now):
        return 0.0

    def close(self):
        self.closed = True


class FakeHistory:
    def __init__(self):
        self.entries = []

    def record(self, entry):
        self.entries.append(entry)


def provider_sdp(ip=FAR, port=4000):
    return offer(ip, port)


class OutsideHarness(unittest.TestCase):
    """A SIP core with the B2BUA, fake trunks, relays and history; alice's phone registered."""

    def setUp(self):
        self.h = Harness(self.mktemp(), extra=TRUNK.format(pw=PW_HASH))
        self.h.office.set_wan_address(ipaddress.ip_interface("203.0.113.2/24"), "static")
        self.relays = []
        self.history = FakeHistory()
        self.trunks = FakeTrunks(self.h.office)

        def relay(inside_on_wan=False):
            r = FakeRelay()
            r.inside_on_wan = inside_on_wan
            self.relays.append(r)
            return r
        self.h.core.outside = OutsideCalls(self.h.core, self.h.office, self.h.clock, self.trunks, relay,
                                           self.history, music=lambda pt: ("music", pt))
        self.h.core.calls.history = self.history
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.assertEqual(self.alice.register().code, 200)
        self.h.take()

    def pump(self):
        """Let the in-process (LOCAL) messages through; what went out on the wire."""
        out = []
        for _ in range(10):
            self.h.clock.advance(0)
            out += self.h.take()
        return out

    def from_provider(self, data):
        self.h.receive(data, PROVIDER)
        return self.pump()

    def dial_out(self, number="95557770001", phone=None):
        phone = phone or self.alice
        out = phone.send(phone.request("INVITE", "sip:%s@192.168.2.254" % number,
                                       ["Content-Type: application/sdp"], offer()))
        return out + self.pump()

    def call_in(self, number="+15551230000", body=None):
        lines = ["INVITE sip:%s@203.0.113.2 SIP/2.0" % number,
                 "Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprov1",
                 "Record-Route: <sip:198.51.100.20;lr>",
                 "Max-Forwards: 69", 'From: "Carla Caller" <sip:+15557770001@sip.internet.example>;tag=c1',
                 "To: <sip:%s@sip.internet.example>" % number, "Call-ID: in-1@provider",
                 "CSeq: 7 INVITE", "Contact: <sip:+15557770001@198.51.100.31:5060>",
                 "Content-Type: application/sdp"]
        body = (body or provider_sdp()).encode()
        data = ("\r\n".join(lines + ["Content-Length: %d" % len(body)]) + "\r\n\r\n").encode() + body
        return self.from_provider(data)


    def answered_inbound(self):
        """An outside call to +15551230000 answered by alice: the INVITE her phone got."""
        out = self.call_in()
        inv = [m for m, d in out if m.is_request and m.method == "INVITE"][0]
        ok = make_response(inv, 200, to_tag="alice1", extra=[
            ("Contact", "<sip:101@192.168.2.11:5060>"), ("Content-Type", "application/sdp")])
        ok.body = offer().encode()
        self.h.receive(ok.to_bytes(), ("192.168.2.11", 5060))
        self.pump()
        return inv

class OutsideTests(OutsideHarness):
    """Calls in and out through the B2BUA."""

    def test_outbound_answers_the_challenge_and_bridges_media(self):
        out = self.dial_out()
        invites = [m for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(len(invites), 1)
        inv = invites[0]
        self.assertEqual(inv.uri, "sip:+15557770001@198.51.100.20")
        self.assertIn('"Alice Archer" <sip:+15551230000@198.51.100.20>', inv.get("From"))
        self.assertIn("sip:+15551230000@198.51.100.20", inv.get("P-Asserted-Identity"))
        self.assertIn(b"c=IN IP4 203.0.113.2", inv.body)
        self.assertIn(b"m=audio 30002 ", inv.body)
        self.assertTrue(inv.top_via.host == "203.0.113.2", inv.get("Via"))
        # The provider challenges; the B2BUA answers with the trunk's credentials.
        challenge = make_response(inv, 407, to_tag="p1", extra=[
            ("Proxy-Authenticate", 'Digest realm="sip.internet.example", nonce="abc123", qop="auth"')])
        out = self.from_provider(challenge.to_bytes())
        acks = [m for m, d in out if m.is_request and m.method == "ACK"]
        again = [m for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(len(acks), 1)
        self.assertEqual(len(again), 1)
        auth = parse_authorization(again[0].get("Proxy-Authorization"))
        self.assertEqual(auth["username"], "office")
        ha1 = hashlib.md5(b"office:sip.internet.example:trunk-secret").hexdigest()
        ha2 = hashlib.md5(("INVITE:%s" % auth["uri"]).encode()).hexdigest()
        expect = hashlib.md5(("%s:abc123:%s:%s:auth:%s" % (ha1, auth["nc"], auth["cnonce"], ha2)).encode()
                             ).hexdigest()
        self.assertEqual(auth["response"], expect)
        self.assertEqual(again[0].cseq[0], inv.cseq[0] + 1)
        inv = again[0]
        # Ringing reaches the phone.
        out = self.from_provider(make_response(inv, 180, to_tag="far").to_bytes())
        self.assertEqual([(m.code, d.host) for m, d in out if not m.is_request], [(180, "192.168.2.11")])
        # The far end answers: ACK to the provider, 200 with our LAN media address to the phone.
        ok = make_response(inv, 200, to_tag="far", extra=[
            ("Contact", "<sip:alice@%s:5060>" % FAR), ("Content-Type", "application/sdp")])
        ok.body = provider_sdp().encode()
        out = self.from_provider(ok.to_bytes())
        kinds = sorted((m.method if m.is_request else str(m.code), d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "192.168.2.11"), ("ACK", PROVIDER[0])])
        answer = [m for m, d in out if not m.is_request][0]
        self.assertIn(b"c=IN IP4 192.168.2.254", answer.body)
        self.assertIn(b"m=audio 30000 ", answer.body)
        relay = self.relays[0]
        self.assertEqual(relay.expected, {"inside": ("192.168.2.11", 40000), "outside": (FAR, 4000)})
        # The phone ACKs and later hangs up: BYE to the provider.
        contact = answer.get("Contact").strip("<>")
        self.alice.send(self.alice.request("ACK", contact, to_tag=answer.to_tag, cseq=1))
        self.h.clock.advance(30)
        out = self.alice.send(self.alice.request("BYE", contact, to_tag=answer.to_tag, cseq=2)) + self.pump()
        kinds = sorted((m.method if m.is_request else str(m.code), d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "192.168.2.11"), ("BYE", PROVIDER[0])])
        self.assertTrue(relay.closed)
        [entry] = self.history.entries
        self.assertEqual((entry.direction, entry.from_, entry.to, entry.trunk, entry.outcome, entry.duration_s),
                         ("outbound", "101", "+15557770001", "provider", "answered", 30))
        self.assertEqual(self.trunks.in_use["provider"], 0)

    def test_a_remote_phone_dialling_out_meets_the_relay_on_the_wan(self):
        self.h.office.update_settings("sip", {"wan": "yes"})
        bob = Phone(self.h, "102", "198.51.100.40")
        self.assertEqual(bob.register().code, 200)
        self.h.take()
        out = bob.send(bob.request("INVITE", "sip:95557770001@203.0.113.2",
                                   ["Content-Type: application/sdp"], offer("198.51.100.40")))
        if [m for m, d in out if not m.is_request and m.code == 407]:
            out = bob.invite("sip:95557770001@203.0.113.2", ["Content-Type: application/sdp"],
                             offer("198.51.100.40"))
        out += self.pump()
        inv = [m for m, d in out if m.is_request and m.method == "INVITE"][0]
        self.assertTrue(self.relays[-1].inside_on_wan)
        ok = make_response(inv, 200, to_tag="far", extra=[
            ("Contact", "<sip:alice@%s:5060>" % FAR), ("Content-Type", "application/sdp")])
        ok.body = provider_sdp().encode()
        out = self.from_provider(ok.to_bytes())
        answer = [m for m, d in out if not m.is_request and m.code == 200][0]
        self.assertIn(b"c=IN IP4 203.0.113.2", answer.body)
        self.assertIn(b"m=audio 30000 ", answer.body)
        self.assertIn("@203.0.113.2:", answer.get("Contact"))

    def test_busy_at_the_far_end_reaches_the_phone(self):
        out = self.dial_out()
        inv = [m for m, d in out if m.is_request and m.method == "INVITE"][0]
        out = self.from_provider(make_response(inv, 486, to_tag="far").to_bytes())
        self.assertEqual([m.code for m, d in out if not m.is_request], [486])
        self.assertEqual([e.outcome for e in self.history.entries], ["busy"])
        self.assertTrue(self.relays[0].closed)

    def test_a_user_without_outside_calls_gets_403_but_emergency_goes_out(self):
        dave = Phone(self.h, "104", "192.168.2.14")
        # Dave's phone proves itself as the registrar would have it.
        self.h.core.registrar.bind(Binding(
            "dave", "104", "sip:104@192.168.2.14:5060", ("192.168.2.14", 5060), "UDP", 1e12))
        out = self.dial_out(phone=dave)
        self.assertEqual([m.code for m, d in out if not m.is_request and m.code >= 200], [403])
        self.assertFalse([m for m, d in out if m.is_request])
        out = self.dial_out("911", phone=dave)
        invites = [m for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual([m.uri for m in invites], ["sip:911@198.51.100.20"])

    def test_channels_are_respected(self):
        self.dial_out()
        self.dial_out()
        out = self.dial_out()
        self.assertEqual([m.code for m, d in out if not m.is_request and m.code >= 200], [503])

    # ------------------------------------------------------------ inbound

    def test_inbound_rings_the_extension_and_bridges(self):
        out = self.call_in()
        to_provider = [m.code for m, d in out if not m.is_request and d.host == PROVIDER[0]]
        self.assertEqual(to_provider[:2], [100, 180])
        forked = [(m, d) for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual([d.host for m, d in forked], ["192.168.2.11"])
        inv = forked[0][0]
        self.assertIn('"Carla Caller" <sip:+15557770001@192.168.2.254>', inv.get("From"))
        self.assertIn(b"c=IN IP4 192.168.2.254", inv.body)
        self.assertIn(b"m=audio 30000 ", inv.body)
        # Alice's phone answers.
        ok = make_response(inv, 200, to_tag="alice1", extra=[
            ("Contact", "<sip:101@192.168.2.11:5060>"), ("Content-Type", "application/sdp")])
        ok.body = offer().encode()
        self.h.receive(ok.to_bytes(), ("192.168.2.11", 5060))
        out = self.pump()
        final = [(m, d) for m, d in out if not m.is_request and m.code == 200]
        self.assertEqual([d.host for m, d in final], [PROVIDER[0]])
        answer = final[0][0]
        self.assertIn(b"c=IN IP4 203.0.113.2", answer.body)
        self.assertIn(b"m=audio 30002 ", answer.body)
        self.assertIsNone(answer.get("X-Allworx-Answered-By"))
        acks = [d.host for m, d in out if m.is_request and m.method == "ACK"]
        self.assertEqual(acks, ["192.168.2.11"])
        # The provider ACKs, then hangs up: the phone gets the BYE.
        contact = answer.get("Contact").strip("<>")
        ack = ("ACK %s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprov2\r\n"
               "From: <sip:+15557770001@sip.internet.example>;tag=c1\r\nTo: <sip:+15551230000@x>;tag=%s\r\n"
               "Call-ID: in-1@provider\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n") % (contact, answer.to_tag)
        self.assertEqual([m for m, d in self.from_provider(ack.encode()) if not m.is_request], [])
        self.h.clock.advance(12)
        bye = ack.replace("ACK", "BYE").replace("prov2", "prov3").replace("7 BYE", "8 BYE")
        out = self.from_provider(bye.encode())
        kinds = sorted((m.method if m.is_request else str(m.code), d.host) for m, d in out)
        self.assertEqual(kinds, [("200", PROVIDER[0]), ("BYE", "192.168.2.11")])
        [entry] = self.history.entries
        self.assertEqual((entry.direction, entry.from_, entry.from_name, entry.to, entry.answered_by,
                          entry.outcome, entry.duration_s),
                         ("inbound", "+15557770001", "Carla Caller", "+15551230000", "101", "answered", 12))
        self.assertEqual(self.h.core.calls.active_calls(), [])

    def test_a_number_the_office_does_not_have_is_404(self):
        out = self.call_in("+15559990000")
        self.assertEqual([m.code for m, d in out if not m.is_request], [100, 404])
        self.assertFalse([m for m, d in out if m.is_request])

    def test_a_stranger_on_the_wan_is_refused(self):
        data = ("INVITE sip:+15551230000@203.0.113.2 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bKx\r\nFrom: <sip:x@y>;tag=1\r\n"
                "To: <sip:+15551230000@203.0.113.2>\r\nCall-ID: s1\r\nCSeq: 1 INVITE\r\n"
                "Content-Length: 0\r\n\r\n").encode()
        self.h.receive(data, ("198.51.100.66", 5060))
        out = self.pump()
        self.assertEqual([m.code for m, d in out], [403])

    def test_hold_plays_music_to_the_outside_caller(self):
        inv = self.answered_inbound()
        # Alice's phone holds: a re-INVITE (sendonly) inside its dialog with the server.
        ours = parse(inv.to_bytes()).from_tag
        contact = inv.get("Contact").strip("<>")
        held = offer().replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=sendonly\r\n")
        data = self.alice.request("INVITE", contact, ["Route: <sip:192.168.2.254:5060;lr>",
                                                      "Content-Type: application/sdp"], held,
                                  call_id=inv.call_id, to_tag=ours, to=inv.get("From").split(";tag=")[0])
        out = self.alice.send(data) + self.pump()
        answers = [m for m, d in out if not m.is_request and m.code == 200]
        self.assertEqual(len(answers), 1, out)
        self.assertIn(b"a=recvonly", answers[0].body)
        self.assertIn(b"c=IN IP4 192.168.2.254", answers[0].body)
        self.assertEqual(self.relays[0].held, ("outside", ("music", 0)))
        # Resumed: the provider hears Alice again.
        data = self.alice.request("INVITE", contact, ["Route: <sip:192.168.2.254:5060;lr>",
                                                      "Content-Type: application/sdp"], offer(),
                                  call_id=inv.call_id, to_tag=ours, to=inv.get("From").split(";tag=")[0])
        self.alice.send(data)
        self.pump()
        self.assertIsNone(self.relays[0].held)

    def test_inbound_unanswered_goes_to_voicemail(self):
        out = self.call_in()
        inv = [m for m, d in out if m.is_request and m.method == "INVITE"][0]
        self.h.receive(make_response(inv, 180, to_tag="a1").to_bytes(), ("192.168.2.11", 5060))
        self.pump()
        self.h.clock.advance(20)        # voicemail_timeout
        out = self.pump()
        final = [(m, d) for m, d in out if not m.is_request and m.code == 200]
        self.assertEqual([d.host for m, d in final], [PROVIDER[0]])
        self.assertIn(b"m=audio 30002 ", final[0][0].body)
        # The voicemail UA took the LOCAL leg: the call is recorded as voicemail when it ends.
        answer = final[0][0]
        contact = answer.get("Contact").strip("<>")
        bye = ("BYE %s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprov9\r\n"
               "From: <sip:+15557770001@sip.internet.example>;tag=c1\r\nTo: <sip:+15551230000@x>;tag=%s\r\n"
               "Call-ID: in-1@provider\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n") % (contact, answer.to_tag)
        self.from_provider(bye.encode())
        self.assertEqual([e.outcome for e in self.history.entries], ["voicemail"])

    def test_a_users_outside_calls_are_rate_limited_but_not_emergency(self):
        from allworx.protocols.sip.outside import OUTBOUND_BURST
        self.trunks.in_use = {}
        codes = []
        for _ in range(OUTBOUND_BURST + 1):
            self.trunks.in_use = {}      # channels are not what this test counts
            out = self.dial_out()
            codes.append([m.code for m, d in out if not m.is_request and m.code >= 200])
        self.assertEqual(codes[-1], [403])
        self.assertTrue(all(c == [] for c in codes[:-1]), codes)
        self.trunks.in_use = {}
        out = self.dial_out("911")
        self.assertEqual([m.uri for m, d in out if m.is_request and m.method == "INVITE"],
                         ["sip:911@198.51.100.20"])
        self.h.clock.advance(11)
        self.h.take()                   # the refusal's retransmissions (never ACKed here)
        self.trunks.in_use = {}
        out = self.dial_out()
        self.assertEqual([m.code for m, d in out if not m.is_request and m.code >= 200], [], out)


class ProviderFuzzTests(OutsideHarness):
    """Whatever the provider sends, the core answers or drops it: nothing fails inside."""

    @given(st.data())
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_mangled_invites_from_the_provider(self, data):
        base = bytearray(self.invite_bytes())
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(base) - 1))
            action = data.draw(st.sampled_from(["flip", "cut", "dup"]))
            if action == "flip":
                base[at] = data.draw(st.integers(0, 255))
            elif action == "cut":
                del base[at:at + data.draw(st.integers(1, 40))]
            else:
                base[at:at] = base[at:at + data.draw(st.integers(1, 40))]
            if not base:
                break
        before = _internal_errors()
        self.h.receive(bytes(base), PROVIDER)
        for _ in range(5):
            self.h.clock.advance(0)
        self.h.clock.advance(40)
        # What went out is raw: a 400 echoes the sender's own bytes (see core.salvage_400).
        self.h.sent = []
        self.assertEqual(_internal_errors(), before)

    def invite_bytes(self):
        lines = ["INVITE sip:+15551230000@203.0.113.2 SIP/2.0",
                 "Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKfz",
                 "Record-Route: <sip:198.51.100.20;lr>", "Max-Forwards: 69",
                 'From: "Carla" <sip:+15557770001@sip.internet.example>;tag=c1',
                 "To: <sip:+15551230000@sip.internet.example>", "Call-ID: fz@provider",
                 "CSeq: 7 INVITE", "Contact: <sip:+15557770001@198.51.100.31:5060>",
                 "Content-Type: application/sdp"]
        body = provider_sdp().encode()
        return ("\r\n".join(lines + ["Content-Length: %d" % len(body)]) + "\r\n\r\n").encode() + body


def _internal_errors():
    from allworx.protocols.sip.core import ERRORS
    return ERRORS.labels("internal")._value.get()
