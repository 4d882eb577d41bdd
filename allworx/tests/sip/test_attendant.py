"""Tests of the auto attendant's calls: answer, menu by DTMF, transfer by REFER, on a Clock."""

import ipaddress
import os

from twisted.internet import defer
from twisted.trial import unittest

from allworx.protocols.sip.attendant import LET_GO, Attendant, sipfrag_code
from allworx.protocols.sip.message import make_response, parse
from allworx.protocols.sip.outside import OutsideCalls
from allworx.protocols.voice import dtmf
from allworx.protocols.voice.greeting import tone
from allworx.protocols.voice.rtp import RtpPacket
from allworx.protocols.voice.wav import to_wav
from allworx.tests.confs import PW_HASH
from allworx.tests.sip.test_outside import (
    PROVIDER, TRUNK, FakeHistory, FakeRelay, FakeTrunks, provider_sdp)
from allworx.tests.siphelpers import Harness, Phone, offer

EXTRA = """
[group sales]
number = 105
members = 101 102

[attendant main]
number = 500
greeting = Thank you for calling. For Alice press 1.
key_1 = 101
key_2 = sales
key_3 = voicemail 102
timeout = 8
"""


class AttendantCallTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp(), extra=EXTRA)
        self.spoken = []
        self.threads = []
        core = self.h.core
        # A fake espeak, and the "thread" runs when the test says so.
        core.attendant = Attendant(core, self.h.office, self.h.clock,
                                   defer_to_thread=self.defer_to_thread, speak=self.speak)
        self.carol = Phone(self.h, "101", "192.168.2.11")
        self.h.take()

    def speak(self, text, path):
        self.spoken.append(text)
        with open(path, "wb") as f:
            f.write(to_wav(tone(350, 100)))
        return True

    def defer_to_thread(self, f, *args):
        d = defer.Deferred()
        self.threads.append((f, args, d))
        return d

    def run_threads(self):
        while self.threads:
            f, args, d = self.threads.pop(0)
            d.callback(f(*args))

    def call(self, number="500"):
        out = self.carol.invite("sip:%s@example.com" % number, ["Content-Type: application/sdp"],
                                offer(self.carol.address[0]))
        ok = [m for m, _ in out if not m.is_request and m.code == 200]
        self.assertEqual(len(ok), 1, [m.code for m, _ in out if not m.is_request])
        ok = ok[0]
        self.to = "<sip:%s@example.com>" % number
        self.assertIn("<sip:attendant@192.168.2.254:5060>", ok.get("Contact"))
        self.assertIn("NOTIFY", ok.get_all("Allow"))
        self.acked = self.carol.send(self.carol.request("ACK", "sip:attendant@192.168.2.254", to_tag=ok.to_tag,
                                           to=self.to, cseq=self.carol.cseq))
        [call] = self.h.core.ua.calls.values()
        return ok, call

    def info(self, ok, key):
        out = self.carol.send(self.carol.request(
            "INFO", "sip:attendant@192.168.2.254", ["Content-Type: application/dtmf-relay"],
            "Signal=%s\r\nDuration=160\r\n" % key, to_tag=ok.to_tag, to=self.to))
        return out

    def refer_of(self, out):
        refers = [m for m, _ in out if m.is_request and m.method == "REFER"]
        self.assertEqual(len(refers), 1, [m.method if m.is_request else m.code for m, _ in out])
        return refers[0]

    def answer(self, request, code):
        """The phone's response to a request of the server's."""
        lines = ["SIP/2.0 %d %s" % (code, "Accepted" if code == 202 else "X")]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for k, v in request.headers:
                if k == name:
                    lines.append("%s: %s" % (k, v))
        lines.append("Content-Length: 0")
        return self.carol.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def notify(self, ok, frag, state="active;expires=60"):
        return self.carol.send(self.carol.request(
            "NOTIFY", "sip:attendant@192.168.2.254",
            ["Event: refer", "Subscription-State: " + state,
             "Content-Type: message/sipfrag;version=2.0"], frag, to_tag=ok.to_tag, to=self.to))

    def test_a_key_by_info_transfers_with_refer_then_bye(self):
        ok, call = self.call()
        self.assertEqual(call.attendant.name, "main")
        # The greeting is spoken in a "thread"; until then the tones play.
        self.assertEqual(call.menu.greeting, self.h.core.attendant.greetings.tones)
        self.run_threads()
        self.assertIn("Thank you for calling. For Alice press 1.", self.spoken)
        self.h.clock.pump([0.02] * 20)
        out = self.info(ok, "1")
        self.assertIn(200, [m.code for m, _ in out if not m.is_request])
        refer = self.refer_of(out)
        self.assertEqual(refer.get("Refer-To"), "<sip:101@192.168.2.254>")
        self.assertEqual(refer.uri, "sip:101@192.168.2.11:5060")
        self.assertEqual(refer.call_id, ok.call_id)
        self.assertIn("tag=%s" % ok.to_tag, refer.get("From"))
        self.assertIn("tag=%s" % self.carol.tag, refer.get("To"))
        self.assertEqual(self.answer(refer, 202), [])
        out = self.notify(ok, "SIP/2.0 100 Trying\r\n")
        self.assertEqual([m.code for m, _ in out], [200])
        out = self.notify(ok, "SIP/2.0 180 Ringing\r\n")
        self.assertEqual([m.code for m, _ in out], [200])
        out = self.notify(ok, "SIP/2.0 200 OK\r\n", "terminated;reason=noresource")
        self.assertEqual([m.code for m, _ in out if not m.is_request], [200])
        [bye] = [m for m, _ in out if m.is_request]
        self.assertEqual(bye.method, "BYE")
        self.assertGreater(bye.cseq[0], refer.cseq[0])
        self.assertEqual(self.h.core.ua.calls, {})
        self.answer(bye, 200)

    def test_rtp_key_to_a_group_and_bye_after_let_go(self):
        ok, call = self.call()
        port = self.h.rtp_ports[-1]
        for end in (False, True, True):
            port.protocol.datagramReceived(
                RtpPacket(101, 5, 1600, 7, dtmf.make_event("2", end, 800)).to_bytes(),
                ("192.168.2.11", 40000))
        refer = self.refer_of(self.h.take())
        self.assertEqual(refer.get("Refer-To"), "<sip:group-sales@192.168.2.254>")
        self.answer(refer, 202)
        self.h.clock.advance(LET_GO - 0.1)
        self.assertEqual([m.method for m, _ in self.h.take() if m.is_request], [])
        self.h.clock.advance(0.2)
        self.assertEqual([m.method for m, _ in self.h.take() if m.is_request], ["BYE"])

    def test_voicemail_target(self):
        ok, call = self.call()
        refer = self.refer_of(self.info(ok, "3"))
        self.assertEqual(refer.get("Refer-To"), "<sip:voicemail-102@192.168.2.254>")

    def test_dialled_extension(self):
        self.h.office.patch_record("attendant", "main", {"key_1": ""})
        ok, call = self.call()
        for key in "10":
            self.assertEqual([m for m, _ in self.info(ok, key) if m.is_request], [])
        self.assertIsNone(call.transfer)
        refer = self.refer_of(self.info(ok, "2"))
        self.assertEqual(refer.get("Refer-To"), "<sip:102@192.168.2.254>")

    def test_dialled_attendant_number(self):
        ok, call = self.call()
        for key in "50":
            self.info(ok, key)
        refer = self.refer_of(self.info(ok, "0"))
        self.assertEqual(refer.get("Refer-To"), "<sip:attendant-main@192.168.2.254>")

    def test_timeout_goes_to_the_operator(self):
        ok, call = self.call()
        self.h.clock.pump([0.02] * 400)         # the greeting (0.8 s of tones), then 7.2 s
        self.assertEqual(self.h.take(), [])
        self.h.clock.pump([0.02] * 60)          # 8 s after the greeting
        refer = self.refer_of(self.h.take())
        self.assertEqual(self.h.office.config.operator_extension, "101")
        self.assertEqual(refer.get("Refer-To"), "<sip:101@192.168.2.254>")

    def test_refer_refused_says_cannot_transfer_and_hangs_up(self):
        ok, call = self.call()
        refer = self.refer_of(self.info(ok, "1"))
        self.answer(refer, 405)
        self.assertFalse(call.ended)            # the prompt plays first
        self.h.clock.pump([0.02] * 300)
        self.assertTrue(call.ended)
        self.assertIn("BYE", [m.method for m, _ in self.h.take() if m.is_request])

    def test_transfer_failing_in_a_notify(self):
        ok, call = self.call()
        refer = self.refer_of(self.info(ok, "1"))
        self.answer(refer, 202)
        out = self.notify(ok, "SIP/2.0 486 Busy Here\r\n", "terminated;reason=noresource")
        self.assertEqual([m.code for m, _ in out], [200])
        self.assertFalse(call.ended)
        self.h.clock.pump([0.02] * 300)
        self.assertTrue(call.ended)

    def test_no_answer_to_the_refer(self):
        ok, call = self.call()
        self.refer_of(self.info(ok, "1"))
        self.h.clock.pump([0.5] * 80)           # Timer F
        self.assertTrue(call.ended)

    def test_a_notify_without_a_refer_is_refused(self):
        ok, call = self.call()
        out = self.notify(ok, "SIP/2.0 200 OK\r\n")
        self.assertEqual([m.code for m, _ in out], [489])
        self.assertFalse(call.ended)

    def test_call_history_counts_from_the_answer(self):
        ok, call = self.call()
        record = self.h.core.calls.calls[ok.call_id]
        self.assertEqual(record.state, "answered")
        self.assertIsNotNone(record.answered_at)

    def test_after_hours_goes_straight_to_after_hours(self):
        self.h.office.patch_record("attendant", "main", {
            "hours": "mon-fri 08:30-17:30", "after_hours": "voicemail 101"})
        saturday = type("T", (), {"tm_wday": 5, "tm_hour": 12, "tm_min": 0})()
        self.h.core.attendant.localtime = lambda seconds: saturday
        ok, call = self.call()
        refer = self.refer_of(self.acked)           # sent on the ACK, no greeting
        self.assertEqual(refer.get("Refer-To"), "<sip:voicemail-101@192.168.2.254>")


