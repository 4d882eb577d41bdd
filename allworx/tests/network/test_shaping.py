"""
Tests for allworx.routing.network.shaping: the HTB tree `[wan] upload_kbit`
asks for, the `IPRoute.tc` calls that build it, and the network service
applying, replacing and removing it live (a fake IPRoute records `tc`), and
the WAN's GSO size lowered while shaping and restored after.
"""

import errno

import attr
from pyroute2 import NetlinkError
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.routing.network.shaping import (
    Shaping, byte_keys, gso_size, plan_shaping, tc_calls)
from allworx.tests.confs import MINIMAL
from allworx.tests.network.test_service import FakeIPRoute, Harness, office_for

VPN = "\n[vpn]\nenabled = yes\naddress = 192.168.99.1/24\nport = 51820\n"


class TcIPRoute(FakeIPRoute):
    """A FakeIPRoute that records `tc` calls and knows which links have our root."""

    def __init__(self, *args, **kwargs):
        FakeIPRoute.__init__(self, *args, **kwargs)
        self.tc_calls = []
        self.roots = set()          # indexes with the htb root
        self.refuse_tc = None       # an errno for every add
        self.refuse_gso = None      # an errno for every gso_max_size set
        self.gso_calls = []         # (index, size) of each gso_max_size set
        for link in self.links.values():
            link["IFLA_GSO_MAX_SIZE"] = 65536

    def add_link(self, name, up=False):
        FakeIPRoute.add_link(self, name, up)
        self.links[name]["IFLA_GSO_MAX_SIZE"] = 65536

    def link(self, command, index, state=None, gso_max_size=None):
        if gso_max_size is None:
            return FakeIPRoute.link(self, command, index, state)
        self._check()
        self.gso_calls.append((index, gso_max_size))
        if self.refuse_gso:
            raise NetlinkError(self.refuse_gso, "refused")
        self._by_index(index)["IFLA_GSO_MAX_SIZE"] = gso_max_size

    def gso_of(self, name):
        return self.links[name]["IFLA_GSO_MAX_SIZE"]

    def tc(self, command, kind=None, index=None, handle=None, **kwargs):
        self.tc_calls.append(((command, kind, index, handle), kwargs))
        if command == "del":
            if index not in self.roots:
                raise NetlinkError(errno.EINVAL, "Invalid argument")
            self.roots.discard(index)
            return
        self._check()
        if self.refuse_tc:
            raise NetlinkError(self.refuse_tc, "refused")
        if command == "add" and kind == "htb":
            if index in self.roots:
                raise NetlinkError(errno.EEXIST, "File exists")
            self.roots.add(index)

    def taken(self):
        calls, self.tc_calls = self.tc_calls, []
        return calls


def config(extra="", **wan):
    c = parse_config(MINIMAL + extra)
    return attr.evolve(c, wan=attr.evolve(c.wan, **wan))


class PlanTests(unittest.TestCase):

    def test_off_by_default_and_without_a_wan(self):
        self.assertIsNone(plan_shaping(config(), "wan0"))
        self.assertIsNone(plan_shaping(config(upload_kbit=2000), None))

    def test_voice_gets_thirty_percent_and_at_least_256_kbit(self):
        self.assertEqual(plan_shaping(config(upload_kbit=2000), "wan0"),
                         Shaping("wan0", 2000, 600, 1400, None))
        self.assertEqual(plan_shaping(config(upload_kbit=500), "wan0"),
                         Shaping("wan0", 500, 256, 244, None))
        self.assertEqual(plan_shaping(config(upload_kbit=100000), "wan0"),
                         Shaping("wan0", 100000, 30000, 70000, None))

    def test_a_slow_line_is_all_voice_and_the_rest_still_has_a_rate(self):
        self.assertEqual(plan_shaping(config(upload_kbit=64), "wan0"),
                         Shaping("wan0", 64, 64, 8, None))

    def test_the_tunnel_port_with_the_vpn(self):
        self.assertEqual(plan_shaping(config(VPN, upload_kbit=2000), "wan0").tunnel_port, 51820)

    def test_the_key_is_read_and_checked(self):
        self.assertEqual(parse_config(MINIMAL.replace(
            "gateway = 203.0.113.1", "gateway = 203.0.113.1\nupload_kbit = 2000")).wan.upload_kbit,
            2000)
        for bad in ("63", "-1", "10000001", "fast"):
            with self.assertRaises(Exception) as caught:
                parse_config(MINIMAL.replace("gateway = 203.0.113.1",
                                             "gateway = 203.0.113.1\nupload_kbit = " + bad))
            self.assertIn("upload_kbit", str(caught.exception))


