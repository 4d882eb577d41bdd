"""
Tests of remote phones (`[sip] wan = yes`, nat.py and the core's WAN rule):
who may speak from the WAN, registration from behind a NAT, media anchored
between a remote phone and a LAN phone, the NAT keep-alive, and the lock-out
of a WAN source that keeps failing.
"""

import ipaddress

from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from allworx.protocols.sip import nat
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import Request, make_response
from allworx.tests.siphelpers import Harness, Phone, offer

REMOTE = "198.51.100.40"        # a remote phone's public address (its NAT's)
PRIVATE = "10.0.0.5"            # what that phone writes in its Contact and SDP
WAN_IP = "203.0.113.2"
LAN_IP = "192.168.2.254"


class FakeRelay:
    inside_port = 30000
    outside_port = 30002

    def __init__(self):
        self.expected = {}
        self.closed = False

    def expect_inside(self, host, port):
        self.expected["inside"] = (host, port)

    def expect_outside(self, host, port):
        self.expected["outside"] = (host, port)

    def close(self):
        self.closed = True


class RemotePhone(Phone):
    """A phone behind a NAT: private Contact, public source."""

    def request(self, *args, **kwargs):
        data = Phone.request(self, *args, **kwargs)
        return data.replace(("Contact: <sip:%s@%s:%d>" % (self.ext, REMOTE, self.address[1])).encode(),
                            ("Contact: <sip:%s@%s:5060>" % (self.ext, PRIVATE)).encode())


def codes(out):
    return [m.code if not m.is_request else m.method for m, _ in out]


class Base(unittest.TestCase):
    wan = "yes"

    def setUp(self):
        self.h = Harness(self.mktemp(), extra="")
        self.h.office.update_settings("sip", {"wan": self.wan})
        self.h.office.set_wan_address(ipaddress.ip_interface(WAN_IP + "/24"), "static")
        self.relays = []

        def relay():
            self.relays.append(FakeRelay())
            return self.relays[-1]
        self.h.core.calls.media.factory = relay
        self.remote = RemotePhone(self.h, "101", REMOTE, 41000)
        self.bob = Phone(self.h, "102", "192.168.2.12")


class WanClosedTests(Base):
    wan = "no"

    def test_everything_from_the_wan_is_refused(self):
        self.assertEqual(self.remote.register().code, 403)
        for method in ("INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE"):
            out = self.remote.send(self.remote.request(method, "sip:102@example.com"))
            self.assertEqual(codes(out), [403], method)
            self.assertEqual(out[0][0].reason, "Forbidden (LAN only)")


