"""
Integration tests of the network service in the virtual office (lab prefix
`awn`): the real server (`twistd -n allworx`) in the server namespace applies
the static LAN and WAN settings, or gets the WAN address from the ISP's
dnsmasq by DHCP, keeps it across a restart of that dnsmasq and of itself, and
removes what it applied when it stops. They need root; without it they fail
and say why.
"""

import functools
import ipaddress
import os
import re
import time

from twisted.trial import unittest

from allworx.lab.namespaces import Lab
from allworx.tests.confs import PW_HASH
from allworx.tests.lab.fixtures import client_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "awn"
WAN_POOL = (ipaddress.IPv4Address("203.0.113.10"), ipaddress.IPv4Address("203.0.113.50"))
# The ISP's dnsmasq is told to hand out short renewal times so the test sees
# renewals within seconds (its shortest lease is 2 minutes).
T1, T2 = 8, 14

CONF = """\
[system]
domain = example.com
hostname = allworx

[lan]
interface = lan0
address = 192.168.2.254/24

[wan]
interface = wan0
{wan}

[security]
mode = router

[dhcp]
enabled = no

[dns]
enabled = no
primary = 203.0.113.1

[mail]
enabled = no

[pop3]
enabled = no

[sip]
enabled = no

[ldap]
enabled = no

[ntp]
enabled = no

[web]
admin_port = 18080
http_port = 18081
admin_password = {pw}
"""

STATIC = "mode = static\naddress = 203.0.113.2/24\ngateway = 203.0.113.1"
DHCP = "mode = dhcp"


def conf(wan):
    return CONF.format(wan=wan, pw=PW_HASH)


def fast_renewing_lab(extra="", prefix=PREFIX):
    """A Lab whose ISP gives T1/T2 of a few seconds (and `extra` dnsmasq lines)."""

    class FastRenewingLab(Lab):
        def dnsmasq_config(self):
            return Lab.dnsmasq_config(self) + (
                "dhcp-option=option:T1,%d\ndhcp-option=option:T2,%d\n" % (T1, T2)) + extra

    return FastRenewingLab(prefix=prefix)


class LabCase:
    """A fresh lab per test, the server's config, and ways to look inside."""

    dnsmasq_extra = ""

    def setUp(self):
        # A prefix of our own: trial -j runs this module's classes side by side.
        self.lab = start_lab(self, PREFIX, programs=("curl", "ping"),
                             factory=functools.partial(fast_renewing_lab, self.dnsmasq_extra))
        self.servers = []

    def server(self, wan):
        server = LabServer(self.lab, conf(wan), name="allworx-%d" % len(self.servers))
        self.servers.append(server)
        self.addCleanup(server.stop)
        return server

    # ------------------------------------------------------------ reading the namespace

    def ip(self, *args):
        return self.lab.run("server", ["ip", "-4", "-o"] + list(args)).stdout

    def addresses(self, ifname):
        return re.findall(r"inet (\S+)", self.ip("addr", "show", "dev", ifname))

    def default_routes(self):
        return self.ip("route", "show", "default").strip()

    def sysctl(self, name):
        return self.lab.run("server", ["sysctl", "-n", name]).stdout.strip()

    def assertWhoami(self, expected):
        """The internet host sees the server come from `expected` (a real HTTP client)."""
        out = self.lab.run("server", ["curl", "-sS", "--max-time", "5",
                                      "http://198.51.100.10/whoami"], check=False)
        self.assertEqual(out.stdout.strip(), expected, client_report(out))

    def assertPatched(self, section, body):
        """PATCH /api/v1/settings/SECTION as the admin, with curl from the admin PC: 200."""
        out = self.lab.run("admin", [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            "-u", "admin:admin-demo", "-X", "PATCH", "-H", "Content-Type: application/json",
            "--data", body] + self.servers[-1].curl_https() + [
            "https://192.168.2.254:18080/api/v1/settings/" + section])
        self.assertEqual(out.stdout, "200", client_report(out))

    def isp_log(self):
        with open(self.lab._path("isp", "dnsmasq.log")) as f:
            return f.read()

    def wait_for_log(self, server, pattern, timeout, after=0):
        """The first match of `pattern` in the log after offset `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.compile(pattern).search(server.log(), after)
            if m:
                return m
            time.sleep(0.1)
        self.fail("no %r within %ss:\n%s" % (pattern, timeout, server.log()[-3000:]))

    def assert_clean(self, server=None):
        """Nothing of the server's left in the namespace (its log in the message)."""
        why = "server log:\n" + server.log()[-4000:] if server is not None else None
        self.assertEqual(self.addresses("lan0"), [], why)
        self.assertEqual(self.addresses("wan0"), [], why)
        self.assertEqual(self.default_routes(), "", why)
        self.assertEqual(self.sysctl("net.ipv4.ip_forward"), "0", why)
        self.assertEqual(self.sysctl("net.ipv4.conf.wan0.rp_filter"), "0", why)



