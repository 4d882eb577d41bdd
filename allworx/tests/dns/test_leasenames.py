"""
Tests for the DHCP clients' names in the DNS service's zone
(allworx.protocols.dns.leasenames through allworx.protocols.dns.service).

The DHCP server sends its ACK and emits the `LeaseEvent` in the same call, so
a query that follows the ACK is read after the event: the name must answer
from then on, and go the moment the lease is released or expires (the zone's
NXDOMAIN is kept by resolvers for the SOA minimum, a minute). Only the full
rebuild of the zone is gathered, so a burst of lease events (an office
switching on in the morning) costs a bounded number of them.
"""

import ipaddress

from hypothesis import given, settings, strategies as st
from prometheus_client import REGISTRY
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import LeaseEvent, Office
from allworx.protocols.dns import leasenames
from allworx.protocols.dns import service as dnsservice
from allworx.protocols.dns import zone as dnszone
from allworx.tests.confs import with_sections
from allworx.tests.dns.test_service import (
    CONF, LAN_PC, ServiceCase, UdpMemoryReactor, parse, query)


def ip(text):
    return ipaddress.IPv4Address(text)


def addresses(m):
    return sorted(rr.payload.dottedQuad() for rr in m.answers if rr.type == dns.A)


def ptr_names(m):
    return [rr.payload.name.name for rr in m.answers if rr.type == dns.PTR]


class CountedRebuilds:
    """Wraps a ZoneKeeper's `rebuild` (the full rebuild) to count the calls."""

    def __init__(self, keeper):
        self.calls = 0
        self._rebuild = keeper.rebuild
        keeper.rebuild = self

    def __call__(self, *args, **kw):
        self.calls += 1
        return self._rebuild(*args, **kw)


class LeaseCase(ServiceCase):

    def lease(self, kind, host, hostname="pc1", mac="02:00:00:00:00:01", lifetime=600):
        self.office.emit(LeaseEvent(kind, mac, ip("192.168.2.%d" % host), hostname,
                                    self.reactor.seconds() + lifetime))

    def serial(self):
        return self.ask("example.com", dns.SOA).answers[0].payload.serial

    def settle(self):
        """Let any gathered rebuild run: what follows is about the next event alone."""
        self.reactor.advance(dnsservice.REBUILD_INTERVAL)


