"""
Tests for allworx.protocols.dns.views: who sees which name (SPEC 5, issue
15 item 5). The LAN, the tunnel and the sites' networks see every name;
the WAN sees only public ones and never a private address; the built-ins
with both addresses answer by side; `[dns] wan_view = all`; on the full
path and the fast path, and as the zone changes.
"""

import ipaddress
import os

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.dkimkeys import mail_dns_records
from allworx.office import LeaseEvent
from allworx.protocols.dns import service as dnsservice
from allworx.protocols.dns import views as dnsviews
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.dkimtesting import install_keys
from allworx.tests.dns.test_service import LAN_PC, WAN_HOST, ServiceCase

KEY1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
WAN = "203.0.113.2"
LAN = "192.168.2.254"
TUNNEL_PEER = ("192.168.99.2", 40000)    # the branch server's tunnel address
BRANCH_PC = ("192.168.3.10", 40000)      # a PC on the branch's LAN

SITE = """
[vpn]
enabled = yes
address = 192.168.99.1/24

[site branch]
public_key = {key}
endpoint = 198.51.100.2:51820
address = 192.168.99.2
networks = 192.168.3.0/24
extensions = 200-299
domain = branch.example.com
""".format(key=KEY1)

CONF = with_sections(SITE + """
[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150

[record files]
a = 192.168.2.20

[record shop]
a = 198.51.100.80 10.1.2.3

[record branchbox]
a = 192.168.3.40

[record vpnbox]
a = 192.168.99.40

[record cgnat]
a = 100.64.0.9

[record @]
txt = v=spf1 mx -all

[record _dmarc]
txt = v=DMARC1; p=quarantine

[record secret]
a = 192.168.2.60
txt = hello

[record intranet]
cname = files.example.com

[record store]
cname = shop.example.com

[record blog]
cname = blog.hosting.example.net

[record chain]
cname = store.example.com
""")

PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                               "100.64.0.0/10")]


def a_of(m, section="answers"):
    return sorted(rr.payload.dottedQuad() for rr in getattr(m, section) if rr.type == dns.A)


class ViewCase(ServiceCase):

    conf = CONF

    def setUp(self):
        ServiceCase.setUp(self)
        self.grant("pc1", "192.168.2.10", "02:00:00:00:00:01")

    def grant(self, name, address, mac):
        self.office.emit(LeaseEvent("granted", mac, ipaddress.IPv4Address(address), name,
                                    self.reactor.seconds() + 3600))

    def twice(self, name, qtype=dns.A, peer=LAN_PC):
        """Ask twice (the full path, then the fast path); both answers must agree."""
        first = self.ask(name, qtype, peer=peer)
        hits = self.service.fast.zone_hits
        second = self.ask(name, qtype, peer=peer)
        self.assertEqual((first.rCode, first.answers, first.authority, first.additional),
                         (second.rCode, second.answers, second.authority, second.additional),
                         name)
        if first.rCode == dns.OK:
            self.assertEqual(self.service.fast.zone_hits, hits + 1, name)
        return second


