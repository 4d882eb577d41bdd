"""The WAN's lease and gateway health for the dashboard: the probe on a task.Clock with a fake ping."""

import ipaddress

from twisted.internet import defer, task
from twisted.trial import unittest

from allworx.interfaces import IWanStatus
from allworx.routing.network.wanhealth import (
    GatewayProbe, WanStatus, parse_ping, ping_argv)
from allworx.routing.wanclient.packets import Lease
from allworx.tests.network.test_service import FakeLease, Harness, office_for

REPLY = (b"PING 203.0.113.1 (203.0.113.1) 56(84) bytes of data.\n"
         b"64 bytes from 203.0.113.1: icmp_seq=1 ttl=64 time=0.842 ms\n\n"
         b"--- 203.0.113.1 ping statistics ---\n1 packets transmitted, 1 received, 0% packet loss\n")
NO_REPLY = b"PING 203.0.113.1 (203.0.113.1) 56(84) bytes of data.\n\n1 packets transmitted, 0 received\n"


class FakePing:
    """Records each argv; the test answers each run."""

    def __init__(self):
        self.runs = []

    def __call__(self, argv):
        d = defer.Deferred()
        self.runs.append((argv, d))
        return d

    def answer(self, out, code, err=b""):
        self.runs[-1][1].callback((out, err, code))


class ParseTests(unittest.TestCase):
    def test_argv_has_no_shell_and_ends_options(self):
        self.assertEqual(ping_argv(ipaddress.IPv4Address("203.0.113.1")),
                         ["ping", "-c", "1", "-W", "1", "-n", "--", "203.0.113.1"])

    def test_parse(self):
        self.assertEqual(parse_ping(REPLY, 0), 0.842)
        self.assertIsNone(parse_ping(NO_REPLY, 1))
        self.assertIsNone(parse_ping(b"time=oops", 0))
        self.assertEqual(parse_ping(b"64 bytes: time<1 ms", 0), 1.0)


class ProbeTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.ping = FakePing()
        self.probe = GatewayProbe(self.clock, run=self.ping, keep=4)

    def test_nothing_without_a_gateway(self):
        self.probe.start()
        self.clock.advance(30)
        self.assertEqual(self.ping.runs, [])
        self.assertEqual(self.probe.health()["gateway"], None)
        self.assertIsNone(self.probe.health()["loss"])
        self.probe.stop()

    def test_every_ten_seconds_latency_and_loss(self):
        self.probe.gateway_is(ipaddress.IPv4Address("203.0.113.1"))
        self.probe.start()
        self.assertEqual(len(self.ping.runs), 1)      # at once
        self.ping.answer(REPLY, 0)
        self.clock.advance(10)
        self.ping.answer(NO_REPLY, 1)
        self.clock.advance(10)
        self.ping.answer(REPLY.replace(b"0.842", b"1.158"), 0)
        h = self.probe.health()
        self.assertEqual((h["gateway"], h["probes"], h["answered"]), ("203.0.113.1", 3, 2))
        self.assertEqual(h["loss"], round(1 / 3.0, 3))
        self.assertEqual(h["latency_ms"], 1.0)
        self.assertEqual(h["last_ms"], 1.158)
        self.assertEqual(h["last_at"], 20)
        self.assertIsNone(h["error"])
        for _ in range(3):
            self.clock.advance(10)
            self.ping.answer(NO_REPLY, 1)
        self.assertEqual(self.probe.health()["probes"], 4)       # the last `keep` only
        self.assertEqual(self.probe.health()["answered"], 1)
        self.probe.stop()
        self.clock.advance(60)
        self.assertEqual(len(self.ping.runs), 6)

    def test_one_probe_at_a_time(self):
        self.probe.gateway_is("203.0.113.1")
        self.probe.start()
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(len(self.ping.runs), 1)
        self.ping.answer(REPLY, 0)
        self.clock.advance(10)
        self.assertEqual(len(self.ping.runs), 2)
        self.probe.stop()

    def test_another_gateway_starts_afresh(self):
        self.probe.gateway_is("203.0.113.1")
        self.probe.start()
        self.ping.answer(REPLY, 0)
        self.clock.advance(10)
        self.probe.gateway_is("198.51.100.1")
        self.ping.answer(REPLY, 0)              # the old gateway's answer: not counted
        self.assertEqual(self.probe.health()["probes"], 0)
        self.clock.advance(10)
        self.assertEqual(self.ping.runs[-1][0][-1], "198.51.100.1")
        self.probe.stop()

    def test_no_ping_program_is_said_once(self):
        def missing(argv):
            raise OSError("no such file: ping")
        probe = GatewayProbe(self.clock, run=missing)
        probe.gateway_is("203.0.113.1")
        probe.start()
        self.clock.advance(10)
        self.assertEqual(probe.health()["error"], "no such file: ping")
        self.assertEqual(probe.health()["probes"], 0)
        probe.stop()

    def test_ping_failing_otherwise(self):
        self.probe.gateway_is("203.0.113.1")
        self.probe.start()
        self.ping.answer(b"", 2, b"ping: socket: Operation not permitted\n")
        self.assertEqual(self.probe.health()["error"], "ping: socket: Operation not permitted")
        self.probe.stop()

    def test_a_reactor_that_cannot_spawn_probes_nothing(self):
        probe = GatewayProbe(self.clock)
        probe.gateway_is("203.0.113.1")
        probe.start()
        self.clock.advance(30)
        self.assertEqual(probe.health()["probes"], 0)
        probe.stop()


class WanStatusTests(unittest.TestCase):
    def test_lease_facts(self):
        lease = Lease(address=ipaddress.IPv4Interface("203.0.113.23/24"),
                      router=ipaddress.IPv4Address("203.0.113.1"),
                      server=ipaddress.IPv4Address("203.0.113.1"),
                      lease_time=3600, t1=1800, t2=3150, obtained=1000.0)
        held = [lease]
        wan = WanStatus(lambda: held[0], GatewayProbe(task.Clock()))
        self.assertTrue(IWanStatus.providedBy(wan))
        self.assertEqual(wan.lease(), {"address": "203.0.113.23/24", "router": "203.0.113.1",
                                       "server": "203.0.113.1", "obtained": 1000.0,
                                       "renews": 2800.0, "expires": 4600.0})
        held[0] = None
        self.assertIsNone(wan.lease())

    def test_the_network_service_names_the_gateway(self):
        h = Harness(self)
        h.service.startService()
        self.assertEqual(h.service.wan.gateway_health()["gateway"], "203.0.113.1")
        self.assertIsNone(h.service.wan.lease())      # a static WAN
        h.service.stopService()

    def test_the_lease_and_its_router_in_dhcp_mode(self):
        office = office_for(self, wan={"mode": "dhcp", "address": "", "gateway": ""})
        h = Harness(self, office=office)
        h.service.startService()
        self.assertIsNone(h.service.wan.gateway_health()["gateway"])
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.9"))
        self.assertEqual(h.service.wan.gateway_health()["gateway"], "203.0.113.9")
        h.service.dhcp_lost("lease expired")
        self.assertIsNone(h.service.wan.gateway_health()["gateway"])
        h.service.stopService()
