"""
Tests of the call router's ring groups (ring-all and hunt, ring_timeout,
fallback), per-user forwarding (forward_always, forward_busy,
forward_noanswer) and do-not-disturb, over the SIP test harness.
"""

from twisted.trial import unittest

from allworx.protocols.sip.message import make_response
from allworx.tests.confs import PW_HASH
from allworx.tests.siphelpers import Harness, Phone, offer

GROUPS = """
[user dave]
extension = 104
password = {pw}

[group sales]
number = 300
members = 102 103 104
ring_timeout = 15
fallback = voicemail 101

[group desk]
number = 301
members = 102 103
strategy = hunt
ring_timeout = 10
fallback = 101
"""


class RouterHarness(unittest.TestCase):
    """alice (101) calls; bob (102), carol (103) and dave (104) have phones."""

    extra = GROUPS

    def setUp(self):
        self.h = Harness(self.mktemp(), extra=self.extra.format(pw=PW_HASH))
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.assertEqual(self.alice.register().code, 200)
        self.phones = {}
        for ext, ip in (("102", "192.168.2.12"), ("103", "192.168.2.13"), ("104", "192.168.2.14")):
            self._bind(ext, ip)
        self.h.take()

    def _bind(self, ext, ip):
        from allworx.protocols.sip.registrar import Binding
        user = self.h.office.config.user_by_extension(ext)
        contact = "sip:%s@%s:5060" % (ext, ip)
        self.h.core.registrar.bind(Binding(user.name, ext, contact, (ip, 5060), "UDP", 1e12))
        self.phones[ext] = ip

    def call(self, number):
        return self.alice.send(self.alice.request("INVITE", "sip:%s@example.com" % number,
                                                  ["Content-Type: application/sdp"], offer()))

    def invites(self, out):
        return {d.host: m for m, d in out if m.is_request and m.method == "INVITE"}

    def answer(self, invite, host, code=200):
        resp = make_response(invite, code, to_tag="t" + host[-2:])
        if code == 200:
            resp.add("Contact", "<%s>" % invite.uri)
        self.h.receive(resp.to_bytes(), (host, 5060))
        return self.h.take()


class GroupTests(RouterHarness):

    def test_ring_all_rings_every_member_and_the_first_answer_wins(self):
        out = self.call("300")
        ringing = self.invites(out)
        self.assertEqual(set(ringing), {"192.168.2.12", "192.168.2.13", "192.168.2.14"})
        for host, inv in ringing.items():
            self.h.receive(make_response(inv, 180, to_tag="t" + host[-2:]).to_bytes(), (host, 5060))
        self.h.take()
        out = self.answer(ringing["192.168.2.13"], "192.168.2.13")
        kinds = sorted((m.method if m.is_request else str(m.code), d.host) for m, d in out)
        self.assertEqual(kinds, [("200", "192.168.2.11"), ("CANCEL", "192.168.2.12"),
                                 ("CANCEL", "192.168.2.14")])

    def test_ring_all_nobody_answers_then_the_fallback(self):
        out = self.call("300")
        self.assertEqual(len(self.invites(out)), 3)
        self.h.clock.advance(15)
        out = self.h.take()
        # The fallback is alice's voicemail: the voicemail agent answers with 200.
        self.assertEqual([m.code for m, d in out if not m.is_request and m.code >= 200], [200])
        self.assertEqual([c.user.name for c in self.h.core.ua.calls.values()], ["alice"])

    def test_hunt_rings_members_in_order_then_the_fallback(self):
        out = self.call("301")
        self.assertEqual(list(self.invites(out)), ["192.168.2.12"])
        # Bob is busy: carol next, at once.
        out = self.answer(self.invites(out)["192.168.2.12"], "192.168.2.12", 486)
        ringing = self.invites(out)
        self.assertEqual(list(ringing), ["192.168.2.13"])
        # Carol does not answer in ring_timeout: the fallback, extension 101...
        # which is the caller herself (never rung): so voicemail takes it.
        self.h.receive(make_response(ringing["192.168.2.13"], 180, to_tag="t13").to_bytes(),
                       ("192.168.2.13", 5060))
        self.h.clock.advance(10)
        out = self.h.take()
        self.assertIn(("CANCEL", "192.168.2.13"),
                      [(m.method, d.host) for m, d in out if m.is_request])
        self.assertEqual([c.user.name for c in self.h.core.ua.calls.values()], ["alice"])

    def test_a_member_with_dnd_is_skipped(self):
        self.h.office.patch_record("user", "carol", {"dnd": "yes"})
        out = self.call("300")
        self.assertEqual(set(self.invites(out)), {"192.168.2.12", "192.168.2.14"})


class ForwardTests(RouterHarness):

    def set_user(self, name, **values):
        self.h.office.patch_record("user", name, values)

    def test_forward_always_rings_the_other_extension(self):
        self.set_user("bob", forward_always="103")
        out = self.call("102")
        self.assertEqual(list(self.invites(out)), ["192.168.2.13"])

    def test_dnd_goes_to_voicemail_without_ringing(self):
        self.set_user("bob", dnd="yes")
        out = self.call("102")
        self.assertEqual(self.invites(out), {})
        self.assertEqual([m.code for m, d in out if not m.is_request and m.code >= 200], [200])
        self.assertEqual([c.user.name for c in self.h.core.ua.calls.values()], ["bob"])

    def test_forward_busy(self):
        self.set_user("bob", forward_busy="104")
        out = self.call("102")
        out = self.answer(self.invites(out)["192.168.2.12"], "192.168.2.12", 486)
        self.assertEqual(list(self.invites(out)), ["192.168.2.14"])

    def test_forward_noanswer(self):
        self.set_user("bob", forward_noanswer="103")
        self.call("102")
        self.h.clock.advance(20)        # voicemail_timeout
        out = self.h.take()
        self.assertIn("192.168.2.13", self.invites(out))

    def test_forwarding_loops_end(self):
        self.set_user("bob", forward_always="103")
        self.set_user("carol", forward_always="102")
        out = self.call("102")
        # Followed a few times, then the phones of whoever it reached ring.
        self.assertLessEqual(len(self.invites(out)), 1)
        self.assertTrue(out)