class NetworkLabTests(LabCase, unittest.TestCase):
    """The server's network service against real interfaces and a real DHCP server."""

    def test_static_applied_and_removed(self):
        self.assert_clean()
        server = self.server(STATIC)
        log = server.start()
        self.assertIn("network: lan0 192.168.2.254/24 applied", log)
        self.assertIn("network: wan0 203.0.113.2/24 applied", log)
        self.assertEqual(self.addresses("lan0"), ["192.168.2.254/24"])
        self.assertEqual(self.addresses("wan0"), ["203.0.113.2/24"])
        self.assertIn("default via 203.0.113.1 dev wan0", self.default_routes())
        self.assertEqual(self.sysctl("net.ipv4.ip_forward"), "1")
        self.assertEqual(self.sysctl("net.ipv4.conf.lan0.rp_filter"), "1")
        self.assertEqual(self.sysctl("net.ipv4.conf.wan0.rp_filter"), "1")
        # A LAN PC reaches the server; the server reaches the internet host.
        self.lab.run("admin", ["ping", "-c", "1", "-W", "2", "192.168.2.254"])
        self.assertWhoami("203.0.113.2")
        # The admin moves the WAN address through the API (curl from the
        # admin PC): applied live, no restart.
        self.assertPatched("wan", '{"address": "203.0.113.3/24"}')
        self.wait_for_log(server, r"network: wan0 203\.0\.113\.3/24 applied", timeout=5)
        self.assertEqual(self.addresses("wan0"), ["203.0.113.3/24"])
        self.assertIn("default via 203.0.113.1 dev wan0", self.default_routes())
        self.assertWhoami("203.0.113.3")
        server.stop()
        self.assertIn("network: wan0 203.0.113.3/24 removed", server.log())
        self.assert_clean()

        # kill -9 leaves everything in place; the next run takes it over and
        # its stop restores the namespace as it was before the first run.
        server.start()
        server.kill9()
        self.assertEqual(self.addresses("wan0"), ["203.0.113.3/24"])
        self.assertEqual(self.sysctl("net.ipv4.ip_forward"), "1")
        log = server.start()
        self.assertIn("network: taking over", log)
        server.stop()
        self.assert_clean(server)

    def test_dhcp_wan(self):
        resolv_path = "/etc/netns/%s/resolv.conf" % self.lab.ns("server")
        with open(resolv_path) as f:
            resolv_before = f.read()
        server = self.server(DHCP)
        with open(server.conf_path) as f:
            conf_before = f.read()
        started = time.monotonic()
        server.start()
        bound = self.wait_for_log(
            server, r"wan: bound (\S+) router 203\.0\.113\.1 lease 120s \(T1 %ds, T2 %ds\)"
            % (T1, T2), timeout=15)
        self.assertLess(time.monotonic() - started, 15)
        address = bound.group(1)
        ip = ipaddress.IPv4Interface(address).ip
        self.assertTrue(WAN_POOL[0] <= ip <= WAN_POOL[1], address)
        self.assertTrue(address.endswith("/24"))
        self.wait_for_log(server, r"network: default route via 203\.0\.113\.1 on wan0 applied",
                          timeout=5)
        self.assertEqual(self.addresses("wan0"), [address])
        self.assertIn("default via 203.0.113.1 dev wan0", self.default_routes())
        self.assertWhoami(str(ip))

        # The ISP's DHCP server restarts: the next renewal still succeeds.
        self.lab.restart_isp_dhcp()
        mark = len(server.log())
        renewed = self.wait_for_log(server, r"wan: renewed (\S+)", timeout=T1 + 10, after=mark)
        self.assertEqual(renewed.group(1), address)
        self.assertEqual(self.addresses("wan0"), [address])

        # The ISP's server is away at T1: the renewal goes unanswered, the
        # address stays, and at T2 a broadcast rebinds it once it is back.
        self.lab.stop_isp_dhcp()
        mark = len(server.log())
        self.wait_for_log(server, r"wan: RENEWING", timeout=T1 + 5, after=mark)
        self.lab.start_isp_dhcp()
        self.wait_for_log(server, r"wan: REBINDING", timeout=T2, after=mark)
        self.assertEqual(self.addresses("wan0"), [address])
        rebound = self.wait_for_log(server, r"wan: renewed (\S+)", timeout=5, after=mark)
        self.assertEqual(rebound.group(1), address)

        # The cable to the ISP is pulled and plugged back: the client checks
        # its lease at once (INIT-REBOOT) instead of waiting for T1.
        mark = len(server.log())
        self.lab.run("isp", ["ip", "link", "set", "server", "down"])
        self.wait_for_log(server, r"network: wan0 link down", timeout=5, after=mark)
        self.lab.run("isp", ["ip", "link", "set", "server", "up"])
        self.wait_for_log(server, r"wan: INIT-REBOOT", timeout=5, after=mark)
        checked = self.wait_for_log(server, r"wan: renewed (\S+)", timeout=5, after=mark)
        self.assertEqual(checked.group(1), address)
        self.assertEqual(self.addresses("wan0"), [address])

        # Nothing from the ISP but address, netmask and router was taken.
        with open(resolv_path) as f:
            self.assertEqual(f.read(), resolv_before)
        with open(server.conf_path) as f:
            self.assertEqual(f.read(), conf_before)
        self.assertNotIn("isp.example", server.log())

        # Stopping removes the address and route; starting again asks for the same address.
        server.stop()
        self.assert_clean()
        log = server.start()
        self.assertIn("wan: INIT-REBOOT", log + server.log())
        again = self.wait_for_log(server, r"wan: bound (\S+)", timeout=10)
        self.assertEqual(again.group(1), address)

        # The admin switches the WAN to a static address: the lease goes back
        # to the ISP (DHCPRELEASE) and the static address takes its place.
        self.wait_for_log(server, r"network: default route via 203\.0\.113\.1 on wan0 applied",
                          timeout=5)
        self.assertPatched("wan", '{"mode": "static", "address": "203.0.113.2/24", '
                                  '"gateway": "203.0.113.1"}')
        self.wait_for_log(server, r"wan: DHCPRELEASE of %s to 203\.0\.113\.1" % re.escape(str(ip)),
                          timeout=5)
        self.wait_for_log(server, r"network: wan0 203\.0\.113\.2/24 applied", timeout=5)
        self.assertEqual(self.addresses("wan0"), ["203.0.113.2/24"])
        self.assertFalse(os.path.exists(os.path.join(server.data_dir, "wan-dhcp-lease.json")))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "DHCPRELEASE" not in self.isp_log():
            time.sleep(0.1)
        self.assertIn("DHCPRELEASE(server) %s" % ip, self.isp_log())
        server.stop()
        self.assert_clean()


