"""Tests for allworx.protocols.dhcp.pool: allocation, reservations, expiry, DECLINE, limits."""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx.protocols.dhcp.pool import (
    BOUND, OFFERED, Lease, LeasePool, PoolSettings)

IP = ipaddress.IPv4Address
A, B, C, R = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:50"


def make_pool(first="192.168.2.1", last="192.168.2.5", server="192.168.2.3",
              reservations=None, lease_time=3600):
    clock = Clock()
    clock.advance(1_700_000_000)
    pool = LeasePool(PoolSettings(first, last, server, reservations or {R: "192.168.2.150"},
                                  lease_time=lease_time), clock)
    return pool, clock


def bind(pool, mac, requested=None, hostname=None):
    offer = pool.offer(mac, requested, hostname)
    return pool.request(mac, offer.address, hostname)


class AllocationTests(unittest.TestCase):

    def test_lowest_free_skipping_server(self):
        pool, _ = make_pool()
        got = [bind(pool, m).lease.address for m in (A, B, C)]
        self.assertEqual(got, [IP("192.168.2.1"), IP("192.168.2.2"), IP("192.168.2.4")])

    def test_offer_is_held_then_bound(self):
        pool, clock = make_pool()
        offer = pool.offer(A, hostname="pc1")
        self.assertEqual(offer.state, OFFERED)
        self.assertEqual(pool.offer(B).address, IP("192.168.2.2"))
        binding = pool.request(A, offer.address, "pc1")
        self.assertEqual(binding.kind, "granted")
        self.assertEqual(binding.lease.state, BOUND)
        self.assertEqual(binding.lease.expires, clock.seconds() + 3600)
        self.assertEqual(binding.lease.hostname, "pc1")
        self.assertEqual(pool.active_leases(), [binding.lease])

    def test_same_client_same_offer(self):
        pool, _ = make_pool()
        self.assertEqual(pool.offer(A).address, pool.offer(A).address)

    def test_one_lease_per_mac(self):
        pool, _ = make_pool()
        bind(pool, A)
        pool.request(A, IP("192.168.2.4"))
        self.assertEqual([l.address for l in pool.active_leases()], [IP("192.168.2.4")])

    def test_requested_address_honoured_when_free(self):
        pool, _ = make_pool()
        self.assertEqual(pool.offer(A, requested=IP("192.168.2.5")).address, IP("192.168.2.5"))
        bind(pool, B, requested=IP("192.168.2.5"))  # B cannot have it... A only offered
        self.assertNotEqual(pool.lease_of(B).address, IP("192.168.2.5"))

    def test_renewal(self):
        pool, clock = make_pool()
        first = bind(pool, A).lease
        clock.advance(1800)
        again = pool.request(A, first.address)
        self.assertEqual(again.kind, "renewed")
        self.assertEqual(again.lease.expires, clock.seconds() + 3600)

    def test_request_for_someone_elses_address_refused(self):
        pool, _ = make_pool()
        lease = bind(pool, A).lease
        self.assertIsNone(pool.request(B, lease.address))
        self.assertIn("held by", pool.last_refusal)
        self.assertIsNone(pool.request(B, IP("192.168.2.3")))
        self.assertIn("server", pool.last_refusal)
        self.assertIsNone(pool.request(B, IP("192.168.2.99")))
        self.assertIn("outside", pool.last_refusal)

    def test_exhaustion(self):
        pool, _ = make_pool()
        for i in range(4):
            self.assertIsNotNone(bind(pool, "02:00:00:00:01:%02x" % i))
        self.assertIsNone(pool.offer(A))
        self.assertEqual(pool.counts()["bound"], 4)
        self.assertEqual(pool.counts()["size"], 4)


    def test_discover_flood_cannot_hold_the_pool(self):
        pool, clock = make_pool()
        for i in range(4):
            self.assertIsNotNone(pool.offer("02:66:00:00:00:%02x" % i))
        self.assertIsNone(pool.offer(A))            # all offered, just now
        clock.advance(5)
        offer = pool.offer(A)                       # the oldest unanswered offer is taken back
        self.assertEqual(offer.address, IP("192.168.2.1"))
        self.assertIsNone(pool.lease_of("02:66:00:00:00:00"))
        self.assertEqual(pool.request(A, offer.address).kind, "granted")

    def test_bound_leases_are_never_stolen(self):
        pool, clock = make_pool()
        for i in range(4):
            bind(pool, "02:66:00:00:00:%02x" % i)
        clock.advance(100)
        self.assertIsNone(pool.offer(A))