class LeaseNameTests(LeaseCase):

    conf = with_sections("""
[record intranet]
cname = pc1.example.com
""", CONF)

    def test_a_granted_name_answers_at_once(self):
        serial = self.serial()
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)
        self.lease("granted", 10)
        # The same clock time as the event: no timer has run.
        m = self.ask("pc1.example.com")
        self.assertEqual((m.rCode, m.auth, addresses(m)), (dns.OK, True, ["192.168.2.10"]))
        self.assertEqual(m.answers[0].ttl, dnszone.DHCP_TTL)
        ptr = self.ask("10.2.168.192.in-addr.arpa", dns.PTR)
        self.assertEqual((ptr.rCode, ptr_names(ptr)), (dns.OK, [b"pc1.example.com"]))
        self.assertGreater(self.serial(), serial)
        # Then from the fast path, still the same answer.
        hits = self.service.fast.zone_hits
        self.assertEqual(addresses(self.ask("PC1.example.com")), ["192.168.2.10"])
        self.assertEqual(self.service.fast.zone_hits, hits + 1)

    def test_the_soa_serial_moves_on_with_each_change(self):
        serials = [self.serial(), self.serial()]   # the second from the fast path
        self.lease("granted", 11, "pc2", "02:00:00:00:00:02")
        serials.append(self.serial())
        self.lease("released", 11, "pc2", "02:00:00:00:00:02")
        serials.append(self.serial())
        self.assertEqual(serials[0], serials[1])
        self.assertLess(serials[1], serials[2])
        self.assertLess(serials[2], serials[3])

    def test_the_served_zone_shows_the_name_at_once(self):
        self.lease("granted", 10)
        self.assertIs(self.service.keeper.zone, self.service.zone)
        self.assertIn("pc1.example.com.\t60\tIN\tA\t192.168.2.10", self.service.zone.as_text())

    def test_a_released_name_is_nxdomain_at_once(self):
        self.lease("granted", 10)
        self.settle()
        for _ in range(2):   # the second from the fast path
            self.assertEqual(addresses(self.ask("pc1.example.com")), ["192.168.2.10"])
            self.assertEqual(ptr_names(self.ask("10.2.168.192.in-addr.arpa", dns.PTR)),
                             [b"pc1.example.com"])
        self.lease("released", 10)
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("10.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)

    def test_expiry_removes_the_name_at_once(self):
        self.lease("granted", 10)
        self.lease("granted", 11, "pc2", "02:00:00:00:00:02", lifetime=30)
        self.settle()
        self.ask("pc1.example.com")
        self.ask("pc2.example.com")
        self.lease("expired", 10)   # the DHCP server's reaper
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)
        self.reactor.advance(30)    # no event: the lease's end on the clock
        self.assertEqual(self.ask("pc2.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("11.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)

    def test_renewal_at_another_address_moves_both_records(self):
        self.lease("granted", 10)
        self.settle()
        self.ask("pc1.example.com")
        self.ask("10.2.168.192.in-addr.arpa", dns.PTR)
        self.lease("renewed", 11)
        self.assertEqual(addresses(self.ask("pc1.example.com")), ["192.168.2.11"])
        self.assertEqual(self.ask("10.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)
        self.assertEqual(ptr_names(self.ask("11.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"pc1.example.com"])

    def test_a_cname_to_the_name_follows_at_once(self):
        self.assertEqual(self.ask("intranet.example.com").rCode, dns.ENAME)
        self.lease("granted", 10)
        for _ in range(2):
            m = self.ask("intranet.example.com")
            self.assertEqual((m.rCode, addresses(m)), (dns.OK, ["192.168.2.10"]))
        self.settle()
        self.assertEqual(addresses(self.ask("intranet.example.com")), ["192.168.2.10"])
        self.lease("released", 10)
        self.assertEqual(self.ask("intranet.example.com").rCode, dns.ENAME)

    def test_a_client_name_never_takes_a_static_name(self):
        self.lease("granted", 10, "printer")
        self.assertEqual(addresses(self.ask("printer.example.com")), ["192.168.2.150"])
        self.assertEqual(self.ask("10.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)

    def test_a_burst_of_200_lease_events_costs_a_bounded_number_of_full_rebuilds(self):
        rebuilds = CountedRebuilds(self.service.keeper)
        serial = self.serial()
        hosts = [h for h in range(1, 202) if h != 150]   # .150 is the printer's
        for i, host in enumerate(hosts):
            self.lease("granted", host, "pc%d" % i, "02:00:00:00:01:%02x" % i)
            self.assertEqual(addresses(self.ask("pc%d.example.com" % i)),
                             ["192.168.2.%d" % host])
        self.assertLessEqual(rebuilds.calls, 1)
        self.reactor.advance(dnsservice.REBUILD_INTERVAL)
        self.assertLessEqual(rebuilds.calls, 2)
        self.assertGreater(self.serial(), serial)
        self.assertEqual(ptr_names(self.ask("201.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"pc199.example.com"])
        # Spread over two seconds: at most one full rebuild per interval.
        rebuilds.calls = 0
        for i, host in enumerate(hosts):
            self.lease("renewed", host, "pc%d" % i, "02:00:00:00:01:%02x" % i, 900)
            self.reactor.advance(0.01)
        self.reactor.advance(dnsservice.REBUILD_INTERVAL)
        self.assertLessEqual(rebuilds.calls, 2.0 / dnsservice.REBUILD_INTERVAL + 1)
        # What the gathered rebuild made is what the events had made.
        names = {"pc%d" % i: ip("192.168.2.%d" % host) for i, host in enumerate(hosts)}
        self.assertEqual(self.service.zone.entries,
                         dnszone.zone_entries(self.office.config, self.office.wan_ip, names,
                                              self.service.mail_records(self.office.config)))


CAM = "02:00:00:00:00:51"
# [host cam] has a MAC and no address: a named dynamic client.
DYNAMIC = with_sections("""
[host cam]
mac = %s

[record camera]
cname = cam.example.com
""" % CAM, CONF)


class NamedDynamicClientTests(LeaseCase):
    """A [host] with only a MAC follows that MAC's lease from the event on."""

    conf = DYNAMIC

    def test_its_lease_names_it_at_once(self):
        self.assertEqual(self.ask("cam.example.com").rCode, dns.ENAME)
        self.lease("granted", 30, None, CAM)
        for _ in range(2):   # the second from the fast path
            m = self.ask("cam.example.com")
            self.assertEqual((m.rCode, addresses(m)), (dns.OK, ["192.168.2.30"]))
            self.assertEqual(m.answers[0].ttl, dnszone.DHCP_TTL)
            self.assertEqual(addresses(self.ask("camera.example.com")), ["192.168.2.30"])
            self.assertEqual(ptr_names(self.ask("30.2.168.192.in-addr.arpa", dns.PTR)),
                             [b"cam.example.com"])

    def test_it_moves_and_goes_with_its_lease_at_once(self):
        self.lease("granted", 30, None, CAM)
        self.settle()
        self.ask("cam.example.com")
        self.ask("camera.example.com")
        self.ask("30.2.168.192.in-addr.arpa", dns.PTR)
        self.lease("granted", 31, None, CAM)
        self.assertEqual(addresses(self.ask("cam.example.com")), ["192.168.2.31"])
        self.assertEqual(addresses(self.ask("camera.example.com")), ["192.168.2.31"])
        self.assertEqual(self.ask("30.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)
        self.assertEqual(ptr_names(self.ask("31.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"cam.example.com"])
        self.settle()
        self.lease("released", 31, None, CAM)
        self.assertEqual(self.ask("cam.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("camera.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("31.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)

    def test_its_ptr_over_the_name_its_client_sends(self):
        # The client sends a name of its own: that name answers too, but the
        # address's PTR is the [host]'s; when the lease ends both go.
        self.lease("granted", 30, "pc1", CAM)
        self.assertEqual(addresses(self.ask("pc1.example.com")), ["192.168.2.30"])
        self.assertEqual(ptr_names(self.ask("30.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"cam.example.com"])
        self.lease("expired", 30, "pc1", CAM)
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("30.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)

    def test_a_guest_sending_its_name_never_takes_it(self):
        self.lease("granted", 40, "cam")
        self.assertEqual(self.ask("cam.example.com").rCode, dns.ENAME)
        self.assertEqual(self.ask("40.2.168.192.in-addr.arpa", dns.PTR).rCode, dns.ENAME)
        self.lease("granted", 30, None, CAM)
        self.assertEqual(addresses(self.ask("cam.example.com")), ["192.168.2.30"])


class FakeLeases:
    """An ILeaseTable: the DHCP server's records as dicts."""

    def __init__(self, leases):
        self.leases = leases

    def active_leases(self):
        return list(self.leases)


def table_lease(host, hostname, expires):
    return {"mac": "02:00:00:00:00:%02x" % host, "address": "192.168.2.%d" % host,
            "hostname": hostname, "expires": expires, "state": "bound"}


class LeaseTableTests(unittest.TestCase):
    """The lease table is given to the service: loaded at start, events after."""

    def setUp(self):
        self.reactor = UdpMemoryReactor()
        self.reactor.advance(1_700_000_000)
        self.office = Office(parse_config(CONF))
        now = self.reactor.seconds()
        self.table = FakeLeases([table_lease(10, "pc1", now + 600),
                                 table_lease(11, "pc2", now + 600)])
        self.service = dnsservice.DnsService(self.office, self.table, reactor=self.reactor)

    def ask(self, name, qtype=dns.A):
        port = self.reactor.udp[53]
        port.protocol.datagramReceived(query(name, qtype), LAN_PC)
        return parse(port.sent[-1][0])

    def test_names_from_the_table_at_start(self):
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(addresses(self.ask("pc1.example.com")), ["192.168.2.10"])
        self.assertEqual(ptr_names(self.ask("11.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"pc2.example.com"])

    def test_a_restart_starts_again_from_the_table(self):
        self.service.startService()
        self.service.stopService()
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:0c", ip("192.168.2.12"), "pc3",
                                    self.reactor.seconds() + 600))   # not heard: stopped
        self.assertEqual(self.service.zone.answer("pc3.example.com", dns.A).rcode, dns.ENAME)
        self.table.leases = [table_lease(12, "pc3", self.reactor.seconds() + 600)]
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(addresses(self.ask("pc3.example.com")), ["192.168.2.12"])
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)

    def test_the_service_keeps_the_table_given(self):
        service = dnsservice.DnsService(self.office, self.table)
        self.assertIs(service.leases, self.table)
        self.assertEqual(service.name, "dns")

    def test_metrics_are_registered_while_running(self):
        def sample():
            return REGISTRY.get_sample_value("allworx_dns_cache_entries")
        self.assertIsNone(sample())
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(sample(), 0)
        self.assertIsNotNone(REGISTRY.get_sample_value("allworx_dns_queries_total",
                                                       {"kind": "zone"}))
        self.service.stopService()
        self.assertIsNone(sample())


# Two LANs: a /24, where 192.168.3.x is outside, and a /16, where the first
# name in 192.168.3.x makes the reverse zone's 3.168.192 exist.
WIDE = CONF.replace("address = 192.168.2.254/24", "address = 192.168.2.254/16")

WIDE_DYNAMIC = DYNAMIC.replace("address = 192.168.2.254/24", "address = 192.168.2.254/16")

# (kind, MAC's last byte, subnet, host, name sent, lease time, wait after);
# 0x51 is [host cam]'s MAC in DYNAMIC.
EVENTS = st.lists(st.tuples(
    st.sampled_from(["granted", "renewed", "released", "expired", "declined"]),
    st.sampled_from([1, 2, 3, 4, 0x51]), st.integers(2, 3), st.integers(1, 4),
    st.sampled_from(["pc1", "pc2", "PC1", "www", "printer", "cam", None]),
    st.integers(0, 40), st.sampled_from([0, 0, 1, 7])), max_size=25)
QUESTIONS = [(n + ".example.com", t)
             for n in ("pc1", "pc2", "www", "printer", "intranet", "cam", "camera")
             for t in (dns.A, dns.AAAA)] + [
    ("%d.%d.168.192.in-addr.arpa" % (h, s), dns.PTR) for s in (2, 3) for h in (1, 2, 3, 4)] + [
    ("%d.168.192.in-addr.arpa" % s, dns.NS) for s in (2, 3)]


class AnyEventSequenceTests(unittest.TestCase):

    def check(self, conf, events):
        reactor = UdpMemoryReactor()
        reactor.advance(1_700_000_000)
        office = Office(parse_config(with_sections("[record intranet]\ncname = pc2.example.com\n",
                                                   conf)))
        service = dnsservice.DnsService(office, reactor=reactor)
        service.startService()
        port = reactor.udp[53]
        expected = dnszone.DhcpNames()
        try:
            for kind, mac, subnet, host, hostname, lifetime, wait in events:
                event = LeaseEvent(kind, "02:00:00:00:00:%02x" % mac,
                                   ip("192.168.%d.%d" % (subnet, host)), hostname,
                                   reactor.seconds() + lifetime)
                expected.apply(event)
                office.emit(event)
                reactor.advance(wait)
                expected.expire(reactor.seconds())
                keeper = dnszone.ZoneKeeper(reactor)
                keeper.rebuild(office.config, office.wan_ip, expected.current(),
                               service.mail_records(office.config))
                self.assertEqual(service.zone.entries, keeper.zone.entries)
                for name, qtype in QUESTIONS:
                    want = keeper.zone.answer(name, qtype)
                    if want is None:
                        continue   # not ours: 192.168.3.x beside a /24 LAN
                    for _ in range(2):   # the full path, then perhaps the fast one
                        port.protocol.datagramReceived(query(name, qtype), LAN_PC)
                        got = parse(port.sent[-1][0])
                        self.assertEqual(
                            (got.rCode, [(rr.name, rr.type, rr.payload) for rr in got.answers]),
                            (want.rcode, [(rr.name, rr.type, rr.payload) for rr in want.answers]),
                            (name, qtype))
        finally:
            service.stopService()

    @settings(max_examples=60, deadline=None)
    @given(EVENTS)
    def test_the_served_zone_is_what_a_rebuild_would_make(self, events):
        self.check(CONF, events)

    @settings(max_examples=60, deadline=None)
    @given(EVENTS)
    def test_the_same_with_a_wide_lan(self, events):
        self.check(WIDE, events)

    @settings(max_examples=60, deadline=None)
    @given(EVENTS)
    def test_the_same_with_a_named_dynamic_client(self, events):
        self.check(DYNAMIC, events)

    @settings(max_examples=60, deadline=None)
    @given(EVENTS)
    def test_the_same_with_a_named_dynamic_client_and_a_wide_lan(self, events):
        self.check(WIDE_DYNAMIC, events)

    def test_two_clients_sending_one_name_while_addresses_move(self):
        # Found by the property test: the second client's claim on pc1 is the
        # newer one; the first client's later grant at its own address (a
        # lease that ends later) takes nothing back.
        events = [("granted", 1, 2, 1, "pc1", 0, 0)] * 9 + [
            ("granted", 1, 2, 2, "pc1", 1, 0), ("granted", 2, 2, 1, "pc1", 0, 0),
            ("granted", 2, 2, 1, "pc1", 0, 0), ("granted", 2, 2, 1, "pc1", 1, 0),
            ("granted", 1, 2, 2, "pc1", 2, 0)]
        self.check(CONF, events)

    def test_a_named_dynamic_client_whose_client_sends_a_contested_name(self):
        # cam's client and a guest both send pc1; cam's lease moves, ends.
        cam = 0x51
        self.check(DYNAMIC, [
            ("granted", cam, 2, 1, "pc1", 30, 0), ("granted", 2, 2, 2, "pc1", 30, 0),
            ("renewed", cam, 2, 3, "pc1", 40, 1), ("granted", 2, 2, 1, "cam", 40, 0),
            ("released", 2, 2, 1, "cam", 0, 0), ("granted", cam, 3, 4, None, 10, 7),
            ("granted", cam, 2, 4, "pc2", 10, 0), ("expired", cam, 2, 4, "pc2", 0, 0)])

    def test_a_named_dynamic_clients_address_taken_by_a_client_sending_the_same_name(self):
        # Found by the property test: pc1 stays at .4, but the lease there is
        # no longer cam's, so .4's PTR passes from cam to pc1.
        self.check(DYNAMIC, [("granted", 0x51, 2, 4, "pc1", 30, 0),
                             ("granted", 3, 2, 4, "pc1", 30, 0)])


# An office of some size: a lease's change must not cost what it holds.
BIGGER = with_sections("".join(
    "[record r%d]\na = 192.168.2.%d\n\n" % (i, 20 + i) for i in range(1, 60)) + "".join(
    "[host h%d]\nmac = 02:00:00:00:02:%02x\naddress = 192.168.2.%d\n\n" % (i, i, 100 + i)
    for i in range(40)), CONF)


class CostOfALeaseTests(LeaseCase):
    """What a lease event costs follows what it changes, not the office's size."""

    conf = BIGGER

    def test_a_lease_event_asks_about_the_hosts_and_records_it_touches_only(self):
        asked = []
        real = leasenames.zone_entries

        def counting(config, *args, **kw):
            asked.append(len(config.hosts) + len(config.records))
            return real(config, *args, **kw)

        self.patch(leasenames, "zone_entries", counting)
        self.lease("granted", 10)
        self.lease("renewed", 11)
        self.lease("granted", 101, "h1", "02:00:00:00:00:02")   # h1's own address and name
        self.lease("released", 11)
        self.assertTrue(asked)
        self.assertLessEqual(max(asked), 2, asked)
        self.assertEqual(self.ask("pc1.example.com").rCode, dns.ENAME)
        self.assertEqual(ptr_names(self.ask("101.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"h1.example.com"])

    def test_a_lease_event_makes_no_whole_view_of_the_names(self):
        views = []
        table = self.service.names.table
        real = table.current
        table.current = lambda: views.append(1) or real()
        for host in (10, 11, 12):
            self.lease("granted", host, "pc%d" % host, "02:00:00:00:00:%02x" % host)
        self.lease("renewed", 13, "pc10", "02:00:00:00:00:0a")   # moved
        self.lease("released", 11, "pc11", "02:00:00:00:00:0b")
        self.settle()
        self.assertEqual(views, [])
        self.assertEqual(addresses(self.ask("pc10.example.com")), ["192.168.2.13"])
        self.assertEqual(self.ask("pc11.example.com").rCode, dns.ENAME)
        self.assertEqual(self.service.zone.entries, dnszone.zone_entries(
            self.office.config, self.office.wan_ip, real(),
            self.service.mail_records(self.office.config)))

    def test_lease_events_need_no_full_rebuild(self):
        rebuilds = CountedRebuilds(self.service.keeper)
        self.lease("granted", 10)
        self.settle()
        self.lease("renewed", 11)
        self.settle()
        self.assertEqual(rebuilds.calls, 0)
        self.assertEqual(addresses(self.ask("pc1.example.com")), ["192.168.2.11"])
        self.assertEqual(self.service.zone.entries, dnszone.zone_entries(
            self.office.config, self.office.wan_ip, {"pc1": ip("192.168.2.11")},
            self.service.mail_records(self.office.config)))

    def test_answers_carrying_the_old_serial_are_made_again_after_a_while(self):
        nodata = self.ask("files.example.com", dns.MX)     # NODATA: the SOA, its serial
        self.assertEqual(self.ask("files.example.com", dns.MX).authority, nodata.authority)
        self.reactor.advance(5)
        self.lease("granted", 10)
        self.settle()
        serial = self.serial()
        self.assertEqual(self.ask("files.example.com", dns.MX).authority[0].payload.serial,
                         serial)


class _Unwalked(frozenset):
    """A set of MACs that may be asked about one MAC, never walked through."""

    def __iter__(self):
        raise AssertionError("the office's named dynamic clients were walked through")


# 40 named dynamic clients ([host]s with a MAC and no address).
MANY_DYNAMIC = with_sections("".join(
    "[host d%d]\nmac = 02:00:00:00:03:%02x\n\n" % (i, i) for i in range(40)), CONF)


class CostWithNamedDynamicClientsTests(LeaseCase):
    """A lease event looks at the named dynamic clients at its addresses, not at all of them."""

    conf = MANY_DYNAMIC

    def test_the_named_dynamic_clients_are_not_walked_per_lease(self):
        names = self.service.names
        real = names._dynamic_hosts
        names._dynamic_hosts = lambda config: _Unwalked(real(config))
        self.lease("granted", 10)
        self.lease("granted", 30, "x", "02:00:00:00:03:05")     # d5's lease
        self.lease("renewed", 31, "x", "02:00:00:00:03:05")     # d5 moves
        self.assertEqual(addresses(self.ask("d5.example.com")), ["192.168.2.31"])
        self.lease("granted", 31, "pc3", "02:00:00:00:00:07")   # another client takes .31
        self.lease("released", 10)
        self.assertEqual(self.ask("d5.example.com").rCode, dns.ENAME)
        self.assertEqual(ptr_names(self.ask("31.2.168.192.in-addr.arpa", dns.PTR)),
                         [b"pc3.example.com"])
        self.assertEqual(self.service.zone.entries, dnszone.zone_entries(
            self.office.config, self.office.wan_ip, names.current(self.reactor.seconds()),
            self.service.mail_records(self.office.config)))