class WhoSeesWhatTests(ViewCase):

    def test_the_lan_sees_every_name(self):
        for name, address in (("pc1", "192.168.2.10"), ("printer", "192.168.2.150"),
                              ("files", "192.168.2.20"), ("corp", LAN), ("www", WAN),
                              ("secret", "192.168.2.60")):
            m = self.twice(name + ".example.com")
            self.assertEqual(a_of(m), [address], name)
        ptr = self.twice("10.2.168.192.in-addr.arpa", dns.PTR)
        self.assertEqual(ptr.answers[0].payload.name.name, b"pc1.example.com")

    def test_the_wan_sees_no_inside_name(self):
        for name in ("pc1", "printer", "files", "corp", "admin", "lan", "branchbox", "vpnbox",
                     "cgnat", "intranet", "nothing"):
            m = self.twice(name + ".example.com", peer=WAN_HOST)
            # Not there at all: the same answer as for a name that does not exist.
            self.assertEqual((m.rCode, m.auth, m.answers), (dns.ENAME, True, []), name)
            self.assertEqual([rr.type for rr in m.authority], [dns.SOA], name)
        m = self.twice("10.2.168.192.in-addr.arpa", dns.PTR, peer=WAN_HOST)
        self.assertEqual((m.rCode, m.answers), (dns.ENAME, []))

    def test_the_wan_sees_the_public_names(self):
        for name, address in (("www", WAN), ("wan", WAN), ("smtp", WAN), ("pop", WAN),
                              ("imap", WAN), ("mail", WAN), ("autoconfig", WAN),
                              ("autodiscover", WAN), ("allworx", WAN),
                              ("shop", "198.51.100.80")):
            m = self.twice(name + ".example.com", peer=WAN_HOST)
            self.assertEqual((m.rCode, a_of(m)), (dns.OK, [address]), name)
        store = self.twice("chain.example.com", peer=WAN_HOST)
        self.assertEqual([rr.type for rr in store.answers], [dns.CNAME, dns.CNAME, dns.A])
        blog = self.twice("blog.example.com", dns.CNAME, peer=WAN_HOST)
        self.assertEqual(blog.answers[0].payload.name.name, b"blog.hosting.example.net")

    def test_mail_records_soa_and_ns_outside(self):
        txt = self.twice("example.com", dns.TXT, peer=WAN_HOST)
        self.assertEqual(txt.answers[0].payload.data, [b"v=spf1 mx -all"])
        self.assertEqual(self.twice("_dmarc.example.com", dns.TXT, peer=WAN_HOST).rCode, dns.OK)
        # A TXT record is published on purpose; the name's private address is not.
        secret = self.ask("secret.example.com", dns.ANY, peer=WAN_HOST)
        self.assertEqual([rr.type for rr in secret.answers], [dns.TXT])
        self.assertEqual(a_of(self.twice("secret.example.com", peer=WAN_HOST)), [])
        mx = self.twice("example.com", dns.MX, peer=WAN_HOST)
        self.assertEqual(mx.answers[0].payload.name.name, b"allworx.example.com")
        self.assertEqual(a_of(mx, "additional"), [WAN])
        for qtype in (dns.SOA, dns.NS):
            m = self.twice("example.com", qtype, peer=WAN_HOST)
            self.assertEqual((m.rCode, len(m.answers)), (dns.OK, 1))
        self.assertEqual(self.twice("2.168.192.in-addr.arpa", dns.SOA, peer=WAN_HOST).rCode,
                         dns.OK)

    def test_a_builtin_with_both_addresses_answers_by_side(self):
        for name in ("smtp", "pop", "imap", "mail", "autoconfig", "autodiscover", "allworx"):
            self.assertEqual(a_of(self.twice(name + ".example.com")), [LAN], name)
            self.assertEqual(a_of(self.twice(name + ".example.com", peer=WAN_HOST)), [WAN],
                             name)
        mx = self.twice("example.com", dns.MX)
        self.assertEqual(a_of(mx, "additional"), [LAN])

    def test_the_tunnel_and_the_sites_networks_are_inside(self):
        for peer in (TUNNEL_PEER, BRANCH_PC):
            self.assertEqual(a_of(self.ask("pc1.example.com", peer=peer)), ["192.168.2.10"])
            self.assertEqual(a_of(self.ask("smtp.example.com", peer=peer)), [LAN])

    def test_no_private_address_ever_reaches_the_wan(self):
        """Every name the inside knows, every common type, asked from the WAN."""
        names = self.service.keeper.inside.names()
        self.assertIn("pc1.example.com", names)
        for name in names:
            for qtype in (dns.A, dns.ANY, dns.MX, dns.SRV, dns.CNAME, dns.PTR, dns.NS):
                m = self.ask(name, qtype, peer=WAN_HOST)
                for section in ("answers", "authority", "additional"):
                    for address in a_of(m, section):
                        ip = ipaddress.IPv4Address(address)
                        self.assertFalse(any(ip in net for net in PRIVATE), (name, qtype))
                    for rr in getattr(m, section):
                        self.assertNotEqual(rr.type, dns.PTR, name)