class ReservationTests(unittest.TestCase):

    def test_reserved_mac_gets_its_address(self):
        pool, _ = make_pool()
        self.assertEqual(bind(pool, R).lease.address, IP("192.168.2.150"))

    def test_reserved_address_refused_to_others(self):
        pool, _ = make_pool()
        self.assertIsNone(pool.request(A, IP("192.168.2.150")))
        self.assertIn("reserved", pool.last_refusal)

    def test_reserved_client_asking_for_another_address_is_refused(self):
        pool, _ = make_pool()
        self.assertIsNone(pool.request(R, IP("192.168.2.1")))

    def test_reservation_inside_range_leaves_the_dynamic_pool(self):
        pool, _ = make_pool(reservations={R: "192.168.2.1"})
        self.assertEqual(bind(pool, A).lease.address, IP("192.168.2.2"))
        self.assertEqual(bind(pool, R).lease.address, IP("192.168.2.1"))

    def test_reconfigure_adds_reservation(self):
        pool, _ = make_pool()
        lease = bind(pool, A).lease
        pool.reconfigure(PoolSettings("192.168.2.1", "192.168.2.5", "192.168.2.3",
                                      {C: lease.address}))
        # A keeps nothing it may not have: its renewal is refused...
        self.assertIsNone(pool.request(A, lease.address))
        # ... and C gets its address once A's lease is gone.
        pool.release(A, lease.address)
        self.assertEqual(bind(pool, C).lease.address, lease.address)

    def test_reconfigure_shrinks_range(self):
        pool, _ = make_pool()
        bind(pool, A)
        pool.reconfigure(PoolSettings("192.168.2.4", "192.168.2.5", "192.168.2.3"))
        self.assertIsNone(pool.request(A, IP("192.168.2.1")))
        self.assertEqual(bind(pool, B).lease.address, IP("192.168.2.4"))


class LifecycleTests(unittest.TestCase):

    def test_expiry_reclaims(self):
        pool, clock = make_pool()
        lease = bind(pool, A, hostname="pc1").lease
        clock.advance(3599)
        self.assertEqual(pool.reap(), [])
        clock.advance(1)
        self.assertEqual(pool.reap(), [lease])
        self.assertEqual(pool.active_leases(), [])
        self.assertIsNone(pool.lease_of(A))

    def test_expired_offer_is_silent(self):
        pool, clock = make_pool()
        pool.offer(A)
        clock.advance(61)
        self.assertEqual(pool.reap(), [])
        self.assertEqual(pool.counts()["offered"], 0)

    def test_renewed_lease_not_reaped_early(self):
        pool, clock = make_pool()
        lease = bind(pool, A).lease
        clock.advance(3000)
        pool.request(A, lease.address)
        clock.advance(1000)
        self.assertEqual(pool.reap(), [])
        self.assertEqual(pool.next_due(), clock.seconds() + 2600)

    def test_previous_address_comes_back(self):
        pool, clock = make_pool()
        a = bind(pool, A).lease.address
        b = bind(pool, B).lease.address
        pool.release(A, a)
        pool.release(B, b)
        # A new client takes a never-used address, not A's or B's old one.
        self.assertEqual(bind(pool, C).lease.address, IP("192.168.2.4"))
        self.assertEqual(bind(pool, B).lease.address, b)
        self.assertEqual(bind(pool, A).lease.address, a)

    def test_release(self):
        pool, _ = make_pool()
        lease = bind(pool, A).lease
        self.assertIsNone(pool.release(B, lease.address))
        self.assertEqual(pool.release(A, lease.address), lease)
        self.assertIsNone(pool.release(A, lease.address))
        self.assertEqual(pool.active_leases(), [])

    def test_decline_quarantines(self):
        pool, clock = make_pool(first="192.168.2.1", last="192.168.2.2", server="192.168.2.254")
        offer = pool.offer(A)
        self.assertEqual(pool.decline(A, offer.address), offer)
        self.assertEqual(pool.counts()["quarantined"], 1)
        self.assertEqual(pool.offer(A).address, IP("192.168.2.2"))
        self.assertIsNone(pool.offer(B))
        self.assertIsNone(pool.request(B, offer.address))
        self.assertIn("declined", pool.last_refusal)
        clock.advance(601)
        pool.reap()
        self.assertEqual(pool.offer(B).address, offer.address)

    def test_decline_of_other_clients_address_ignored(self):
        pool, _ = make_pool()
        lease = bind(pool, A).lease
        self.assertIsNone(pool.decline(B, lease.address))
        self.assertEqual(pool.lease_of(A), lease)

    def test_restore(self):
        pool, clock = make_pool()
        now = clock.seconds()
        live = Lease(A, IP("192.168.2.1"), now + 100, BOUND, "pc1")
        self.assertTrue(pool.restore(live))
        self.assertFalse(pool.restore(Lease(B, IP("192.168.2.1"), now + 100)))
        self.assertFalse(pool.restore(Lease(C, IP("192.168.2.2"), now - 1)))
        self.assertEqual(pool.active_leases(), [live])
        # A new client does not get a restored address, nor C's expired one.
        self.assertEqual(bind(pool, B).lease.address, IP("192.168.2.4"))
        self.assertEqual(bind(pool, C).lease.address, IP("192.168.2.2"))


