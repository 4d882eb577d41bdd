# -*- test-case-name: allworx.tests.lab.test_time -*-
"""
Honest time in the virtual office (lab prefix `awn`, SPEC 6): the server
polls the lab ISP's time server (`allworx.lab.timeserver`, stratum 1 at
203.0.113.1, its clock set 2.5 s ahead of the host's) through `[ntp]
servers`, and a LAN PC's real SNTP client (ntpsec's `ntpdig`) is told the
corrected time at stratum 2, leap indicator 0, reference id the ISP's
address. Before the ISP answers, the same client is told the host clock's
real state: leap indicator 3 and stratum 16 while the kernel says the clock
is unsynchronised, else stratum 3. Needs root where `ip netns` works.
"""

import json
import sys

from twisted.trial import unittest

from allworx.hostfacts import kernel_clock
from allworx.lab.topology import ISP_NTP
from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.lab.fixtures import client_report, process_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "awn"
ISP_OFFSET = 2.5

CONF = NETWORK + """

[dns]
primary = 203.0.113.1

[ntp]
enabled = yes
servers = 203.0.113.1

[web]
admin_password = %s
""" % PW_HASH

# One SNTP request; prints the answer's leap indicator, stratum and reference id.
RAW_QUERY = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"\\x23" + bytes(47), (sys.argv[1], 123))
d = s.recv(512)
print(d[0] >> 6, d[1], d[12:16].decode("ascii", "replace"))
"""


class TimeLabTests(unittest.TestCase):

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("ntpdig",))
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        # pc1 is a LAN PC with a fixed address (DHCP is another test's).
        self.lab.run("pc1", ["ip", "addr", "replace", "192.168.2.50/24", "dev", "eth0"])

    def ntpdig(self):
        """What pc1's ntpdig says of the server (its JSON answer) and its report."""
        done = self.lab.run("pc1", ["ntpdig", "--json", "--timeout", "3", "192.168.2.254"],
                            check=False)
        report = client_report(done)
        try:
            return json.loads(done.stdout), report
        except ValueError:
            return None, report     # no answer it would use (it says why on stderr)

    def test_lan_client_gets_the_upstreams_time_at_its_stratum_plus_one(self):
        # The ISP's time server is silent at first: the first poll goes unanswered.
        self.lab.stop(ISP_NTP)
        self.server.start()
        self.server.wait_for("ntp: upstream 203.0.113.1: no answer in 4 s", timeout=15)
        kernel = kernel_clock()
        self.assertIsNotNone(kernel, "the kernel's clock state cannot be read")
        got, report = self.ntpdig()
        if kernel["synchronised"]:
            self.assertEqual((got or {}).get("stratum"), 3, report)
            self.assertEqual(got["leap"], "no-leap", report)
            self.assertLess(abs(got["offset"]), 0.5, report)
        else:
            # Leap indicator 3, stratum 16: a real client will not use it...
            self.assertIsNone(got, report)
            self.assertIn("no eligible servers", report)
            # ... and that is what the answer says.
            done = self.lab.run("pc1", [sys.executable, "-c", RAW_QUERY, "192.168.2.254"])
            self.assertEqual(done.stdout.split(), ["3", "16", "INIT"], client_report(done))

        # The ISP's time server answers, 2.5 s ahead of the host clock; the
        # next poll (64 s after the first) finds it.
        self.lab.set_isp_clock_offset(ISP_OFFSET)
        self.lab.start_isp_ntp()
        try:
            self.server.wait_for("ntp: following 203.0.113.1", timeout=90)
        except Exception as e:
            self.fail("%s\n%s" % (e, process_report(self.lab, ISP_NTP)))
        got, report = self.ntpdig()
        self.assertIsNotNone(got, report)
        self.assertEqual((got["stratum"], got["leap"], got["ip"]),
                         (2, "no-leap", "192.168.2.254"), report)
        # pc1's clock is the host's: the server's time is the ISP's, 2.5 s ahead.
        self.assertLess(abs(got["offset"] - ISP_OFFSET), 0.05, report)
