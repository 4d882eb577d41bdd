"""
Tests of transferring an outside call (transfer.py): blind to another
extension, a failed target, attended with Replaces, and the attendant's
kind of REFER from the server's own side.
"""

from allworx.protocols.sip.message import make_response, parse
from allworx.tests.siphelpers import Phone, offer
from allworx.tests.sip.test_outside import PROVIDER, OutsideHarness


class TransferTests(OutsideHarness):

    def setUp(self):
        OutsideHarness.setUp(self)
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.assertEqual(self.bob.register().code, 200)
        self.h.take()

    def refer(self, inv, refer_to, cseq=2):
        """Alice REFERs inside her dialog with the server; what went out."""
        contact = inv.get("Contact").strip("<>")
        data = self.alice.request("REFER", contact, ["Route: <sip:192.168.2.254:5060;lr>",
                                                     "Refer-To: %s" % refer_to],
                                  call_id=inv.call_id, to_tag=inv.from_tag,
                                  to=inv.get("From").split(";tag=")[0], cseq=cseq)
        return self.alice.send(data) + self.pump()

    def test_blind_transfer_to_another_extension(self):
        inv = self.answered_inbound()
        out = self.refer(inv, "<sip:102@192.168.2.254>")
        self.assertEqual([m.code for m, d in out if not m.is_request], [202])
        notify = [m for m, d in out if m.is_request and m.method == "NOTIFY"]
        self.assertEqual([(m.get("Event"), m.body) for m in notify], [("refer", b"SIP/2.0 100 Trying\r\n")])
        to_bob = [m for m, d in out if m.is_request and m.method == "INVITE" and d.host == "192.168.2.12"]
        self.assertEqual(len(to_bob), 1, out)
        self.assertIn('"Carla Caller" <sip:+15557770001@192.168.2.254>', to_bob[0].get("From"))
        self.assertIn(b"m=audio 30000 ", to_bob[0].body)
        # Bob answers: alice hears 200 in a NOTIFY, the relay's LAN side follows bob.
        ok = make_response(to_bob[0], 200, to_tag="bob1", extra=[
            ("Contact", "<sip:102@192.168.2.12:5060>"), ("Content-Type", "application/sdp")])
        ok.body = offer("192.168.2.12", 41000).encode()
        self.h.receive(ok.to_bytes(), ("192.168.2.12", 5060))
        out = self.pump()
        notify = [m for m, d in out if m.is_request and m.method == "NOTIFY"]
        self.assertEqual([m.body for m in notify], [b"SIP/2.0 200 OK\r\n"])
        self.assertIn("terminated", notify[0].get("Subscription-State"))
        self.assertEqual(self.relays[0].expected["inside"], ("192.168.2.12", 41000))
        # Alice hangs up her old leg: the call goes on (the provider hears no BYE).
        contact = inv.get("Contact").strip("<>")
        out = self.alice.send(self.alice.request("BYE", contact, ["Route: <sip:192.168.2.254:5060;lr>"],
                                                 call_id=inv.call_id, to_tag=inv.from_tag,
                                                 to=inv.get("From").split(";tag=")[0], cseq=3)) + self.pump()
        self.assertEqual([d.host for m, d in out if m.is_request and m.method == "BYE"], [])
        self.assertFalse(self.relays[0].closed)
        # The provider hangs up: bob gets the BYE; the record says bob answered.
        our_contact = self._our_contact
        bye = ("BYE %s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprovB\r\n"
               "From: <sip:+15557770001@sip.internet.example>;tag=c1\r\nTo: <sip:+15551230000@x>;tag=%s\r\n"
               "Call-ID: in-1@provider\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n") % our_contact
        out = self.from_provider(bye.encode())
        self.assertEqual(sorted((m.method if m.is_request else str(m.code), d.host) for m, d in out),
                         [("200", PROVIDER[0]), ("BYE", "192.168.2.12")])
        [entry] = self.history.entries
        self.assertEqual((entry.answered_by, entry.outcome), ("102", "answered"))

    @property
    def _our_contact(self):
        """(our Contact URI, our tag) of the provider's dialog."""
        call = next(iter(self.h.core.outside.calls))
        leg = call.outside
        return (leg.contact.strip("<>"), leg.local_tag)

    def test_a_failed_target_leaves_the_call_with_the_referrer(self):
        inv = self.answered_inbound()
        out = self.refer(inv, "<sip:109@192.168.2.254>")      # no such extension
        notify = [m.body for m, d in out if m.is_request and m.method == "NOTIFY"]
        self.assertEqual(notify, [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 404 Not Found\r\n"])
        call = next(iter(self.h.core.outside.calls))
        self.assertIsNone(call.transfer)
        self.assertFalse(self.relays[0].closed)

    def test_blind_transfer_then_the_referrer_hangs_up_and_the_target_fails(self):
        inv = self.answered_inbound()
        out = self.refer(inv, "<sip:102@192.168.2.254>")
        to_bob = [m for m, d in out if m.is_request and m.method == "INVITE" and d.host == "192.168.2.12"][0]
        contact = inv.get("Contact").strip("<>")
        self.alice.send(self.alice.request("BYE", contact, ["Route: <sip:192.168.2.254:5060;lr>"],
                                           call_id=inv.call_id, to_tag=inv.from_tag,
                                           to=inv.get("From").split(";tag=")[0], cseq=3))
        self.pump()
        self.assertFalse(self.relays[0].closed)
        # Bob is busy: with no forward_busy, his voicemail takes the call.
        self.h.receive(make_response(to_bob, 486, to_tag="bob1").to_bytes(), ("192.168.2.12", 5060))
        out = self.pump()
        # Voicemail took it: the outside caller stays connected (to bob's voicemail).
        self.assertFalse(self.relays[0].closed, out)

    def test_the_provider_side_may_not_transfer(self):
        self.answered_inbound()
        contact, tag = self._our_contact
        refer = ("REFER %s SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKprovR\r\n"
                 "From: <sip:+15557770001@sip.internet.example>;tag=c1\r\nTo: <sip:+15551230000@x>;tag=%s\r\n"
                 "Call-ID: in-1@provider\r\nCSeq: 8 REFER\r\nRefer-To: <sip:+15559990000@x>\r\n"
                 "Contact: <sip:x@198.51.100.20>\r\nContent-Length: 0\r\n\r\n") % (contact, tag)
        out = self.from_provider(refer.encode())
        self.assertEqual([m.code for m, d in out if not m.is_request], [403])

    def test_attended_transfer_sends_replaces_to_the_phone_holding_the_dialog(self):
        inv = self.answered_inbound()
        bob_contact = "sip:102@192.168.2.12:5060"
        out = self.refer(inv, "<%s?Replaces=abc%%40x%%3Bto-tag%%3Db1%%3Bfrom-tag%%3Da1>" % bob_contact)
        to_bob = [m for m, d in out if m.is_request and m.method == "INVITE" and d.host == "192.168.2.12"]
        self.assertEqual(len(to_bob), 1, out)
        self.assertEqual(to_bob[0].get("Replaces"), "abc@x;to-tag=b1;from-tag=a1")
        self.assertEqual(to_bob[0].uri, bob_contact)
        self.assertIsNotNone(parse(to_bob[0].to_bytes()))
