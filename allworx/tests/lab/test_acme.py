# -*- test-case-name: allworx.tests.lab.test_acme -*-
"""
Integration test of certificates from an ACME CA in the virtual office (lab
prefix `awe`): the lab's pebble (acme.internet.example) checks HTTP-01 on
the server's WAN port 80 by the office's names (the ISP's DNS points them at
the server's WAN lease); the server, started with `[tls] acme_directory`,
obtains the certificate and every TLS port serves it: openssl s_client on a
LAN PC, resolving through the server's DNS, verifies 993 and 465 by name
against pebble's root. Needs root, pebble, openssl and curl.
"""

import os

from twisted.trial import unittest

from allworx.lab.topology import ACME_DIRECTORY
from allworx.tests.confs import MINIMAL
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awe"
SERVER_LAN = "192.168.2.254"
PC1_IP = "192.168.2.10"
STATIC_WAN = "mode = static\naddress = 203.0.113.2/24\ngateway = 203.0.113.1\n"
# The WAN from the ISP's DHCP: its lease is the name the ISP's DNS gives the office.
CONF = MINIMAL.replace(STATIC_WAN, "mode = dhcp\n") + """
[tls]
acme_directory = %s
acme_email = admin@example.com
""" % ACME_DIRECTORY


class AcmeTests(unittest.TestCase):

    def setUp(self):
        self.assertIn("mode = dhcp", CONF)
        self.lab = start_lab(self, prefix=PREFIX, programs=("openssl", "curl", "pebble"))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", SERVER_LAN])
        # The server trusts the HTTPS of pebble's directory by requests' own variable.
        env = dict(os.environ, REQUESTS_CA_BUNDLE=self.lab.acme_https_ca)
        self.server = LabServer(self.lab, CONF, env=env)
        # The admin port changes certificate mid-test (own CA, then pebble's,
        # which names the server but not its LAN address): the status is read
        # without verifying; what is served is verified by s_client below.
        self.server.curl_https = lambda: ["-k"]
        self.addCleanup(self.server.stop)
        self.server.start(timeout=40)
        self.server.wait_services(("network", "firewall", "web", "mail", "imap"), timeout=30)

    def certificates(self):
        services, _ = self.server.services()
        return (services or {}).get("certificates", {})

    def s_client(self, name, port, ca_file):
        done = self.lab.run("pc1", [
            "openssl", "s_client", "-connect", "%s:%d" % (name, port), "-servername", name,
            "-verify_return_error", "-verify_hostname", name, "-CAfile", ca_file, "-brief"],
            input="", check=False, timeout=20)
        return done, client_report(done)

    def test_certificate_from_pebble_on_every_tls_port(self):
        wait_until(self, lambda: "from " + ACME_DIRECTORY in self.certificates().get("detail", ""),
                   "the certificate from pebble", 90,
                   lambda: "status: %r\npebble log:\n%s\nserver log:\n%s" % (
                       self.certificates(), self.lab.log_text("acme-ca"),
                       self.server.log()[-4000:]), interval=1)
        self.assertEqual(self.certificates()["state"], "up")
        root = self.lab.acme_root()
        # The admin port too, by the server's own name (SPEC 17's ACME names have no `admin`).
        for name, port in (("imap.example.com", 993), ("smtp.example.com", 465),
                           ("pop.example.com", 995), ("allworx.example.com", 8080)):
            done, report = self.s_client(name, port, root)
            self.assertEqual(done.returncode, 0, "%s:%d: %s" % (name, port, report))
            self.assertIn("Verification: OK", done.stdout + done.stderr, report)
        # The server's own CA no longer verifies it: the ACME certificate is the one served.
        done, report = self.s_client("imap.example.com", 993, self.server.ca_file)
        self.assertNotEqual(done.returncode, 0, report)
        path = os.path.join(self.server.data_dir, "tls", "acme.pem")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
