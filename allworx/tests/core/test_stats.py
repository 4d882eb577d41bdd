"""
The dashboard's history (allworx.statsstore, allworx.statssampler) on a
task.Clock: the rings' sizes and steps, consolidation by average, bounded
whatever the uptime, saved and loaded across a restart (what grew too old
meanwhile dropped), rates from a fake registry and fake sysfs counters
(resets, services not running), the sampling service's timing, and the
wiring in allworx.service.
"""

import json
import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.config import parse_config
from allworx.interfaces import IStats
from allworx.office import Office
from allworx.service import AllworxService
from allworx.statssampler import SERIES, STEP, Sampler, StatsService
from allworx.statsstore import RANGES, StatsStore
from allworx.tests.confs import MINIMAL

T0 = 1796601600     # 2026-12-07T00:00:00Z (a multiple of every step)
NAMES = ["wan.rx_bps", "wan.tx_bps", "lan.rx_bps", "lan.tx_bps", "firewall.new_flows",
         "firewall.drops", "dns.queries", "dns.cache_hit_ratio", "dhcp.leases", "mail.in",
         "mail.out", "mail.queue", "sip.calls", "sip.registered"]


def in_thread(f, *args):
    """deferToThread's stand-in: the work done at once."""
    return defer.maybeDeferred(f, *args)


