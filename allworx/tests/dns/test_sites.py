"""
Tests for allworx.protocols.dns.sites: names across sites (SPEC 16). Which
site a name or PTR belongs to (`SiteRoutes`), and the conditional forwarder
on the service with a fake site server: asked over the tunnel with
recursion desired, cached by TTL on the clock, SERVFAIL within 2 s while
the site is down, LAN side only, following the configuration live.
"""

from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.dns import metrics as dnsmetrics
from allworx.protocols.dns import sites as dnssites
from allworx.tests.confs import MINIMAL
from allworx.tests.dns.test_service import (
    LAN_PC, PRIMARY, WAN_HOST, ServiceCase, a_rr, parse, soa_rr, upstream_reply)
from allworx.tests.dns.test_views import CONF, KEY1, TUNNEL_PEER

BRANCH = ("192.168.99.2", 53)
KEY2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="

# The branch's side: its own domain under the main office's.
BRANCH_SIDE = MINIMAL.replace("domain = example.com", "domain = branch.example.com").replace(
    "192.168.2.", "192.168.3.") + """
[vpn]
enabled = yes
address = 192.168.99.2/24

[site main]
public_key = {key}
address = 192.168.99.1
networks = 192.168.2.0/24 10.8.0.0/22 172.20.5.0/25
extensions = 500-599
domain = example.com

[site nodomain]
public_key = {key2}
address = 192.168.99.3
networks = 10.9.0.0/16
extensions = 300-399
""".format(key=KEY1, key2=KEY2)


class RouteTests(unittest.TestCase):

    def test_names_at_or_under_a_sites_domain(self):
        routes = dnssites.SiteRoutes(parse_config(CONF))
        for name in ("branch.example.com", "pc7.branch.example.com", b"A.B.Branch.Example.COM.",
                     "_sip._udp.branch.example.com"):
            self.assertEqual(routes.site_for(name).name, "branch", name)
        for name in ("example.com", "pc1.example.com", "xbranch.example.com", "branch.example.net",
                     "com", "", "web.internet.example"):
            self.assertIsNone(routes.site_for(name), name)

    def test_the_most_specific_domain_wins(self):
        routes = dnssites.SiteRoutes(parse_config(BRANCH_SIDE))
        for name in ("pc1.example.com", "example.com", "www.example.com"):
            self.assertEqual(routes.site_for(name).name, "main", name)
        for name in ("branch.example.com", "pc7.branch.example.com"):
            self.assertIsNone(routes.site_for(name), name)

    def test_reverse_names_of_a_sites_networks(self):
        routes = dnssites.SiteRoutes(parse_config(BRANCH_SIDE))
        main = [
            "10.2.168.192.in-addr.arpa", "2.168.192.in-addr.arpa",       # a /24
            "1.8.10.in-addr.arpa", "3.8.10.in-addr.arpa", "9.1.8.10.in-addr.arpa",  # a /22
            "5.5.20.172.in-addr.arpa", "127.5.20.172.in-addr.arpa",      # a /25: its addresses
        ]
        for name in main:
            self.assertEqual(routes.site_for(name).name, "main", name)
        for name in ("168.192.in-addr.arpa", "4.8.10.in-addr.arpa", "8.10.in-addr.arpa",
                     "5.20.172.in-addr.arpa", "128.5.20.172.in-addr.arpa",
                     "10.3.168.192.in-addr.arpa", "in-addr.arpa", "x.2.168.192.in-addr.arpa",
                     "010.2.168.192.in-addr.arpa", "256.2.168.192.in-addr.arpa",
                     "1.10.2.168.192.in-addr.arpa",
                     # A site without a domain has no server to ask for names.
                     "1.0.9.10.in-addr.arpa"):
            self.assertIsNone(routes.site_for(name), name)

    def test_no_sites_no_routes(self):
        routes = dnssites.SiteRoutes(parse_config(MINIMAL))
        self.assertFalse(routes)
        self.assertIsNone(routes.site_for("anything.example.com"))


class ForwarderCase(ServiceCase):

    conf = CONF

    def site_ports(self):
        """The open outgoing ports whose last datagram went to the branch's server."""
        return [p for p in self.open_upstream() if p.sent and p.sent[-1][1] == BRANCH]

    def to_site(self, name, qtype=dns.A, peer=LAN_PC):
        """Ask from `peer`; the question must go to the branch server (the port)."""
        self.assertIsNone(self.ask(name, qtype, peer=peer))
        ports = self.site_ports()
        self.assertEqual(len(ports), 1, [p.sent for p in self.open_upstream()])
        q = parse(ports[0].sent[-1][0])
        self.assertEqual((q.queries[0].name.name, q.queries[0].type, q.recDes),
                         (name.encode(), qtype, True))
        return ports[0]


