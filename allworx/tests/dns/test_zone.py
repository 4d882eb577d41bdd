"""Tests for allworx.protocols.dns.zone: the office zone, its serial, DHCP names."""

import ipaddress

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import LeaseEvent
from allworx.protocols.dns import zone as dnszone
from allworx.tests.confs import with_sections

WAN = ipaddress.IPv4Address("203.0.113.2")
LAN = "192.168.2.254"

CONF = with_sections("""
[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150

[record intranet-old]
cname = corp.example.com

[record @]
txt = v=spf1 mx -all
mx = 20 backup.example.net

[record files]
a = 192.168.2.20 192.168.2.21

[record shop]
cname = www.shop.example.net

[record old.dept]
a = 192.168.2.30
""")


def ip(text):
    return ipaddress.IPv4Address(text)


def addresses(result):
    return sorted(rr.payload.dottedQuad() for rr in result.answers if rr.type == dns.A)


def zone_for(text=CONF, wan=WAN, dhcp=None, clock=None):
    keeper = dnszone.ZoneKeeper(clock or Clock())
    keeper.rebuild(parse_config(text), wan, dhcp)
    return keeper.zone


class BuiltinNameTests(unittest.TestCase):
    """Guide 10: each built-in name maps to the WAN, the LAN or both."""

    def setUp(self):
        self.zone = zone_for()

    def test_wan_names(self):
        for name in ("www", "wan"):
            self.assertEqual(addresses(self.zone.answer(name + ".example.com", dns.A)), [str(WAN)])

    def test_lan_names(self):
        for name in ("corp", "admin", "lan"):
            self.assertEqual(addresses(self.zone.answer(name + ".example.com", dns.A)), [LAN])

    def test_both(self):
        for name in ("smtp", "pop", "allworx"):
            self.assertEqual(addresses(self.zone.answer(name + ".example.com", dns.A)),
                             sorted([LAN, str(WAN)]))

    def test_answers_are_authoritative_and_case_blind(self):
        result = self.zone.answer("WWW.Example.COM.", dns.A)
        self.assertEqual(result.rcode, dns.OK)
        self.assertTrue(all(rr.auth for rr in result.answers))

    def test_no_wan_address_yet_is_nodata_not_nxdomain(self):
        zone = zone_for(wan=None)
        result = zone.answer("www.example.com", dns.A)
        self.assertEqual((result.rcode, result.answers), (dns.OK, ()))
        self.assertEqual(result.authority[0].type, dns.SOA)

    def test_mx_points_at_the_server_with_glue(self):
        result = self.zone.answer("example.com", dns.MX)
        mx = sorted((rr.payload.preference, rr.payload.name.name) for rr in result.answers)
        self.assertEqual(mx, [(10, b"allworx.example.com"), (20, b"backup.example.net")])
        glue = sorted(rr.payload.dottedQuad() for rr in result.additional)
        self.assertEqual(glue, sorted([LAN, str(WAN)]))

    def test_soa_and_ns_at_the_apex(self):
        soa = self.zone.answer("example.com", dns.SOA).answers[0].payload
        self.assertEqual(soa.mname.name, b"allworx.example.com")
        self.assertEqual(soa.minimum, dnszone.NEGATIVE_TTL)
        ns = self.zone.answer("example.com", dns.NS).answers[0].payload
        self.assertEqual(ns.name.name, b"allworx.example.com")

    def test_nxdomain_carries_the_soa(self):
        result = self.zone.answer("nothing.example.com", dns.A)
        self.assertEqual(result.rcode, dns.ENAME)
        self.assertEqual([rr.type for rr in result.authority], [dns.SOA])

    def test_not_ours(self):
        self.assertIsNone(self.zone.answer("example.net", dns.A))
        self.assertIsNone(self.zone.answer("badexample.com", dns.A))
        self.assertIsNone(self.zone.answer("1.0.0.10.in-addr.arpa", dns.PTR))


