"""
Tests for allworx.routing.network.service and allworx.routing.network.links: the plan a
config asks for, and applying and restoring it through a fake IPRoute that
behaves like the kernel in the ways that matter (duplicates, connected routes,
permissions).
"""

import errno
import ipaddress
import os

import attr
from pyroute2 import NetlinkError
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office, WanAddressChanged
from allworx.routing.network.links import (
    Address, DefaultRoute, LinkUp, Netlink, NetworkLedger, Sysctl, Sysctls)
from allworx.routing.network.linkevents import LinkEvent, parse_link_events
from allworx.routing.network.service import (
    APPLIED_FILE, NetworkService, plan_network)
from allworx.atomicfile import JsonStateFile
from allworx.tests.confs import MINIMAL

IP = ipaddress.ip_address
IFACE = ipaddress.IPv4Interface


class FakeIPRoute:
    """
    Enough of pyroute2's IPRoute for the network service: links with flags
    and MACs, IPv4 addresses, main-table default routes. Errors are
    NetlinkErrors with the kernel's codes.
    """

    def __init__(self, links=("lan0", "wan0"), deny=False):
        self.links = {}
        for name in links:
            self.add_link(name)
        self.addrs = set()       # (index, address, prefixlen)
        self.routes = []         # dicts: gateway, oif, priority
        self.deny = deny
        self.refuse_add = None   # an errno for every address added
        self.closed = False
        self.calls = []

    def add_link(self, name, up=False):
        index = max([l["index"] for l in self.links.values()] + [1]) + 1
        self.links[name] = {"index": index, "IFLA_IFNAME": name,
                            "flags": 0x10000 | (1 if up else 0),
                            "IFLA_ADDRESS": "02:00:00:00:00:%02x" % index}

    def _by_index(self, index):
        for link in self.links.values():
            if link["index"] == index:
                return link
        raise NetlinkError(errno.ENODEV, "No such device")

    def _check(self):
        if self.deny:
            raise NetlinkError(errno.EPERM, "Operation not permitted")

    def close(self):
        self.closed = True

    def link_lookup(self, ifname):
        return [self.links[ifname]["index"]] if ifname in self.links else []

    def get_links(self, index):
        return (dict(self._by_index(index)),)

    def link(self, command, index, state):
        self._check()
        self.calls.append(("link", index, state))
        link = self._by_index(index)
        link["flags"] = (link["flags"] | 1) if state == "up" else (link["flags"] & ~1)

    def addr(self, command, index, address, prefixlen):
        self._check()
        self._by_index(index)
        if command == "add" and self.refuse_add:
            raise NetlinkError(self.refuse_add, os.strerror(self.refuse_add))
        key = (index, address, prefixlen)
        if command == "add":
            if key in self.addrs:
                raise NetlinkError(errno.EEXIST, "File exists")
            self.addrs.add(key)
        else:
            if key not in self.addrs:
                raise NetlinkError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            self.addrs.remove(key)
            net = ipaddress.IPv4Network("%s/%d" % (address, prefixlen), strict=False)
            # The kernel drops routes whose gateway is no longer reachable.
            self.routes = [r for r in self.routes
                           if not (r["oif"] == index and IP(r["gateway"]) in net)]

    def get_addr(self, index, family):
        return [{"IFA_ADDRESS": a, "prefixlen": p} for i, a, p in sorted(self.addrs) if i == index]

    def _connected(self, gateway, oif):
        return any(i == oif and IP(gateway) in ipaddress.IPv4Network("%s/%d" % (a, p), strict=False)
                   for i, a, p in self.addrs)

    def route(self, command, dst, gateway=None, oif=None, priority=None, flags=0):
        self._check()
        assert dst == "0.0.0.0/0"
        if command == "add":
            if not flags & 4 and not self._connected(gateway, oif):
                raise NetlinkError(errno.ENETUNREACH, "Network is unreachable")
            if any((r["priority"] or 0) == (priority or 0) for r in self.routes):
                raise NetlinkError(errno.EEXIST, "File exists")
            self.routes.append({"gateway": gateway, "oif": oif, "priority": priority})
        else:
            for r in self.routes:
                if ((gateway is None or r["gateway"] == gateway)
                        and (oif is None or r["oif"] == oif)):
                    self.routes.remove(r)
                    return
            raise NetlinkError(errno.ESRCH, "No such process")

    def get_routes(self, family, dst_len, table):
        return [{"dst_len": 0, "RTA_GATEWAY": r["gateway"], "RTA_OIF": r["oif"],
                 "RTA_PRIORITY": r["priority"]} for r in self.routes]

    # What a test asserts on.

    def addresses_of(self, name):
        index = self.links[name]["index"]
        return sorted("%s/%d" % (a, p) for i, a, p in self.addrs if i == index)

    def default_routes(self):
        names = {l["index"]: n for n, l in self.links.items()}
        return sorted((r["gateway"], names[r["oif"]]) for r in self.routes)

    def is_up(self, name):
        return bool(self.links[name]["flags"] & 1)


