"""
Two offices' SIP cores joined by a pretend tunnel (sites.py end to end, no
sockets): the main office (LAN 192.168.2.0/24, tunnel 192.168.99.1) and the
branch (LAN 192.168.3.0/24, tunnel 192.168.99.2), each with the other's
`[site]`. What one server sends to the other's tunnel address arrives from
its own; everything else is what the phones got.
"""

from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.sip import service as sip
from allworx.protocols.sip.core import Destination
from allworx.protocols.sip.message import make_response, parse
from allworx.protocols.sip.registrar import Binding
from allworx.protocols.sip.sites import SITE_TIMEOUT
from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.sip.test_sites import SITES
from allworx.tests.siphelpers import FakeMailStore, Harness, Phone, offer

KEY_MAIN = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="

BRANCH_CONF = NETWORK.replace("domain = example.com", "domain = branch.example.com").replace(
    "192.168.2.254/24", "192.168.3.254/24").replace("203.0.113.", "198.51.100.") + """
[dns]
primary = 198.51.100.1

[web]
admin_password = {pw}

[sip]
voicemail_timeout = 20
rtp_ports = 20000-20010

[user bea]
full_name = Bea Branch
extension = 201
voicemail_pin = 1234
password = {pw}

[vpn]
enabled = yes
address = 192.168.99.2/24

[site main]
public_key = {key}
address = 192.168.99.1
networks = 192.168.2.0/24
extensions = 100-199
domain = example.com
"""

MAIN_TUNNEL, BRANCH_TUNNEL = "192.168.99.1", "192.168.99.2"
BEA_PHONE = ("192.168.3.21", 5060)


class BranchHarness(Harness):
    """A Harness for the branch's server, on the main office's clock."""

    def __init__(self, data_dir, clock):
        self.office = Office(parse_config(BRANCH_CONF.format(pw=PW_HASH, key=KEY_MAIN))
                             .with_data_dir(data_dir))
        self.clock = clock
        self.store = FakeMailStore(self.office)
        self.rtp_ports = []
        self.core = sip.build_core(self.office, clock, self.store, listen_udp=self._listen)
        self.sent = []
        self.core.send_raw = lambda data, dest: self.sent.append((data, dest))


