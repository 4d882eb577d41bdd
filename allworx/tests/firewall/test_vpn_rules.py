"""
The firewall with the tunnel (SPEC 16): the WireGuard port open on the WAN
in every mode (DMZ without a dmz_open entry), LAN <-> tunnel forwarded
without NAT, the tunnel never to the WAN; and the tunnel's subnet and the
sites' networks counted as LAN by `Office.is_lan_peer`.
"""

from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.routing.firewall import policy as P
from allworx.routing.firewall import ruleset as R
from allworx.tests.confs import with_sections
from allworx.tests.core.test_config_vpn import VPN
from allworx.tests.firewall.test_policy import EXTRA, flow, make_config

MODES = ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")
TUNNEL_RULES = ["-i lan0 -o awg0 -j ACCEPT", "-i awg0 -o lan0 -j ACCEPT",
                "-i awg0 -o awg0 -j ACCEPT", "-i awg0 -o wan0 -j DROP"]


def config(mode="firewall-nat", vpn=VPN):
    return make_config(mode, EXTRA + "\n" + vpn)


def wireguard_packet(policy):
    return P.verdict(policy, flow(P.UDP, "198.51.100.2", 51820, "203.0.113.2", 51820, P.WAN))


class PolicyTests(unittest.TestCase):

    def test_wireguard_port_open_in_every_mode_with_a_wan(self):
        for mode in ("router", "firewall-nat", "firewall-nat-dmz"):
            action, reason = wireguard_packet(P.FlowPolicy.build(config(mode)))
            self.assertEqual(action, P.ACCEPT, (mode, reason))

    def test_closed_without_the_vpn(self):
        self.assertEqual(wireguard_packet(P.FlowPolicy.build(make_config("firewall-nat-dmz")))[0],
                         P.DROP)
        self.assertNotIn(("udp", 51820), P.public_ports(make_config()))

    def test_the_port_follows_the_config(self):
        policy = P.FlowPolicy.build(config(vpn=VPN.replace("enabled = yes",
                                                           "enabled = yes\nport = 51999")))
        self.assertEqual(P.public_ports(make_config()).get(("udp", 51999)), None)
        self.assertEqual(policy.public[("udp", 51999)], P.VPN_PORT_NAME)
        self.assertEqual(policy.vpn_interface, "awg0")

    def test_the_wan_does_not_reach_a_site(self):
        policy = P.FlowPolicy.build(config())
        action, _ = P.verdict(policy, flow(P.TCP, "198.51.100.9", 4000, "192.168.3.5", 22, P.WAN))
        self.assertEqual(action, P.DROP)


class RulesetTests(unittest.TestCase):

    def chains(self, mode):
        return R.compile_chains(P.FlowPolicy.build(config(mode)))

    def test_firewall_modes_forward_lan_and_tunnel_before_the_drop(self):
        for mode in ("firewall-nat", "firewall-nat-dmz"):
            forward = self.chains(mode)[("filter", "AWX-FORWARD")]
            at = forward.index(TUNNEL_RULES[0])
            self.assertEqual(forward[at:at + 4], TUNNEL_RULES, mode)
            self.assertEqual(forward[-1], "-j DROP")
            # Established first, the tunnel's rules before the LAN -> WAN queue.
            self.assertLess(at, forward.index(
                "-i lan0 -o wan0 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 24"))

    def test_no_nat_for_the_tunnel(self):
        for mode in MODES:
            post = self.chains(mode)[("nat", "AWX-POST")]
            self.assertTrue(all("awg0" not in rule for rule in post), (mode, post))
            self.assertTrue(all("-o wan0" in rule for rule in post), (mode, post))

    def test_router_mode_keeps_the_tunnel_off_the_wan(self):
        self.assertEqual(self.chains("router")[("filter", "AWX-FORWARD")], TUNNEL_RULES)

    def test_lan_only_forwards_only_the_tunnel(self):
        c = self.chains("lan-only")
        self.assertEqual(c[("filter", "AWX-FORWARD")], TUNNEL_RULES + [
            "-i lan0 -j REJECT --reject-with icmp-admin-prohibited", "-j DROP"])
        inp = c[("filter", "AWX-INPUT")]
        self.assertEqual(inp[-2:], ["-i wan0 -p udp --dport 51820 -j ACCEPT", "-i wan0 -j DROP"])

    def test_forwarding_on_with_the_tunnel(self):
        lan_only = config("lan-only")
        self.assertTrue(lan_only.forwarding)
        self.assertFalse(make_config("lan-only").forwarding)

    def test_nothing_for_the_tunnel_when_off(self):
        for mode in MODES:
            text = R.describe(R.compile_chains(P.FlowPolicy.build(make_config(mode))))
            self.assertNotIn("awg0", text)
            self.assertNotIn("51820", text)


class LanPeerTests(unittest.TestCase):

    def test_tunnel_and_sites_count_as_lan(self):
        office = Office(parse_config(with_sections(VPN)))
        for host in ("192.168.99.10", "192.168.99.2", "192.168.3.40", "192.168.2.7"):
            self.assertTrue(office.is_lan_peer(host), host)
        for host in ("192.168.4.1", "203.0.113.9", "198.51.100.2"):
            self.assertFalse(office.is_lan_peer(host), host)

    def test_not_when_the_vpn_is_off(self):
        office = Office(parse_config(with_sections(
            VPN.replace("enabled = yes", "enabled = no").split("[site")[0])))
        self.assertFalse(office.is_lan_peer("192.168.99.10"))