def fake_proc(testcase, links=("lan0", "wan0"), forward="0", rp_all="0"):
    """A /proc/sys tree in a temp dir with the values the service touches."""
    root = testcase.mktemp()
    values = {"net/ipv4/ip_forward": forward, "net/ipv4/conf/all/rp_filter": rp_all}
    for name in links:
        values["net/ipv4/conf/%s/rp_filter" % name] = "0"
    for path, value in values.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(value + "\n")
    return Sysctls(root)


@attr.s
class FakeLease:
    address = attr.ib(converter=IFACE)
    router = attr.ib(converter=lambda v: IP(v) if v else None)


class FakeDhcpClient:
    """Records how the service drives the client; the test plays the server."""

    started = []

    def __init__(self, ifname, mac, listener, reactor, lease_path, hostname, avoid):
        self.ifname, self.mac, self.listener = ifname, mac, listener
        self.lease_path, self.hostname, self.avoid = lease_path, hostname, avoid
        self.state = "STOPPED"
        self.stopped = False
        self.link_returns = 0
        FakeDhcpClient.started.append(self)

    def start(self):
        self.state = "SELECTING"

    def stop(self, release=False):
        self.state = "STOPPED"
        self.stopped = True
        self.released = release

    def link_returned(self):
        self.link_returns += 1


def synchronous_state_file(path, what):
    """A JsonStateFile that writes at once, not in a thread."""
    return JsonStateFile(path, what, defer_to_thread=lambda f, *a: defer.maybeDeferred(f, *a))


class FakeLinkMonitor:
    """Stands in for the rtnetlink listener; the test sends the events."""

    def __init__(self, reactor, callback):
        self.callback = callback
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False


def office_for(testcase, text=MINIMAL, **changes):
    config = parse_config(text).with_data_dir(testcase.mktemp())
    office = Office(config)
    for section, values in changes.items():
        office.update_settings(section, values)
    return office


class Harness:
    """A NetworkService on a fake kernel, fake /proc/sys and a task.Clock."""

    def __init__(self, testcase, office=None, ipr=None, sysctls=None):
        self.office = office or office_for(testcase)
        self.ipr = ipr or FakeIPRoute()
        self.sysctls = sysctls or fake_proc(testcase)
        self.clock = task.Clock()
        self.events = []
        self.office.subscribe(WanAddressChanged, self.events.append)
        FakeDhcpClient.started = []
        self.links = []
        self.service = self.new_service()

    def new_service(self):
        """A NetworkService on this harness's fakes (a second one: a restart)."""
        return NetworkService(
            self.office, netlink_factory=lambda: Netlink(self.ipr), sysctls=self.sysctls,
            dhcp_client_factory=FakeDhcpClient, reactor=self.clock,
            link_monitor_factory=self.link_monitor, state_file_factory=synchronous_state_file)

    def link_monitor(self, reactor, callback):
        monitor = FakeLinkMonitor(reactor, callback)
        self.links.append(monitor)
        return monitor

    def link_event(self, ifname, carrier=True, gone=False):
        self.links[-1].callback(LinkEvent(ifname, self.ipr.links.get(ifname, {}).get("index", 0),
                                          True, carrier, gone))

    def sysctl(self, path):
        return self.sysctls.read(path)

    @property
    def status(self):
        return self.office.status["network"]


