"""Tests for allworx.routing.firewall.service: the service follows the office; the connection log."""

import ipaddress

import attr

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.interfaces import IConnectionLog
from allworx.office import LeaseEvent, Office
from allworx.routing.firewall import service as F
from allworx.routing.firewall import policy as P
from allworx.tests.firewall.test_policy import EXTRA, make_config


class FakeRunner:
    def __init__(self):
        self.applied = []
        self.removed = 0
        self.pending = None

    def apply(self, chains):
        self.applied.append(chains)
        if self.pending is not None:
            return self.pending
        return defer.succeed(None)

    def remove(self):
        self.removed += 1
        return defer.succeed(None)

    def apply_blocking(self, chains):
        self.blocking = chains


class FakeHook:
    instances = []

    def __init__(self, reactor, policy, record, after_batch=None):
        self.policy = policy
        self.record = record
        self.started = self.stopped = False
        self.queue_num = 24
        FakeHook.instances.append(self)

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True


def running_reactor():
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


class FakeLeaseTable:
    def __init__(self, leases):
        self.leases = leases

    def active_leases(self):
        return list(self.leases)


class ServiceTests(unittest.TestCase):

    def setUp(self):
        FakeHook.instances = []
        self.office = Office(make_config())
        self.runner = FakeRunner()
        self.service = F.FirewallService(self.office, reactor=running_reactor(),
                                         runner=self.runner, hook_factory=FakeHook)
        self.service.startService()

    def test_start_binds_applies_and_publishes(self):
        self.assertEqual(len(self.runner.applied), 1)
        self.assertTrue(FakeHook.instances[0].started)
        self.assertTrue(IConnectionLog.providedBy(self.service.connections))
        self.assertEqual(self.office.status["firewall"].state, "up")
        self.assertIn("NFQUEUE 24", self.office.status["firewall"].detail)

    def test_security_change_recompiles_and_router_unbinds(self):
        self.office.config = self.office.config  # no file: change through _apply
        self.office.path = None
        self.office.update_settings("security", {"mode": "router"})
        self.assertEqual(len(self.runner.applied), 2)
        self.assertNotIn("NFQUEUE", str(self.runner.applied[-1]))
        self.assertTrue(FakeHook.instances[0].stopped)
        self.assertIsNone(self.service.hook)

    def test_unrelated_change_does_not_reapply(self):
        self.office.path = None
        self.office.update_settings("dhcp", {"lease_time": "2h"})
        self.assertEqual(len(self.runner.applied), 1)

    def test_forward_follows_the_lease_of_its_host(self):
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:50",
                                    ipaddress.IPv4Address("192.168.2.44"), "printer"))
        self.assertEqual(len(self.runner.applied), 2)
        self.assertIn("--to-destination 192.168.2.44:80",
                      " ".join(self.runner.applied[-1][("nat", "AWX-PRE")]))
        self.assertEqual(FakeHook.instances[0].policy.forwards[0].target,
                         ipaddress.IPv4Address("192.168.2.44"))
        # The same lease renewed changes nothing; released: back to the reservation.
        self.office.emit(LeaseEvent("renewed", "02:00:00:00:00:50",
                                    ipaddress.IPv4Address("192.168.2.44"), "printer"))
        self.assertEqual(len(self.runner.applied), 2)
        self.office.emit(LeaseEvent("released", "02:00:00:00:00:50",
                                    ipaddress.IPv4Address("192.168.2.44"), "printer"))
        self.assertIn("--to-destination 192.168.2.150:80",
                      " ".join(self.runner.applied[-1][("nat", "AWX-PRE")]))

    def test_forward_placed_from_the_lease_table_at_start(self):
        """Started after DHCP restored its leases, without any event: no start order matters."""
        table = FakeLeaseTable([{"mac": "02:00:00:00:00:50", "address": "192.168.2.44",
                                 "hostname": "printer", "expires": 0, "state": "bound"}])
        runner = FakeRunner()
        later = F.FirewallService(Office(make_config()), leases=table, reactor=running_reactor(),
                                  runner=runner, hook_factory=FakeHook)
        later.startService()
        self.addCleanup(later.stopService)
        self.assertEqual(len(runner.applied), 1)
        self.assertIn("--to-destination 192.168.2.44:80",
                      " ".join(runner.applied[-1][("nat", "AWX-PRE")]))

    def forward_target(self):
        return FakeHook.instances[-1].policy.forwards[0].target

    def test_a_guest_sending_the_host_name_does_not_move_the_forward(self):
        # Issue 14, defect 2: only the [host]'s MAC steers its forwards.
        for kind in ("granted", "renewed"):
            for name in ("printer", "PRINTER", "printer.local"):
                self.office.emit(LeaseEvent(kind, "02:00:00:00:00:99",
                                            ipaddress.IPv4Address("192.168.2.66"), name))
        self.assertEqual(len(self.runner.applied), 1)
        self.assertEqual(self.forward_target(), ipaddress.IPv4Address("192.168.2.150"))
        # The host's own lease still moves it, and a guest's release does not undo that.
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:50",
                                    ipaddress.IPv4Address("192.168.2.44"), None))
        self.office.emit(LeaseEvent("released", "02:00:00:00:00:99",
                                    ipaddress.IPv4Address("192.168.2.66"), "printer"))
        self.assertEqual(self.forward_target(), ipaddress.IPv4Address("192.168.2.44"))

    def test_a_named_dynamic_client_steers_its_forward_by_mac(self):
        self.office.path = None
        self.office.put_record("host", "cam", {"mac": "02:00:00:00:00:51"})
        self.office.patch_record("forward", "camera", {"to": "cam:80"})
        self.assertIsNone(self.forward_target())
        self.assertEqual(FakeHook.instances[-1].policy.forwards[0].reason,
                         "forward camera: host cam has no address")
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:99",
                                    ipaddress.IPv4Address("192.168.2.66"), "cam"))
        self.assertIsNone(self.forward_target())
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:51",
                                    ipaddress.IPv4Address("192.168.2.7"), "esp-0a1b"))
        self.assertEqual(self.forward_target(), ipaddress.IPv4Address("192.168.2.7"))
        self.office.emit(LeaseEvent("expired", "02:00:00:00:00:51",
                                    ipaddress.IPv4Address("192.168.2.7"), "esp-0a1b"))
        self.assertIsNone(self.forward_target())

    def test_a_host_follows_its_mac_when_the_config_changes(self):
        # A lease held before its MAC became a [host]'s steers the forward at
        # once; the old MAC's lease no longer does.
        self.office.path = None
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:51",
                                    ipaddress.IPv4Address("192.168.2.7"), None))
        self.office.emit(LeaseEvent("granted", "02:00:00:00:00:50",
                                    ipaddress.IPv4Address("192.168.2.44"), None))
        self.assertEqual(self.forward_target(), ipaddress.IPv4Address("192.168.2.44"))
        self.office.patch_record("host", "printer", {"mac": "02:00:00:00:00:51"})
        self.assertEqual(self.forward_target(), ipaddress.IPv4Address("192.168.2.7"))

    def test_wan_address_change_reaches_the_hook(self):
        self.office.set_wan_address(ipaddress.IPv4Interface("203.0.113.30/24"), "dhcp")
        self.assertEqual(str(FakeHook.instances[0].policy.wan_ip), "203.0.113.30")

    def test_changes_during_an_apply_are_applied_after_it(self):
        self.runner.pending = defer.Deferred()
        self.office.path = None
        self.office.update_settings("security", {"mode": "router"})
        self.office.update_settings("security", {"mode": "firewall-nat-dmz"})
        self.assertEqual(len(self.runner.applied), 2)
        pending, self.runner.pending = self.runner.pending, None
        pending.callback(None)
        self.assertEqual(len(self.runner.applied), 3)
        self.assertIn("NFQUEUE", str(self.runner.applied[-1]))
        # DMZ differs from firewall-nat in the hook only: same kernel chains.
        self.assertEqual(self.runner.applied[-1], self.runner.applied[0])
        self.assertEqual(FakeHook.instances[-1].policy.mode, "firewall-nat-dmz")

    def test_stop_removes_the_ruleset_and_unbinds(self):
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertEqual(self.runner.removed, 1)
        self.assertTrue(FakeHook.instances[0].stopped)

    def test_failed_apply_is_reported(self):
        from allworx.routing.firewall.ruleset import RulesetError

        class Failing(FakeRunner):
            def apply(self, chains):
                return defer.fail(RulesetError("iptables-restore failed (exit 4): denied"))
        office = Office(make_config())
        service = F.FirewallService(office, reactor=running_reactor(), runner=Failing(),
                                    hook_factory=FakeHook)
        service.startService()
        self.assertEqual(office.status["firewall"].state, "down")
        self.assertIn("denied", office.status["firewall"].detail)

    def test_hook_that_cannot_bind_is_reported(self):
        class NoRoot(FakeHook):
            def start(self):
                raise OSError("Failed to create queue 24.")
        office = Office(make_config())
        service = F.FirewallService(office, reactor=running_reactor(), runner=FakeRunner(),
                                    hook_factory=NoRoot)
        service.startService()
        self.assertEqual(office.status["firewall"].state, "degraded")
        self.assertIn("CAP_NET_ADMIN", office.status["firewall"].detail)

    def test_before_the_reactor_runs_the_first_apply_blocks(self):
        reactor = MemoryReactorClock()
        reactor.running = False
        runner = FakeRunner()
        service = F.FirewallService(Office(make_config()), reactor=reactor, runner=runner,
                                    hook_factory=FakeHook)
        service.startService()
        self.assertIn("NFQUEUE", str(runner.blocking))
        self.assertEqual(runner.applied, [])   # not applied twice
        self.assertEqual(service.office.status["firewall"].state, "up")

    def test_a_failed_first_apply_is_reported_once(self):
        from allworx.routing.firewall.ruleset import RulesetError

        class Failing(FakeRunner):
            def apply_blocking(self, chains):
                raise RulesetError("iptables-save failed (exit 1): Permission denied")
        reactor = MemoryReactorClock()
        runner = Failing()
        office = Office(make_config())
        F.FirewallService(office, reactor=reactor, runner=runner,
                          hook_factory=FakeHook).startService()
        self.assertEqual(runner.applied, [])
        self.assertEqual(office.status["firewall"].state, "down")
        self.assertIn("Permission denied", office.status["firewall"].detail)

    def test_queue_drops_are_counted_and_logged(self):
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        path = self.mktemp()
        self.service.queue_stats_path = path
        head = "   24  31337     5 2   128     %d     %d   900  1\n"
        with open(path, "w") as f:
            f.write(head % (10, 1))
        before = F.QUEUE_DROPS.labels(cause="queue_full")._value.get()
        self.service.reactor.advance(F.QUEUE_CHECK_SECONDS)   # first reading: the baseline
        with open(path, "w") as f:
            f.write(head % (17, 1))
        self.service.reactor.advance(F.QUEUE_CHECK_SECONDS)
        self.assertEqual(F.QUEUE_DROPS.labels(cause="queue_full")._value.get() - before, 7)
        warnings = [e for e in events if "dropped before the hook" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["full"], warnings[0]["socket"], warnings[0]["waiting"]),
                         (7, 0, 5))

    def test_named_firewall(self):
        self.assertEqual(F.FirewallService(self.office).name, "firewall")