class StoreCase(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0 + 5)
        self.path = os.path.join(self.mktemp(), "stats.json")

    def store(self, clock=None):
        return StatsStore(self.path, [("a", "x/s"), ("b", "things")], clock or self.clock,
                          defer_to_thread=in_thread)

    def run_for(self, store, seconds, value=lambda t: 1.0, name="a"):
        """Samples every 10 s for `seconds` from now (5 s into a step), the clock left at the last."""
        for i in range(int(seconds // STEP)):
            if i:
                self.clock.advance(STEP)
            store.add(name, self.clock.seconds(), value(self.clock.seconds()))


class StoreTests(StoreCase):

    def test_interface(self):
        store = self.store()
        verifyObject(IStats, store)
        self.assertEqual(store.series(), [
            {"name": "a", "unit": "x/s", "path": "/api/v1/stats/a"},
            {"name": "b", "unit": "things", "path": "/api/v1/stats/b"}])
        self.assertEqual(store.points("a"), {"name": "a", "unit": "x/s", "step_s": 10,
                                             "points": []})
        self.assertEqual([store.points("b", r)["step_s"] for r in ("hour", "day", "week")],
                         [10, 300, 1800])
        self.assertRaises(KeyError, store.points, "c", "hour")
        self.assertRaises(ValueError, store.points, "a", "month")

    def test_points_at_their_aligned_epoch_times(self):
        store = self.store()
        store.add("a", T0 + 7.5, 4)
        store.add("a", T0 + 12, 6)
        self.clock.advance(20)
        self.assertEqual(store.points("a")["points"], [[T0, 4.0], [T0 + 10, 6.0]])
        self.assertEqual(store.points("a", "day")["points"], [[T0, 5.0]])
        self.assertEqual(store.points("a", "week")["points"], [[T0, 5.0]])
        self.assertEqual(store.points("b")["points"], [])

    def test_consolidation_by_average(self):
        store = self.store()
        # 0, 1, ... 29 over the first 5 minutes, 100 over the next 25.
        self.run_for(store, 1800, value=lambda t: (t - T0) // 10 if t - T0 < 300 else 100)
        day = store.points("a", "day")["points"]
        self.assertEqual(day[0], [T0, 14.5])
        self.assertEqual(day[1:], [[T0 + 300 * i, 100.0] for i in range(1, 6)])
        week = store.points("a", "week")["points"]
        self.assertEqual(week, [[T0, (14.5 * 30 + 100 * 150) / 180]])
        hour = store.points("a")["points"]
        self.assertEqual(len(hour), 180)
        self.assertEqual(hour[:3], [[T0, 0.0], [T0 + 10, 1.0], [T0 + 20, 2.0]])

    def test_a_slot_still_filling_shows_the_average_so_far(self):
        store = self.store()
        self.run_for(store, 60, value=lambda t: 3 if t < T0 + 30 else 6)
        self.assertEqual(store.points("a", "day")["points"], [[T0, 4.5]])

    def test_bounded_whatever_the_uptime(self):
        store = self.store()
        self.run_for(store, 9 * 86400, value=lambda t: t % 7)
        sizes = [len(store.points("a", r)["points"]) for r in ("hour", "day", "week")]
        self.assertEqual(sizes, [360, 288, 336])
        size_then = len(store.snapshot())
        self.run_for(store, 5 * 86400, value=lambda t: t % 7)
        self.assertEqual([len(store.points("a", r)["points"]) for r in ("hour", "day", "week")],
                         sizes)
        self.assertLess(abs(len(store.snapshot()) - size_then), 1000)
        for r, (step, size) in RANGES.items():
            ring = store.rings["a"][r]
            self.assertEqual((len(ring.times), len(ring.sums), len(ring.counts)),
                             (size, size, size))
            points = store.points("a", r)["points"]
            self.assertTrue(all(t % step == 0 for t, _ in points))
            self.assertEqual(points[-1][0], ring.slot_of(self.clock.seconds()))
            self.assertEqual(points[0][0], points[-1][0] - (size - 1) * step)

    def test_old_points_leave_the_window(self):
        store = self.store()
        self.run_for(store, 600)
        self.clock.advance(3600 - 300)
        hour = store.points("a")["points"]
        # Only the samples of the last hour are shown.
        self.assertEqual(len(hour), 30)
        self.assertEqual(hour[0][0], T0 + 300)
        self.clock.advance(86400)
        self.assertEqual((store.points("a")["points"], store.points("a", "day")["points"]), ([], []))
        self.assertEqual(len(store.points("a", "week")["points"]), 1)

    def test_no_sample_no_point(self):
        store = self.store()
        for value in (None, float("nan"), float("inf")):
            store.add("a", T0, value)
        store.add("unknown", T0, 1)
        self.assertEqual(store.points("a")["points"], [])


class RestartTests(StoreCase):

    def test_survives_a_restart(self):
        store = self.store()
        self.run_for(store, 7200, value=lambda t: (t - T0) // 300)
        self.successResultOf(store.save())
        with open(self.path) as f:
            self.assertEqual(json.load(f)["format"], 1)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        before = {r: store.points("a", r) for r in RANGES}
        again = self.store()
        again.load()
        self.assertEqual({r: again.points("a", r) for r in RANGES}, before)
        # The day's slot still filling goes on averaging from where it was.
        self.clock.advance(STEP)
        for s in (store, again):
            s.add("a", self.clock.seconds(), 1000)
        self.assertEqual(again.points("a", "day"), store.points("a", "day"))

    def test_what_grew_too_old_while_down_is_dropped(self):
        store = self.store()
        self.run_for(store, 7200)
        self.successResultOf(store.save_now())
        self.clock.advance(2 * 86400)
        again = self.store()
        again.load()
        self.assertEqual(again.points("a")["points"], [])
        self.assertEqual(again.points("a", "day")["points"], [])
        self.assertEqual(len(again.points("a", "week")["points"]), 4)
        self.assertEqual([len(r.saved()) for r in again.rings["a"].values()], [0, 0, 4])

    def test_a_damaged_file_is_ignored(self):
        os.makedirs(os.path.dirname(self.path))
        for text in (b"{not json", b'{"format": 2, "series": {}}', b'{"format": 1, "series": []}',
                     b'{"format": 1, "series": {"a": {"hour": [[1, 2]]}}}', b"\xff"):
            with open(self.path, "wb") as f:
                f.write(text)
            store = self.store()
            store.load()
            self.assertEqual(store.points("a")["points"], [], text)

    def test_a_missing_file_is_an_empty_history(self):
        store = self.store()
        store.load()
        self.assertEqual(store.points("a", "week")["points"], [])

    def test_writes_wait_their_turn(self):
        held = []

        def hold(f, *args):
            d = defer.Deferred()
            held.append((d, f, args))
            return d
        store = StatsStore(self.path, [("a", "x")], self.clock, defer_to_thread=hold)
        store.add("a", T0, 1)
        first = store.save()
        store.add("a", T0 + 10, 2)
        last = store.save_now()
        self.assertEqual(len(held), 1)
        self.assertNoResult(last)
        d, f, args = held[0]
        f(*args)
        d.callback(None)
        self.successResultOf(first)
        self.successResultOf(last)
        self.clock.advance(20)
        again = self.store()
        again.load()
        self.assertEqual(again.points("a")["points"], [[T0, 1.0], [T0 + 10, 2.0]])


class FakeRegistry:
    """A registry whose families the test sets: {family name: (kind, {labels tuple: value})}."""

    def __init__(self):
        self.families = {}
        self.walks = 0

    def set(self, family, type_, value, **labels):
        self.families.setdefault(family, (type_, {}))[1][tuple(sorted(labels.items()))] = value

    def collect(self):
        self.walks += 1
        for name, (kind, values) in sorted(self.families.items()):
            keys = sorted({k for labels in values for k, _ in labels})
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = make(name, "test", labels=keys)
            for labels, value in values.items():
                family.add_metric([dict(labels)[k] for k in keys], value)
            yield family


class FakeSysfs:
    def __init__(self):
        self.counters = {}

    def __call__(self, interface, counter):
        return self.counters.get((interface, counter))


def office_registry():
    r = FakeRegistry()
    r.set("allworx_firewall_flows", "counter", 0, verdict="accept")
    r.set("allworx_firewall_flows", "counter", 0, verdict="drop")
    r.set("allworx_firewall_flows", "counter", 0, verdict="reject")
    r.set("allworx_firewall_queue_drops", "counter", 0, cause="queue_full")
    for kind in ("zone", "cache", "forwarded", "nxdomain"):
        r.set("allworx_dns_queries", "counter", 0, kind=kind)
    r.set("allworx_dhcp_leases", "gauge", 3, state="bound")
    r.set("allworx_dhcp_leases", "gauge", 1, state="offered")
    r.set("allworx_mail_accepted", "counter", 0, port="25")
    r.set("allworx_mail_delivered", "counter", 0, destination="remote")
    r.set("allworx_mail_delivered", "counter", 0, destination="local")
    r.set("allworx_mail_queue_length", "gauge", 2)
    r.set("allworx_sip_active_calls", "gauge", 1)
    r.set("allworx_sip_bindings", "gauge", 4)
    r.set("allworx_web_requests", "counter", 7, site="admin", status="2xx")
    return r


class SamplerTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0 + 5)
        self.config = parse_config(MINIMAL)
        self.registry = office_registry()
        self.sysfs = FakeSysfs()
        self.store = StatsStore("/nonexistent/stats.json", SERIES, self.clock)
        self.sampler = Sampler(self.store, lambda: self.config, self.registry, self.sysfs)

    def sample(self):
        values = self.sampler.values(self.clock.seconds())
        self.clock.advance(STEP)
        return values

    def test_every_series_of_the_spec(self):
        self.assertEqual([name for name, _ in SERIES], NAMES)
        self.assertEqual(sorted(self.sampler.values(T0)), sorted(NAMES))

    def test_gauges_at_once_rates_from_the_second_sample(self):
        first = self.sample()
        self.assertEqual({k: v for k, v in first.items() if v is not None},
                         {"dhcp.leases": 3, "mail.queue": 2, "sip.calls": 1, "sip.registered": 4})
        r = self.registry
        r.set("allworx_firewall_flows", "counter", 50, verdict="accept")
        r.set("allworx_firewall_flows", "counter", 20, verdict="drop")
        r.set("allworx_firewall_flows", "counter", 5, verdict="reject")
        r.set("allworx_firewall_queue_drops", "counter", 5, cause="queue_full")
        r.set("allworx_dns_queries", "counter", 100, kind="zone")
        r.set("allworx_dns_queries", "counter", 30, kind="cache")
        r.set("allworx_dns_queries", "counter", 10, kind="forwarded")
        r.set("allworx_dns_queries", "counter", 10, kind="nxdomain")
        r.set("allworx_mail_accepted", "counter", 1, port="25")
        r.set("allworx_mail_accepted", "counter", 1, port="587")     # a family's new label
        r.set("allworx_mail_delivered", "counter", 3, destination="local")
        r.set("allworx_mail_delivered", "counter", 1, destination="remote")
        second = self.sample()
        self.assertEqual(second["firewall.new_flows"], 7.5)
        self.assertEqual(second["firewall.drops"], 3.0)
        self.assertEqual(second["dns.queries"], 15.0)
        self.assertEqual(second["dns.cache_hit_ratio"], 0.75)
        self.assertEqual(second["mail.in"], 12.0)       # 2 in 10 s: 12 a minute
        self.assertEqual(second["mail.out"], 6.0)
        third = self.sample()
        self.assertEqual((third["firewall.new_flows"], third["dns.queries"], third["mail.in"]),
                         (0.0, 0.0, 0.0))
        self.assertIsNone(third["dns.cache_hit_ratio"], "no outside names asked: no ratio")

    def test_a_counter_that_went_down_was_reset(self):
        r = self.registry
        r.set("allworx_dns_queries", "counter", 500, kind="cache")
        r.set("allworx_dns_queries", "counter", 500, kind="forwarded")
        self.sample()
        r.set("allworx_dns_queries", "counter", 40, kind="cache")   # the DNS service came back
        r.set("allworx_dns_queries", "counter", 10, kind="forwarded")
        values = self.sample()
        self.assertEqual(values["dns.queries"], 5.0)
        self.assertEqual(values["dns.cache_hit_ratio"], 0.8)

    def test_a_service_not_running_gives_no_point(self):
        self.sample()
        del self.registry.families["allworx_dns_queries"]
        del self.registry.families["allworx_dhcp_leases"]
        values = self.sample()
        self.assertEqual((values["dns.queries"], values["dns.cache_hit_ratio"],
                          values["dhcp.leases"]), (None, None, None))
        self.assertEqual(values["firewall.new_flows"], 0.0)
        self.registry.set("allworx_dns_queries", "counter", 1000, kind="cache")
        self.assertIsNone(self.sample()["dns.queries"], "back: a rate from the next sample")
        self.registry.set("allworx_dns_queries", "counter", 1010, kind="cache")
        self.assertEqual(self.sample()["dns.queries"], 1.0)

    def test_a_labelled_family_without_labels_yet_counts_zero(self):
        r = FakeRegistry()
        r.families["allworx_mail_accepted"] = ("counter", {})
        self.sampler.registry = r
        self.sample()
        self.assertEqual(self.sample()["mail.in"], 0.0)
        self.assertIsNone(self.sample()["mail.out"])

    def test_interfaces_in_bits_per_second(self):
        s = self.sysfs.counters
        s.update({("wan0", "rx_bytes"): 1000, ("wan0", "tx_bytes"): 0,
                  ("lan0", "rx_bytes"): 10 ** 12, ("lan0", "tx_bytes"): 5})
        self.sample()
        s.update({("wan0", "rx_bytes"): 126000, ("wan0", "tx_bytes"): 1250,
                  ("lan0", "rx_bytes"): 10 ** 12 + 1250000})
        self.clock.advance(10)      # 20 s since the first
        values = self.sample()
        self.assertEqual((values["wan.rx_bps"], values["wan.tx_bps"], values["lan.rx_bps"]),
                         (50000.0, 500.0, 500000.0))
        self.assertEqual(values["lan.tx_bps"], 0.0)
        s[("wan0", "rx_bytes")] = 2500      # the interface was made again
        self.assertEqual(self.sample()["wan.rx_bps"], 2000.0)
        del s[("lan0", "tx_bytes")]         # gone
        self.assertIsNone(self.sample()["lan.tx_bps"])

    def test_interfaces_from_the_config(self):
        self.config = parse_config(MINIMAL.replace("interface = lan0", "interface = eth1")
                                   .replace("mode = static", "mode = disabled")
                                   .replace("mode = firewall-nat", "mode = lan-only"))
        asked = []
        self.sampler.read_counter = lambda i, c: asked.append((i, c)) or 1
        self.sample()
        self.assertEqual(sorted(asked), [("eth1", "rx_bytes"), ("eth1", "tx_bytes")])

    def test_one_registry_walk_per_sample(self):
        self.sampler.sample(self.clock.seconds())
        self.assertEqual(self.registry.walks, 1)

    def test_samples_land_in_the_store(self):
        self.sampler.sample(self.clock.seconds())
        self.assertEqual(self.store.points("dhcp.leases")["points"], [[T0, 3.0]])
        self.assertEqual(self.store.points("sip.registered")["unit"], "registrations")
        self.assertEqual(self.store.points("mail.in")["unit"], "messages/min")


class ServiceTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0 + 3)
        self.path = os.path.join(self.mktemp(), "stats.json")
        self.registry = office_registry()
        self.config = parse_config(MINIMAL)

    def service(self):
        store = StatsStore(self.path, SERIES, self.clock, defer_to_thread=in_thread)
        return StatsService(self.path, lambda: self.config, self.clock, self.registry,
                            FakeSysfs(), store=store)

    def test_samples_every_step_half_way_into_it(self):
        svc = self.service()
        svc.startService()
        self.addCleanup(svc.stopService)
        self.clock.advance(1)
        self.assertEqual(self.registry.walks, 0)
        self.clock.advance(1)
        self.assertEqual(self.registry.walks, 1)        # at T0 + 5
        for _ in range(30):
            self.clock.advance(STEP)
        self.assertEqual(self.registry.walks, 31)
        points = svc.store.points("sip.calls")["points"]
        self.assertEqual([t for t, _ in points], [T0 + 10 * i for i in range(31)])

    def test_saves_every_minute_and_at_stop_and_loads_at_start(self):
        svc = self.service()
        svc.startService()
        self.clock.pump([1] * 59)
        self.assertFalse(os.path.exists(self.path))
        self.clock.advance(1)
        self.assertTrue(os.path.exists(self.path))
        self.clock.pump([1] * 25)
        self.successResultOf(svc.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        again = self.service()
        self.clock.advance(600)
        again.startService()
        self.addCleanup(again.stopService)
        self.assertEqual(len(again.store.points("dhcp.leases")["points"]), 9)

    def test_a_failing_sample_is_logged_and_sampling_goes_on(self):
        svc = self.service()
        broken = [True]
        collect = self.registry.collect

        def maybe_broken():
            if broken[0]:
                raise RuntimeError("a collector broke")
            return collect()
        self.registry.collect = maybe_broken
        svc.startService()
        self.addCleanup(svc.stopService)
        self.clock.advance(2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        broken[0] = False
        self.clock.advance(STEP)
        self.assertEqual(len(svc.store.points("dhcp.leases")["points"]), 1)


class WiringTests(unittest.TestCase):

    def test_the_web_sees_the_servers_history(self):
        config = parse_config(MINIMAL).with_data_dir(self.mktemp())
        top = AllworxService(Office(config))
        self.assertIs(top.getServiceNamed("web").ctx.views.stats, top.stats.store)
        self.assertEqual(top.stats.store.path, os.path.join(config.system.data_dir, "stats.json"))
        self.assertEqual([s["name"] for s in top.stats.store.series()], NAMES)
        self.assertNotIn("stats", [s.name for s in top], "not one of the protocol children")

    def test_starts_and_stops_with_the_server(self):
        config = parse_config(MINIMAL).with_data_dir(self.mktemp())
        clock = MemoryReactorClock()
        clock.advance(T0 + 5)
        top = AllworxService(Office(config), children=[], reactor=clock)
        path = os.path.join(config.system.data_dir, "stats.json")
        store = StatsStore(path, SERIES, clock, defer_to_thread=in_thread)
        top.stats = StatsService(path, lambda: config, clock, office_registry(), FakeSysfs(),
                                 store=store)
        top.startService()
        clock.advance(0)
        self.assertTrue(top.stats.running)
        self.assertEqual(len(store.points("sip.registered")["points"]), 1)
        self.successResultOf(top.stopService())
        self.assertFalse(top.stats.running)
        self.assertEqual(clock.getDelayedCalls(), [])
        again = StatsStore(path, SERIES, clock)
        again.load()
        self.assertEqual(again.points("sip.registered")["points"], [[T0, 4.0]])