class LogCapture:
    def __init__(self, testcase):
        self.lines = []
        globalLogPublisher.addObserver(self.observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event):
        from twisted.logger import formatEvent
        self.lines.append(formatEvent(event))


class PlanTests(unittest.TestCase):
    """plan_network: what each mode asks of the kernel."""

    def config(self, **sections):
        office = office_for(self, **sections)
        return office.config

    def test_static_firewall(self):
        plan = plan_network(self.config())
        self.assertEqual(plan.wan_use, "static")
        self.assertIn(Address("lan0", IFACE("192.168.2.254/24")), plan.changes)
        self.assertIn(Address("wan0", IFACE("203.0.113.2/24")), plan.changes)
        self.assertIn(DefaultRoute(IP("203.0.113.1"), "wan0"), plan.changes)
        self.assertIn(Sysctl("net/ipv4/ip_forward", "1", "lan0"), plan.changes)
        self.assertIn(Sysctl("net/ipv4/conf/wan0/rp_filter", "1", "wan0"), plan.changes)
        self.assertIn(LinkUp("wan0"), plan.changes)

    def test_lan_only_routes_via_lan_gateway_and_leaves_wan(self):
        plan = plan_network(self.config(security={"mode": "lan-only"},
                                        lan={"gateway": "192.168.2.1"}))
        self.assertEqual(plan.wan_use, "unused")
        self.assertIn(DefaultRoute(IP("192.168.2.1"), "lan0"), plan.changes)
        self.assertIn(Sysctl("net/ipv4/ip_forward", "0", "lan0"), plan.changes)
        self.assertFalse([c for c in plan.changes if "wan0" in c.interfaces])

    def test_dhcp_takes_address_and_router_from_the_lease_only(self):
        config = self.config(wan={"mode": "dhcp", "address": "", "gateway": ""})
        plan = plan_network(config)
        self.assertEqual(plan.wan_use, "dhcp")
        self.assertFalse([c for c in plan.changes if isinstance(c, (Address, DefaultRoute))
                          and c.ifname == "wan0"])
        plan = plan_network(config, FakeLease("203.0.113.23/24", "203.0.113.1"))
        self.assertIn(Address("wan0", IFACE("203.0.113.23/24")), plan.changes)
        self.assertIn(DefaultRoute(IP("203.0.113.1"), "wan0"), plan.changes)
        self.assertEqual(plan.wan_address, IFACE("203.0.113.23/24"))

    def test_router_mode_forwards(self):
        plan = plan_network(self.config(security={"mode": "router"}))
        self.assertIn(Sysctl("net/ipv4/ip_forward", "1", "lan0"), plan.changes)

    def test_loose_rp_filter_all_is_lowered(self):
        plan = plan_network(self.config(), rp_all_loose=True)
        self.assertIn(Sysctl("net/ipv4/conf/all/rp_filter", "0", "lan0"), plan.changes)


