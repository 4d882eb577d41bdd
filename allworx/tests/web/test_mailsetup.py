"""
Tests for allworx.protocols.web.mailsetup: Thunderbird's autoconfig,
Outlook's Autodiscover (valid, malformed, oversized, hostile requests), the
Apple configuration profile, on the web port's real HTTP channel and from
the Users page.
"""

import plistlib
import xml.etree.ElementTree as ET

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.web import mailsetup
from allworx.protocols.web.service import CountingSite
from allworx.protocols.web.sites import SiteBySide
from allworx.tests.confs import MINIMAL
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import office_on_disk

LAN_PEER, WAN_PEER = "192.168.2.10", "198.51.100.10"
AD = "{%s}" % mailsetup.RESPONSE_NS
OL = "{%s}" % mailsetup.OUTLOOK_NS

REQUEST = ("""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="%s">
  <Request>
    <EMailAddress>%%s</EMailAddress>
    <AcceptableResponseSchema>%s</AcceptableResponseSchema>
  </Request>
</Autodiscover>""" % (mailsetup.REQUEST_NS, mailsetup.OUTLOOK_NS))


def exchange(office, method, path, peer=LAN_PEER, host="autoconfig.example.com", body=b""):
    """One request over twisted.web's HTTP channel; (code, headers dict, body)."""
    site = CountingSite(SiteBySide(office), office, "sites", lan_only=False)
    addr = IPv4Address("TCP", peer, 40000)
    proto = site.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr,
                                hostAddress=IPv4Address("TCP", "192.168.2.254", 80))
    proto.makeConnection(transport)
    head = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Connection: close",
            "Content-Length: %d" % len(body)]
    proto.dataReceived(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    raw_head, _, raw_body = transport.value().partition(b"\r\n\r\n")
    status, *lines = raw_head.decode("latin-1").split("\r\n")
    proto.connectionLost(None)
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status.split()[1]), headers, raw_body


def servers_of(xml_bytes, element):
    """(type, hostname, port, socketType, authentication, username) of each server."""
    root = ET.fromstring(xml_bytes)
    return [(s.get("type"), s.findtext("hostname"), int(s.findtext("port")),
             s.findtext("socketType"), s.findtext("authentication"), s.findtext("username"))
            for s in root.iter(element)]


class AutoconfigTests(unittest.TestCase):

    def setUp(self):
        self.office = office_on_disk(self)

    def test_document_lists_every_server_in_order(self):
        doc = mailsetup.autoconfig_xml(self.office.config)
        root = ET.fromstring(doc)
        self.assertEqual((root.tag, root.get("version")), ("clientConfig", "1.1"))
        provider = root.find("emailProvider")
        self.assertEqual(provider.get("id"), "example.com")
        self.assertEqual(provider.findtext("domain"), "example.com")
        login = ("password-cleartext", "%EMAILLOCALPART%")
        self.assertEqual(servers_of(doc, "incomingServer"), [
            ("imap", "imap.example.com", 993, "SSL") + login,
            ("imap", "imap.example.com", 143, "STARTTLS") + login,
            ("pop3", "pop.example.com", 995, "SSL") + login])
        self.assertEqual(servers_of(doc, "outgoingServer"), [
            ("smtp", "smtp.example.com", 465, "SSL") + login,
            ("smtp", "smtp.example.com", 587, "STARTTLS") + login])

    def test_both_paths_over_http_with_the_address_parameter(self):
        for path in ("/mail/config-v1.1.xml",
                     "/mail/config-v1.1.xml?emailAddress=alice%40example.com",
                     "/.well-known/autoconfig/mail/config-v1.1.xml?emailAddress=alice@example.com"):
            code, headers, body = exchange(self.office, "GET", path)
            self.assertEqual(code, 200, path)
            self.assertTrue(headers["content-type"].startswith("text/xml"), headers)
            self.assertEqual(body, mailsetup.autoconfig_xml(self.office.config))

    def test_ports_and_services_follow_the_configuration(self):
        office = office_on_disk(self, MINIMAL.replace(
            "[dns]", "[pop3]\nenabled = no\n\n[mail]\nsubmission_port = 2587\n\n[dns]"))
        doc = mailsetup.autoconfig_xml(office.config)
        self.assertEqual([s[:3] for s in servers_of(doc, "incomingServer")],
                         [("imap", "imap.example.com", 993), ("imap", "imap.example.com", 143)])
        self.assertEqual([s[2] for s in servers_of(doc, "outgoingServer")], [465, 2587])

    def test_the_wan_gets_it_by_the_set_up_names_only(self):
        code, _, body = exchange(self.office, "GET", "/mail/config-v1.1.xml", peer=WAN_PEER)
        self.assertEqual(code, 200)
        self.assertIn(b"<clientConfig", body)
        code, _, body = exchange(self.office, "GET", "/mail/config-v1.1.xml", peer=WAN_PEER,
                                 host="www.example.com")
        self.assertEqual(code, 404)   # the public site's own (missing) file
        code, _, _ = exchange(self.office, "POST", "/autodiscover/autodiscover.xml",
                              peer=WAN_PEER, host="autodiscover.example.com:80",
                              body=(REQUEST % "alice@example.com").encode())
        self.assertEqual(code, 200)

    def test_other_paths_are_the_site_as_before(self):
        code, _, body = exchange(self.office, "GET", "/")
        self.assertEqual(code, 200)
        self.assertIn(b"intranet", body)
        self.assertEqual(exchange(self.office, "GET", "/mail/other.xml")[0], 404)