class CallsTests(unittest.TestCase):

    def test_byte_keys(self):
        self.assertEqual(byte_keys([(1, 0xB8, 0xFC), (20, 0xCA, 0xFF)]),
                         ["0xb8/0xfc+1", "0xca/0xff+20"])

    def test_the_tree_for_2_mbit(self):
        calls = tc_calls(Shaping("wan0", 2000, 600, 1400, None), 7)
        self.assertEqual(calls, [
            (("add", "htb", 7, 0x10000), {"default": 0x20}),
            (("add-class", "htb", 7, 0x10001),
             {"parent": 0x10000, "rate": "2000kbit", "ceil": "2000kbit"}),
            (("add-class", "htb", 7, 0x10010),
             {"parent": 0x10001, "rate": "600kbit", "ceil": "2000kbit", "prio": 0}),
            (("add-class", "htb", 7, 0x10020),
             {"parent": 0x10001, "rate": "1400kbit", "ceil": "2000kbit", "prio": 1}),
            (("add", "pfifo", 7, 0x100000), {"parent": 0x10010, "limit": 64}),
            (("add", "pfifo", 7, 0x200000), {"parent": 0x10020, "limit": 33}),
            (("add-filter", "u32", 7), {"parent": 0x10000, "prio": 1, "protocol": 0x0800,
                                        "target": 0x10010, "keys": ["0xb8/0xfc+1"]}),
            (("add-filter", "u32", 7), {"parent": 0x10000, "prio": 2, "protocol": 0x0800,
                                        "target": 0x10010, "keys": ["0x60/0xfc+1"]}),
        ])

    def test_small_tunnel_packets_are_voice(self):
        [*_, last] = tc_calls(Shaping("wan0", 2000, 600, 1400, 51820), 7)
        self.assertEqual(last, (("add-filter", "u32", 7), {
            "parent": 0x10000, "prio": 3, "protocol": 0x0800, "target": 0x10010,
            # IHL 5, total length < 512, UDP, source port 51820 (0xca6c)
            "keys": ["0x05/0x0f+0", "0x00/0xfe+2", "0x11/0xff+9", "0xca/0xff+20",
                     "0x6c/0xff+21"]}))

    def test_queues_follow_the_rate_within_bounds(self):
        def bulk_limit(kbit):
            return tc_calls(Shaping("w", kbit, 256, kbit, None), 1)[5][1]["limit"]
        self.assertEqual((bulk_limit(64), bulk_limit(2000), bulk_limit(10000000)), (16, 33, 1000))


class ServiceTests(unittest.TestCase):

    def start(self, **wan):
        ipr = TcIPRoute()
        h = Harness(self, office=office_for(self, wan=wan) if wan else None, ipr=ipr)
        h.service.startService()
        self.addCleanup(lambda: h.service.running and h.service.stopService())
        return h, ipr

    def test_nothing_without_upload_kbit(self):
        h, ipr = self.start()
        self.assertEqual(ipr.tc_calls, [])
        h.service.stopService()
        self.assertEqual(ipr.tc_calls, [])

    def test_applied_at_start_and_removed_at_stop(self):
        h, ipr = self.start(upload_kbit="2000")
        wan = ipr.links["wan0"]["index"]
        calls = ipr.taken()
        self.assertEqual(calls[0], (("del", "htb", wan, 0x10000), {}))   # a leftover, if any
        wanted = tc_calls(Shaping("wan0", 2000, 600, 1400, None), wan)
        self.assertEqual(calls[1:], [((args + (None,))[:4], kw) for args, kw in wanted])
        self.assertEqual(ipr.roots, {wan})
        self.assertEqual(h.status.state, "up")
        self.assertIn("wan0 shaped to 2000 kbit/s", h.status.detail)
        h.service.stopService()
        self.assertEqual(ipr.taken(), [(("del", "htb", wan, 0x10000), {})])
        self.assertEqual(ipr.roots, set())

    def test_a_change_replaces_the_tree_and_zero_removes_it(self):
        h, ipr = self.start(upload_kbit="2000")
        wan = ipr.links["wan0"]["index"]
        ipr.taken()
        h.office.update_settings("wan", {"upload_kbit": "1000"})
        calls = ipr.taken()
        self.assertEqual(calls[:2], [(("del", "htb", wan, 0x10000), {})] * 2)
        self.assertIn((("add-class", "htb", wan, 0x10010),
                       {"parent": 0x10001, "rate": "300kbit", "ceil": "1000kbit", "prio": 0}),
                      calls)
        h.office.update_settings("dns", {"port": "5353"})
        self.assertEqual(ipr.taken(), [])            # nothing else changed: left alone
        h.office.update_settings("wan", {"upload_kbit": "0"})
        self.assertEqual(ipr.taken(), [(("del", "htb", wan, 0x10000), {})])
        self.assertEqual(ipr.roots, set())
        self.assertNotIn("shaped", h.status.detail)

    def test_the_vpn_switched_on_adds_the_tunnel_filter(self):
        h, ipr = self.start(upload_kbit="2000")
        ipr.taken()
        h.office.update_settings("vpn", {"enabled": "yes", "address": "192.168.99.1/24"})
        filters = [kw for args, kw in ipr.taken() if args[0] == "add-filter"]
        self.assertEqual([f["prio"] for f in filters], [1, 2, 3])

    def test_the_wan_unused_removes_it(self):
        h, ipr = self.start(upload_kbit="2000")
        ipr.taken()
        h.office.update_sections({"security": {"mode": "lan-only"}, "wan": {"mode": "disabled"}})
        self.assertEqual([args[0] for args, kw in ipr.taken()], ["del"])
        self.assertEqual(ipr.roots, set())

    def test_a_missing_interface_is_shaped_when_it_comes(self):
        ipr = TcIPRoute(links=("lan0",))
        h = Harness(self, office=office_for(self, wan={"upload_kbit": "2000"}), ipr=ipr)
        h.service.startService()
        self.addCleanup(h.service.stopService)
        self.assertEqual(ipr.tc_calls, [])
        ipr.add_link("wan0")
        h.link_event("wan0")
        self.assertEqual(ipr.roots, {ipr.links["wan0"]["index"]})

    def test_refused_says_so_and_retries(self):
        ipr = TcIPRoute()
        ipr.refuse_tc = errno.EOPNOTSUPP
        h = Harness(self, office=office_for(self, wan={"upload_kbit": "2000"}), ipr=ipr)
        h.service.startService()
        self.addCleanup(h.service.stopService)
        self.assertEqual(h.status.state, "degraded")
        self.assertIn("cannot shape the uplink of wan0", h.status.detail)
        self.assertEqual(ipr.roots, set())          # the half-made tree was taken off
        ipr.refuse_tc = None
        h.clock.advance(10)
        self.assertEqual(h.status.state, "up")
        self.assertEqual(ipr.roots, {ipr.links["wan0"]["index"]})