class ForwarderTests(ForwarderCase):

    def test_a_sites_name_is_asked_of_its_server_and_cached_by_ttl(self):
        port = self.to_site("pc7.branch.example.com")
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("pc7.branch.example.com", "192.168.3.7", ttl=60)]))
        m = self.last_reply()
        self.assertEqual((m.rCode, m.recAv, m.auth), (dns.OK, True, False))
        self.assertEqual(m.answers[0].payload.dottedQuad(), "192.168.3.7")
        # Again within the TTL: from the cache, the TTL running down.
        self.reactor.advance(20)
        m = self.ask("pc7.branch.example.com")
        self.assertEqual(m.answers[0].ttl, 40)
        self.assertEqual(self.site_ports(), [])
        # After it: asked again.
        self.reactor.advance(41)
        self.to_site("pc7.branch.example.com")

    def test_a_site_that_does_not_answer_is_servfail_within_2_s(self):
        start = self.reactor.seconds()
        self.to_site("pc7.branch.example.com")
        self.reactor.advance(1.4)
        self.assertEqual(len(self.port.sent), 0)
        self.reactor.advance(0.1)
        m = self.last_reply()
        self.assertEqual(m.rCode, dns.ESERVER)
        self.assertLessEqual(self.reactor.seconds() - start, 2.0)
        # One datagram, to the site only: no second try, never the ISP's forwarders.
        sent = [addr for p in self.reactor.upstream for _, addr in p.sent]
        self.assertEqual(sent, [BRANCH])
        self.assertNotIn(PRIMARY, sent)
        self.assertEqual(self.open_upstream(), [])
        self.assertEqual(dnsmetrics.COUNTS["servfail"], 1)
        # Not cached: the next question asks again.
        self.to_site("pc7.branch.example.com")

    def test_nxdomain_from_the_site_is_passed_on_and_cached(self):
        port = self.to_site("gone.branch.example.com")
        port.protocol.datagramReceived(*upstream_reply(
            port, rcode=dns.ENAME, authority=[soa_rr("branch.example.com", minimum=30)]))
        m = self.last_reply()
        self.assertEqual((m.rCode, m.auth), (dns.ENAME, False))
        self.assertEqual(self.ask("gone.branch.example.com").rCode, dns.ENAME)
        self.assertEqual(self.site_ports(), [])

    def test_ptr_for_a_sites_network(self):
        port = self.to_site("40.3.168.192.in-addr.arpa", dns.PTR)
        port.protocol.datagramReceived(*upstream_reply(port, answers=[dns.RRHeader(
            "40.3.168.192.in-addr.arpa", dns.PTR, dns.IN, 300,
            dns.Record_PTR("pc7.branch.example.com", 300))]))
        m = self.last_reply()
        self.assertEqual(m.answers[0].payload.name.name, b"pc7.branch.example.com")
        # The office's own reverse zone is still answered here.
        own = self.ask("254.2.168.192.in-addr.arpa", dns.PTR)
        self.assertEqual(own.answers[0].payload.name.name, b"allworx.example.com")

    def test_a_truncated_reply_is_asked_again_over_tcp(self):
        port = self.to_site("big.branch.example.com", dns.TXT)
        port.protocol.datagramReceived(*upstream_reply(port, trunc=True))
        host, number = self.reactor.tcpClients[-1][:2]
        self.assertEqual((host, number), BRANCH)

    def test_the_tunnel_and_sites_ask_too(self):
        for peer in (TUNNEL_PEER, ("192.168.3.10", 40000)):
            port = self.to_site("pc7.branch.example.com", peer=peer)
            port.protocol.datagramReceived(*upstream_reply(
                port, answers=[a_rr("pc7.branch.example.com", "192.168.3.7", ttl=0)]))
            self.assertEqual(self.last_reply().rCode, dns.OK)

    def test_the_wan_never_reaches_a_site(self):
        for name, qtype in (("pc7.branch.example.com", dns.A),
                            ("40.3.168.192.in-addr.arpa", dns.PTR)):
            m = self.ask(name, qtype, peer=WAN_HOST)
            # Under the office's domain: the office's outside view has no such name.
            self.assertIn(m.rCode, (dns.ENAME, dns.EREFUSED), name)
        self.assertEqual(self.reactor.upstream, [])

    def test_other_names_still_go_to_the_forwarders(self):
        self.assertIsNone(self.ask("web.internet.example"))
        self.assertEqual([p.sent[-1][1] for p in self.open_upstream()], [PRIMARY])


class StandAloneForwarderTests(ForwarderCase):

    conf = CONF.replace("[dns]\n", "[dns]\nuse_forwarders = no\n")

    def test_sites_are_asked_in_stand_alone_mode(self):
        port = self.to_site("pc7.branch.example.com")
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("pc7.branch.example.com", "192.168.3.7")]))
        self.assertEqual(self.last_reply().answers[0].payload.dottedQuad(), "192.168.3.7")
        m = self.ask("web.internet.example")
        self.assertEqual((m.rCode, m.auth), (dns.ENAME, True))


class LiveSiteTests(ForwarderCase):

    def test_a_site_removed_goes_back_to_the_office(self):
        port = self.to_site("pc7.branch.example.com")
        port.protocol.datagramReceived(*upstream_reply(
            port, answers=[a_rr("pc7.branch.example.com", "192.168.3.7")]))
        self.office.delete_record("site", "branch")
        # The cached answer goes with the site; the office's zone answers now.
        m = self.ask("pc7.branch.example.com")
        self.assertEqual((m.rCode, m.auth), (dns.ENAME, True))
        self.assertEqual(self.site_ports(), [])

    def test_a_site_added_and_changed_live(self):
        self.assertIsNone(self.ask("pc9.depot.example.net"))
        self.assertEqual([p.sent[-1][1] for p in self.open_upstream()], [PRIMARY])
        self.office.put_record("site", "depot", {
            "public_key": KEY2, "address": "192.168.99.3", "networks": "10.20.0.0/16",
            "extensions": "300-399", "domain": "depot.example.net"})
        self.ask("pc9.depot.example.net", qid=2)
        self.assertEqual(self.open_upstream()[-1].sent[-1][1], ("192.168.99.3", 53))
        self.ask("9.0.20.10.in-addr.arpa", dns.PTR, qid=3)
        self.assertEqual(self.open_upstream()[-1].sent[-1][1], ("192.168.99.3", 53))
        self.office.put_record("site", "depot", {
            "public_key": KEY2, "address": "192.168.99.4", "networks": "10.20.0.0/16",
            "extensions": "300-399", "domain": "depot.example.net"})
        self.ask("pc10.depot.example.net", qid=4)
        self.assertEqual(self.open_upstream()[-1].sent[-1][1], ("192.168.99.4", 53))