class AddressInUseLabTests(LabCase, unittest.TestCase):
    """
    The ISP hands out an address another host already answers for: the
    client's ARP check catches it and declines it instead of using it.
    """

    TAKEN = "203.0.113.40"
    # A reservation: dnsmasq offers it without a ping check of its own.
    dnsmasq_extra = "dhcp-host=02:a1:00:00:71:fe,%s\n" % TAKEN

    def test_address_in_use_declined(self):
        # The other host: a macvlan on the ISP's port, moved into the
        # internet host's namespace, holding the address.
        self.lab.run("isp", ["ip", "link", "add", "taken0", "link", "server",
                             "type", "macvlan", "mode", "bridge"])
        self.lab.run("isp", ["ip", "link", "set", "taken0", "netns", self.lab.ns("inet")])
        self.lab.run("inet", ["ip", "addr", "add", self.TAKEN + "/24", "dev", "taken0"])
        self.lab.run("inet", ["ip", "link", "set", "taken0", "up"])
        other_mac = self.lab.run("inet", ["cat", "/sys/class/net/taken0/address"]).stdout.strip()
        server = self.server(DHCP)
        server.start()
        self.wait_for_log(server, r"wan: %s is already used by %s; DHCPDECLINE to 203\.0\.113\.1"
                          % (re.escape(self.TAKEN), other_mac), timeout=10)
        self.assertEqual(self.addresses("wan0"), [])
        self.assertNotIn("wan: bound", server.log())
        self.assertIn("DHCPDECLINE(server) %s" % self.TAKEN, self.isp_log())
        server.stop()
        self.assert_clean()
