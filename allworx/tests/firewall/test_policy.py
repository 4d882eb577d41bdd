"""Tests for allworx.routing.firewall.policy: the verdict of every mode over a table of flows."""

import ipaddress

import attr
from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.routing.firewall import policy as P
from allworx.tests.confs import MINIMAL, with_sections

EXTRA = """
[security]
mode = {mode}
dmz_open = 25/tcp 80/tcp 5060/udp 8080/tcp

[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150

[forward camera]
proto = tcp
wan_port = 8081
to = printer:80

[forward game]
proto = udp
wan_port = 27015
to = 192.168.2.20
"""


def make_config(mode="firewall-nat", extra=EXTRA):
    base = MINIMAL.replace("[security]\nmode = firewall-nat\n", "")
    return parse_config(with_sections(extra.format(mode=mode), base))


def ip(text):
    return P.ip_int(text)


def flow(proto, src, sport, dst, dport, side, syn=True):
    p = {"tcp": P.TCP, "udp": P.UDP, "icmp": P.ICMP}.get(proto, proto)
    return P.Flow(p, ip(src), sport, ip(dst), dport, side, syn)


WAN_IP = "203.0.113.2"
PC = "192.168.2.10"
NET = "198.51.100.10"

# (description, flow, {mode: action}) -- "same" for all modes given one action.
TABLE = [
    ("LAN PC to the internet", flow("tcp", PC, 40000, NET, 80, P.LAN),
     {"lan-only": P.REJECT, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.ACCEPT}),
    ("LAN PC to the server", flow("udp", PC, 5353, "192.168.2.254", 53, P.LAN),
     {m: P.ACCEPT for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("spoofed LAN source", flow("tcp", "10.9.9.9", 1000, NET, 80, P.LAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to a LAN PC", flow("tcp", NET, 40000, PC, 22, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.DROP,
      "firewall-nat-dmz": P.DROP}),
    ("internet to the admin pages", flow("tcp", NET, 40000, WAN_IP, 8080, P.WAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to LDAP", flow("tcp", NET, 40000, WAN_IP, 389, P.WAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to NTP", flow("udp", NET, 123, WAN_IP, 123, P.WAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to the DHCP server", flow("udp", NET, 68, WAN_IP, 67, P.WAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to POP3 (not on the WAN)", flow("tcp", NET, 40000, WAN_IP, 110, P.WAN),
     {m: P.DROP for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("internet to SMTP", flow("tcp", NET, 40000, WAN_IP, 25, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.ACCEPT}),
    ("internet to the zone's DNS", flow("udp", NET, 40000, WAN_IP, 53, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.DROP}),
    ("internet to an unlisted port", flow("tcp", NET, 40000, WAN_IP, 22, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.DROP}),
    ("ping of the WAN address", flow("icmp", NET, 0, WAN_IP, 8, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.DROP}),
    ("TCP without SYN to the server", flow("tcp", NET, 40000, WAN_IP, 25, P.WAN, syn=False),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.DROP,
      "firewall-nat-dmz": P.DROP}),
    ("the LAN address from the WAN", flow("tcp", NET, 40000, "192.168.2.254", 25, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.DROP,
      "firewall-nat-dmz": P.DROP}),
    ("a forward", flow("tcp", NET, 40000, WAN_IP, 8081, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.ACCEPT}),
    ("a UDP forward to an address", flow("udp", NET, 40000, WAN_IP, 27015, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.ACCEPT,
      "firewall-nat-dmz": P.ACCEPT}),
    ("the WAN DHCP client's reply", flow("udp", "203.0.113.1", 67, WAN_IP, 68, P.WAN),
     {m: P.ACCEPT for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("the WAN DHCP client's broadcast reply",
     flow("udp", "203.0.113.1", 67, "255.255.255.255", 68, P.WAN),
     {m: P.ACCEPT for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
    ("a broadcast from the WAN", flow("udp", "203.0.113.9", 137, "203.0.113.255", 137, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.DROP,
      "firewall-nat-dmz": P.DROP}),
    ("someone else's address", flow("tcp", NET, 40000, "203.0.113.77", 80, P.WAN),
     {"lan-only": P.DROP, "router": P.ACCEPT, "firewall-nat": P.DROP,
      "firewall-nat-dmz": P.DROP}),
    ("the server's own outbound", flow("tcp", WAN_IP, 40000, NET, 25, P.LOCAL),
     {m: P.ACCEPT for m in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")}),
]


class VerdictTableTests(unittest.TestCase):

    def test_table(self):
        for mode in ("lan-only", "router", "firewall-nat", "firewall-nat-dmz"):
            policy = P.FlowPolicy.build(make_config(mode))
            for description, f, expected in TABLE:
                action, reason = P.verdict(policy, f)
                self.assertEqual(action, expected[mode],
                                 "%s in %s: %s (%s)" % (description, mode, action, reason))
                self.assertIsInstance(reason, str)
                self.assertTrue(reason)

    def test_reasons_name_the_service(self):
        policy = P.FlowPolicy.build(make_config())
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 8080, P.WAN)),
                         (P.DROP, "admin pages is LAN-only"))
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 25, P.WAN)),
                         (P.ACCEPT, "SMTP"))
        # implicit-TLS submission (RFC 8314) is open like 587
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 465, P.WAN)),
                         (P.ACCEPT, "mail submission over TLS"))

    def test_phone_provisioning_is_lan_only(self):
        policy = P.FlowPolicy.build(make_config())
        for proto, port in (("tcp", 8089), ("tcp", 8090), ("udp", 69)):
            action, reason = P.verdict(policy, flow(proto, NET, 1, WAN_IP, port, P.WAN))
            self.assertEqual(action, P.DROP, (proto, port))
            self.assertIn("phone provisioning", reason)

    def test_dmz_open_cannot_open_a_lan_only_service(self):
        # dmz_open lists 8080/tcp: the admin pages still stay invisible.
        policy = P.FlowPolicy.build(make_config("firewall-nat-dmz"))
        action, reason = P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 8080, P.WAN))
        self.assertEqual(action, P.DROP)
        self.assertIn("LAN-only", reason)

    def test_dmz_open_ports(self):
        policy = P.FlowPolicy.build(make_config("firewall-nat-dmz"))
        self.assertEqual(P.verdict(policy, flow("udp", NET, 1, WAN_IP, 5060, P.WAN))[0], P.ACCEPT)
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 5060, P.WAN)),
                         (P.DROP, P.R_DMZ_STEALTH))

    def test_dmz_media_ports_follow_sip(self):
        policy = P.FlowPolicy.build(make_config("firewall-nat-dmz"))
        self.assertEqual(P.verdict(policy, flow("udp", NET, 1, WAN_IP, 12000, P.WAN)),
                         (P.ACCEPT, P.R_DMZ_RTP))
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 12000, P.WAN))[0], P.DROP)
        self.assertEqual(P.verdict(policy, flow("udp", NET, 1, WAN_IP, 9999, P.WAN))[0], P.DROP)
        closed = make_config("firewall-nat-dmz", EXTRA.replace(" 5060/udp", ""))
        self.assertEqual(P.verdict(P.FlowPolicy.build(closed),
                                   flow("udp", NET, 1, WAN_IP, 12000, P.WAN))[0], P.DROP)

    def test_pop3_on_the_wan_when_asked(self):
        config = parse_config(with_sections("[pop3]\nwan = yes\n"))
        policy = P.FlowPolicy.build(config)
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 110, P.WAN)),
                         (P.ACCEPT, "POP3"))

    def test_sip_tls_on_the_wan_only_for_remote_phones(self):
        # [sip] tls_port is LAN-only unless [sip] wan = yes lets phones register from the internet.
        policy = P.FlowPolicy.build(make_config())
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 5061, P.WAN)),
                         (P.DROP, "SIP over TLS (LAN only unless [sip] wan) is LAN-only"))
        config = parse_config(with_sections("[sip]\nwan = yes\n"))
        self.assertEqual(P.verdict(P.FlowPolicy.build(config),
                                   flow("tcp", NET, 1, WAN_IP, 5061, P.WAN)),
                         (P.ACCEPT, "SIP over TLS (remote phones)"))

    def test_ports_follow_the_config(self):
        config = parse_config(with_sections("[ldap]\nport = 1389\n"))
        policy = P.FlowPolicy.build(config)
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 1389, P.WAN))[0], P.DROP)
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 389, P.WAN))[0], P.ACCEPT)


