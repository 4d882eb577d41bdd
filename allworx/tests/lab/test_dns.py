"""
The DNS server in the virtual office (lab prefix `aws`), asked with `dig`
from a LAN PC and from the internet host: the guide's section 10 names, MX,
static records, the names of DHCP clients (ISC dhclient and busybox udhcpc)
while their leases live, forwarding to the ISP's dnsmasq, REFUSED from the
WAN outside the zone; a record and stand-alone mode set live through the
admin API (authoritative NXDOMAIN at once); failover from a silent primary.
Skipped, with the reason, unless run as root where `ip netns` works.
"""

import json
import os
import re
import time

from twisted.trial import unittest

from allworx.tests.confs import NETWORK, PW_HASH

PREFIX = "aws"
SERVER_LAN, SERVER_WAN = "192.168.2.254", "203.0.113.2"

CONF = NETWORK + """
[dhcp]
range = 1-100
lease_time = 1h

[dns]
primary = {primary}
{secondary}
use_forwarders = {forwarders}

[web]
admin_password = {pw}

[host printer]
mac = 02:00:00:00:00:50
address = 192.168.2.150

[record files]
a = 192.168.2.20

[record intranet-old]
cname = corp.example.com

[record @]
txt = v=spf1 mx -all
"""


class Dig:
    """One `dig` answer: status, flags and the answer section's (name, type, data)."""

    def __init__(self, text):
        self.text = text
        m = re.search(r"status: (\w+)", text)
        self.status = m.group(1) if m else None
        m = re.search(r";; flags: ([a-z ]*);", text)
        self.flags = set(m.group(1).split()) if m else set()
        self.answers = []
        section = None
        for line in text.splitlines():
            if line.startswith(";; ") and line.endswith("SECTION:"):
                section = line[3:-9]
                continue
            if section == "ANSWER" and line.strip() and not line.startswith(";"):
                name, _ttl, _cls, rtype, data = line.split(None, 4)
                self.answers.append((name.lower(), rtype, data.strip()))

    def data(self, rtype="A"):
        return sorted(d for _, t, d in self.answers if t == rtype)