class ApplyTests(unittest.TestCase):
    """The service applies the static settings and restores on stop."""

    def test_named_network(self):
        self.assertEqual(NetworkService(office_for(self)).name, "network")

    def test_static_applied(self):
        logs = LogCapture(self)
        h = Harness(self)
        h.service.startService()
        self.assertEqual(h.ipr.addresses_of("lan0"), ["192.168.2.254/24"])
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.2/24"])
        self.assertEqual(h.ipr.default_routes(), [("203.0.113.1", "wan0")])
        self.assertTrue(h.ipr.is_up("lan0") and h.ipr.is_up("wan0"))
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "1")
        self.assertEqual(h.sysctl("net/ipv4/conf/lan0/rp_filter"), "1")
        self.assertEqual(h.sysctl("net/ipv4/conf/wan0/rp_filter"), "1")
        self.assertEqual(h.status.state, "up")
        self.assertIn("wan0 203.0.113.2/24 (static)", h.status.detail)
        self.assertIn("forwarding on", h.status.detail)
        self.assertEqual(h.office.wan_address, IFACE("203.0.113.2/24"))
        self.assertIn("network: lan0 192.168.2.254/24 applied", logs.lines)
        self.assertIn("network: default route via 203.0.113.1 on wan0 applied", logs.lines)
        h.service.stopService()

    def test_stop_restores_exactly(self):
        ipr = FakeIPRoute()
        ipr.links["lan0"]["flags"] = 1
        # Already there before us: an address on the LAN and a default route.
        ipr.addrs.add((ipr.links["lan0"]["index"], "192.168.2.254", 24))
        ipr.addrs.add((ipr.links["lan0"]["index"], "192.168.2.9", 24))
        ipr.routes.append({"gateway": "192.168.2.1", "oif": ipr.links["lan0"]["index"],
                           "priority": None})
        h = Harness(self, ipr=ipr, sysctls=fake_proc(self, rp_all="2"))
        h.service.startService()
        self.assertEqual(ipr.default_routes(), [("203.0.113.1", "wan0")])
        self.assertEqual(h.sysctl("net/ipv4/conf/all/rp_filter"), "0")
        h.service.stopService()
        self.assertEqual(ipr.addresses_of("lan0"), ["192.168.2.254/24", "192.168.2.9/24"])
        self.assertEqual(ipr.addresses_of("wan0"), [])
        self.assertEqual(ipr.default_routes(), [("192.168.2.1", "lan0")])
        self.assertTrue(ipr.is_up("lan0"))
        self.assertFalse(ipr.is_up("wan0"))
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "0")
        self.assertEqual(h.sysctl("net/ipv4/conf/all/rp_filter"), "2")
        self.assertEqual(h.sysctl("net/ipv4/conf/wan0/rp_filter"), "0")
        self.assertTrue(ipr.closed)
        self.assertEqual(h.status.state, "down")

    def test_missing_lan_interface_reported_rest_applied_then_retried(self):
        ipr = FakeIPRoute(links=("wan0",))
        h = Harness(self, ipr=ipr, sysctls=fake_proc(self, links=("wan0",)))
        h.service.startService()
        self.assertEqual(h.status.state, "down")
        self.assertEqual(h.status.detail, "interface lan0 does not exist")
        self.assertEqual(ipr.addresses_of("wan0"), ["203.0.113.2/24"])
        self.assertEqual(ipr.default_routes(), [("203.0.113.1", "wan0")])
        # Forwarding is for the box the config describes: untouched here.
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "0")
        ipr.add_link("lan0")
        os.makedirs(os.path.join(h.sysctls.root, "net/ipv4/conf/lan0"))
        with open(os.path.join(h.sysctls.root, "net/ipv4/conf/lan0/rp_filter"), "w") as f:
            f.write("0\n")
        h.clock.advance(10)
        self.assertEqual(ipr.addresses_of("lan0"), ["192.168.2.254/24"])
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "1")
        self.assertEqual(h.status.state, "up")
        self.assertFalse(h.clock.getDelayedCalls())
        h.service.stopService()

    def test_interface_appearing_is_applied_at_once(self):
        ipr = FakeIPRoute(links=("wan0",))
        h = Harness(self, ipr=ipr, sysctls=fake_proc(self))
        h.service.startService()
        self.assertTrue(h.links[-1].running)
        ipr.add_link("lan0")
        h.link_event("lan0")
        self.assertEqual(ipr.addresses_of("lan0"), ["192.168.2.254/24"])
        self.assertEqual(h.status.state, "up")
        h.service.stopService()
        self.assertFalse(h.links[-1].running)

    def test_missing_wan_interface_degrades(self):
        ipr = FakeIPRoute(links=("lan0",))
        h = Harness(self, ipr=ipr, sysctls=fake_proc(self, links=("lan0",)))
        h.service.startService()
        self.assertEqual(h.status.state, "degraded")
        self.assertIn("interface wan0 does not exist", h.status.detail)
        self.assertEqual(ipr.addresses_of("lan0"), ["192.168.2.254/24"])
        self.assertIsNone(h.office.wan_address)
        h.service.stopService()

    def test_no_permission_said_plainly(self):
        h = Harness(self, ipr=FakeIPRoute(deny=True))
        h.service.startService()
        self.assertEqual(h.status.state, "down")
        self.assertTrue(h.status.detail.startswith(
            "no permission to change the network (needs root or CAP_NET_ADMIN): "
            "could not bring lan0 up, bring wan0 up, add 192.168.2.254/24 to lan0"),
            h.status.detail)
        h.service.stopService()

    def test_sysctl_permission(self):
        def read_only_open(path, mode="r", *args, **kw):
            if "w" in mode:
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return open(path, mode, *args, **kw)
        sysctls = fake_proc(self)
        sysctls._open = read_only_open
        h = Harness(self, sysctls=sysctls)
        h.service.startService()
        self.assertEqual(h.status.state, "down")
        self.assertIn("no permission to change the network (needs root or CAP_NET_ADMIN): "
                      "could not write /proc/sys/net/ipv4/conf/lan0/rp_filter",
                      h.status.detail)
        self.assertIn("write /proc/sys/net/ipv4/ip_forward", h.status.detail)
        h.service.stopService()


