"""
Tests of calls between sites (sites.py): the site router, a phone's call to
another site's extension through the B2BUA (the request's shape, 480 when the
site is silent, its answers passed on), and the other way, the trust of a
site's server by its tunnel address only, with no transit.
"""

import attr
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.sip.message import make_response
from allworx.protocols.sip.outside import OutsideCalls
from allworx.protocols.sip.sites import SITE_TIMEOUT, site_at, site_for
from allworx.tests.confs import PW_HASH
from allworx.tests.sip.test_outside import TRUNK, FakeRelay, FakeTrunks
from allworx.tests.siphelpers import CONF, Harness, Phone, offer

KEY1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
KEY3 = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="

SITES = """
[vpn]
enabled = yes
address = 192.168.99.1/24

[site branch]
public_key = {k1}
endpoint = 198.51.100.2:51820
address = 192.168.99.2
networks = 192.168.3.0/24
extensions = 200-299
domain = branch.example.com

[site depot]
public_key = {k3}
address = 192.168.99.3
networks = 192.168.4.0/24
extensions = 300-399 4000-4099

[group sales]
number = 500
members = 101 102
""".format(k1=KEY1, k3=KEY3)

BRANCH = ("192.168.99.2", 5060)


def site_invite(number, call_id="x1@branch", branch="z9hG4bKbr1", frm='"Bea Branch" <sip:201@branch.example.com>',
                body=None):
    """An INVITE as the branch's server sends it."""
    body = (body or offer("192.168.3.21", 42000)).encode()
    lines = ["INVITE sip:%s@192.168.99.1 SIP/2.0" % number,
             "Via: SIP/2.0/UDP 192.168.3.254:5060;branch=%s;rport" % branch,
             "Max-Forwards: 70", "From: %s;tag=b1" % frm, "To: <sip:%s@example.com>" % number,
             "Call-ID: %s" % call_id, "CSeq: 1 INVITE", "Contact: <sip:site-ab@192.168.99.2:5060>",
             "Content-Type: application/sdp", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RouterTests(unittest.TestCase):
    """The site router: an extension to a [site], or None."""

    def setUp(self):
        text = CONF.format(pw=PW_HASH, alice="", bob="") + SITES
        self.config = parse_config(text)

    def test_extension_to_site(self):
        c = self.config
        self.assertEqual(site_for(c, "201").name, "branch")
        self.assertEqual(site_for(c, "299").name, "branch")
        self.assertEqual(site_for(c, "300").name, "depot")
        self.assertEqual(site_for(c, "4050").name, "depot")

    def test_nothing_else(self):
        for number in ("199", "2000", "20", "", "400", "+201", "2o1", "voicemail-201", "group-201"):
            self.assertIsNone(site_for(self.config, number), number)

    def test_local_wins(self):
        # The config's checks keep users' extensions out of the ranges; a
        # group's number is not checked, and the site is widened by hand.
        c = parse_config(CONF.format(pw=PW_HASH, alice="", bob="") + SITES.replace(
            "number = 500", "number = 250"))
        sites = dict(c.sites, branch=attr.evolve(c.sites["branch"], extensions=(("100", "299"),)))
        c = attr.evolve(c, sites=sites)
        self.assertIsNone(site_for(c, "101"))      # alice
        self.assertIsNone(site_for(c, "250"))      # the group
        self.assertEqual(site_for(c, "120").name, "branch")
        self.assertEqual(site_for(c, "251").name, "branch")

    def test_site_at_its_tunnel_address_only(self):
        c = self.config
        self.assertEqual(site_at(c, "192.168.99.2").name, "branch")
        self.assertEqual(site_at(c, "192.168.99.3").name, "depot")
        for host in ("192.168.3.254", "192.168.99.1", "192.168.2.11", "198.51.100.2"):
            self.assertIsNone(site_at(c, host), host)


class SiteHarness(unittest.TestCase):
    def setUp(self):
        self.h = Harness(self.mktemp(), extra=SITES)
        self.alice = Phone(self.h, "101", "192.168.2.11")
        self.bob = Phone(self.h, "102", "192.168.2.12")
        self.assertEqual(self.alice.register().code, 200)
        self.assertEqual(self.bob.register().code, 200)
        self.h.take()

    def pump(self):
        out = []
        for _ in range(5):
            self.h.clock.advance(0)
            out += self.h.take()
        return out

    def from_site(self, data, source=BRANCH):
        self.h.receive(data, source)
        return self.pump()

    def call_branch(self, number="201"):
        """alice dials `number`: what went out, and the INVITE to the site."""
        out = self.alice.send(self.alice.request("INVITE", "sip:%s@192.168.2.254" % number,
                                                 ["Content-Type: application/sdp"], offer()))
        out += self.pump()
        invites = [(m, d) for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(len(invites), 1, out)
        return out, invites[0]


def to_phone(out, address=("192.168.2.11", 5060)):
    return [m for m, d in out if not m.is_request and (d.host, d.port) == address]


def requests(out, method, to=BRANCH):
    return [m for m, d in out if m.is_request and m.method == method and (d.host, d.port) == to]


class OutboundTests(SiteHarness):
    """alice at the main office calls 201 at the branch."""

    def test_request_to_the_site(self):
        out, (inv, dest) = self.call_branch()
        self.assertEqual([r.code for r in to_phone(out)], [100])
        self.assertEqual((dest.transport, dest.host, dest.port), ("UDP", "192.168.99.2", 5060))
        self.assertEqual(inv.uri, "sip:201@192.168.99.2")
        self.assertEqual(inv.get("To"), "<sip:201@branch.example.com>")
        self.assertTrue(inv.get("From").startswith('"Alice Archer" <sip:101@example.com>;tag='),
                        inv.get("From"))
        self.assertEqual(inv.body, offer().encode())        # SDP untouched
        self.assertIn("@192.168.99.1:5060>", inv.get("Contact"))
        self.assertNotEqual(inv.call_id, self.alice.call_id)

    def test_to_of_a_site_without_domain_is_its_address(self):
        _, (inv, dest) = self.call_branch("301")
        self.assertEqual(inv.uri, "sip:301@192.168.99.3")
        self.assertEqual(inv.get("To"), "<sip:301@192.168.99.3>")
        self.assertEqual(dest.host, "192.168.99.3")

    def test_silent_site_gives_480_within_5_s(self):
        _, (inv, _) = self.call_branch()
        self.h.clock.advance(SITE_TIMEOUT - 0.1)
        out = self.h.take()
        self.assertEqual(to_phone(out), [])
        self.assertTrue(requests(out, "INVITE"), "the INVITE is retransmitted meanwhile")
        self.h.clock.advance(0.1)
        out = self.h.take()
        finals = to_phone(out)
        self.assertEqual([r.code for r in finals], [480])
        self.assertIn("branch", finals[0].reason)
        self.assertLess(self.h.clock.seconds(), 5.0)
        self.assertEqual(requests(out, "CANCEL"), [])       # nothing provisional: no CANCEL yet
        self.assertEqual(self.h.core.sites.calls, set())
        self.assertEqual(self.h.core.calls.active_calls(), [])
        # The site wakes up: its ringing is CANCELled, nothing reaches alice.
        out = self.from_site(make_response(inv, 180, to_tag="late").to_bytes())
        self.assertEqual(len(requests(out, "CANCEL")), 1)
        self.assertEqual(to_phone(out), [])

    def test_a_late_2xx_is_ended(self):
        _, (inv, _) = self.call_branch()
        self.h.clock.advance(SITE_TIMEOUT)
        self.h.take()
        ok = make_response(inv, 200, to_tag="late", extra=[("Contact", "<sip:201@192.168.3.21>")])
        out = self.from_site(ok.to_bytes())
        self.assertEqual(len(requests(out, "ACK")), 1)
        byes = requests(out, "BYE")
        self.assertEqual([b.uri for b in byes], ["sip:201@192.168.3.21"])

    def test_provisional_then_final_passes(self):
        out, (inv, _) = self.call_branch()
        self.from_site(make_response(inv, 100).to_bytes())
        self.h.clock.advance(30)
        self.assertEqual([r.code for r in to_phone(self.h.take())], [])   # no 480 once it spoke
        out = self.from_site(make_response(inv, 180, to_tag="b2").to_bytes())
        self.assertEqual([r.code for r in to_phone(out)], [180])
        out = self.from_site(make_response(inv, 486, to_tag="b2").to_bytes())
        self.assertEqual([r.code for r in to_phone(out)], [486])
        self.assertEqual(len(requests(out, "ACK")), 1)       # the transaction's ACK to the site

    def test_site_errors_pass(self):
        for code in (404, 480, 603):
            out, (inv, _) = self.call_branch()
            out = self.from_site(make_response(inv, code, to_tag="b3").to_bytes())
            self.assertEqual([r.code for r in to_phone(out)], [code])

    def test_site_challenge_is_403(self):
        out, (inv, _) = self.call_branch()
        out = self.from_site(make_response(inv, 407, to_tag="b3", extra=[
            ("Proxy-Authenticate", 'Digest realm="branch.example.com", nonce="n"')]).to_bytes())
        self.assertEqual([r.code for r in to_phone(out)], [403])

    def answered(self):
        out, (inv, _) = self.call_branch()
        ok = make_response(inv, 200, to_tag="b4", extra=[
            ("Contact", "<sip:201@192.168.3.21:5060>"), ("Record-Route", "<sip:192.168.3.254;lr>"),
            ("Content-Type", "application/sdp")])
        ok.body = offer("192.168.3.21", 42000).encode()
        out = self.from_site(ok.to_bytes())
        return inv, out

    def test_answered_with_the_sites_sdp(self):
        inv, out = self.answered()
        oks = to_phone(out)
        self.assertEqual([r.code for r in oks], [200])
        self.assertEqual(oks[0].body, offer("192.168.3.21", 42000).encode())
        acks = requests(out, "ACK")
        self.assertEqual(len(acks), 1)
        self.assertEqual(acks[0].get("Route"), "<sip:192.168.3.254;lr>")
        self.assertEqual(self.h.core.calls.active_calls()[0]["state"], "answered")

    def test_bye_from_the_phone_reaches_the_site(self):
        self.answered()
        leg = next(leg for leg in self.h.core.sites.legs.values() if leg.dest.host == "192.168.2.11")
        self.alice.send(self.alice.request("ACK", "sip:site@192.168.2.254", cseq=1, to_tag=leg.local_tag))
        out = self.alice.send(self.alice.request("BYE", "sip:site@192.168.2.254", to_tag=leg.local_tag))
        self.assertEqual([r.code for r in to_phone(out)], [200])
        byes = requests(out, "BYE")
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].uri, "sip:201@192.168.3.21:5060")
        self.assertEqual(byes[0].get("Route"), "<sip:192.168.3.254;lr>")
        self.assertEqual(self.h.core.sites.calls, set())

    def test_reinvite_passes_both_ways(self):
        self.answered()
        leg = next(leg for leg in self.h.core.sites.legs.values() if leg.dest.host == "192.168.2.11")
        self.alice.send(self.alice.request("ACK", "sip:site@192.168.2.254", cseq=1, to_tag=leg.local_tag))
        hold = offer().replace("a=rtpmap:0", "a=sendonly\r\na=rtpmap:0")
        out = self.alice.send(self.alice.request("INVITE", "sip:site@192.168.2.254",
                                                 ["Content-Type: application/sdp"], hold,
                                                 to_tag=leg.local_tag))
        again = requests(out, "INVITE")
        self.assertEqual(len(again), 1)
        self.assertEqual(again[0].body, hold.encode())
        self.assertEqual(again[0].get("Route"), "<sip:192.168.3.254;lr>")
        self.assertEqual(to_phone(out), [])
        answer = offer("192.168.3.21", 42000).replace("a=rtpmap:0", "a=recvonly\r\na=rtpmap:0")
        ok = make_response(again[0], 200, extra=[("Content-Type", "application/sdp")])
        ok.body = answer.encode()
        out = self.from_site(ok.to_bytes())
        self.assertEqual(len(requests(out, "ACK")), 1)
        self.assertEqual(requests(out, "ACK")[0].cseq, (again[0].cseq[0], "ACK"))
        oks = to_phone(out)
        self.assertEqual([(r.code, r.body) for r in oks], [(200, answer.encode())])

    def test_bye_from_the_site_reaches_the_phone(self):
        inv, _ = self.answered()
        bye = make_response(inv, 200, to_tag="b4")     # borrow the headers, then make a request
        lines = ["BYE sip:site@192.168.99.1:5060 SIP/2.0",
                 "Via: SIP/2.0/UDP 192.168.3.254:5060;branch=z9hG4bKbye1;rport",
                 "Max-Forwards: 70", "From: %s" % bye.get("To"), "To: %s" % inv.get("From"),
                 "Call-ID: %s" % inv.call_id, "CSeq: 5 BYE", "Content-Length: 0"]
        out = self.from_site(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.assertEqual([m.code for m, d in out if not m.is_request and d.host == BRANCH[0]], [200])
        self.assertEqual(len([m for m, d in out if m.is_request and m.method == "BYE"
                              and d.host == "192.168.2.11"]), 1)

    def test_caller_cancels(self):
        out, (inv, _) = self.call_branch()
        self.from_site(make_response(inv, 180, to_tag="b5").to_bytes())
        branch = to_phone(out)[0].top_via.branch        # of alice's INVITE
        cancel = self.alice.request("CANCEL", "sip:201@192.168.2.254", cseq=1, branch=branch)
        out = self.alice.send(cancel) + self.pump()
        self.assertEqual(sorted(r.code for r in to_phone(out)), [200, 487])
        self.assertEqual(len(requests(out, "CANCEL")), 1)
        self.assertEqual(self.h.core.sites.calls, set())


class InboundTests(SiteHarness):
    """The branch's server calls an extension here."""

    def test_trusted_from_its_tunnel_address(self):
        out = self.from_site(site_invite("102"))
        self.assertEqual([m.code for m, d in out if not m.is_request and d.host == BRANCH[0]], [100])
        invites = [m for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(len(invites), 1)
        self.assertEqual((invites[0].uri, invites[0].get("From")),
                         ("sip:102@192.168.2.12:5060",
                          '"Bea Branch" <sip:201@branch.example.com>;tag=b1'))
        self.assertEqual(invites[0].body, offer("192.168.3.21", 42000).encode())

    def test_same_invite_from_elsewhere_is_challenged(self):
        for source in (("192.168.3.254", 5060), ("192.168.2.50", 5060), ("192.168.99.10", 5060)):
            out = self.from_site(site_invite("102", call_id="x-%s" % source[0]), source)
            self.assertEqual([m.code for m, d in out if not m.is_request], [407], source)
            self.assertFalse([m for m, d in out if m.is_request], source)

    def test_not_trusted_once_not_a_site(self):
        # The tunnel still there, the branch's [site] gone: its INVITE is a stranger's.
        h = Harness(self.mktemp(), extra=SITES[:SITES.index("[site branch]")]
                    + SITES[SITES.index("[site depot]"):])
        h.receive(site_invite("102"), BRANCH)
        self.assertEqual([m.code for m, d in h.take() if not m.is_request], [407])

    def test_unanswered_ends_in_voicemail_here(self):
        out = self.from_site(site_invite("102"))
        inv = [m for m, d in out if m.is_request and m.method == "INVITE"][0]
        self.h.receive(make_response(inv, 180, to_tag="bob1").to_bytes(), ("192.168.2.12", 5060))
        out = self.pump()
        self.assertEqual([m.code for m, d in out if d.host == BRANCH[0]], [180])
        self.h.clock.advance(20)
        out = self.h.take() + self.pump()
        self.assertEqual(len([m for m, d in out if m.is_request and m.method == "CANCEL"]), 1)
        oks = [m for m, d in out if not m.is_request and m.code == 200 and d.host == BRANCH[0]
               and m.cseq[1] == "INVITE"]
        self.assertEqual(len(oks), 1, out)
        self.assertIn("voicemail", oks[0].get("Contact"))

    def test_a_group_rings(self):
        out = self.from_site(site_invite("500"))
        invites = [d.host for m, d in out if m.is_request and m.method == "INVITE"]
        self.assertEqual(sorted(invites), ["192.168.2.11", "192.168.2.12"])

    def test_no_outside_line(self):
        # With a trunk and the B2BUA of outside lines: a phone here could call out.
        self.h = Harness(self.mktemp(), extra=SITES + TRUNK.format(pw=PW_HASH))
        self.h.core.outside = OutsideCalls(self.h.core, self.h.office, self.h.clock,
                                           FakeTrunks(self.h.office), lambda **kw: FakeRelay())
        for number in ("95557770001", "9+15557770001", "911"):
            out = self.from_site(site_invite(number, call_id="out-%s" % number,
                                             branch="z9hG4bK" + number.replace("+", "p")))
            self.assertEqual([m.code for m, d in out if not m.is_request], [100, 404], number)
            self.assertFalse([m for m, d in out if m.is_request], number)

    def test_no_transit_to_another_site(self):
        out = self.from_site(site_invite("301"))
        self.assertEqual([m.code for m, d in out if not m.is_request], [100, 403])
        self.assertFalse([m for m, d in out if m.is_request])
        self.assertEqual(self.h.core.calls.active_calls(), [])

    def test_options_answered(self):
        lines = ["OPTIONS sip:192.168.99.1 SIP/2.0",
                 "Via: SIP/2.0/UDP 192.168.99.2:5060;branch=z9hG4bKopt1;rport",
                 "Max-Forwards: 70", "From: <sip:probe@branch.example.com>;tag=o1",
                 "To: <sip:192.168.99.1>", "Call-ID: opt-1", "CSeq: 1 OPTIONS", "Content-Length: 0"]
        out = self.from_site(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.assertEqual([m.code for m, d in out], [200])
        self.assertIn("INVITE", out[0][0].get("Allow"))
        self.assertEqual((out[0][1].host, out[0][1].port), BRANCH)
