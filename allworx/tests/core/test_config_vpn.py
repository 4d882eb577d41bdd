"""
Tests for the config of sites and remote access (SPEC 16): [vpn], [site
NAME], [device NAME], their readers and every check with section, key and
line.
"""

import ipaddress

from twisted.trial import unittest

from allworx import config as C
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.core.test_config import errors_of
from allworx.tests.core.test_config_outside import line_of

KEY1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
KEY2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
KEY3 = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="

# The main office of the lab, joined to the branch, with one laptop.
VPN = """\
[vpn]
enabled = yes
address = 192.168.99.1/24

[site branch]
public_key = {k1}
endpoint = 198.51.100.2:51820
address = 192.168.99.2
networks = 192.168.3.0/24
extensions = 200-299
domain = branch.example.com

[device alice-laptop]
user = alice
address = 192.168.99.10
public_key = {k2}

[device alice-phone]
user = alice
address = 192.168.99.11
""".format(k1=KEY1, k2=KEY2)


def vpn_conf(text=VPN):
    return with_sections(text)


def where(errors):
    return [(e.section, e.key) for e in errors]


class ReaderTests(unittest.TestCase):

    def test_key(self):
        self.assertEqual(C.parse_wg_key(" %s " % KEY1), KEY1)
        for bad in ("", "AQEB", KEY1[:-1], KEY1 + "AAAA", "!" + KEY1[1:],
                    "A" * 43 + "=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="):
            self.assertRaises(ValueError, C.parse_wg_key, bad)

    def test_interface(self):
        self.assertEqual(C.parse_interface_name("awg0"), "awg0")
        self.assertEqual(C.parse_interface_name("wg-branch.1"), "wg-branch.1")
        for bad in ("", "a" * 16, "wg 0", "wg/0", "..", "wg\u00e90"):
            self.assertRaises(ValueError, C.parse_interface_name, bad)

    def test_networks(self):
        self.assertEqual(C.parse_networks("192.168.3.0/24, 10.8.0.0/16"),
                         (ipaddress.IPv4Network("192.168.3.0/24"),
                          ipaddress.IPv4Network("10.8.0.0/16")))
        self.assertEqual(C.parse_networks(""), ())
        for bad, fragment in (("192.168.3.1/24", "host bits"), ("192.168.3.0", "prefix"),
                              ("10.0.0.0/8 10.0.0.0/8", "twice"), ("pc1/24", "not an IPv4")):
            e = self.assertRaises(ValueError, C.parse_networks, bad)
            self.assertIn(fragment, str(e))
        self.assertEqual(C.format_networks(C.parse_networks("10.1.0.0/16 10.2.0.0/16")),
                         "10.1.0.0/16 10.2.0.0/16")

    def test_extension_ranges(self):
        value = C.parse_extension_ranges("200-299 3000-3099, 25")
        self.assertEqual(value, (("200", "299"), ("3000", "3099"), ("25", "25")))
        self.assertEqual(C.format_extension_ranges(value), "200-299 3000-3099 25")
        self.assertTrue(C.in_range("201", ("200", "299")))
        self.assertFalse(C.in_range("2001", ("200", "299")))
        self.assertFalse(C.in_range("300", ("200", "299")))
        for bad, fragment in (("299-200", "backwards"), ("20-299", "same number"),
                              ("2", "not an extension"), ("200-299 250-350", "overlaps"),
                              ("abc", "not an extension")):
            e = self.assertRaises(ValueError, C.parse_extension_ranges, bad)
            self.assertIn(fragment, str(e))

    def test_endpoint(self):
        self.assertEqual(C.parse_endpoint("vpn.example.com"), ("vpn.example.com", None))
        self.assertEqual(C.parse_endpoint("203.0.113.2:51821"), ("203.0.113.2", 51821))
        self.assertEqual(C.format_endpoint(("203.0.113.2", 51821)), "203.0.113.2:51821")
        self.assertRaises(ValueError, C.parse_endpoint, "host:99999")