class WanOpenTests(Base):

    def test_register_is_challenged_and_binds_the_source(self):
        out = self.remote.send(self.remote.request("REGISTER", "sip:example.com", ["Expires: 3600"],
                                                   to="<sip:101@example.com>"))
        self.assertEqual(codes(out), [401])
        self.assertEqual(self.remote.register().code, 200)
        [binding] = self.h.core.registrar.contacts_of("alice")
        self.assertEqual(binding.contact, "sip:101@%s:5060" % PRIVATE)
        self.assertEqual(binding.source, (REMOTE, 41000))
        # A call to 101 reaches the phone at its NAT's address, not the private one.
        self.assertEqual(self.bob.register().code, 200)
        out = self.bob.send(self.bob.request("INVITE", "sip:101@example.com",
                                             ["Content-Type: application/sdp"], offer("192.168.2.12")))
        [(invite, dest)] = [(m, d) for m, d in out if m.is_request]
        self.assertEqual((dest.host, dest.port), (REMOTE, 41000))
        self.assertEqual(invite.top_via.host, WAN_IP)

    def test_strangers_get_the_same_challenge_for_every_number(self):
        answers = []
        for number in ("101", "999", "555", "*97"):
            for method in ("INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE", "BYE"):
                out = self.remote.send(self.remote.request(method, "sip:%s@example.com" % number))
                self.assertEqual(codes(out), [407], (method, number))
                challenges = tuple(c.split("nonce=")[0] for c in out[0][0].get_all("Proxy-Authenticate"))
                answers.append((method, challenges, out[0][0].reason))
        self.assertEqual(len(set(answers)), 5)      # one per method, whatever the number
        self.assertEqual(self.relays, [])

    def test_a_wrong_answer_is_refused_and_a_right_one_admitted(self):
        self.remote.patient = True
        self.assertEqual(self.bob.register().code, 200)
        out = self.remote.invite("sip:102@example.com", password="wrong")
        self.assertEqual(codes(out), [403])
        out = self.remote.invite("sip:102@example.com", ["Content-Type: application/sdp"],
                                 offer(PRIVATE))
        self.assertEqual(codes(out), [100, "INVITE"])

    def test_a_call_from_a_remote_phone_is_anchored_both_ways(self):
        for phone in (self.remote, self.bob):
            self.assertEqual(phone.register().code, 200)
        # From its registered address, the phone's INVITE needs no challenge.
        out = self.remote.send(self.remote.request("INVITE", "sip:102@example.com",
                                                   ["Content-Type: application/sdp"],
                                                   offer(PRIVATE, 7078)))
        self.assertEqual(codes(out), [100, "INVITE"])
        invite, dest = out[1]
        self.assertEqual((dest.host, dest.port), ("192.168.2.12", 5060))
        [relay] = self.relays
        self.assertIn(b"c=IN IP4 %s" % LAN_IP.encode(), invite.body)
        self.assertIn(b"m=audio 30000 ", invite.body)
        self.assertEqual(relay.expected, {"outside": (PRIVATE, 7078)})
        self.assertEqual(invite.get("Contact"), "<sip:101@%s:41000>" % REMOTE)
        self.assertEqual(invite.get_all("Record-Route")[:2],
                         ["<sip:%s:5060;lr>" % LAN_IP, "<sip:%s:5060;lr>" % WAN_IP])
        # Bob answers: the remote phone sees the relay's WAN side.
        router = self.h.core.calls
        answer = make_response(invite, 200, to_tag="bob1", extra=[
            ("Contact", "<sip:102@192.168.2.12:5060>"), ("Content-Type", "application/sdp")])
        answer.body = offer("192.168.2.12", 9000).encode()
        self.h.receive(answer.to_bytes(), ("192.168.2.12", 5060))
        [(resp, dest)] = self.h.take()
        self.assertEqual((resp.code, dest.host, dest.port), (200, REMOTE, 41000))
        self.assertIn(b"c=IN IP4 %s" % WAN_IP.encode(), resp.body)
        self.assertIn(b"m=audio 30002 ", resp.body)
        self.assertEqual(relay.expected["inside"], ("192.168.2.12", 9000))
        self.assertTrue(router.knows(self.remote.call_id))
        # Bob holds (a re-INVITE along the route): the remote phone still sees the relay.
        reinvite = self.bob.request("INVITE", "sip:101@%s:41000" % REMOTE,
                                    ["Route: <sip:%s:5060;lr>" % LAN_IP,
                                     "Route: <sip:%s:5060;lr>" % WAN_IP,
                                     "Content-Type: application/sdp"],
                                    offer("192.168.2.12", 9002).replace("t=0 0", "t=0 0\r\na=sendonly"),
                                    call_id=self.remote.call_id, to_tag=self.remote.tag)
        self.h.receive(reinvite, ("192.168.2.12", 5060))
        [(relayed, dest)] = self.h.take()
        self.assertEqual((relayed.method, dest.host, dest.port), ("INVITE", REMOTE, 41000))
        self.assertIn(b"c=IN IP4 %s" % WAN_IP.encode(), relayed.body)
        self.assertIn(b"m=audio 30002 ", relayed.body)
        self.assertEqual(relay.expected["inside"], ("192.168.2.12", 9002))
        # The remote phone's 200 goes back to bob with the relay's LAN side.
        ok200 = make_response(relayed, 200, extra=[("Contact", "<sip:101@%s:5060>" % PRIVATE),
                                                   ("Content-Type", "application/sdp")])
        ok200.body = offer(PRIVATE, 7080).encode()
        self.h.receive(ok200.to_bytes(), (REMOTE, 41000))
        [(back, dest)] = self.h.take()
        self.assertEqual((back.code, dest.host), (200, "192.168.2.12"))
        self.assertIn(b"c=IN IP4 %s" % LAN_IP.encode(), back.body)
        self.assertEqual(back.get("Contact"), "<sip:101@%s:41000>" % REMOTE)
        self.assertEqual(relay.expected["outside"], (PRIVATE, 7080))
        # The remote phone hangs up: the BYE reaches bob and the relay closes.
        bye = self.remote.request("BYE", "sip:102@192.168.2.12:5060",
                                  ["Route: <sip:%s:5060;lr>" % WAN_IP, "Route: <sip:%s:5060;lr>" % LAN_IP],
                                  to_tag="bob1")
        self.h.receive(bye, (REMOTE, 41000))
        [(sent, dest)] = self.h.take()
        self.assertEqual((sent.method, dest.host), ("BYE", "192.168.2.12"))
        self.assertTrue(relay.closed)
        self.assertFalse(router.knows(self.remote.call_id))

    def test_a_call_to_a_remote_phone_is_anchored(self):
        for phone in (self.remote, self.bob):
            self.assertEqual(phone.register().code, 200)
        out = self.bob.send(self.bob.request("INVITE", "sip:101@example.com",
                                             ["Content-Type: application/sdp"],
                                             offer("192.168.2.12", 9000)))
        [(invite, dest)] = [(m, d) for m, d in out if m.is_request]
        [relay] = self.relays
        self.assertEqual(dest.host, REMOTE)
        self.assertIn(b"c=IN IP4 %s" % WAN_IP.encode(), invite.body)
        self.assertIn(b"m=audio 30002 ", invite.body)
        self.assertEqual(relay.expected, {"inside": ("192.168.2.12", 9000)})
        ringing = make_response(invite, 180, to_tag="r1", extra=[("Contact", "<sip:101@%s:5060>" % PRIVATE)])
        self.h.receive(ringing.to_bytes(), (REMOTE, 41000))
        [(resp, dest)] = self.h.take()
        self.assertEqual((resp.code, resp.get("Contact")), (180, "<sip:101@%s:41000>" % REMOTE))
        answer = make_response(invite, 200, to_tag="r1", extra=[
            ("Contact", "<sip:101@%s:5060>" % PRIVATE), ("Content-Type", "application/sdp")])
        answer.body = offer(PRIVATE, 7078).encode()
        self.h.receive(answer.to_bytes(), (REMOTE, 41000))
        [(resp, dest)] = self.h.take()
        self.assertEqual((resp.code, dest.host), (200, "192.168.2.12"))
        self.assertIn(b"c=IN IP4 %s" % LAN_IP.encode(), resp.body)
        self.assertIn(b"m=audio 30000 ", resp.body)
        self.assertEqual(relay.expected["outside"], (PRIVATE, 7078))

    def test_an_outside_call_to_a_remote_phone_is_anchored_again(self):
        # The B2BUA's inside leg (LOCAL) names its relay's LAN side: the router's
        # relay joins it to the remote phone.
        self.assertEqual(self.remote.register().code, 200)
        b2b = Phone(self.h, "+15557770001", "127.0.0.1")
        self.h.receive(b2b.request("INVITE", "sip:101@example.com", ["Content-Type: application/sdp"],
                                   offer(LAN_IP, 30010)), ("127.0.0.1", 5060), "LOCAL")
        self.h.clock.advance(0)
        [(invite, dest)] = [(m, d) for m, d in self.h.take() if m.is_request]
        [relay] = self.relays
        self.assertEqual((dest.host, dest.port), (REMOTE, 41000))
        self.assertIn(b"c=IN IP4 %s" % WAN_IP.encode(), invite.body)
        self.assertEqual(relay.expected, {"inside": (LAN_IP, 30010)})

    def test_calls_between_lan_phones_keep_their_media(self):
        alice = Phone(self.h, "101", "192.168.2.11")
        for phone in (alice, self.bob):
            self.assertEqual(phone.register().code, 200)
        out = alice.send(alice.request("INVITE", "sip:102@example.com",
                                       ["Content-Type: application/sdp"], offer()))
        [invite] = [m for m, _ in out if m.is_request]
        self.assertEqual(invite.body, offer().encode())
        self.assertEqual(invite.get_all("Record-Route"), ["<sip:%s:5060;lr>" % LAN_IP])
        self.assertEqual(self.relays, [])

    def test_an_unanswered_call_closes_its_relay(self):
        for phone in (self.remote, self.bob):
            self.assertEqual(phone.register().code, 200)
        self.bob.send(self.bob.request("INVITE", "sip:101@example.com",
                                       ["Content-Type: application/sdp"], offer("192.168.2.12")))
        [relay] = self.relays
        self.h.clock.advance(21)     # voicemail_timeout: the UA takes the call
        self.assertTrue(relay.closed)