class CrashTests(unittest.TestCase):
    """What a killed run left in place is undone by the next run's stop."""

    def test_restart_after_kill_restores_everything(self):
        h = Harness(self, sysctls=fake_proc(self, forward="0"))
        h.service.startService()
        path = os.path.join(h.office.config.system.data_dir, APPLIED_FILE)
        self.assertTrue(os.path.exists(path))
        # kill -9: no stopService. The next run finds everything in place...
        second = h.new_service()
        second.startService()
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.2/24"])
        second.stopService()
        # ...and its stop removes it all, with forwarding back to its first value.
        self.assertEqual(h.ipr.addresses_of("lan0"), [])
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertEqual(h.ipr.default_routes(), [])
        self.assertFalse(h.ipr.is_up("wan0"))
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "0")
        self.assertEqual(h.sysctl("net/ipv4/conf/lan0/rp_filter"), "0")
        self.assertFalse(os.path.exists(path))

    def test_what_someone_else_changed_since_is_left_alone(self):
        h = Harness(self)
        h.service.startService()
        # After the crash an operator set the WAN address by hand.
        index = h.ipr.links["wan0"]["index"]
        h.ipr.addrs.discard((index, "203.0.113.2", 24))
        h.ipr.routes = []
        second = h.new_service()
        second.startService()
        second.stopService()
        self.assertEqual(h.ipr.addresses_of("wan0"), [])   # ours again: removed
        h.ipr.addrs.add((index, "203.0.113.77", 24))
        third = h.new_service()
        third.startService()
        third.stopService()
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.77/24"])

    def test_unreadable_record_is_ignored(self):
        h = Harness(self)
        path = os.path.join(h.office.config.system.data_dir, APPLIED_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for text in ("{broken", '{"ours": [{"change": {"kind": "Nope"}}]}', "[1, 2]"):
            with open(path, "w") as f:
                f.write(text)
            service = h.new_service()
            service.startService()
            service.stopService()
            self.assertEqual(h.ipr.addresses_of("lan0"), [])

    def test_snapshot_roundtrip(self):
        ipr = FakeIPRoute()
        ipr.links["lan0"]["flags"] |= 1                            # up before us
        ipr.addrs.add((ipr.links["wan0"]["index"], "203.0.113.2", 24))   # there before us
        first = NetworkLedger(Netlink(ipr), fake_proc(self))
        changes = [LinkUp("lan0"), Address("lan0", "192.168.2.254/24"),
                   Address("wan0", "203.0.113.2/24"), DefaultRoute("203.0.113.1", "wan0"),
                   Sysctl("net/ipv4/ip_forward", "1", "lan0")]
        first.converge(changes)
        snapshot = first.snapshot()
        self.assertEqual({c["change"]["kind"] for c in snapshot["ours"]},
                         {"Address", "DefaultRoute", "Sysctl"})   # not the LinkUp
        second = NetworkLedger(Netlink(ipr), first.sysctls)
        self.assertEqual(set(second.adopt(snapshot)), {
            Address("lan0", "192.168.2.254/24"), DefaultRoute("203.0.113.1", "wan0"),
            Sysctl("net/ipv4/ip_forward", "1", "lan0")})
        second.restore()
        self.assertEqual(ipr.addresses_of("lan0"), [])
        self.assertEqual(ipr.addresses_of("wan0"), ["203.0.113.2/24"])
        self.assertEqual(first.sysctls.read("net/ipv4/ip_forward"), "0")


class LiveChangeTests(unittest.TestCase):
    """ConfigChanged on lan/wan/security moves only what differs."""

    def test_wan_address_change(self):
        h = Harness(self)
        h.service.startService()
        h.office.update_settings("wan", {"address": "203.0.113.9/24"})
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.9/24"])
        self.assertEqual(h.ipr.default_routes(), [("203.0.113.1", "wan0")])
        self.assertEqual(h.office.wan_address, IFACE("203.0.113.9/24"))
        h.service.stopService()
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertEqual(h.ipr.default_routes(), [])

    def test_to_lan_only(self):
        h = Harness(self)
        h.service.startService()
        h.office.update_settings("lan", {"gateway": "192.168.2.1"})
        h.office.update_settings("security", {"mode": "lan-only"})
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertEqual(h.ipr.default_routes(), [("192.168.2.1", "lan0")])
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "0")
        self.assertIsNone(h.office.wan_address)
        self.assertIn("WAN unused", h.status.detail)
        h.office.update_settings("security", {"mode": "firewall-nat"})
        self.assertEqual(h.ipr.default_routes(), [("203.0.113.1", "wan0")])
        self.assertEqual(h.sysctl("net/ipv4/ip_forward"), "1")
        h.service.stopService()
        self.assertEqual(h.ipr.default_routes(), [])

    def test_other_sections_ignored(self):
        h = Harness(self)
        h.service.startService()
        calls = len(h.ipr.calls)
        h.office.update_settings("dhcp", {"range": "1-50"})
        self.assertEqual(len(h.ipr.calls), calls)
        h.service.stopService()