class VpnConfigTests(unittest.TestCase):

    def test_off_by_default(self):
        c = C.parse_config(MINIMAL)
        self.assertEqual((c.vpn.enabled, c.vpn.interface, c.vpn.port, c.vpn.address,
                          c.vpn.endpoint), (False, "awg0", 51820, None, None))
        self.assertEqual((c.sites, c.devices), ({}, {}))

    def test_values(self):
        c = C.parse_config(vpn_conf())
        self.assertEqual(c.vpn.address, ipaddress.IPv4Interface("192.168.99.1/24"))
        site = c.sites["branch"]
        self.assertEqual((site.public_key, site.endpoint, str(site.address), site.extensions,
                          site.domain), (KEY1, ("198.51.100.2", 51820), "192.168.99.2",
                                         (("200", "299"),), "branch.example.com"))
        self.assertEqual(site.networks, (ipaddress.IPv4Network("192.168.3.0/24"),))
        self.assertEqual(c.devices["alice-laptop"].public_key, KEY2)
        self.assertIsNone(c.devices["alice-phone"].public_key)
        self.assertEqual(c.devices["alice-phone"].user, "alice")

    def test_round_trip(self):
        c = C.parse_config(vpn_conf())
        for cls, value in ((C.Site, c.sites["branch"]), (C.Device, c.devices["alice-phone"]),
                           (C.VpnSettings, c.vpn)):
            for field in C.keys_of(cls):
                text = C.format_value(cls, field.name, getattr(value, field.name))
                self.assertEqual(field.metadata["parse"](text), getattr(value, field.name),
                                 field.name)

    def test_malformed_key_names_section_key_and_line(self):
        text = vpn_conf(VPN.replace("public_key = " + KEY1, "public_key = not-a-key"))
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key), ("site branch", "public_key"))
        self.assertEqual(e.line, line_of(text, "public_key = not-a-key"))
        self.assertIn("not a WireGuard key", e.message)

    def test_address_required_when_enabled(self):
        text = vpn_conf("[vpn]\nenabled = yes\n")
        self.assertEqual(where(errors_of(text)), [("vpn", "address")])

    def test_sites_and_devices_need_the_vpn(self):
        text = vpn_conf(VPN.replace("enabled = yes", "enabled = no"))
        errors = errors_of(text)
        self.assertEqual(sorted(where(errors)), [("device alice-laptop", None),
                                                 ("device alice-phone", None),
                                                 ("site branch", None)])
        self.assertEqual(errors[0].line, line_of(text, "[site branch]"))

    def test_networks_overlapping_the_lan(self):
        text = vpn_conf(VPN.replace("networks = 192.168.3.0/24",
                                    "networks = 192.168.3.0/24 192.168.0.0/16"))
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key, e.line),
                         ("site branch", "networks", line_of(text, "networks =")))
        self.assertIn("overlaps the LAN 192.168.2.0/24", e.message)

    def test_networks_overlapping_the_tunnel_and_another_site(self):
        text = vpn_conf(VPN + """
[site depot]
public_key = {k}
address = 192.168.99.3
networks = 192.168.3.128/25 192.168.99.0/25
""".format(k=KEY3))
        errors = errors_of(text)
        self.assertEqual(where(errors), [("site depot", "networks")] * 2)
        messages = " / ".join(e.message for e in errors)
        self.assertIn("overlaps the tunnel subnet", messages)
        self.assertIn("overlaps 192.168.3.0/24 of site branch", messages)
        self.assertEqual(errors[0].line, line_of(text, "networks =", "[site depot]"))

    def test_tunnel_subnet_overlapping_the_lan(self):
        text = vpn_conf("[vpn]\nenabled = yes\naddress = 192.168.2.200/25\n")
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key), ("vpn", "address"))
        self.assertIn("overlaps the LAN", e.message)

    def test_extensions_overlapping_local_users(self):
        text = vpn_conf(VPN.replace("extensions = 200-299", "extensions = 100-199"))
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key, e.line),
                         ("site branch", "extensions", line_of(text, "extensions =")))
        self.assertIn("local user alice", e.message)

    def test_extensions_overlapping_another_site(self):
        text = vpn_conf(VPN + "\n[site depot]\npublic_key = %s\naddress = 192.168.99.3\n"
                        "extensions = 290-310\n" % KEY3)
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key), ("site depot", "extensions"))
        self.assertIn("overlaps 200-299 of site branch", e.message)

    def test_device_address_outside_the_tunnel(self):
        text = vpn_conf(VPN.replace("address = 192.168.99.11", "address = 192.168.98.11"))
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key, e.line),
                         ("device alice-phone", "address",
                          line_of(text, "address = 192.168.98.11")))
        self.assertIn("not a host address of the tunnel subnet 192.168.99.0/24", e.message)

    def test_addresses_taken_twice(self):
        for old, new in (("address = 192.168.99.11", "address = 192.168.99.10"),
                         ("address = 192.168.99.11", "address = 192.168.99.1"),
                         ("address = 192.168.99.11", "address = 192.168.99.255")):
            errors = errors_of(vpn_conf(VPN.replace(old, new)))
            self.assertEqual(where(errors), [("device alice-phone", "address")], new)

    def test_site_address_outside_the_tunnel(self):
        errors = errors_of(vpn_conf(VPN.replace("address = 192.168.99.2", "address = 10.0.0.2")))
        self.assertEqual(where(errors), [("site branch", "address")])

    def test_unknown_device_user(self):
        text = vpn_conf(VPN.replace("user = alice\naddress = 192.168.99.11",
                                    "user = carol\naddress = 192.168.99.11"))
        [e] = errors_of(text)
        self.assertEqual((e.section, e.key), ("device alice-phone", "user"))
        self.assertIn("carol", e.message)

    def test_same_key_twice(self):
        errors = errors_of(vpn_conf(VPN.replace("public_key = " + KEY2, "public_key = " + KEY1)))
        self.assertEqual(where(errors), [("device alice-laptop", "public_key")])

    def test_interface_and_port(self):
        for line, k in (("interface = lan0", "interface"), ("interface = a-very-long-name", "interface"),
                        ("port = 5060", "port"), ("port = 15000", "port"), ("port = 0", "port")):
            text = vpn_conf(VPN.replace("enabled = yes", "enabled = yes\n" + line))
            self.assertEqual(where(errors_of(text)), [("vpn", k)], line)

    def test_own_domain(self):
        errors = errors_of(vpn_conf(VPN.replace("domain = branch.example.com",
                                                "domain = example.com")))
        self.assertEqual(where(errors), [("site branch", "domain")])

    def test_bad_names(self):
        errors = errors_of(vpn_conf(VPN.replace("[site branch]", "[site Br/anch]")))
        self.assertEqual(where(errors), [("site Br/anch", None)])