class ForwardTests(unittest.TestCase):

    def test_forward_marks_select_the_dnat(self):
        policy = P.FlowPolicy.build(make_config())
        rules = {r.name: r for r in policy.forwards}
        self.assertEqual(rules["camera"].target, ipaddress.IPv4Address("192.168.2.150"))
        self.assertEqual(rules["camera"].to_port, 80)
        self.assertEqual(rules["game"].to_port, 27015)
        action, reason, mark = P.decide(policy, flow("tcp", NET, 1, WAN_IP, 8081, P.WAN))
        self.assertEqual((action, mark), (P.ACCEPT, rules["camera"].mark))
        self.assertEqual(reason, "forward camera to 192.168.2.150:80")
        self.assertEqual(mark & P.MARK_MASK, P.MARK_BASE)
        self.assertNotEqual(rules["camera"].mark, rules["game"].mark)

    def test_forward_wrong_protocol_is_not_forwarded(self):
        policy = P.FlowPolicy.build(make_config())
        self.assertEqual(P.decide(policy, flow("udp", NET, 1, WAN_IP, 8081, P.WAN))[2], 0)

    def test_host_name_follows_its_dhcp_address(self):
        config = make_config()
        moved = P.FlowPolicy.build(config, host_addresses={
            "printer": ipaddress.IPv4Address("192.168.2.33")})
        self.assertEqual(P.verdict(moved, flow("tcp", NET, 1, WAN_IP, 8081, P.WAN)),
                         (P.ACCEPT, "forward camera to 192.168.2.33:80"))

    def test_a_target_outside_the_lan_is_not_forwarded(self):
        config = make_config()
        policy = P.FlowPolicy.build(config, host_addresses={
            "printer": ipaddress.IPv4Address("10.0.0.1")})
        action, reason = P.verdict(policy, flow("tcp", NET, 1, WAN_IP, 8081, P.WAN))
        self.assertEqual(action, P.DROP)
        self.assertEqual(reason, "forward camera: host printer has no address")

    def test_forward_to_lan_directly_is_refused(self):
        # Even the forward's target cannot be reached by its LAN address.
        policy = P.FlowPolicy.build(make_config())
        self.assertEqual(P.verdict(policy, flow("tcp", NET, 1, "192.168.2.150", 80, P.WAN)),
                         (P.DROP, P.R_LAN_INVISIBLE))