class KeepAliveTests(Base):

    def options_to(self, out):
        return [(d.host, d.port) for m, d in out if m.is_request and m.method == "OPTIONS"]

    def test_options_every_25_seconds_until_the_binding_expires(self):
        self.assertEqual(self.bob.register().code, 200)
        self.assertEqual(self.remote.register(expires=60).code, 200)
        self.h.clock.advance(24.9)
        self.assertEqual(self.options_to(self.h.take()), [])
        self.h.clock.advance(0.1)
        self.assertEqual(self.options_to(self.h.take()), [(REMOTE, 41000)])   # never the LAN phone
        self.h.clock.advance(25)
        self.assertEqual(self.options_to(self.h.take()), [(REMOTE, 41000)])
        self.h.clock.advance(25)    # 75 s: the binding ended at 60
        self.assertEqual(self.options_to(self.h.take()), [])
        self.assertIsNone(self.h.core.keepalive.timer)
        self.h.clock.advance(100)
        self.assertEqual(self.options_to(self.h.take()), [])

    def test_tcp_phones_keep_their_own_connection(self):
        self.remote.send = lambda data: (self.h.receive(data, self.remote.address, "TCP"), self.h.take())[1]
        self.assertEqual(self.remote.register().code, 200)
        self.h.clock.advance(30)
        self.assertEqual(self.options_to(self.h.take()), [])