class LiveViewTests(ViewCase):

    def test_a_new_dhcp_name_is_inside_at_once_and_never_outside(self):
        self.grant("laptop", "192.168.2.11", "02:00:00:00:00:02")
        self.assertEqual(a_of(self.twice("laptop.example.com")), ["192.168.2.11"])
        self.assertEqual(self.twice("laptop.example.com", peer=WAN_HOST).rCode, dns.ENAME)
        self.reactor.advance(dnsservice.REBUILD_INTERVAL)
        self.assertEqual(a_of(self.ask("laptop.example.com")), ["192.168.2.11"])
        self.assertEqual(self.ask("laptop.example.com", peer=WAN_HOST).rCode, dns.ENAME)

    def test_wan_view_all_shows_every_name_to_the_wan(self):
        self.assertEqual(self.office.config.dns.wan_view, "public")
        self.twice("pc1.example.com", peer=WAN_HOST)    # NXDOMAIN, before the change
        serial = self.service.zone.serial
        self.reactor.advance(3)
        self.office.update_settings("dns", {"wan_view": "all"})
        self.assertGreater(self.service.zone.serial, serial)
        for name, address in (("pc1", "192.168.2.10"), ("printer", "192.168.2.150"),
                              ("corp", LAN), ("smtp", WAN), ("www", WAN)):
            self.assertEqual(a_of(self.twice(name + ".example.com", peer=WAN_HOST)),
                             [address], name)
        self.assertEqual(a_of(self.twice("smtp.example.com")), [LAN])
        # A DHCP name reaches the WAN at once too, and leaves it at once.
        self.grant("laptop", "192.168.2.11", "02:00:00:00:00:02")
        self.assertEqual(a_of(self.twice("laptop.example.com", peer=WAN_HOST)),
                         ["192.168.2.11"])
        self.office.emit(LeaseEvent("released", "02:00:00:00:00:02",
                                    ipaddress.IPv4Address("192.168.2.11")))
        self.assertEqual(self.ask("laptop.example.com", peer=WAN_HOST).rCode, dns.ENAME)
        self.office.update_settings("dns", {"wan_view": "public"})
        self.assertEqual(self.ask("pc1.example.com", peer=WAN_HOST).rCode, dns.ENAME)

    def test_a_record_that_turns_private_leaves_the_wan(self):
        self.assertEqual(a_of(self.twice("shop.example.com", peer=WAN_HOST)), ["198.51.100.80"])
        self.office.put_record("record", "shop", {"a": "192.168.2.80"})
        self.assertEqual(self.ask("shop.example.com", peer=WAN_HOST).rCode, dns.ENAME)
        self.assertEqual(a_of(self.ask("shop.example.com")), ["192.168.2.80"])

    def test_a_new_site_network_is_inside_and_private(self):
        depot = ("198.18.0.9", 40000)
        self.office.put_record("record", "depotbox", {"a": "198.18.0.40"})
        self.assertEqual(a_of(self.ask("depotbox.example.com", peer=WAN_HOST)), ["198.18.0.40"])
        self.assertEqual(self.ask("web.internet.example", peer=depot).rCode, dns.EREFUSED)
        self.office.put_record("site", "depot", {
            "public_key": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
            "address": "192.168.99.3", "networks": "198.18.0.0/16", "extensions": "300-399"})
        # Its peers are inside now (recursion: the question goes to the forwarder)...
        self.assertEqual(a_of(self.ask("pc1.example.com", peer=depot)), ["192.168.2.10"])
        self.assertIsNone(self.ask("web.internet.example", peer=depot))
        # ... and its addresses private: no longer shown to the WAN.
        self.assertEqual(self.ask("depotbox.example.com", peer=WAN_HOST).rCode, dns.ENAME)