class WanAddressTests(unittest.TestCase):

    def test_dhcp_wan_follows_the_address(self):
        config = make_config()
        config = attr.evolve(config, wan=attr.evolve(
            config.wan, mode="dhcp", address=None, gateway=None))
        unknown = P.FlowPolicy.build(config)
        self.assertIsNone(unknown.wan_ip)
        self.assertEqual(P.verdict(unknown, flow("tcp", NET, 1, "203.0.113.20", 25, P.WAN)),
                         (P.DROP, P.R_NO_WAN))
        known = P.FlowPolicy.build(config, ipaddress.IPv4Interface("203.0.113.20/24"))
        self.assertEqual(P.verdict(known, flow("tcp", NET, 1, "203.0.113.20", 25, P.WAN)),
                         (P.ACCEPT, "SMTP"))


addresses = st.one_of(
    st.integers(0, 2 ** 32 - 1),
    st.sampled_from([ip(a) for a in (WAN_IP, PC, NET, "192.168.2.254", "255.255.255.255",
                                     "203.0.113.255", "0.0.0.0", "224.0.0.1")]))


class FuzzTests(unittest.TestCase):

    policies = [P.FlowPolicy.build(make_config(m)) for m in
                ("lan-only", "router", "firewall-nat", "firewall-nat-dmz")]

    @settings(max_examples=400, deadline=None)
    @given(st.integers(0, 255), addresses, st.integers(0, 65535), addresses,
           st.integers(0, 65535), st.sampled_from(P.SIDES), st.booleans(), st.integers(0, 3))
    def test_every_flow_gets_a_verdict_and_a_reason(self, proto, src, sport, dst, dport,
                                                   side, syn, which):
        f = P.Flow(proto, src, sport, dst, dport, side, syn)
        action, reason, mark = P.decide(self.policies[which], f)
        self.assertIn(action, P.ACTIONS)
        self.assertIsInstance(reason, str)
        self.assertTrue(reason)
        if mark:
            self.assertEqual(action, P.ACCEPT)
            self.assertEqual(f.side, P.WAN)
        self.assertTrue(f.describe())
