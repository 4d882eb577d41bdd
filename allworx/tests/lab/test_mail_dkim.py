# -*- test-case-name: allworx.tests.lab.test_mail_dkim -*-
"""
Integration test of outbound DKIM in the virtual office (lab prefix `awz`):
alice sends from a LAN PC with swaks through the real server to the
internet host; what the internet host received is checked with dkimpy's
verifier, which looks the keys up in the SERVER's zone (dnspython asking
the server's DNS), and dig shows the key as one TXT record of several
strings. Needs root, swaks and dig; fails saying why without them.
"""

import json
import os
import sys

from twisted.trial import unittest

from allworx.tests.confs import MINIMAL
from allworx.tests.lab.fixtures import client_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awz"
SERVER_LAN = "192.168.2.254"
PC1_IP = "192.168.2.10"

# Runs on pc1: dkimpy's verdict on every DKIM-Signature of a message, the
# keys asked of the server's DNS (argv: message file, server address).
VERIFIER = r"""
import json, sys
import dkim, dns.resolver

resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[2]]
asked = []

def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    answer = resolver.resolve(name, "TXT", lifetime=timeout)
    records = [b"".join(rr.strings) for rr in answer]
    asked.append([name, len(records), [len(rr.strings) for rr in answer]])
    return records[0] if len(records) == 1 else None

message = open(sys.argv[1], "rb").read()
d = dkim.DKIM(message)
count = sum(1 for n, _ in d.headers if n.lower() == b"dkim-signature")
results = []
for i in range(count):
    try:
        results.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
    except Exception as e:
        results.append("error: %s" % e)
print(json.dumps({"results": results, "asked": asked}))
"""


class MailDkimLabTests(unittest.TestCase):
    """Mail from the office to the internet verifies against the office's own zone."""

    SERVICES = ("network", "firewall", "dns", "mail", "smtp", "queue")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("swaks", "dig"))
        self.lab.run("pc1", ["ip", "addr", "replace", PC1_IP + "/24", "dev", "eth0"])
        self.lab.run("pc1", ["ip", "route", "replace", "default", "via", SERVER_LAN])
        self.server = LabServer(self.lab, MINIMAL)
        self.addCleanup(self.server.stop)
        self.server.start(timeout=40)
        self.server.wait_services(self.SERVICES, timeout=30)

    def context(self):
        return "server log:\n" + self.server.log()[-4000:]

    def test_alices_mail_verifies_against_the_servers_zone(self):
        done = self.lab.run("pc1", ["swaks", "--server", SERVER_LAN, "--from", "alice@example.com",
                                    "--to", "friend@internet.example",
                                    "--h-Subject", "signed by the office", "--timeout", "20"],
                            check=False, timeout=40)
        self.assertIn("250 2.0.0", done.stdout + done.stderr, client_report(done))

        def arrived():
            return [m for m in self.lab.smtp_received()
                    if m.recipient == "friend@internet.example"
                    and b"signed by the office" in m.data]
        [mail] = wait_until(self, arrived, "delivery to the internet host", 30, self.context)
        self.assertEqual(mail.data.count(b"DKIM-Signature:"), 2, mail.data[:3000])

        # The key as a resolver sees it: one TXT record, several strings (> 255 bytes).
        dig = self.lab.run("pc1", ["dig", "+short", "+time=3", "TXT",
                                   "allworx._domainkey.example.com", "@" + SERVER_LAN],
                           check=False, timeout=20)
        lines = [line for line in dig.stdout.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, client_report(dig))
        self.assertTrue(lines[0].startswith('"v=DKIM1; k=rsa; p='), client_report(dig))
        self.assertIn('" "', lines[0], client_report(dig))

        path = os.path.join(self.lab.state_dir, "received.eml")
        with open(path, "wb") as f:
            f.write(mail.data)
        script = os.path.join(self.lab.state_dir, "dkim_verify.py")
        with open(script, "w") as f:
            f.write(VERIFIER)
        done = self.lab.run("pc1", [sys.executable, script, path, SERVER_LAN],
                            check=False, timeout=60)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            self.fail("the verifier did not answer:\n" + client_report(done))
        self.assertEqual(report["results"], [True, True], client_report(done))
        asked = sorted(name for name, _, _ in report["asked"])
        self.assertEqual(asked, ["allworx-ed25519._domainkey.example.com.",
                                 "allworx._domainkey.example.com."], client_report(done))