class ConnectionLogTests(unittest.TestCase):

    def test_bounded_newest_first_with_counts(self):
        log = F.ConnectionLog(size=3)
        verifyObject(IConnectionLog, log)
        before = F.FLOWS.labels(verdict="drop")._value.get()
        for i in range(5):
            flow = P.Flow(6, P.ip_int("198.51.100.10"), 1000 + i, P.ip_int("203.0.113.2"),
                          25, P.WAN, True)
            log.add(10.0 + i, flow, P.DROP if i % 2 else P.ACCEPT, "reason %d" % i)
        entries = log.recent()
        self.assertEqual([e["sport"] for e in entries], [1004, 1003, 1002])
        self.assertEqual(entries[0], {"time": 14.0, "proto": "tcp", "src": "198.51.100.10",
                                      "sport": 1004, "dst": "203.0.113.2", "dport": 25,
                                      "side": "wan", "action": "accept",
                                      "reason": "reason 4"})
        self.assertEqual(log.counts, {"accept": 3, "drop": 2, "reject": 0})
        self.assertEqual(len(log.recent(limit=1)), 1)
        log.sync_metrics()
        self.assertEqual(F.FLOWS.labels(verdict="drop")._value.get() - before, 2)


class LeaseEventCost(unittest.TestCase):
    """Issue 22: a lease event looks its MAC up, it does not scan every [host] (start-up with 5,000 leases)."""

    def test_lease_events_do_not_scan_the_hosts(self):
        hosts = "".join("\n[host h%04d]\nmac = 02:10:00:00:%02x:%02x\n" % (n, n // 256, n % 256)
                        for n in range(200))
        office = Office(make_config(extra=EXTRA + hosts))
        svc = F.FirewallService(office, reactor=running_reactor(), runner=FakeRunner(),
                                hook_factory=FakeHook)
        svc.startService()
        self.addCleanup(svc.stopService)
        scans = []
        real = type(office.config.hosts).items

        class Counting(dict):
            def items(self):
                scans.append(1)
                return real(self)
        office.config = attr.evolve(office.config, hosts=Counting(office.config.hosts))
        for n in range(50):
            office.emit(LeaseEvent("granted", "02:20:00:00:00:%02x" % n,
                                   ipaddress.IPv4Address("192.168.2.%d" % (100 + n)), None))
        self.assertLessEqual(len(scans), 1)
