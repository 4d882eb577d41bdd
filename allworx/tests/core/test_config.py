"""Tests for allworx.config: every key read, every kind of error reported."""

import ipaddress

from twisted.trial import unittest

from allworx import config as C
from allworx.tests.confs import MINIMAL, PW_HASH, with_sections


def errors_of(text):
    """The list of ConfigError raised for `text` (fails if it is valid)."""
    try:
        C.parse_config(text)
    except C.ConfigErrors as e:
        return e.errors
    raise AssertionError("config was accepted")


def replace(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


class ValidConfigTests(unittest.TestCase):

    def test_whole_subnet_pool(self):
        """An office on a /22: host numbers 1-1000, or any addresses of the subnet."""
        office = replace(MINIMAL, "address = 192.168.2.254/24", "address = 192.168.2.254/22")
        IP = ipaddress.IPv4Address
        c = C.parse_config(with_sections("[dhcp]\nrange = 1-1000\nclient_rate = 50\n", office))
        self.assertEqual(c.pool, (IP("192.168.0.1"), IP("192.168.3.232")))
        self.assertEqual(c.dhcp.client_rate, 50)
        c = C.parse_config(with_sections("[dhcp]\nrange = 192.168.0.1-192.168.3.254\n", office))
        self.assertEqual(c.pool, (IP("192.168.0.1"), IP("192.168.3.254")))
        c = C.parse_config(with_sections("[dhcp]\nrange = 1-254\nclient_rate = 0\n"))
        self.assertEqual(c.pool, (IP("192.168.2.1"), IP("192.168.2.254")))
        self.assertEqual(c.dhcp.client_rate, 0)

    def test_minimal_defaults(self):
        c = C.parse_config(MINIMAL)
        self.assertEqual(c.dhcp.client_rate, 10)
        self.assertEqual(c.system.domain, "example.com")
        self.assertEqual(c.lan_ip, ipaddress.IPv4Address("192.168.2.254"))
        self.assertEqual(c.pool, (ipaddress.IPv4Address("192.168.2.1"),
                                  ipaddress.IPv4Address("192.168.2.100")))
        self.assertEqual(c.dhcp.lease_time, 86400)
        self.assertEqual(c.sip.voicemail_number, "400")
        self.assertEqual(c.sip.voicemail_timeout, 20)
        self.assertEqual(c.sip.rtp_ports, (10000, 20000))
        self.assertEqual(c.web.admin_port, 8080)
        self.assertEqual(c.ldap.port, 389)
        self.assertFalse(c.mail.relay_from_wan)
        self.assertFalse(c.pop3.wan)
        self.assertEqual(c.users["alice"].extension, "101")
        self.assertEqual(dict(c.users["alice"].sip_digest).keys(), {"MD5", "SHA-256"})
        self.assertEqual(c.aliases["sales"].to, ("alice", "bob"))
        self.assertEqual(c.user_by_extension("102").name, "bob")

    def test_repo_example_is_valid(self):
        """The documented tap.conf in the repository loads."""
        import os
        here = os.path.dirname(os.path.abspath(__file__))
        c = C.load_config(os.path.join(here, "..", "..", "..", "tap.conf"))
        self.assertEqual(c.wan.mode, "dhcp")
        self.assertIn("alice", c.users)

    def test_modes_choose_router_and_dns(self):
        c = C.parse_config(MINIMAL)
        self.assertEqual(c.router_for_lan, c.lan_ip)
        self.assertEqual(c.dns_for_lan, (c.lan_ip,))
        self.assertTrue(c.forwarding)
        lan_only = replace(replace(MINIMAL, "mode = firewall-nat", "mode = lan-only"),
                           "address = 192.168.2.254/24",
                           "address = 192.168.2.254/24\ngateway = 192.168.2.1")
        c = C.parse_config(lan_only)
        self.assertEqual(str(c.router_for_lan), "192.168.2.1")
        self.assertEqual([str(i) for i in c.dns_for_lan], ["203.0.113.1"])
        self.assertFalse(c.forwarding)

    def test_values_in_every_form(self):
        text = with_sections("""
[dhcp]
range = 192.168.2.50-192.168.2.60
lease_time = 12h

[mail]
max_message_size = 20M
fetch_interval = 5m
smarthost = smtp.isp.example:587

[host printer]
mac = 02-00-00-00-00-50
address = 192.168.2.150

[record @]
mx = 10 mail.example.com, 20 backup.example.net
txt = v=spf1 mx -all

[forward camera]
proto = udp
wan_port = 8081
to = printer:80

[user carol]
password = {pw}
pop3_fetch = pop3://carol:s%40cret@pop.isp.example pop3s://c2:x@pop2.isp.example:1995
""".format(pw=PW_HASH))
        text = text.replace("[dns]\nprimary = 203.0.113.1", "[dns]\nprimary = 203.0.113.1")
        c = C.parse_config(text)
        self.assertEqual([str(i) for i in c.pool], ["192.168.2.50", "192.168.2.60"])
        self.assertEqual(c.dhcp.lease_time, 12 * 3600)
        self.assertEqual(c.mail.max_message_size, 20 * 1024 * 1024)
        self.assertEqual(c.mail.fetch_interval, 300)
        self.assertEqual(c.mail.smarthost, ("smtp.isp.example", 587))
        self.assertEqual(c.hosts["printer"].mac, "02:00:00:00:00:50")
        self.assertEqual(c.records["@"].mx, ((10, "mail.example.com"), (20, "backup.example.net")))
        self.assertEqual(c.forwards["camera"].to, ("printer", 80))
        fetch = c.users["carol"].pop3_fetch
        self.assertEqual((fetch[0].user, fetch[0].password, fetch[0].port), ("carol", "s@cret", 110))
        self.assertEqual((fetch[1].scheme, fetch[1].port), ("pop3s", 1995))
        self.assertNotIn("cret", fetch[0].display)

    def test_alias_named_like_user_is_not_a_loop(self):
        """Guide 9.2: alice keeps a copy and one goes to her home address."""
        c = C.parse_config(with_sections("[alias alice]\nto = alice alice@home.example\n"))
        self.assertEqual(c.aliases["alice"].to, ("alice", "alice@home.example"))


class ErrorTests(unittest.TestCase):

    def assertError(self, text, section, key, fragment):
        errs = errors_of(text)
        for e in errs:
            if e.section == section and e.key == key and fragment in e.message:
                self.assertTrue(e.line > 0 or key is None or "missing" in e.message, e)
                return e
        self.fail("no error [%s] %s ~ %r in:\n%s" % (section, key, fragment,
                                                     "\n".join(map(str, errs))))

    def test_every_error_with_line(self):
        text = replace(MINIMAL, "domain = example.com", "domain = example\nhostnme = x")
        text = replace(text, "mode = firewall-nat", "mode = firewal")
        errs = errors_of(text)
        self.assertEqual(len(errs), 3)
        self.assertEqual([e.line for e in errs], [2, 3, 17])
        report = C.ConfigErrors(errs, "tap.conf").report()
        self.assertIn("tap.conf: line 3: [system] hostnme: unknown key; did you mean 'hostname'?", report)

    def test_unknown_section_did_you_mean(self):
        self.assertError(with_sections("[dchp]\nenabled = yes\n"), "dchp", None, "did you mean 'dhcp'")

    def test_bad_values(self):
        cases = [
            ("address = 192.168.2.254/24", "address = 192.168.2.254", "lan", "address", "prefix length"),
            ("address = 192.168.2.254/24", "address = 192.168.2.0/24", "lan", "address", "network address"),
            ("address = 192.168.2.254/24", "address = 192.168.2.300/24", "lan", "address", "not an IPv4"),
            ("[dns]\nprimary = 203.0.113.1", "[dns]\nprimary = 203.0.113.1\nuse_forwarders = maybe",
             "dns", "use_forwarders", "yes or no"),
            ("mode = static", "mode = cable", "wan", "mode", "one of static"),
        ]
        for old, new, section, key, fragment in cases:
            self.assertError(replace(MINIMAL, old, new), section, key, fragment)

    def test_missing_required(self):
        text = replace(MINIMAL, "[web]\nadmin_password = %s\n" % PW_HASH, "")
        self.assertError(text, "web", None, "no admin: give a user `admin = yes`")
        self.assertError(replace(MINIMAL, "interface = lan0\n", ""), "lan", "interface", "required")

    def test_ranges_inside_lan(self):
        self.assertError(with_sections("[dhcp]\nrange = 1-300\n"), "dhcp", "range", "outside")
        self.assertError(with_sections("[dhcp]\nrange = 10.0.0.1-10.0.0.9\n"), "dhcp", "range", "not a host address of the LAN")
        self.assertError(with_sections("[dhcp]\nrange = 50-10\n"), "dhcp", "range", "ascending")
        self.assertError(with_sections("[host pc]\nmac = 02:00:00:00:00:01\naddress = 10.1.1.1\n"),
                         "host pc", "address", "not in the LAN")
        self.assertError(replace(MINIMAL, "address = 203.0.113.2/24", "address = 192.168.2.9/24"),
                         "wan", "address", "overlaps the LAN")
        self.assertError(replace(MINIMAL, "gateway = 203.0.113.1", "gateway = 198.51.100.1"),
                         "wan", "gateway", "not in the WAN subnet")

    def test_pool_beyond_a_slash_24(self):
        """A pool may span the whole LAN subnet; `check` names what is wrong with one that cannot."""
        office = replace(MINIMAL, "address = 192.168.2.254/24", "address = 192.168.2.254/22")
        self.assertError(with_sections("[dhcp]\nrange = 1-1023\n", office), "dhcp", "range",
                         "host number 1023 is outside 192.168.0.0/22 (largest is 1022)")
        self.assertError(with_sections("[dhcp]\nrange = 192.168.0.0-192.168.3.9\n", office),
                         "dhcp", "range", "192.168.0.0 is not a host address of the LAN")
        self.assertError(with_sections("[dhcp]\nrange = 192.168.0.9-192.168.3.255\n", office),
                         "dhcp", "range", "192.168.3.255 is not a host address of the LAN")
        self.assertError(with_sections("[dhcp]\nrange = 192.168.3.9-192.168.0.9\n", office),
                         "dhcp", "range", "backwards")
        self.assertError(with_sections("[dhcp]\nrange = 254-254\n"), "dhcp", "range",
                         "holds only the server's own address 192.168.2.254")
        tiny = replace(MINIMAL, "address = 192.168.2.254/24", "address = 192.168.2.254/31")
        self.assertError(with_sections("[dhcp]\nrange = 192.168.2.255-192.168.2.255\n", tiny),
                         "dhcp", "range", "too small for a pool")

    def test_client_rate(self):
        for bad, why in (("-1", "out of range 0-10000"), ("10001", "out of range 0-10000"),
                         ("fast", "expected a whole number")):
            self.assertError(with_sections("[dhcp]\nclient_rate = %s\n" % bad), "dhcp",
                             "client_rate", why)

    def test_references(self):
        self.assertError(with_sections("[alias team]\nto = alice bbo\n"), "alias team", "to",
                         "unknown user or alias 'bbo'; did you mean 'bob'")
        self.assertError(with_sections("[alias a]\nto = b\n\n[alias b]\nto = a\n"),
                         "alias a", "to", "alias loop: a -> b -> a")
        self.assertError(with_sections("[forward cam]\nwan_port = 81\nto = nothere:80\n"),
                         "forward cam", "to", "unknown host 'nothere'")
        self.assertError(with_sections("[forward cam]\nwan_port = 81\nto = 192.168.2.254\n"),
                         "forward cam", "to", "not a LAN device")

    def test_duplicates_and_clashes(self):
        self.assertError(with_sections("[user carol]\nextension = 101\npassword = %s\n" % PW_HASH),
                         "user carol", "extension", "already the extension of user alice")
        self.assertError(with_sections("[dns]\nprimary = 1.2.3.4\n"), "dns", None, "duplicate section")
        self.assertError(with_sections("[record www]\na = 192.168.2.9\n"), "record www", None, "built-in")
        # SPEC 17's names for mail set-up, and the server's own name, are built in too.
        for name in ("imap", "mail", "autoconfig", "autodiscover", "allworx"):
            self.assertError(with_sections("[record %s]\na = 192.168.2.9\n" % name),
                             "record %s" % name, None, "built-in")
            self.assertError(with_sections("[host %s]\nmac = 02:00:00:00:00:09\n" % name),
                             "host %s" % name, None, "built-in")
        two_hosts = ("[host a]\nmac = 02:00:00:00:00:01\naddress = 192.168.2.150\n\n"
                     "[host b]\nmac = 02:00:00:00:00:01\naddress = 192.168.2.150\n")
        self.assertError(with_sections(two_hosts), "host b", "mac", "already reserved")
        self.assertError(with_sections(two_hosts), "host b", "address", "already reserved")
        fwd = "[forward a]\nwan_port = 81\nto = 192.168.2.9\n\n[forward b]\nwan_port = 81\nto = 192.168.2.10\n"
        self.assertError(with_sections(fwd), "forward b", "wan_port", "already forwarded")

    def test_named_dynamic_host(self):
        # A [host] with a mac and no address: a named client with a pool address.
        text = with_sections("[host cam]\nmac = 02:00:00:00:00:51\n\n"
                             "[host cam2]\nmac = 02:00:00:00:00:52\n\n"
                             "[forward cam]\nwan_port = 81\nto = cam:80\n")
        c = C.parse_config(text)
        self.assertEqual(c.hosts["cam"].mac, "02:00:00:00:00:51")
        self.assertIsNone(c.hosts["cam"].address)
        self.assertEqual(C.format_value(C.Host, "address", None), "")
        self.assertEqual(c.forwards["cam"].to, ("cam", 80))

    def test_host_needs_its_mac(self):
        self.assertError(with_sections("[host cam]\naddress = 192.168.2.150\n"),
                         "host cam", "mac", "required")
        self.assertError(with_sections("[host cam]\n"), "host cam", "mac", "required")
        two = ("[host a]\nmac = 02:00:00:00:00:51\n\n"
               "[host b]\nmac = 02:00:00:00:00:51\n")
        lines = with_sections(two).splitlines()
        e = self.assertError(with_sections(two), "host b", "mac", "already reserved for host a")
        self.assertEqual(e.line, lines.index("[host b]") + 2)
        self.assertNotIn("address", [e.key for e in errors_of(with_sections(two))])

    def test_security_mode_needs_wan(self):
        text = replace(MINIMAL, "mode = static", "mode = disabled")
        self.assertError(text, "security", "mode", "needs a WAN")

    def test_plain_password_refused(self):
        self.assertError(with_sections("[user carol]\npassword = hunter2\n"),
                         "user carol", "password", "allworx passwd")

    def test_record_names_and_kinds(self):
        self.assertError(with_sections("[user Bad Name]\npassword = %s\n" % PW_HASH),
                         "user Bad Name", None, "not a valid user name")
        self.assertError(with_sections("[user]\npassword = x\n"), "user", None, "needs a name")
        self.assertError(with_sections("[record x]\ncname = a.example.com\na = 192.168.2.5\n"),
                         "record x", "cname", "no other records")

    def test_syntax_error(self):
        errs = errors_of(MINIMAL + "\nthis is not ini\n")
        self.assertEqual(len(errs), 1)
        self.assertIn("expected 'key = value'", errs[0].message)