class DhcpModeTests(unittest.TestCase):
    """In dhcp mode the client's lease drives the WAN address and route."""

    def harness(self):
        office = office_for(self, wan={"mode": "dhcp", "address": "", "gateway": ""})
        h = Harness(self, office=office)
        h.service.startService()
        return h

    def test_client_started_on_wan(self):
        h = self.harness()
        [client] = FakeDhcpClient.started
        self.assertEqual(client.ifname, "wan0")
        self.assertEqual(client.mac, h.ipr.links["wan0"]["IFLA_ADDRESS"])
        self.assertEqual(client.lease_path,
                         os.path.join(h.office.config.system.data_dir, "wan-dhcp-lease.json"))
        self.assertEqual(client.avoid, (ipaddress.IPv4Network("192.168.2.0/24"),))
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertIn("wan0 dhcp SELECTING", h.status.detail)
        h.service.stopService()
        self.assertTrue(client.stopped)
        self.assertFalse(client.released)    # a restart asks for it again

    def test_bound_then_lost(self):
        h = self.harness()
        [client] = FakeDhcpClient.started
        client.state = "BOUND"
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.1"))
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.23/24"])
        self.assertEqual(h.ipr.default_routes(), [("203.0.113.1", "wan0")])
        self.assertEqual(h.office.wan_address, IFACE("203.0.113.23/24"))
        self.assertEqual(h.events[-1].source, "dhcp")
        self.assertEqual(h.events[-1].gateway, IP("203.0.113.1"))
        self.assertIn("wan0 203.0.113.23/24 (dhcp)", h.status.detail)
        # A renewal with the same address changes nothing.
        calls = len(h.ipr.calls)
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.1"), renewed=True)
        self.assertEqual(len(h.ipr.calls), calls)
        client.state = "INIT"
        h.service.dhcp_lost("lease expired")
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertEqual(h.ipr.default_routes(), [])
        self.assertIsNone(h.office.wan_address)
        self.assertEqual(h.events[-1].source, "lost")
        h.service.stopService()

    def test_carrier_back_makes_the_client_check(self):
        h = self.harness()
        [client] = FakeDhcpClient.started
        h.link_event("wan0", carrier=True)
        h.link_event("lan0", carrier=False)
        h.link_event("lan0", carrier=True)
        self.assertEqual(client.link_returns, 0)
        h.link_event("wan0", carrier=False)
        h.link_event("wan0", carrier=True)
        self.assertEqual(client.link_returns, 1)
        h.service.stopService()

    def test_cable_plugged_in_after_start(self):
        office = office_for(self, wan={"mode": "dhcp", "address": "", "gateway": ""})
        ipr = FakeIPRoute()
        ipr.links["wan0"]["flags"] &= ~0x10000
        h = Harness(self, office=office, ipr=ipr)
        h.service.startService()
        [client] = FakeDhcpClient.started
        h.link_event("wan0", carrier=True)
        self.assertEqual(client.link_returns, 1)
        h.service.stopService()

    def test_slash_32_lease_with_router_outside(self):
        h = self.harness()
        h.service.dhcp_bound(FakeLease("203.0.113.23/32", "198.51.100.1"))
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.23/32"])
        self.assertEqual(h.ipr.default_routes(), [("198.51.100.1", "wan0")])
        self.assertIn("on-link", h.service.ledger.in_force[-1].describe())
        h.service.stopService()
        self.assertEqual(h.ipr.default_routes(), [])

    def test_new_address_on_rebind_replaces_old(self):
        h = self.harness()
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.1"))
        h.service.dhcp_bound(FakeLease("203.0.113.24/24", "203.0.113.1"))
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.24/24"])
        self.assertEqual(h.ipr.default_routes(), [("203.0.113.1", "wan0")])
        h.service.stopService()
        self.assertEqual(h.ipr.addresses_of("wan0"), [])

    def test_switch_to_static_stops_client(self):
        h = self.harness()
        [client] = FakeDhcpClient.started
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.1"))
        h.office.update_settings("wan", {"mode": "static", "address": "203.0.113.2/24",
                                         "gateway": "203.0.113.1"})
        self.assertTrue(client.stopped)
        self.assertTrue(client.released)
        self.assertEqual(h.ipr.addresses_of("wan0"), ["203.0.113.2/24"])
        h.service.stopService()

    def test_switch_from_static_clears_the_wan_address(self):
        h = Harness(self)
        h.service.startService()
        self.assertEqual(h.office.wan_address, IFACE("203.0.113.2/24"))
        h.office.update_settings("wan", {"mode": "dhcp", "address": "", "gateway": ""})
        self.assertEqual(h.ipr.addresses_of("wan0"), [])
        self.assertIsNone(h.office.wan_address)
        self.assertEqual(h.events[-1].source, "dhcp")
        [client] = FakeDhcpClient.started
        h.service.dhcp_bound(FakeLease("203.0.113.23/24", "203.0.113.1"))
        self.assertEqual(h.office.wan_address, IFACE("203.0.113.23/24"))
        h.service.stopService()

    def test_client_that_cannot_start(self):
        office = office_for(self, wan={"mode": "dhcp", "address": "", "gateway": ""})
        h = Harness(self, office=office)

        def refuse(**kw):
            raise PermissionError(errno.EPERM, "cannot open a packet socket (needs root or CAP_NET_RAW)")
        h.service._dhcp_client_factory = refuse
        h.service.startService()
        self.assertEqual(h.status.state, "degraded")
        self.assertIn("wan0 dhcp:", h.status.detail)
        self.assertIn("CAP_NET_RAW", h.status.detail)
        h.service.stopService()