class LockoutTests(Base):

    def test_a_wan_source_that_keeps_failing_is_locked_out_once(self):
        events = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.remote.patient = True
        answers = [self.remote.register(password="guess%d" % i).code for i in range(6)]
        self.assertEqual(answers[:5], [403] * 5)
        last = self.remote.register()           # the right password, now refused unchecked
        self.assertEqual(last.code, 403)
        self.assertIn("locked until", last.reason)
        locks = self.h.core.registrar.throttle.lockouts()
        self.assertEqual([(l.source, l.user) for l in locks], [(REMOTE, "alice")])
        logged = [e for e in events if "locked out" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1)
        # It expires.
        self.h.clock.advance(901)
        self.assertEqual(self.remote.register().code, 200)


class NatHelpersTests(unittest.TestCase):

    def test_fix_contact_keeps_user_params_and_transport(self):
        m = Request([("Contact", '"A" <sip:101@10.0.0.5:5060;ob>;expires=60')], method="INVITE",
                    uri="sip:x")
        nat.fix_contact(m, Destination("TLS", REMOTE, 50123))
        self.assertEqual(m.get("Contact"),
                         '"A" <sip:101@%s:50123;transport=tls>;expires=60' % REMOTE)
        m = Request([("Contact", "not a uri")], method="INVITE", uri="sip:x")
        nat.fix_contact(m, Destination("UDP", REMOTE, 5060))
        self.assertEqual(m.get("Contact"), "not a uri")