class DnsLabTests(unittest.TestCase):

    def setUp(self):
        from allworx.tests.lab.fixtures import start_lab
        self.lab = start_lab(self, prefix=PREFIX, programs=("dig", "dhclient", "curl",
                                                            "udhcpc"))

    def start_server(self, forwarders="yes", primary="203.0.113.1", secondary=None):
        from allworx.tests.lab.server import LabServer
        text = CONF.format(forwarders=forwarders, pw=PW_HASH, primary=primary,
                           secondary="secondary = %s" % secondary if secondary else "")
        server = LabServer(self.lab, text, name="allworx-%s-%s" % (forwarders, primary))
        self.addCleanup(server.stop)
        self.current = server
        server.start()
        server.wait_for("dns: up", timeout=20)
        return server

    def dig(self, host, name, rtype="A", server=SERVER_LAN, *options):
        out = self.lab.run(host, ["dig", "@" + server, name, rtype, "+time=3", "+tries=2"]
                           + list(options), timeout=20, check=False)
        return Dig(out.stdout)

    def api(self, method, path, body):
        """Change the office through the admin API from the admin PC; the HTTP status."""
        out = self.lab.run("admin", [
            "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-u",
            "admin:admin-demo", "-X", method, "-H", "Content-Type: application/json",
            "-d", json.dumps(body)] + self.current.curl_https() + [
            "https://%s:8080/api/v1/%s" % (SERVER_LAN, path)],
            timeout=20, check=False)
        return int(out.stdout or 0)

    def serial(self):
        return int(self.dig("admin", "example.com", "SOA").data("SOA")[0].split()[2])

    def test_names_dhcp_forwarding_wan_live_changes_failover(self):
        server = self.start_server("yes")
        # pc1 gets a lease from our DHCP server, sending its host name.
        lease = self.lab.dhclient("pc1")
        pc1 = lease["ip_address"]
        self.assertEqual(lease["domain_name_servers"], SERVER_LAN)
        # Its name answers from the moment of the ACK: no NXDOMAIN in between,
        # which resolvers would keep for the SOA minimum.
        reverse = ".".join(reversed(pc1.split("."))) + ".in-addr.arpa"
        at_once = self.dig("admin", "pc1.example.com")
        self.assertEqual((at_once.status, at_once.data()), ("NOERROR", [pc1]), at_once.text)
        at_once = self.dig("admin", reverse, "PTR")
        self.assertEqual(at_once.data("PTR"), ["pc1.example.com."], at_once.text)
        # Guide 10's table, from a PC on the LAN (the inside view: a name with
        # both addresses answers the LAN one there, SPEC 5).
        expect = {"www": [SERVER_WAN], "wan": [SERVER_WAN], "corp": [SERVER_LAN],
                  "admin": [SERVER_LAN], "lan": [SERVER_LAN],
                  "smtp": [SERVER_LAN], "pop": [SERVER_LAN],
                  "printer": ["192.168.2.150"], "files": ["192.168.2.20"]}
        for label, addresses in expect.items():
            answer = self.dig("pc1", label + ".example.com")
            self.assertEqual((answer.status, answer.data()), ("NOERROR", addresses), label)
            self.assertIn("aa", answer.flags)
        mx = self.dig("pc1", "example.com", "MX")
        self.assertEqual(mx.data("MX"), ["10 allworx.example.com."])
        self.assertEqual(self.dig("pc1", "example.com", "TXT").data("TXT"),
                         ['"v=spf1 mx -all"'])
        cname = self.dig("pc1", "intranet-old.example.com")
        self.assertEqual((cname.data("CNAME"), cname.data()),
                         (["corp.example.com."], [SERVER_LAN]))
        soa = self.dig("pc1", "example.com", "SOA")
        self.assertEqual(soa.data("SOA")[0].split()[0], "allworx.example.com.")
        # The PC's DHCP name, forward and reverse, seen from another host.
        self.assertEqual(self.dig("admin", "pc1.example.com").data(), [pc1])
        self.assertEqual(self.dig("admin", reverse, "PTR").data("PTR"), ["pc1.example.com."])
        # Over TCP too.
        self.assertEqual(self.dig("pc1", "www.example.com", "A", SERVER_LAN, "+tcp").data(),
                         [SERVER_WAN])
        # Recursion for the LAN through the ISP's resolver; its NXDOMAIN is not ours.
        web = self.dig("pc1", "web.internet.example")
        self.assertEqual((web.status, web.data()), ("NOERROR", ["198.51.100.10"]))
        self.assertIn("ra", web.flags)
        self.assertNotIn("aa", web.flags)
        missing = self.dig("pc1", "nothing.internet.example")
        self.assertEqual(missing.status, "NXDOMAIN")
        self.assertNotIn("aa", missing.flags)
        inside = self.dig("pc1", "nothing.example.com")
        self.assertEqual(inside.status, "NXDOMAIN")
        self.assertIn("aa", inside.flags)
        # From the Internet: the public names only (the outside view), and no
        # open resolver.
        wan = self.dig("inet", "www.example.com", "A", SERVER_WAN)
        self.assertEqual((wan.status, wan.data()), ("NOERROR", [SERVER_WAN]))
        self.assertIn("aa", wan.flags)
        self.assertEqual(self.dig("inet", "example.com", "MX", SERVER_WAN).data("MX"),
                         ["10 allworx.example.com."])
        self.assertEqual(self.dig("inet", "smtp.example.com", "A", SERVER_WAN).data(),
                         [SERVER_WAN])
        for name in ("corp.example.com", "pc1.example.com", "printer.example.com"):
            hidden = self.dig("inet", name, "A", SERVER_WAN)
            self.assertEqual((hidden.status, hidden.data()), ("NXDOMAIN", []), name)
        refused = self.dig("inet", "web.internet.example", "A", SERVER_WAN)
        self.assertEqual(refused.status, "REFUSED")
        self.assertEqual(self.dig("inet", "web.internet.example", "A", SERVER_WAN,
                                  "+tcp").status, "REFUSED")
        # The lease released: the name goes.
        self.lab.dhclient_release("pc1")
        server.wait_for("released", timeout=10)
        self.assertEqual(self.dig("admin", "pc1.example.com").status, "NXDOMAIN")
        # busybox udhcpc sending a host name shows up the same way.
        script = "/run/allworx-lab/%s/udhcpc-dns.sh" % self.lab.prefix
        with open(script, "w") as f:
            f.write('#!/bin/sh\ncase "$1" in bound|renew) ip addr replace "$ip/$mask" '
                    'dev "$interface";; esac\nexit 0\n')
        os.chmod(script, 0o755)
        self.lab.run("phone1", ["udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-n", "-q",
                                "-s", script, "-x", "hostname:deskphone"], timeout=20)
        phone = self.lab.run("phone1", ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
        phone_ip = re.search(r"inet ([\d.]+)/", phone).group(1)
        deskphone = self.dig("admin", "deskphone.example.com")
        self.assertEqual(deskphone.data(), [phone_ip], deskphone.text)

        # Live changes through the admin API: a record, then stand-alone mode.
        before = self.serial()
        self.assertIn(self.api("PUT", "records/newbox", {"a": "192.168.2.40"}), (200, 201))
        self.assertEqual(self.dig("admin", "newbox.example.com").data(), ["192.168.2.40"])
        self.assertGreater(self.serial(), before)
        self.assertEqual(self.api("PATCH", "settings/dns", {"use_forwarders": "no"}), 200)
        alone = self.dig("admin", "web.internet.example", "A", SERVER_LAN, "+time=1",
                         "+tries=1")
        self.assertEqual(alone.status, "NXDOMAIN")
        self.assertIn("aa", alone.flags)
        self.assertNotIn("ra", alone.flags)
        self.assertEqual(self.dig("admin", "corp.example.com").data(), [SERVER_LAN])
        server.stop()

        # A primary that never answers: the secondary takes over after the
        # first timeout, and later queries go straight to it.
        server = self.start_server("yes", primary="203.0.113.99", secondary="203.0.113.1")
        first = self.dig("admin", "web.internet.example", "A", SERVER_LAN, "+time=4",
                         "+tries=1")
        self.assertEqual(first.data(), ["198.51.100.10"])
        server.wait_for("asking 203.0.113.1 from now on", timeout=5)
        started = time.monotonic()
        second = self.dig("admin", "mail.internet.example", "A", SERVER_LAN, "+time=1",
                          "+tries=1")
        self.assertEqual(second.data(), ["198.51.100.10"])
        self.assertLess(time.monotonic() - started, 1.0)