class AutodiscoverTests(unittest.TestCase):

    def setUp(self):
        self.office = office_on_disk(self)

    def post(self, body, path="/autodiscover/autodiscover.xml"):
        return exchange(self.office, "POST", path, host="autodiscover.example.com", body=body)

    def test_settings_for_an_address(self):
        code, headers, body = self.post((REQUEST % "alice@example.com").encode())
        self.assertEqual(code, 200, body)
        self.assertTrue(headers["content-type"].startswith("text/xml"))
        root = ET.fromstring(body)
        self.assertEqual(root.tag, AD + "Autodiscover")
        account = root.find(OL + "Response/" + OL + "Account")
        self.assertEqual(account.findtext(OL + "AccountType"), "email")
        self.assertEqual(account.findtext(OL + "Action"), "settings")
        got = [(p.findtext(OL + "Type"), p.findtext(OL + "Server"), int(p.findtext(OL + "Port")),
                p.findtext(OL + "SSL"), p.findtext(OL + "LoginName"))
               for p in account.findall(OL + "Protocol")]
        self.assertEqual(got, [
            ("IMAP", "imap.example.com", 993, "on", "alice"),
            ("IMAP", "imap.example.com", 143, "off", "alice"),
            ("POP3", "pop.example.com", 995, "on", "alice"),
            ("SMTP", "smtp.example.com", 465, "on", "alice"),
            ("SMTP", "smtp.example.com", 587, "off", "alice")])
        starttls = [p for p in account.findall(OL + "Protocol") if p.findtext(OL + "SSL") == "off"]
        self.assertTrue(all(p.findtext(OL + "Encryption") == "TLS" for p in starttls))

    def test_case_of_the_path_and_other_domains(self):
        code, _, body = self.post((REQUEST % "carol@elsewhere.example").encode(),
                                  "/Autodiscover/Autodiscover.xml")
        self.assertEqual(code, 200)
        error = ET.fromstring(body).find(AD + "Response/" + AD + "Error")
        self.assertEqual(error.findtext(AD + "ErrorCode"), "600")

    def test_another_response_schema_is_not_provided(self):
        body = (REQUEST % "alice@example.com").replace(mailsetup.OUTLOOK_NS, "urn:other")
        code, _, out = self.post(body.encode())
        self.assertEqual(code, 200)
        self.assertIn(b"<ErrorCode>601</ErrorCode>", out)

    def test_malformed_requests_are_400(self):
        for body in (b"", b"not xml", b"<Autodiscover><Request>", (REQUEST % "").encode(),
                     (REQUEST % "no-at-sign").encode(), b"\xff\xfe<x/>",
                     (REQUEST % "a@b").encode().replace(b"</Request>", b"</Reqest>")):
            code, headers, out = self.post(body)
            self.assertEqual(code, 400, body)
            self.assertTrue(headers["content-type"].startswith("text/plain"))
            self.assertIn(b"bad Autodiscover request", out)

    def test_entities_are_refused(self):
        laughs = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">'
                  b'<!ENTITY y "&x;&x;&x;&x;&x;&x;&x;&x;">]>'
                  b'<Autodiscover><Request><EMailAddress>&y;@example.com</EMailAddress>'
                  b'</Request></Autodiscover>')
        external = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                    b'<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request>'
                    b'</Autodiscover>')
        for body in (laughs, external):
            code, _, out = self.post(body)
            self.assertEqual(code, 400)
            self.assertIn(b"DOCTYPE", out)
        code, _, out = self.post(b"<a>&undeclared;</a>")
        self.assertEqual(code, 400)

    def test_oversized_and_deep_requests_are_400(self):
        padding = b"<!--" + b"x" * (mailsetup.MAX_REQUEST + 1) + b"-->"
        code, _, out = self.post((REQUEST % "alice@example.com").encode() + padding)
        self.assertEqual(code, 400)
        self.assertIn(b"over %d bytes" % mailsetup.MAX_REQUEST, out)
        deep = b"<a>" * 100 + b"</a>" * 100
        code, _, out = self.post(deep)
        self.assertEqual(code, 400)
        self.assertIn(b"too deep", out)
        # Beyond what the web port takes at all: its own 413, before anything is read.
        code, _, _ = self.post(b"x" * (128 * 1024))
        self.assertEqual(code, 413)

    def test_get_is_told_to_post(self):
        code, headers, _ = exchange(self.office, "GET", "/autodiscover/autodiscover.xml",
                                    host="autodiscover.example.com")
        self.assertEqual((code, headers.get("allow")), (405, "POST"))