class StaticRecordTests(unittest.TestCase):

    def setUp(self):
        self.zone = zone_for()

    def test_host_has_a_and_ptr(self):
        self.assertEqual(addresses(self.zone.answer("printer.example.com", dns.A)),
                         ["192.168.2.150"])
        ptr = self.zone.answer("150.2.168.192.in-addr.arpa", dns.PTR).answers[0]
        self.assertEqual(ptr.payload.name.name, b"printer.example.com")

    def test_server_ptr(self):
        ptr = self.zone.answer("254.2.168.192.in-addr.arpa", dns.PTR).answers[0]
        self.assertEqual(ptr.payload.name.name, b"allworx.example.com")

    def test_record_a_list(self):
        self.assertEqual(addresses(self.zone.answer("files.example.com", dns.A)),
                         ["192.168.2.20", "192.168.2.21"])

    def test_apex_txt(self):
        txt = self.zone.answer("example.com", dns.TXT).answers[0].payload
        self.assertEqual(txt.data, [b"v=spf1 mx -all"])

    def test_cname_inside_the_zone_is_followed(self):
        result = self.zone.answer("intranet-old.example.com", dns.A)
        self.assertEqual([rr.type for rr in result.answers], [dns.CNAME, dns.A])
        self.assertEqual(addresses(result), [LAN])

    def test_cname_outside_the_zone_stops(self):
        result = self.zone.answer("shop.example.com", dns.A)
        self.assertEqual([rr.type for rr in result.answers], [dns.CNAME])

    def test_dotted_record_and_empty_non_terminal(self):
        self.assertEqual(addresses(self.zone.answer("old.dept.example.com", dns.A)),
                         ["192.168.2.30"])
        result = self.zone.answer("dept.example.com", dns.A)
        self.assertEqual((result.rcode, result.answers), (dns.OK, ()))

    def test_rows_and_text_for_the_admin_pages(self):
        rows = self.zone.rows()
        self.assertEqual(rows[0][1], "SOA")
        self.assertIn(("www.example.com", "A", str(WAN), dnszone.TTL), rows)
        self.assertIn("printer.example.com.\t300\tIN\tA\t192.168.2.150", self.zone.as_text())


class SerialTests(unittest.TestCase):

    def test_serial_moves_only_when_the_zone_changes(self):
        clock = Clock()
        clock.advance(1_700_000_000)
        keeper = dnszone.ZoneKeeper(clock)
        config = parse_config(CONF)
        self.assertTrue(keeper.rebuild(config, WAN))
        first = keeper.zone.serial
        self.assertEqual(first, 1_700_000_000)
        self.assertFalse(keeper.rebuild(config, WAN))
        self.assertEqual(keeper.zone.serial, first)
        # Same second, new content: one more.
        self.assertTrue(keeper.rebuild(config, ip("203.0.113.9")))
        self.assertEqual(keeper.zone.serial, first + 1)
        clock.advance(100)
        self.assertTrue(keeper.rebuild(config, WAN, {"pc1": ip("192.168.2.10")}))
        self.assertEqual(keeper.zone.serial, first + 100)
        soa = keeper.zone.answer("example.com", dns.SOA).answers[0].payload
        self.assertEqual(soa.serial, first + 100)

    def test_domain_change_moves_the_zone(self):
        keeper = dnszone.ZoneKeeper(Clock())
        keeper.rebuild(parse_config(CONF), WAN)
        keeper.rebuild(parse_config(CONF.replace("domain = example.com", "domain = office.test")),
                       WAN)
        self.assertIsNone(keeper.zone.answer("www.example.com", dns.A))
        self.assertEqual(addresses(keeper.zone.answer("www.office.test", dns.A)), [str(WAN)])


def lease(kind, mac, address, hostname="pc1", expires=1000.0):
    return LeaseEvent(kind, mac, ip(address), hostname, expires)


class DhcpNameTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.names = dnszone.DhcpNames()

    def zone(self):
        self.names.expire(self.clock.seconds())
        return zone_for(dhcp=self.names.current())

    def test_granted_adds_a_and_ptr(self):
        self.assertTrue(self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10")))
        zone = self.zone()
        self.assertEqual(addresses(zone.answer("pc1.example.com", dns.A)), ["192.168.2.10"])
        ptr = zone.answer("10.2.168.192.in-addr.arpa", dns.PTR).answers[0]
        self.assertEqual(ptr.payload.name.name, b"pc1.example.com")
        self.assertEqual(ptr.ttl, dnszone.DHCP_TTL)

    def test_released_removes(self):
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10"))
        self.assertTrue(self.names.apply(lease("released", "02:00:00:00:00:01", "192.168.2.10")))
        zone = self.zone()
        self.assertEqual(zone.answer("pc1.example.com", dns.A).rcode, dns.ENAME)
        self.assertEqual(zone.answer("10.2.168.192.in-addr.arpa", dns.PTR).rcode, dns.ENAME)

    def test_scrubbed_when_the_lease_runs_out_on_the_clock(self):
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10", expires=600))
        self.clock.advance(599)
        self.assertEqual(addresses(self.zone().answer("pc1.example.com", dns.A)), ["192.168.2.10"])
        self.assertEqual(self.names.next_expiry(), 600)
        self.clock.advance(1)
        self.assertEqual(self.zone().answer("pc1.example.com", dns.A).rcode, dns.ENAME)

    def test_renewal_moves_the_name(self):
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10"))
        self.names.apply(lease("renewed", "02:00:00:00:00:01", "192.168.2.11"))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.11")})

    def test_late_release_of_an_old_address_is_ignored(self):
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.11"))
        self.assertFalse(self.names.apply(lease("expired", "02:00:00:00:00:01", "192.168.2.10")))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.11")})

    def test_static_and_builtin_names_win(self):
        for mac, name, address in (("02:00:00:00:00:01", "printer", "192.168.2.10"),
                                   ("02:00:00:00:00:02", "www", "192.168.2.11"),
                                   ("02:00:00:00:00:03", "files", "192.168.2.12"),
                                   ("02:00:00:00:00:04", "allworx", "192.168.2.13")):
            self.names.apply(lease("granted", mac, address, hostname=name))
        zone = self.zone()
        self.assertEqual(addresses(zone.answer("printer.example.com", dns.A)), ["192.168.2.150"])
        self.assertEqual(addresses(zone.answer("www.example.com", dns.A)), [str(WAN)])
        self.assertEqual(addresses(zone.answer("files.example.com", dns.A)),
                         ["192.168.2.20", "192.168.2.21"])
        self.assertEqual(addresses(zone.answer("allworx.example.com", dns.A)),
                         sorted([LAN, str(WAN)]))
        self.assertEqual(zone.answer("11.2.168.192.in-addr.arpa", dns.PTR).rcode, dns.ENAME)

    def test_a_named_dynamic_client_is_named_by_its_mac(self):
        # [host cam] with a mac and no address: the lease of that MAC, whatever
        # name the client sends (or none), answers as cam; a guest sending
        # "cam" never takes the name.
        text = with_sections("[host cam]\nmac = 02:00:00:00:00:51\n", CONF)
        self.names.apply(lease("granted", "02:00:00:00:00:99", "192.168.2.66", hostname="cam",
                               expires=300))
        zone = zone_for(text, dhcp=self.names.current())
        self.assertEqual(zone.answer("cam.example.com", dns.A).rcode, dns.ENAME)
        self.assertEqual(zone.answer("66.2.168.192.in-addr.arpa", dns.PTR).rcode, dns.ENAME)
        self.names.apply(lease("granted", "02:00:00:00:00:51", "192.168.2.7", hostname=None,
                               expires=200))
        zone = zone_for(text, dhcp=self.names.current())
        self.assertEqual(addresses(zone.answer("cam.example.com", dns.A)), ["192.168.2.7"])
        ptr = zone.answer("7.2.168.192.in-addr.arpa", dns.PTR).answers[0]
        self.assertEqual(ptr.payload.name.name, b"cam.example.com")
        self.assertEqual(ptr.ttl, dnszone.DHCP_TTL)
        # Its lease ends: the name goes with it.
        self.names.apply(lease("released", "02:00:00:00:00:51", "192.168.2.7", hostname=None))
        zone = zone_for(text, dhcp=self.names.current())
        self.assertEqual(zone.answer("cam.example.com", dns.A).rcode, dns.ENAME)

    def test_a_named_dynamic_client_from_the_lease_table(self):
        text = with_sections("[host cam]\nmac = 02:00:00:00:00:51\n", CONF)
        self.names.load([{"mac": "02:00:00:00:00:51", "address": "192.168.2.7",
                          "hostname": None, "expires": 50}])
        self.assertEqual(self.names.current(), {})
        zone = zone_for(text, dhcp=self.names.current())
        self.assertEqual(addresses(zone.answer("cam.example.com", dns.A)), ["192.168.2.7"])

    def test_a_named_dynamic_client_without_a_lease_has_no_records(self):
        text = with_sections("[host cam]\nmac = 02:00:00:00:00:51\n", CONF)
        entries = dnszone.zone_entries(parse_config(text), WAN)
        self.assertEqual([e for e in entries if e.name.startswith("cam.")], [])

    def test_newer_lease_takes_a_contested_name(self):
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10", expires=100))
        self.names.apply(lease("granted", "02:00:00:00:00:02", "192.168.2.20", expires=200))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.20")})

    def test_a_renewal_does_not_take_a_contested_name_back(self):
        # Two live clients sending one name: the newer claim keeps it while
        # both renew, whichever lease ends later; no flip-flop of A and PTR.
        one, two = "02:00:00:00:00:01", "02:00:00:00:00:02"
        self.names.apply(lease("granted", one, "192.168.2.10", expires=100))
        self.names.apply(lease("granted", two, "192.168.2.20", expires=100))
        self.assertFalse(self.names.apply(lease("renewed", one, "192.168.2.10", expires=300)))
        self.assertFalse(self.names.apply(lease("granted", one, "192.168.2.10", expires=400)))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.20")})
        # The older claimant moving to another address is still the older claim.
        self.assertTrue(self.names.apply(lease("renewed", one, "192.168.2.11", expires=500)))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.20")})
        zone = zone_for(dhcp=self.names.current())
        self.assertEqual(zone.answer("11.2.168.192.in-addr.arpa", dns.PTR).rcode, dns.ENAME)

    def test_a_name_claimed_again_goes_to_the_new_claim(self):
        one, two = "02:00:00:00:00:01", "02:00:00:00:00:02"
        self.names.apply(lease("granted", one, "192.168.2.10", expires=100))
        self.names.apply(lease("granted", two, "192.168.2.20", expires=100))
        self.names.apply(lease("renewed", one, "192.168.2.10", hostname="other", expires=200))
        self.assertTrue(self.names.apply(lease("renewed", one, "192.168.2.10", expires=300)))
        self.assertEqual(self.names.current(),
                         {"pc1": ip("192.168.2.10")})

    def test_a_contested_name_passes_to_the_other_claim_when_its_holder_leaves(self):
        one, two = "02:00:00:00:00:01", "02:00:00:00:00:02"
        self.names.apply(lease("granted", one, "192.168.2.10", expires=100))
        self.names.apply(lease("granted", two, "192.168.2.20", expires=50))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.20")})
        self.assertTrue(self.names.expire(50))
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.10")})

    def test_the_lease_table_ranks_claims_by_their_end(self):
        # The table says nothing of when a name was claimed: the lease that
        # ends last stands for the newest claim.
        self.names.load([{"mac": "02:00:00:00:00:01", "address": "192.168.2.10",
                          "hostname": "pc1", "expires": 90},
                         {"mac": "02:00:00:00:00:02", "address": "192.168.2.20",
                          "hostname": "pc1", "expires": 50}])
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.10")})

    def test_one_address_from_the_lease_table_is_one_lease(self):
        # As a grant would: the record ending last keeps an address two hold.
        self.names.load([{"mac": "02:00:00:00:00:01", "address": "192.168.2.10",
                          "hostname": "pc1", "expires": 90},
                         {"mac": "02:00:00:00:00:02", "address": "192.168.2.10",
                          "hostname": "pc2", "expires": 50}])
        current = self.names.current()
        self.assertEqual((current, current.by_mac),
                         ({"pc1": ip("192.168.2.10")},
                          {"02:00:00:00:00:01": ip("192.168.2.10")}))

    def test_hostname_clean_up(self):
        self.assertEqual(dnszone.dhcp_label("Bobs_Laptop.local"), "bobs-laptop")
        self.assertEqual(dnszone.dhcp_label(b"PC1"), "pc1")
        self.assertIsNone(dnszone.dhcp_label("-bad-"))
        self.assertIsNone(dnszone.dhcp_label(""))
        self.assertIsNone(dnszone.dhcp_label("\u00e9t\u00e9"))
        self.names.apply(lease("granted", "02:00:00:00:00:01", "192.168.2.10", hostname="!!"))
        self.assertEqual(self.names.current(), {})

    def test_load_from_the_lease_table(self):
        self.names.load([{"mac": "02:00:00:00:00:01", "address": "192.168.2.10",
                          "hostname": "pc1", "expires": 50}])
        self.assertEqual(self.names.current(), {"pc1": ip("192.168.2.10")})

    @given(st.lists(st.tuples(st.sampled_from(["granted", "renewed", "released", "expired",
                                               "declined"]),
                              st.integers(1, 4), st.integers(1, 6),
                              st.sampled_from(["pc1", "pc2", "www", "printer", None, "x_y"]),
                              st.integers(0, 50)), max_size=30))
    def test_any_event_sequence_gives_a_consistent_zone(self, events):
        names = dnszone.DhcpNames()
        for kind, mac, host, hostname, expires in events:
            names.apply(LeaseEvent(kind, "02:00:00:00:00:%02x" % mac,
                                   ip("192.168.2.%d" % host), hostname, expires))
        names.expire(25)
        current = names.current()
        self.assertEqual(len(set(current.values())), len(current))
        zone = zone_for(dhcp=current)
        for label, address in current.items():
            result = zone.answer(label + ".example.com", dns.A)
            self.assertEqual(result.rcode, dns.OK)
