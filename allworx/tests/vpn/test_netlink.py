"""
Tests for the kernel path (allworx.routing.vpn.netlink): the calls of
pyroute2's WireGuard.set for a config and a change, encoded into the
generic netlink messages the kernel module would get (this machine has no
module: a fake socket takes them), and the interface's links and routes
through a fake IPRoute.
"""

import errno
import ipaddress

from pyroute2 import NetlinkError
from pyroute2.netlink.generic.wireguard import (
    WG_CMD_SET_DEVICE, WGPEER_F_REMOVE_ME, WGPEER_F_REPLACE_ALLOWEDIPS, WGPEER_F_UPDATE_ONLY,
    AsyncWireGuard, wgmsg)
from twisted.trial import unittest

from allworx.routing.vpn import netlink as N
from allworx.routing.vpn import peers as P
from allworx.tests.core.test_config_vpn import KEY1, KEY2, VPN
from allworx.tests.vpn.test_peers import PHONE_KEY, SERVER_KEY, tunnel


def encode(ifname, private_key=None, listen_port=None, peer=None):
    """The message WireGuard.set would send for these arguments, encoded and read back."""
    msg = wgmsg()
    msg["cmd"] = WG_CMD_SET_DEVICE
    msg["version"] = 1
    msg["attrs"].append(["WGDEVICE_A_IFNAME", ifname])
    if private_key is not None:
        msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", private_key])
    if listen_port is not None:
        msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", listen_port])
    if peer is not None:
        # pyroute2's own builder of the peer attributes (it needs no socket).
        AsyncWireGuard._wg_set_peer(AsyncWireGuard.__new__(AsyncWireGuard), msg, peer)
    msg.encode()
    back = wgmsg(msg.data)
    back.decode()
    return back


class FakeWireGuard:
    def __init__(self):
        self.sent = []
        self.closed = False

    def set(self, ifname, **kwargs):
        self.sent.append(encode(ifname, **kwargs))

    def close(self):
        self.closed = True


def peer_of(msg):
    [peer] = msg.get_attr("WGDEVICE_A_PEERS")
    return peer