class PhoneFollowsReferTests(unittest.TestCase):
    """A LAN phone given `Refer-To: <sip:group-sales@...>` calls that: the router knows the name."""

    def setUp(self):
        self.h = Harness(self.mktemp(), extra=EXTRA)
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.assertEqual(self.bob.register().code, 200)
        self.h.take()

    def invite(self, address):
        return self.alice.invite("sip:%s@192.168.2.254" % address, ["Content-Type: application/sdp"],
                                 offer())

    def test_group_name(self):
        out = self.invite("group-sales")
        forked = [d.host for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(forked, ["192.168.2.12"])

    def test_voicemail_name(self):
        out = self.invite("voicemail-102")
        self.assertIn(200, [m.code for m, _ in out if not m.is_request])
        [call] = self.h.core.ua.calls.values()
        self.assertEqual(call.user.name, "bob")

    def test_attendant_name(self):
        self.h.core.attendant = Attendant(self.h.core, self.h.office, self.h.clock,
                                          defer_to_thread=lambda f, *a: defer.Deferred(),
                                          speak=lambda t, p: False)
        out = self.invite("attendant-main")
        self.assertIn(200, [m.code for m, _ in out if not m.is_request])
        [call] = self.h.core.ua.calls.values()
        self.assertEqual(call.attendant.name, "main")


class SipfragTests(unittest.TestCase):

    def test_codes(self):
        self.assertEqual(sipfrag_code(b"SIP/2.0 200 OK\r\n"), 200)
        self.assertEqual(sipfrag_code(b"SIP/2.0 486 Busy Here"), 486)
        self.assertIsNone(sipfrag_code(b"garbage"))
        self.assertIsNone(sipfrag_code(b""))
        self.assertIsNone(sipfrag_code(None))


class StartTests(unittest.TestCase):

    def test_start_renders_only_with_attendants(self):
        h = Harness(self.mktemp())
        calls = []
        a = Attendant(h.core, h.office, h.clock, defer_to_thread=lambda f: calls.append(f) or
                      defer.Deferred(), speak=lambda t, p: False)
        a.start()
        self.assertEqual(calls, [])
        h = Harness(self.mktemp(), extra=EXTRA)
        a = Attendant(h.core, h.office, h.clock, defer_to_thread=lambda f: calls.append(f) or
                      defer.succeed(f()), speak=lambda t, p: False)
        a.start()
        self.assertEqual(len(calls), 1)
        self.assertFalse(os.path.exists(os.path.join(h.office.config.system.data_dir, "voicemail",
                                                     "attendant", "main.wav")))


class OutsideCallerTests(unittest.TestCase):
    """An outside call whose number goes to the attendant: the B2BUA's inside leg is its caller."""

    def setUp(self):
        self.h = Harness(self.mktemp(), extra=TRUNK.format(pw=PW_HASH).replace(
            "to = 101", "to = main") + EXTRA)
        self.h.office.set_wan_address(ipaddress.ip_interface("203.0.113.2/24"), "static")
        self.history = FakeHistory()
        self.h.core.outside = OutsideCalls(self.h.core, self.h.office, self.h.clock,
                                           FakeTrunks(self.h.office), FakeRelay, self.history,
                                           music=lambda pt: ("music", pt))
        self.h.core.attendant = Attendant(self.h.core, self.h.office, self.h.clock,
                                          defer_to_thread=lambda f, *a: defer.Deferred(),
                                          speak=lambda t, p: False)
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.assertEqual(self.bob.register().code, 200)
        self.h.take()
        # What goes over the in-process transport, besides what goes on the wire.
        self.wire = []
        self.local = []
        receive = self.h.core.receive

        def recording(data, dest):
            if dest.transport == "LOCAL":
                self.local.append(data)
            receive(data, dest)
        self.h.core.receive = recording

    def pump(self):
        out = []
        for _ in range(10):
            self.h.clock.advance(0)
            out += self.h.take()
        self.wire += out
        return out

    def test_the_attendant_answers_and_refers_the_inside_leg(self):
        lines = ["INVITE sip:+15551230000@203.0.113.2 SIP/2.0",
                 "Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprov1",
                 "Max-Forwards: 69", "From: <sip:+15557770001@sip.internet.example>;tag=c1",
                 "To: <sip:+15551230000@sip.internet.example>", "Call-ID: in-1@provider",
                 "CSeq: 7 INVITE", "Contact: <sip:+15557770001@198.51.100.31:5060>",
                 "Content-Type: application/sdp"]
        body = provider_sdp().encode()
        self.h.receive(("\r\n".join(lines + ["Content-Length: %d" % len(body)]) + "\r\n\r\n").encode()
                       + body, PROVIDER)
        out = self.pump()
        self.assertIn(200, [m.code for m, d in out if not m.is_request and d.host == PROVIDER[0]])
        [invite] = [parse(d) for d in self.local if d.startswith(b"INVITE ")]
        self.assertTrue(invite.uri.startswith("sip:attendant-main@"), invite.uri)
        [call] = self.h.core.ua.calls.values()
        self.assertEqual(call.source.transport, "LOCAL")
        self.assertTrue(call.acked)
        call.digit("2")
        self.pump()
        [refer] = [parse(d) for d in self.local if d.startswith(b"REFER ")]
        self.assertEqual(refer.get("Refer-To"), "<sip:group-sales@192.168.2.254>")
        self.assertEqual(refer.call_id, invite.call_id)
        # The B2BUA accepts it and rings the group: Bob answers, its NOTIFY says 200,
        # the attendant hangs up its leg.
        answers = [parse(d).code for d in self.local if d.startswith(b"SIP/2.0") and b" REFER" in d]
        self.assertEqual(answers, [202])
        [ring] = [m for m, d in self.wire if m.is_request and m.method == "INVITE"
                  and d.host == "192.168.2.12"]
        ok = make_response(ring, 200, to_tag="bob1", extra=[
            ("Contact", "<sip:102@192.168.2.12:5060>"), ("Content-Type", "application/sdp")])
        ok.body = offer("192.168.2.12").encode()
        del self.local[:]
        self.h.receive(ok.to_bytes(), ("192.168.2.12", 5060))
        self.pump()
        frags = [parse(d).body for d in self.local if d.startswith(b"NOTIFY ")]
        self.assertEqual(frags, [b"SIP/2.0 200 OK\r\n"])
        # (The ACK is the B2BUA's to Bob's 200, through the router.)
        self.assertEqual([d.split(b" ")[0] for d in self.local if not d.startswith(b"SIP/2.0")],
                         [b"ACK", b"NOTIFY", b"BYE"])
        self.assertEqual(self.h.core.ua.calls, {})