class RuleTests(unittest.TestCase):

    def rules(self, text=CONF, wan=ipaddress.IPv4Address(WAN)):
        return dnsviews.ViewRules.of(parse_config(text), wan)

    def test_public_addresses(self):
        rules = self.rules()
        for address in ("198.51.100.80", "203.0.113.9", "8.8.8.8"):
            self.assertTrue(rules.is_public(address), address)
        for address in ("192.168.2.20", "10.1.2.3", "172.16.0.1", "192.168.99.40",
                        "192.168.3.40", "127.0.0.1", "169.254.1.1", "100.64.0.9", "nonsense"):
            self.assertFalse(rules.is_public(address), address)

    def test_a_lan_outside_rfc_1918_is_private_all_the_same(self):
        text = CONF.replace("192.168.2.", "198.18.2.")
        keeper = dnsviews.ViewKeeper(Clock())
        keeper.rebuild(parse_config(text), ipaddress.IPv4Address(WAN))
        self.assertFalse(keeper.rules.is_public("198.18.2.150"))
        self.assertEqual(keeper.inside.answer("printer.example.com", dns.A).rcode, dns.OK)
        self.assertEqual(keeper.outside.answer("printer.example.com", dns.A).rcode, dns.ENAME)

    def test_no_wan_address_yet(self):
        keeper = dnsviews.ViewKeeper(Clock())
        keeper.rebuild(parse_config(CONF), None)
        self.assertEqual(keeper.outside.answer("www.example.com", dns.A).rcode, dns.OK)
        self.assertEqual(keeper.outside.answer("www.example.com", dns.A).answers, ())
        self.assertEqual(keeper.outside.answer("corp.example.com", dns.A).rcode, dns.ENAME)
        self.assertEqual(keeper.inside.answer("smtp.example.com", dns.A).answers[0]
                         .payload.dottedQuad(), LAN)

    def test_the_admin_pages_still_list_every_row(self):
        keeper = dnsviews.ViewKeeper(Clock())
        keeper.rebuild(parse_config(CONF), ipaddress.IPv4Address(WAN))
        smtp = [r for r in keeper.zone.rows() if r[0] == "smtp.example.com"]
        self.assertEqual(sorted(r[2] for r in smtp), [LAN, WAN])

    def test_a_change_of_rules_alone_moves_the_serial(self):
        clock = Clock()
        clock.advance(1000)
        keeper = dnsviews.ViewKeeper(clock)
        self.assertTrue(keeper.rebuild(parse_config(CONF), ipaddress.IPv4Address(WAN)))
        self.assertFalse(keeper.rebuild(parse_config(CONF), ipaddress.IPv4Address(WAN)))
        serial = keeper.zone.serial
        clock.advance(5)
        self.assertTrue(keeper.rebuild(parse_config(CONF.replace(
            "[dns]\n", "[dns]\nwan_view = all\n")), ipaddress.IPv4Address(WAN)))
        self.assertEqual(keeper.zone.serial, serial + 5)
        self.assertEqual((keeper.inside.serial, keeper.outside.serial), (serial + 5,) * 2)

    def test_the_mails_generated_records_are_public(self):
        data_dir = os.path.abspath(self.mktemp())
        os.makedirs(data_dir)
        config = parse_config(with_sections(SITE, MINIMAL))
        keeper = dnsviews.ViewKeeper(Clock())
        keeper.rebuild(config, ipaddress.IPv4Address(WAN), None,
                       mail_dns_records(config, install_keys(data_dir)))
        for name in ("example.com", "_dmarc.example.com", "allworx._domainkey.example.com",
                     "allworx-ed25519._domainkey.example.com"):
            for view in (keeper.inside, keeper.outside):
                answer = view.answer(name, dns.TXT)
                self.assertEqual((answer.rcode, len(answer.answers)), (dns.OK, 1), name)