class CallsTests(unittest.TestCase):

    def test_first_configuration(self):
        calls = N.netlink_calls(P.changes(None, tunnel()))
        self.assertEqual(calls[0], {"private_key": SERVER_KEY, "listen_port": 51820})
        self.assertEqual(calls[1], {"peer": {
            "public_key": KEY1, "endpoint_addr": "198.51.100.2", "endpoint_port": 51820,
            "persistent_keepalive": 25, "replace_allowed_ips": True,
            "allowed_ips": ["192.168.3.0/24", "192.168.99.2/32"]}})
        self.assertEqual([c["peer"]["public_key"] for c in calls[2:]], [KEY2, PHONE_KEY])

    def test_messages_sent_to_the_kernel(self):
        wg = FakeWireGuard()
        engine = N.KernelWireGuard("awg0", wireguard_factory=lambda: wg)
        self.successResultOf(engine.apply(P.changes(None, tunnel())))
        device, site = wg.sent[:2]
        self.assertEqual(device["cmd"], WG_CMD_SET_DEVICE)
        self.assertEqual(device.get_attr("WGDEVICE_A_IFNAME"), "awg0")
        self.assertEqual(device.get_attr("WGDEVICE_A_PRIVATE_KEY"), SERVER_KEY.encode())
        self.assertEqual(device.get_attr("WGDEVICE_A_LISTEN_PORT"), 51820)
        peer = peer_of(site)
        self.assertEqual(peer.get_attr("WGPEER_A_PUBLIC_KEY"), KEY1.encode())
        self.assertEqual(peer.get_attr("WGPEER_A_FLAGS"), WGPEER_F_REPLACE_ALLOWEDIPS)
        endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
        self.assertEqual((endpoint["addr"], endpoint["port"]), ("198.51.100.2", 51820))
        self.assertEqual(peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"), 25)
        self.assertEqual([a["addr"] for a in peer.get_attr("WGPEER_A_ALLOWEDIPS")],
                         ["192.168.3.0/24", "192.168.99.2/32"])
        engine.close()
        self.assertTrue(wg.closed)

    def test_messages_for_a_change(self):
        wg = FakeWireGuard()
        engine = N.KernelWireGuard("awg0", wireguard_factory=lambda: wg)
        without_laptop = (VPN.split("[device alice-laptop]")[0] + "[device alice-phone]"
                          + VPN.split("[device alice-phone]")[1])
        new = tunnel(without_laptop.replace("networks = 192.168.3.0/24",
                                            "networks = 192.168.3.0/24 10.3.0.0/16"))
        self.successResultOf(engine.apply(P.changes(tunnel(), new)))
        removed, updated = wg.sent
        self.assertEqual(peer_of(removed).get_attr("WGPEER_A_PUBLIC_KEY"), KEY2.encode())
        self.assertEqual(peer_of(removed).get_attr("WGPEER_A_FLAGS"), WGPEER_F_REMOVE_ME)
        peer = peer_of(updated)
        self.assertEqual(peer.get_attr("WGPEER_A_FLAGS"),
                         WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS)
        self.assertIsNone(peer.get_attr("WGPEER_A_ENDPOINT"))
        self.assertEqual([a["addr"] for a in peer.get_attr("WGPEER_A_ALLOWEDIPS")],
                         ["10.3.0.0/16", "192.168.3.0/24", "192.168.99.2/32"])
        self.assertIsNone(updated.get_attr("WGDEVICE_A_PRIVATE_KEY"))

    def test_nothing_changed_sends_nothing(self):
        self.assertEqual(N.netlink_calls(P.changes(tunnel(), tunnel())), [])

    def test_a_refusal_fails_the_deferred(self):
        class Refusing(FakeWireGuard):
            def set(self, ifname, **kwargs):
                raise NetlinkError(errno.ENODEV)
        engine = N.KernelWireGuard("awg0", wireguard_factory=Refusing)
        self.failureResultOf(engine.apply(P.changes(None, tunnel())), NetlinkError)


class FakeIPRoute:
    def __init__(self, links=None, refuse_wireguard=None):
        self.links = dict(links or {})
        self.refuse = refuse_wireguard
        self.calls = []

    def link_lookup(self, ifname):
        return [self.links[ifname]] if ifname in self.links else []

    def link(self, command, **kw):
        self.calls.append(("link", command, kw))
        if command == "add":
            if self.refuse:
                raise NetlinkError(self.refuse)
            self.links[kw["ifname"]] = 7
        elif command == "del":
            self.links = {k: v for k, v in self.links.items() if v != kw["index"]}

    def addr(self, command, **kw):
        self.calls.append(("addr", command, kw))

    def route(self, command, **kw):
        self.calls.append(("route", command, kw))

    def close(self):
        self.calls.append(("close",))


class LinksTests(unittest.TestCase):

    def test_no_module(self):
        links = N.TunnelLinks(FakeIPRoute(refuse_wireguard=errno.EOPNOTSUPP))
        self.assertRaises(N.NoKernelModule, links.create_wireguard, "awg0")

    def test_other_errors_pass(self):
        links = N.TunnelLinks(FakeIPRoute(refuse_wireguard=errno.EPERM))
        self.assertRaises(NetlinkError, links.create_wireguard, "awg0")

    def test_address_up_and_routes(self):
        ipr = FakeIPRoute({"awg0": 7})
        links = N.TunnelLinks(ipr)
        links.set_address("awg0", ipaddress.IPv4Interface("192.168.99.1/24"))
        links.add_route("awg0", ipaddress.IPv4Network("192.168.3.0/24"))
        links.del_route("awg0", ipaddress.IPv4Network("192.168.3.0/24"))
        self.assertEqual(ipr.calls, [
            ("addr", "replace", {"index": 7, "address": "192.168.99.1", "prefixlen": 24}),
            ("link", "set", {"index": 7, "state": "up"}),
            ("route", "replace", {"dst": "192.168.3.0/24", "oif": 7}),
            ("route", "del", {"dst": "192.168.3.0/24", "oif": 7}),
        ])

    def test_address_moved(self):
        ipr = FakeIPRoute({"awg0": 7})
        N.TunnelLinks(ipr).set_address("awg0", ipaddress.IPv4Interface("192.168.98.1/24"),
                                       ipaddress.IPv4Interface("192.168.99.1/24"))
        self.assertEqual(ipr.calls[0], ("addr", "del", {"index": 7, "address": "192.168.99.1",
                                                        "prefixlen": 24}))

    def test_missing_interface(self):
        links = N.TunnelLinks(FakeIPRoute())
        self.assertRaises(OSError, links.set_address, "awg0",
                          ipaddress.IPv4Interface("192.168.99.1/24"))