class ProfileTests(unittest.TestCase):

    def setUp(self):
        self.config = parse_config(MINIMAL)

    def test_profile_loads_and_holds_the_account(self):
        profile = plistlib.loads(mailsetup.mobileconfig(self.config, self.config.users["alice"]))
        self.assertEqual(profile["PayloadType"], "Configuration")
        (payload,) = profile["PayloadContent"]
        self.assertEqual(payload["PayloadType"], "com.apple.mail.managed")
        self.assertEqual(payload["EmailAddress"], "alice@example.com")
        self.assertEqual(payload["EmailAccountName"], "Alice Archer")
        self.assertEqual(payload["EmailAccountType"], "EmailTypeIMAP")
        self.assertEqual((payload["IncomingMailServerHostName"],
                          payload["IncomingMailServerPortNumber"],
                          payload["IncomingMailServerUseSSL"],
                          payload["IncomingMailServerUsername"]),
                         ("imap.example.com", 993, True, "alice"))
        self.assertEqual((payload["OutgoingMailServerHostName"],
                          payload["OutgoingMailServerPortNumber"],
                          payload["OutgoingMailServerUseSSL"]),
                         ("smtp.example.com", 465, True))

    def test_no_password_in_it(self):
        raw = mailsetup.mobileconfig(self.config, self.config.users["alice"])
        profile = plistlib.loads(raw)
        keys = set(profile) | set(profile["PayloadContent"][0])
        self.assertFalse([k for k in keys if "Password" in k and not k.startswith(
            "OutgoingPasswordSameAs")], keys)
        self.assertNotIn(b"argon2", raw)
        self.assertNotIn(self.config.users["alice"].password.encode(), raw)

    def test_identifiers_are_stable_and_per_user(self):
        alice = plistlib.loads(mailsetup.mobileconfig(self.config, self.config.users["alice"]))
        again = plistlib.loads(mailsetup.mobileconfig(self.config, self.config.users["alice"]))
        bob = plistlib.loads(mailsetup.mobileconfig(self.config, self.config.users["bob"]))
        self.assertEqual(alice["PayloadUUID"], again["PayloadUUID"])
        self.assertNotEqual(alice["PayloadUUID"], bob["PayloadUUID"])
        self.assertNotEqual(alice["PayloadContent"][0]["PayloadUUID"], alice["PayloadUUID"])


class UsersPageProfileTests(LoggedIn):

    def test_link_and_download(self):
        page = self.c.get("/users")
        self.assertIn('href="/users/alice/mobileconfig"', page.text)
        r = self.c.get("/users/alice/mobileconfig")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"content-type"),
                         [b"application/x-apple-aspen-config"])
        self.assertIn(b'filename="alice.mobileconfig"',
                      r.headers.getRawHeaders(b"content-disposition")[0])
        profile = plistlib.loads(r.text.encode("utf-8"))
        self.assertEqual(profile["PayloadContent"][0]["EmailAddress"], "alice@example.com")

    def test_unknown_user_is_404(self):
        self.assertEqual(self.c.get("/users/nobody/mobileconfig").code, 404)

    def test_login_required(self):
        self.c.post("/logout", {"csrf": self.c.csrf()})
        r = self.c.get("/users/alice/mobileconfig")
        self.assertEqual(r.code, 303)
        self.assertIn(b"/login", r.headers.getRawHeaders(b"location")[0])
