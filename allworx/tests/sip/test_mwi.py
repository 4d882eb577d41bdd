"""Tests of message waiting: SUBSCRIBE message-summary and NOTIFY on MailboxChanged."""

from twisted.trial import unittest

from allworx.protocols.sip.message import make_response
from allworx.protocols.sip.mwi import summary_body
from allworx.tests.siphelpers import Harness, Phone


class MwiTests(unittest.TestCase):

    def setUp(self):
        self.h = Harness(self.mktemp())
        self.bob = Phone(self.h, "102", "192.168.2.12", port=5070)
        self.assertEqual(Phone(self.h, "102", "192.168.2.12").register().code, 200)
        self.h.take()

    def subscribe(self, expires=600, event="message-summary", to_tag=None):
        return self.bob.send(self.bob.request("SUBSCRIBE", "sip:102@example.com", [
            "Event: " + event, "Expires: %d" % expires], to_tag=to_tag))

    def test_body(self):
        self.assertEqual(summary_body("sip:102@example.com", 2, 1),
                         b"Messages-Waiting: yes\r\nMessage-Account: sip:102@example.com\r\n"
                         b"Voice-Message: 2/1 (0/0)\r\n")

    def test_subscribe_notify_at_once_and_on_change(self):
        out = self.subscribe()
        self.assertEqual([m.code if not m.is_request else m.method for m, _ in out], [200, "NOTIFY"])
        notify, dest = out[1]
        self.assertEqual((dest.host, dest.port), ("192.168.2.12", 5070))
        self.assertEqual(notify.uri, "sip:102@192.168.2.12:5070")
        self.assertEqual(notify.get("Event"), "message-summary")
        self.assertTrue(notify.get("Subscription-State").startswith("active"))
        self.assertIn(b"Messages-Waiting: no", notify.body)
        self.assertEqual(notify.to_tag, self.bob.tag)
        self.h.receive(make_response(notify, 200).to_bytes(), ("192.168.2.12", 5070))
        self.h.store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nhello")
        out = self.h.take()
        self.assertEqual([m.method for m, _ in out], ["NOTIFY"])
        self.assertIn(b"Voice-Message: 1/0", out[0][0].body)
        self.assertGreater(out[0][0].cseq[0], notify.cseq[0])
        # Another user's mailbox: nothing.
        self.h.store.deliver(["alice"], b"X-Allworx-Voicemail: yes\n\nhello")
        self.assertEqual(self.h.take(), [])

    def test_unsubscribe_and_expiry(self):
        out = self.subscribe(expires=60)
        tag = out[0][0].to_tag
        out = self.subscribe(expires=0, to_tag=tag)
        self.assertEqual(out[0][0].code, 202)
        self.assertTrue(out[1][0].get("Subscription-State").startswith("terminated"))
        self.h.store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nhello")
        self.assertEqual(self.h.take(), [])
        self.subscribe(expires=60)
        self.h.clock.advance(61)
        self.h.take()
        self.h.store.deliver(["bob"], b"X-Allworx-Voicemail: yes\n\nhello")
        self.assertEqual([m.method for m, _ in self.h.take() if m.is_request], [])

    def test_other_events_and_unknown_users(self):
        self.assertEqual(self.subscribe(event="presence")[0][0].code, 489)
        # A number nobody has is challenged like any mailbox (issue 21, item 6).
        nobody = Phone(self.h, "555", "192.168.2.13")
        out = nobody.send(nobody.request("SUBSCRIBE", "sip:555@example.com", ["Event: message-summary"]))
        self.assertEqual(out[0][0].code, 401)

    def test_strangers_must_authenticate(self):
        stranger = Phone(self.h, "102", "192.168.2.50")
        out = stranger.send(stranger.request("SUBSCRIBE", "sip:102@example.com", ["Event: message-summary"]))
        self.assertEqual(out[0][0].code, 401)
        auth = stranger.authorization(out[0][0].get("WWW-Authenticate"), "SUBSCRIBE", "sip:102@example.com")
        out = stranger.send(stranger.request("SUBSCRIBE", "sip:102@example.com",
                                             ["Event: message-summary", "Authorization: " + auth]))
        self.assertEqual([m.code if not m.is_request else m.method for m, _ in out], [200, "NOTIFY"])
        alice = Phone(self.h, "101", "192.168.2.51")
        out = alice.send(alice.request("SUBSCRIBE", "sip:102@example.com", ["Event: message-summary"]))
        auth = alice.authorization(out[0][0].get("WWW-Authenticate"), "SUBSCRIBE", "sip:102@example.com")
        out = alice.send(alice.request("SUBSCRIBE", "sip:102@example.com",
                                       ["Event: message-summary", "Authorization: " + auth]))
        self.assertEqual([m.code for m, _ in out], [403])

    def test_guessing_through_subscribe_counts_in_the_login_throttle(self):
        """Digest answers to SUBSCRIBE count with every protocol's, and a lock-out refuses them unchecked."""
        throttle = self.h.core.registrar.throttle
        guesser = Phone(self.h, "102", "192.168.2.60", password="guess")
        for n in range(throttle.user_limit):
            out = guesser.send(guesser.request("SUBSCRIBE", "sip:102@example.com", ["Event: message-summary"]))
            auth = guesser.authorization(out[0][0].get("WWW-Authenticate"), "SUBSCRIBE",
                                         "sip:102@example.com")
            out = guesser.send(guesser.request("SUBSCRIBE", "sip:102@example.com",
                                               ["Event: message-summary", "Authorization: " + auth]))
            self.assertEqual([m.code for m, _ in out], [403])
        self.assertTrue(throttle.locked_until("192.168.2.60", "bob"))
        # Now even bob's right password from there is refused, unchecked.
        right = Phone(self.h, "102", "192.168.2.60")
        out = right.send(right.request("SUBSCRIBE", "sip:102@example.com", ["Event: message-summary"]))
        auth = right.authorization(out[0][0].get("WWW-Authenticate"), "SUBSCRIBE", "sip:102@example.com")
        out = right.send(right.request("SUBSCRIBE", "sip:102@example.com",
                                       ["Event: message-summary", "Authorization: " + auth]))
        self.assertEqual([m.code for m, _ in out], [403])
        self.assertIn("locked until", out[0][0].reason)