class GsoTests(unittest.TestCase):
    """While shaping, the WAN's GSO packets are small enough not to hold the line for long."""

    def start(self, ipr=None, **wan):
        ipr = ipr or TcIPRoute()
        h = Harness(self, office=office_for(self, wan=wan), ipr=ipr)
        h.service.startService()
        self.addCleanup(lambda: h.service.running and h.service.stopService())
        return h, ipr

    def test_the_size_is_about_10_ms_of_the_line(self):
        self.assertEqual((gso_size(64), gso_size(2000), gso_size(10000), gso_size(40000)),
                         (3000, 3000, 12500, 50000))

    def test_lowered_while_shaping_and_restored_after(self):
        h, ipr = self.start(upload_kbit="20000")
        wan = ipr.links["wan0"]["index"]
        self.assertEqual(ipr.gso_calls, [(wan, 25000)])
        self.assertEqual(ipr.gso_of("lan0"), 65536)
        # A new rate: the original comes back, then the new size.
        h.office.update_settings("wan", {"upload_kbit": "2000"})
        self.assertEqual(ipr.gso_calls[1:], [(wan, 65536), (wan, 3000)])
        h.office.update_settings("dns", {"port": "5353"})
        self.assertEqual(len(ipr.gso_calls), 3)         # nothing else changed: left alone
        h.office.update_settings("wan", {"upload_kbit": "0"})
        self.assertEqual(ipr.gso_calls[3:], [(wan, 65536)])
        self.assertEqual(ipr.gso_of("wan0"), 65536)

    def test_restored_at_stop(self):
        h, ipr = self.start(upload_kbit="2000")
        h.service.stopService()
        self.assertEqual(ipr.gso_of("wan0"), 65536)
        self.assertEqual(len(ipr.gso_calls), 2)

    def test_never_raised(self):
        ipr = TcIPRoute()
        ipr.links["wan0"]["IFLA_GSO_MAX_SIZE"] = 16384
        h, ipr = self.start(ipr, upload_kbit="100000")
        self.assertEqual(ipr.gso_calls, [])
        h.service.stopService()
        self.assertEqual((ipr.gso_calls, ipr.gso_of("wan0")), ([], 16384))

    def test_refused_leaves_the_tree_and_restores_nothing(self):
        ipr = TcIPRoute()
        ipr.refuse_gso = errno.EOPNOTSUPP
        h, ipr = self.start(ipr, upload_kbit="2000")
        self.assertEqual(h.status.state, "up")
        self.assertEqual(ipr.roots, {ipr.links["wan0"]["index"]})
        h.service.stopService()
        self.assertEqual(len(ipr.gso_calls), 1)

    def test_an_interface_gone_is_not_restored(self):
        h, ipr = self.start(upload_kbit="2000")
        del ipr.links["wan0"]
        h.service.stopService()
        self.assertEqual(len(ipr.gso_calls), 2)         # tried; ENODEV said nothing
