"""Tests of the server's own user agent: leaving voicemail and the phone menu, on a Clock."""

import argon2
from twisted.internet import defer
from twisted.trial import unittest

from allworx.passwords import verify_pin

from allworx.protocols.voice import dtmf

from allworx.protocols.voice import g711
from allworx.protocols.voice.greeting import tone
from allworx.protocols.voice.rtp import RtpPacket
from allworx.protocols.voice.voicemail import voicemail_mail, wav_of
from allworx.protocols.voice.wav import from_wav
from allworx.tests.siphelpers import Harness, Phone, offer


class VoicemailCallTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.h.take()

    def call(self, phone, number):
        # Neither phone has registered: each answers the server's challenge.
        out = phone.invite("sip:%s@example.com" % number, ["Content-Type: application/sdp"],
                           offer(phone.address[0]))
        ok = [m for m, _ in out if not m.is_request and m.code == 200][0]
        ack = phone.request("ACK", "sip:voicemail@192.168.2.254", to_tag=ok.to_tag,
                            to="<sip:%s@example.com>" % number, cseq=phone.cseq)
        phone.send(ack)
        return ok, self.h.rtp_ports[-1]

    def rtp_in(self, port, payloads, pt=0, start=1000):
        for i, p in enumerate(payloads):
            port.protocol.datagramReceived(RtpPacket(pt, start + i, i * 160, 7, p).to_bytes(),
                                           ("192.168.2.11", 40000))

    def bye(self, phone, ok, number):
        return phone.send(phone.request("BYE", "sip:voicemail@192.168.2.254", to_tag=ok.to_tag,
                                        to="<sip:%s@example.com>" % number))

    def test_leave_a_message(self):
        ok, port = self.call(self.alice, "102")
        self.assertIn(b"a=rtpmap:101 telephone-event/8000", ok.body)
        # The greeting plays first; ACK stopped the 200's retransmission.
        self.h.clock.pump([0.02] * 500)
        self.assertEqual([m for m, _ in self.h.take()], [])
        sent = [RtpPacket.parse(d) for d, _ in port.written]
        self.assertGreater(len(sent), 400)
        self.assertTrue(self.h.core.ua.calls)
        call = list(self.h.core.ua.calls.values())[0]
        self.h.clock.pump([0.02] * 1000)
        self.assertTrue(call.recorder.on)
        # 2 s of the caller's tone, out of order, then BYE.
        pcm = tone(440, 2000)
        codes = g711.encode(pcm, 0)
        frames = [codes[i:i + 160] for i in range(0, len(codes), 160)]
        order = list(range(len(frames)))
        order[3], order[4] = order[4], order[3]
        for i in order:
            port.protocol.datagramReceived(RtpPacket(0, 500 + i, i * 160, 7, frames[i]).to_bytes(),
                                           ("192.168.2.11", 40000))
        out = self.bye(self.alice, ok, "102")
        self.assertEqual([m.code for m, _ in out], [200])
        self.assertTrue(port.closed)
        [(uid, (mail, seen))] = self.h.store.boxes["bob"].items()
        got = from_wav(wav_of(mail))
        self.assertEqual(len(got), len(pcm))
        self.assertEqual(got, g711.decode(codes, 0))
        self.assertIn(b"X-Allworx-Voicemail: yes", mail)
        self.assertIn(b"Alice Archer (101)", mail)

    def test_no_ack_gives_up_with_bye(self):
        out = self.alice.invite("sip:102@example.com", ["Content-Type: application/sdp"], offer())
        self.assertEqual([m.code for m, _ in out], [100, 200])
        self.h.clock.pump([0.5] * 70)
        sent = self.h.take()
        self.assertTrue(sum(1 for m, _ in sent if not m.is_request and m.code == 200) >= 5)
        self.assertIn("BYE", [m.method for m, _ in sent if m.is_request])
        self.assertFalse(self.h.core.ua.calls)

    def test_offer_without_g711_is_488(self):
        out = self.alice.invite("sip:102@example.com", ["Content-Type: application/sdp"],
                                offer().replace("RTP/AVP 0 8 101", "RTP/AVP 9"))
        self.assertEqual([m.code for m, _ in out], [100, 488])

    def test_menu_by_phone_with_info_dtmf_deletes_the_mail(self):
        self.assertEqual(self.bob.register().code, 200)
        self.h.store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nno audio")
        from allworx.protocols.voice.voicemail import voicemail_mail
        self.h.store.deliver(["bob"], voicemail_mail("example.com", "bob", ("A", "101"), 0, tone(300, 500)))
        self.h.take()
        ok, port = self.call(self.bob, "400")
        call = list(self.h.core.ua.calls.values())[0]
        self.assertEqual(call.menu.user, "bob")         # known phone: PIN only
        for d in "2345#":
            out = self.bob.send(self.bob.request("INFO", "sip:voicemail@192.168.2.254", [
                "Content-Type: application/dtmf-relay"], "Signal=%s\r\nDuration=160\r\n" % d,
                to_tag=ok.to_tag, to="<sip:400@example.com>"))
            self.assertEqual([m.code for m, _ in out], [200])
        self.assertEqual(call.menu.uids, ["m001", "m002"])
        # m001 has no audio: the menu plays m002.
        self.assertEqual(call.menu.index, 1)
        # RFC 4733 key 7 deletes it.
        for end in (False, True, True):
            port.protocol.datagramReceived(RtpPacket(101, 77, 4242, 7, dtmf.make_event("7", end, 800)).to_bytes(),
                                           ("192.168.2.12", 40000))
        self.assertEqual(sorted(self.h.store.boxes["bob"]), ["m001"])
        self.bye(self.bob, ok, "400")

    def test_a_hashed_pin_is_checked_in_a_thread(self):
        """argon2 is slow: the agent checks a stored hash off the reactor, keys wait meanwhile."""
        hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("2345")
        self.h.office.patch_record("user", "bob", {"voicemail_pin": hashed})
        threaded = []

        def defer_to_thread(f, *args):
            threaded.append((f, args, defer.Deferred()))
            return threaded[-1][2]
        self.h.core.ua.defer_to_thread = defer_to_thread
        self.assertEqual(self.bob.register().code, 200)
        self.h.store.deliver(["bob"], voicemail_mail("example.com", "bob", ("A", "101"), 0, tone(300, 500)))
        self.h.take()
        ok, port = self.call(self.bob, "400")
        call = list(self.h.core.ua.calls.values())[0]
        for i, d in enumerate("2345#"):
            port.protocol.datagramReceived(
                RtpPacket(101, i, 1000 + i * 800, 7, dtmf.make_event(d, True, 800)).to_bytes(),
                ("192.168.2.12", 40000))
        [(f, args, d)] = threaded
        self.assertEqual((f, args), (verify_pin, (hashed, "2345")))
        self.assertEqual(call.menu.uids, [])            # not in yet
        d.callback(f(*args))
        self.assertEqual(call.menu.uids, ["m001"])
        self.bye(self.bob, ok, "400")

    def test_check_pin_on_the_reactor_s_thread_pool(self):
        """The agent's own check: a hash in a real worker thread, digits at once."""
        hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("2345")
        ua = self.h.core.ua
        self.assertEqual(self.successResultOf(ua.check_pin("2345", "2345")), True)
        self.assertEqual(self.successResultOf(ua.check_pin("2345", "2346")), False)
        d = defer.gatherResults([ua.check_pin(hashed, "2345"), ua.check_pin(hashed, "9999")])
        return d.addCallback(self.assertEqual, [True, False])

    def test_a_pin_check_that_ends_after_the_call(self):
        hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("2345")
        self.h.office.patch_record("user", "bob", {"voicemail_pin": hashed})
        pending = []
        self.h.core.ua.defer_to_thread = lambda f, *args: pending.append(defer.Deferred()) or pending[-1]
        self.assertEqual(self.bob.register().code, 200)
        self.h.take()
        ok, port = self.call(self.bob, "400")
        call = list(self.h.core.ua.calls.values())[0]
        for d in "2345#":
            self.bob.send(self.bob.request("INFO", "sip:voicemail@192.168.2.254", [
                "Content-Type: application/dtmf-relay"], "Signal=%s\r\nDuration=160\r\n" % d,
                to_tag=ok.to_tag, to="<sip:400@example.com>"))
        self.bye(self.bob, ok, "400")
        self.assertTrue(call.ended)
        pending[0].callback(True)
        self.assertIsNone(call.menu.box)                # the mailbox is not opened for nobody

    def test_unknown_caller_enters_extension(self):
        # Alice's credentials from a host where no phone registered: the
        # menu does not know whose mailbox, and asks.
        stranger = Phone(self.h, "101", "192.168.2.99")
        ok, port = self.call(stranger, "400")
        call = list(self.h.core.ua.calls.values())[0]
        self.assertIsNone(call.menu.user)
        for i, d in enumerate("102#2345#"):
            port.protocol.datagramReceived(
                RtpPacket(101, i, 1000 + i * 800, 7, dtmf.make_event(d, True, 800)).to_bytes(),
                ("192.168.2.99", 40000))
        self.assertEqual(call.menu.user, "bob")
        self.assertEqual(call.menu.uids, [])

    def test_a_caller_that_vanishes_is_hung_up_and_the_message_kept(self):
        ok, port = self.call(self.alice, "102")
        self.h.clock.pump([0.02] * 150)                 # the greeting (tones) plays
        call = list(self.h.core.ua.calls.values())[0]
        self.assertTrue(call.recorder.on)
        codes = g711.encode(tone(440, 1000), 0)
        self.rtp_in(port, [codes[i:i + 160] for i in range(0, len(codes), 160)])
        self.h.take()
        self.h.clock.pump([1.0] * 45)
        self.assertIn("BYE", [m.method for m, _ in self.h.take() if m.is_request])
        self.assertFalse(self.h.core.ua.calls)
        self.assertEqual(len(self.h.store.boxes["bob"]), 1)

    def test_idle_menu_hangs_up(self):
        ok, port = self.call(self.bob, "400")
        for i in range(200):
            # The phone keeps sending (silent) audio, but nobody presses a key.
            port.protocol.datagramReceived(RtpPacket(0, i, i * 160, 7, b"\xff" * 160).to_bytes(),
                                           ("192.168.2.12", 40000))
            self.h.clock.advance(1.0)
        self.assertFalse(self.h.core.ua.calls)