class LedgerTests(unittest.TestCase):
    """The ledger on its own: idempotence and what it leaves alone."""

    def test_converge_twice_changes_nothing(self):
        ipr = FakeIPRoute()
        ledger = NetworkLedger(Netlink(ipr), fake_proc(self))
        wanted = [LinkUp("lan0"), Address("lan0", "192.168.2.254/24")]
        applied, removed, problems = ledger.converge(wanted)
        self.assertEqual((len(applied), removed, problems), (2, [], []))
        calls = len(ipr.calls)
        self.assertEqual(ledger.converge(wanted), ([], [], []))
        self.assertEqual(len(ipr.calls), calls)

    def test_refused_address_is_a_problem_with_the_reason(self):
        ipr = FakeIPRoute()
        ipr.refuse_add = errno.EADDRNOTAVAIL
        ledger = NetworkLedger(Netlink(ipr), fake_proc(self))
        applied, removed, problems = ledger.converge([Address("lan0", "192.168.2.254/24")])
        self.assertEqual(problems, ["cannot add 192.168.2.254/24 to lan0: "
                                    "cannot assign requested address"])
        self.assertEqual(ledger.in_force, [])

    def test_unreachable_gateway_is_a_problem(self):
        ledger = NetworkLedger(Netlink(FakeIPRoute()), fake_proc(self))
        applied, removed, problems = ledger.converge([DefaultRoute("198.51.100.1", "wan0")])
        self.assertEqual(problems, ["cannot add the default route via 198.51.100.1 on wan0: "
                                    "network is unreachable"])
        self.assertEqual(ledger.in_force, [])


