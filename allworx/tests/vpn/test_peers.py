"""
Tests for the tunnel as data (allworx.routing.vpn.peers): the peers a
config asks for, the routes, and the changes between two configs.
"""

import ipaddress

from twisted.trial import unittest

from allworx import config as C
from allworx.routing.vpn import peers as P
from allworx.tests.confs import with_sections
from allworx.tests.core.test_config_vpn import KEY1, KEY2, KEY3, VPN

SERVER_KEY = "EBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEFA="
PHONE_KEY = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="


def net(text):
    return ipaddress.IPv4Network(text)


def tunnel(text=VPN, endpoints=None):
    config = C.parse_config(with_sections(text))
    if endpoints is None:
        endpoints = {"branch": ("198.51.100.2", 51820)}
    return P.tunnel_for(config, SERVER_KEY, {"alice-phone": PHONE_KEY}, endpoints)


class TunnelTests(unittest.TestCase):

    def test_peers_of_the_config(self):
        t = tunnel()
        self.assertEqual((t.private_key, t.listen_port), (SERVER_KEY, 51820))
        self.assertEqual(t.peers, (
            P.Peer("site branch", KEY1, (net("192.168.3.0/24"), net("192.168.99.2/32")),
                   ("198.51.100.2", 51820), 25),
            P.Peer("device alice-laptop", KEY2, (net("192.168.99.10/32"),)),
            P.Peer("device alice-phone", PHONE_KEY, (net("192.168.99.11/32"),)),
        ))

    def test_a_site_not_dialled_has_no_endpoint_nor_keepalive(self):
        t = tunnel(VPN.replace("endpoint = 198.51.100.2:51820\n", ""), endpoints={})
        self.assertEqual((t.peers[0].endpoint, t.peers[0].keepalive), (None, 0))

    def test_a_device_without_a_key_yet_is_left_out(self):
        config = C.parse_config(with_sections(VPN))
        t = P.tunnel_for(config, SERVER_KEY, {}, {})
        self.assertEqual([p.name for p in t.peers], ["site branch", "device alice-laptop"])

    def test_routes(self):
        config = C.parse_config(with_sections(VPN))
        self.assertEqual(P.routes_for(config), (net("192.168.3.0/24"), net("192.168.99.10/32"),
                                                net("192.168.99.11/32")))

    def test_site_endpoint_default_port(self):
        config = C.parse_config(with_sections(VPN.replace(":51820", "")))
        self.assertEqual(P.site_endpoint(config.sites["branch"]), ("198.51.100.2", 51820))


class ChangesTests(unittest.TestCase):

    def test_from_nothing(self):
        t = tunnel()
        c = P.changes(None, t)
        self.assertEqual((c.private_key, c.listen_port), (SERVER_KEY, 51820))
        self.assertEqual([ch.kind for ch in c.peers], ["add"] * 3)

    def test_nothing_changed(self):
        self.assertFalse(P.changes(tunnel(), tunnel()))

    def test_added_changed_removed(self):
        old = tunnel()
        text = VPN.replace("networks = 192.168.3.0/24", "networks = 192.168.3.0/24 10.3.0.0/16")
        text = text.replace("[device alice-laptop]\nuser = alice\naddress = 192.168.99.10\n"
                            "public_key = %s\n" % KEY2, "")
        text += "\n[device bob-laptop]\nuser = bob\naddress = 192.168.99.12\npublic_key = %s\n" % KEY3
        c = P.changes(old, tunnel(text))
        self.assertEqual((c.private_key, c.listen_port), (None, None))
        self.assertEqual([(ch.kind, (ch.new or ch.old).name) for ch in c.peers],
                         [("remove", "device alice-laptop"), ("update", "site branch"),
                          ("add", "device bob-laptop")])

    def test_port_change(self):
        c = P.changes(tunnel(), tunnel(VPN.replace("enabled = yes", "enabled = yes\nport = 51999")))
        self.assertEqual((c.listen_port, c.peers), (51999, ()))
