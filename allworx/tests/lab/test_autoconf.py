# -*- test-case-name: allworx.tests.lab.test_autoconf -*-
"""
Mail clients' automatic set-up in the virtual office (lab prefix `awa`), with
real clients: `dig` asks the server for the SRV records (RFC 6186, 8314) from
a LAN host and from the Internet; `curl` on a LAN host fetches Thunderbird's
autoconfig by the name `autoconfig.DOMAIN`, resolved through the server's
own DNS (the lab's LAN hosts have it in their resolv.conf), and posts an
Outlook Autodiscover request to `autodiscover.DOMAIN`; the Internet host
fetches autoconfig from the WAN address by its name. Needs root where
`ip netns` works; without it, or without a client, it fails and says why.
"""

import xml.etree.ElementTree as ET

from twisted.trial import unittest

from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.lab.fixtures import client_report, start_lab
from allworx.tests.lab.server import LabServer
from allworx.tests.lab.test_dns import Dig

PREFIX = "awa"
SERVER_LAN, SERVER_WAN = "192.168.2.254", "203.0.113.2"

CONF = NETWORK + """
[dns]
primary = 203.0.113.1

[pop3]
pop3s_port = 1995

[web]
admin_password = {pw}

[user alice]
full_name = Alice Archer
password = {pw}
""".format(pw=PW_HASH)

AUTODISCOVER = (
    '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
    'alice@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>'
    '</Autodiscover>')


class AutoSetupLabTests(unittest.TestCase):

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("dig", "curl"))
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(("network", "firewall", "dns", "web"))

    def dig(self, host, name, rtype, server):
        out = self.lab.run(host, ["dig", "@" + server, name, rtype, "+time=3", "+tries=2"],
                           timeout=20, check=False)
        return Dig(out.stdout), client_report(out)

    def curl(self, host, url, *args):
        """(HTTP status or 0, body, curl's report) of curl run in lab host `host`."""
        out = self.lab.run(host, ["curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}",
                                  *args, url], check=False, timeout=20)
        body, _, code = out.stdout.rpartition("\n")
        return int(code or 0), body, client_report(out)

    def test_srv_records_and_documents_by_name(self):
        # SRV records from a LAN host, and from the Internet (the same zone).
        for host, server in (("admin", SERVER_LAN), ("inet", SERVER_WAN)):
            answer, report = self.dig(host, "_imaps._tcp.example.com", "SRV", server)
            self.assertEqual((answer.status, answer.data("SRV")),
                             ("NOERROR", ["0 1 993 imap.example.com."]), report)
            self.assertIn("aa", answer.flags, report)
        answer, report = self.dig("admin", "_pop3s._tcp.example.com", "SRV", SERVER_LAN)
        self.assertEqual(answer.data("SRV"), ["0 1 1995 pop.example.com."], report)
        answer, report = self.dig("admin", "_submissions._tcp.example.com", "SRV", SERVER_LAN)
        self.assertEqual(answer.data("SRV"), ["0 1 465 smtp.example.com."], report)
        # The LAN address inside, the WAN address outside (SPEC 5's views).
        answer, report = self.dig("admin", "autoconfig.example.com", "A", SERVER_LAN)
        self.assertEqual(answer.data(), [SERVER_LAN], report)
        answer, report = self.dig("inet", "autoconfig.example.com", "A", SERVER_WAN)
        self.assertEqual(answer.data(), [SERVER_WAN], report)

        # Thunderbird's request, the name resolved by the LAN host's resolver
        # (the server's DNS): the document names the servers.
        status, body, report = self.curl(
            "admin", "http://autoconfig.example.com/mail/config-v1.1.xml"
            "?emailAddress=alice%40example.com")
        self.assertEqual(status, 200, report)
        root = ET.fromstring(body)
        incoming = [(s.get("type"), s.findtext("hostname"), s.findtext("port"),
                     s.findtext("socketType")) for s in root.iter("incomingServer")]
        self.assertEqual(incoming, [("imap", "imap.example.com", "993", "SSL"),
                                    ("imap", "imap.example.com", "143", "STARTTLS"),
                                    ("pop3", "pop.example.com", "1995", "SSL")], report)
        status, well_known, report = self.curl(
            "admin", "http://autoconfig.example.com/.well-known/autoconfig/mail/config-v1.1.xml")
        self.assertEqual((status, well_known), (200, body), report)

        # Outlook's Autodiscover by its name.
        status, body, report = self.curl(
            "admin", "http://autodiscover.example.com/autodiscover/autodiscover.xml",
            "-H", "Content-Type: text/xml", "--data-binary", AUTODISCOVER)
        self.assertEqual(status, 200, report)
        self.assertIn("<LoginName>alice</LoginName>", body, report)
        self.assertIn("<Server>imap.example.com</Server>", body, report)
        status, body, report = self.curl(
            "admin", "http://autodiscover.example.com/autodiscover/autodiscover.xml",
            "--data-binary", "<not-xml")
        self.assertEqual(status, 400, report)

        # From the Internet, by the name (which holds the WAN address there).
        status, body, report = self.curl(
            "inet", "http://autoconfig.example.com/mail/config-v1.1.xml",
            "--resolve", "autoconfig.example.com:80:%s" % SERVER_WAN)
        self.assertEqual(status, 200, report)
        self.assertIn("<clientConfig", body, report)