class PoolInvariantTests(unittest.TestCase):

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["offer", "request", "release", "decline", "tick"]),
                              st.integers(0, 7), st.integers(1, 6)), max_size=60))
    def test_no_address_twice(self, steps):
        pool, clock = make_pool(first="192.168.2.1", last="192.168.2.6", lease_time=120)
        macs = ["02:00:00:00:00:%02x" % i for i in range(8)] + [R]
        for op, who, n in steps:
            mac = macs[who]
            if op == "offer":
                pool.offer(mac)
            elif op == "request":
                pool.request(mac, IP("192.168.2.%d" % n))
            elif op == "release":
                pool.release(mac, IP("192.168.2.%d" % n))
            elif op == "decline":
                pool.decline(mac, IP("192.168.2.%d" % n))
            else:
                clock.advance(n * 20)
                pool.reap()
            live = pool.active_leases()
            self.assertEqual(len({l.address for l in live}), len(live))
            self.assertEqual(len({l.mac for l in live}), len(live))
            for l in live:
                self.assertNotEqual(l.address, IP("192.168.2.3"))
                self.assertTrue(l.address == IP("192.168.2.150") and l.mac == R
                                or IP("192.168.2.1") <= l.address <= IP("192.168.2.6"))


class LargePoolTests(unittest.TestCase):
    """A pool as large as the LAN costs memory for its leases, not for its size."""

    def test_a_slash_8_pool(self):
        import tracemalloc
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        pool, _ = make_pool(first="10.0.0.1", last="10.255.255.254", server="10.0.0.1",
                            reservations={R: "10.0.0.3"})
        got = [bind(pool, m).lease.address for m in (A, B, C)]
        self.assertLess(tracemalloc.get_traced_memory()[1], 1 << 20)
        self.assertEqual(got, [IP("10.0.0.2"), IP("10.0.0.4"), IP("10.0.0.5")])
        self.assertEqual(pool.settings.size, (1 << 24) - 2 - 2)
        last = bind(pool, "02:00:00:00:01:00", requested=IP("10.255.255.254"))
        self.assertEqual(last.lease.address, IP("10.255.255.254"))

    def test_a_freed_reservation_joins_the_dynamic_pool(self):
        pool, _ = make_pool(first="192.168.2.1", last="192.168.2.3", server="192.168.2.254",
                            reservations={R: "192.168.2.1"})
        self.assertEqual([bind(pool, m).lease.address for m in (A, B)],
                         [IP("192.168.2.2"), IP("192.168.2.3")])
        self.assertIsNone(pool.offer(C))
        pool.reconfigure(PoolSettings("192.168.2.1", "192.168.2.3", "192.168.2.254"))
        self.assertEqual(bind(pool, C).lease.address, IP("192.168.2.1"))

    def test_unrelated_change_keeps_the_order(self):
        pool, _ = make_pool()
        self.assertEqual(bind(pool, A).lease.address, IP("192.168.2.1"))
        pool.reconfigure(PoolSettings("192.168.2.1", "192.168.2.5", "192.168.2.3",
                                      {R: "192.168.2.150"}, lease_time=60))
        self.assertEqual(bind(pool, B).lease.address, IP("192.168.2.2"))
        self.assertEqual(pool.lease_of(B).expires - pool.clock.seconds(), 60)