class LinkEventParsingTests(unittest.TestCase):
    """rtnetlink link messages as the kernel sends them."""

    def message(self, kind, index, flags, name):
        import struct
        attr_name = name.encode() + b"\0"
        rta = struct.pack("=HH", 4 + len(attr_name), 3) + attr_name
        rta += b"\0" * (-len(rta) % 4)
        mtu = struct.pack("=HHI", 8, 4, 1500)
        body = struct.pack("=BxHiII", 0, 1, index, flags, 0xFFFFFFFF) + mtu + rta
        return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body

    def test_new_and_deleted_links(self):
        data = (self.message(16, 3, 0x11043, "wan0") + self.message(16, 2, 0x1003, "lan0")
                + self.message(17, 4, 0, "eth9"))
        self.assertEqual(parse_link_events(data), [
            LinkEvent("wan0", 3, True, True), LinkEvent("lan0", 2, True, False),
            LinkEvent("eth9", 4, False, False, gone=True)])

    def test_truncated_and_foreign_messages_skipped(self):
        good = self.message(16, 3, 0x11043, "wan0")
        self.assertEqual(parse_link_events(good[:-3]), [])
        route = good[:4] + b"\x18\x00" + good[6:]   # RTM_NEWROUTE: not a link
        self.assertEqual(parse_link_events(route), [])
        self.assertEqual(parse_link_events(b""), [])