class TwoOfficesTests(unittest.TestCase):

    def setUp(self):
        self.main = Harness(self.mktemp(), extra=SITES)
        self.clock = self.main.clock
        self.branch = BranchHarness(self.mktemp(), self.clock)
        self.alice = Phone(self.main, "101", "192.168.2.11")
        self.assertEqual(self.alice.register().code, 200)
        self.main.take()
        contact = "sip:201@%s:%d" % BEA_PHONE
        self.branch.core.registrar.bind(Binding("bea", "201", contact, BEA_PHONE, "UDP", 1e12))
        self.down = False       # the branch's server stopped: nothing reaches it

    def exchange(self, rounds=20):
        """Carry messages between the servers; (office, message, destination) of the rest."""
        rest = []
        for _ in range(rounds):
            self.clock.advance(0)
            moved = False
            for name, h, peer, tunnel, ours in (
                    ("main", self.main, self.branch, BRANCH_TUNNEL, MAIN_TUNNEL),
                    ("branch", self.branch, self.main, MAIN_TUNNEL, BRANCH_TUNNEL)):
                sent, h.sent = h.sent, []
                for data, dest in sent:
                    if dest.host != tunnel:
                        rest.append((name, parse(data), dest))
                    elif not self.down:
                        peer.core.receive(data, Destination("UDP", ours, 5060))
                        moved = True
            if not moved:
                break
        return rest

    def to(self, rest, address):
        return [m for _, m, d in rest if (d.host, d.port) == address]

    def dial(self, number="201"):
        self.alice.h.receive(self.alice.request("INVITE", "sip:%s@192.168.2.254" % number,
                                                ["Content-Type: application/sdp"], offer()),
                             self.alice.address)
        return self.exchange()

    def ringing(self):
        rest = self.dial()
        invites = [m for m in self.to(rest, BEA_PHONE) if m.is_request]
        self.assertEqual([m.method for m in invites], ["INVITE"], rest)
        invite = invites[0]
        self.branch.receive(make_response(invite, 180, to_tag="bea1").to_bytes(), BEA_PHONE)
        rest += self.exchange()
        return invite, rest

    def test_call_to_the_branch_answered_and_ended(self):
        invite, rest = self.ringing()
        self.assertTrue(invite.get("From").startswith('"Alice Archer" <sip:101@example.com>;tag='))
        self.assertEqual(invite.body, offer().encode())         # media straight to alice's phone
        self.assertEqual([r.code for r in self.to(rest, self.alice.address)], [100, 180])
        ok = make_response(invite, 200, to_tag="bea1", extra=[
            ("Contact", "<sip:201@192.168.3.21:5060>"), ("Content-Type", "application/sdp")])
        ok.body = offer("192.168.3.21", 42000).encode()
        self.branch.receive(ok.to_bytes(), BEA_PHONE)
        rest = self.exchange()
        oks = self.to(rest, self.alice.address)
        self.assertEqual([(r.code, r.body) for r in oks], [(200, ok.body)])
        # Our leg towards the branch ACKs at once; the ACK reaches bea's phone.
        self.assertEqual([m.method for m in self.to(rest, BEA_PHONE)], ["ACK"])
        tag = oks[0].to_tag
        self.main.receive(self.alice.request("ACK", "sip:x@192.168.2.254", cseq=1, to_tag=tag),
                          self.alice.address)
        self.clock.advance(1)
        self.assertEqual(self.exchange(), [])       # alice's ACK ends our 200's retransmissions
        # bea hangs up: her BYE follows the branch's Record-Route, then our Contact.
        route = invite.get("Record-Route")
        lines = ["BYE %s SIP/2.0" % invite.get("Contact").strip("<>"),
                 "Via: SIP/2.0/UDP 192.168.3.21:5060;branch=z9hG4bKbeabye;rport",
                 "Max-Forwards: 70", "Route: %s" % route, "From: %s;tag=bea1" % invite.get("To"),
                 "To: %s" % invite.get("From"), "Call-ID: %s" % invite.call_id, "CSeq: 2 BYE",
                 "Content-Length: 0"]
        self.branch.receive(("\r\n".join(lines) + "\r\n\r\n").encode(), BEA_PHONE)
        rest = self.exchange()
        self.assertEqual([m.method for m in self.to(rest, self.alice.address) if m.is_request], ["BYE"])
        self.assertEqual([m.code for m in self.to(rest, BEA_PHONE)], [200])
        self.assertEqual(self.main.core.sites.calls, set())

    def test_unanswered_ends_in_the_branch_voicemail(self):
        invite, rest = self.ringing()
        self.clock.advance(20)
        rest = self.exchange()
        self.assertEqual([m.method for m in self.to(rest, BEA_PHONE) if m.is_request], ["CANCEL"])
        oks = [r for r in self.to(rest, self.alice.address) if r.code == 200]
        self.assertEqual(len(oks), 1, rest)
        self.assertEqual(len(self.branch.core.ua.calls), 1)
        self.assertEqual(self.main.core.ua.calls, {})

    def test_branch_down_gives_480_within_5_s(self):
        self.down = True
        rest = self.dial()
        self.assertEqual([r.code for r in self.to(rest, self.alice.address)], [100])
        while self.clock.seconds() < 5.0:
            self.clock.advance(0.5)
            finals = [r.code for r in self.to(self.exchange(), self.alice.address)]
            if finals:
                break
        self.assertEqual(finals, [480])
        self.assertLessEqual(self.clock.seconds(), SITE_TIMEOUT + 0.5)

    def test_call_from_the_branch_shows_its_caller(self):
        self.branch.receive(Phone(self.branch, "201", BEA_PHONE[0]).request(
            "INVITE", "sip:101@192.168.3.254", ["Content-Type: application/sdp"],
            offer("192.168.3.21", 42000)), BEA_PHONE)
        rest = self.exchange()
        invites = [m for m in self.to(rest, self.alice.address) if m.is_request]
        self.assertEqual([m.method for m in invites], ["INVITE"], rest)
        self.assertTrue(invites[0].get("From").startswith(
            '"Bea Branch" <sip:201@branch.example.com>;tag='), invites[0].get("From"))
        self.assertEqual(invites[0].body, offer("192.168.3.21", 42000).encode())