class SettingsTests(unittest.TestCase):

    def test_from_config(self):
        from allworx.config import parse_config
        from allworx.tests.confs import MINIMAL, with_sections
        config = parse_config(with_sections("[host printer]\nmac = 02:00:00:00:00:50\n"
                                            "address = 192.168.2.150\n"))
        s = PoolSettings.from_config(config)
        self.assertEqual((s.first, s.last, s.server_ip), (
            IP("192.168.2.1"), IP("192.168.2.100"), IP("192.168.2.254")))
        self.assertEqual(s.reservations, (("02:00:00:00:00:50", IP("192.168.2.150")),))
        self.assertEqual(s.size, 100)
        self.assertEqual(PoolSettings.from_config(parse_config(MINIMAL)).lease_time, 86400)

    def test_a_named_dynamic_client_is_not_a_reservation(self):
        from allworx.config import parse_config
        from allworx.tests.confs import with_sections
        config = parse_config(with_sections("[host cam]\nmac = 02:00:00:00:00:51\n"))
        s = PoolSettings.from_config(config)
        self.assertEqual(s.reservations, ())
        self.assertEqual(s.size, 100)

    def test_backwards(self):
        self.assertRaises(ValueError, PoolSettings, "192.168.2.9", "192.168.2.1", "192.168.2.254")


class CountedItems(dict):
    """The pool's address table, counting the walks over all of it."""

    walks = 0

    def items(self):
        self.walks += 1
        return dict.items(self)


class LeaseListTests(unittest.TestCase):
    """The bound leases' count and pages cost what the page holds while nothing changes."""

    def setUp(self):
        self.pool, self.clock = make_pool(last="192.168.2.40")
        self.macs = ["02:00:00:00:01:%02x" % n for n in range(30)]
        for mac in self.macs:
            bind(self.pool, mac, hostname=mac[-2:])
        self.pool.offer(A)              # an offer is not in the list
        self.pool._by_ip = CountedItems(self.pool._by_ip)

    def test_pages_and_count_without_walking_every_lease_again(self):
        whole = self.pool.active_leases()
        self.assertEqual(len(whole), 30)
        self.assertEqual([l.address for l in whole], sorted(l.address for l in whole))
        for _ in range(3):
            self.assertEqual(self.pool.active_page(10, 5), whole[10:15])
            self.assertEqual(self.pool.active_count(), 30)
        self.assertEqual(self.pool.active_page(28, 10), whole[28:])
        self.assertEqual(self.pool._by_ip.walks, 1)

    def test_a_change_shows_at_once(self):
        self.assertEqual(self.pool.active_count(), 30)
        self.pool.release(self.macs[0], self.pool.lease_of(self.macs[0]).address)
        self.assertEqual(self.pool.active_count(), 29)
        bind(self.pool, B)
        self.assertEqual(self.pool.active_count(), 30)
        self.assertIn(B, [l.mac for l in self.pool.active_page(0, 30)])

    def test_a_lease_run_out_is_not_listed_before_the_reaper_frees_it(self):
        self.assertEqual(self.pool.active_count(), 30)
        self.clock.advance(3600)
        self.assertEqual((self.pool.active_count(), self.pool.active_page(0, 10)), (0, []))

    def test_the_table_makes_records_of_the_page_only(self):
        from allworx.protocols.dhcp import pool as poolmodule
        from allworx.protocols.dhcp.service import LeaseTable

        made = []
        as_dict = poolmodule.Lease.as_dict
        self.patch(poolmodule.Lease, "as_dict", lambda lease: made.append(lease) or as_dict(lease))
        server = type("Server", (), {"pool": self.pool})()
        table = LeaseTable(server)
        self.assertEqual(table.lease_count(), 30)
        page = table.leases_page(20, 5)
        self.assertEqual(page, table.active_leases()[20:25])
        self.assertEqual(len(made), 5 + 30)      # the page, then the whole list asked for
