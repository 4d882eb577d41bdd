"""Each vendor's file for a given office, field by field (SPEC 19)."""

import xml.etree.ElementTree as ET

from twisted.trial import unittest

from allworx.protocols.provisioning import vendors
from allworx.protocols.provisioning.vendors.facts import (
    TimeZone, build_facts, format_offset, host_timezone, posix_offset)
from allworx.tests.provisioning.fakes import BERLIN, office_config


def facts_of(mac, config=None):
    config = config or office_config()
    return build_facts(config, config.phone_by_mac(mac), "s3cr3t-" + mac, BERLIN)


def render(name, model, mac):
    return vendors.render(vendors.resolve(name), model, facts_of(mac)).decode("utf-8")


def key_values(text):
    return dict(line.split(" = ", 1) for line in text.splitlines()[1:] if line)


class FactsTests(unittest.TestCase):

    def test_from_the_office(self):
        f = facts_of("001565123456")
        self.assertEqual((f.mac, f.server, f.port, f.transport, f.extension, f.display_name,
                          f.secret, f.voicemail, f.ntp, f.dns, f.label, f.language),
                         ("001565123456", "192.168.2.254", 5060, "udp", "101", "Alice Archer",
                          "s3cr3t-001565123456", "400", "192.168.2.254", "192.168.2.254",
                          "Front desk", "en"))

    def test_posix_offsets(self):
        for posix, offset in (("UTC0", 0), ("CET-1CEST,M3.5.0,M10.5.0/3", 3600),
                              ("EST5EDT,M3.2.0,M11.1.0", -18000), ("<+0530>-5:30", 19800),
                              ("<-03>3", -10800)):
            self.assertEqual(posix_offset(posix), offset, posix)
        self.assertEqual((format_offset(3600), format_offset(-16200, "")), ("+01:00", "-0430"))

    def test_host_timezone_from_a_tzif_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"TZif2" + b"\0" * 40 + b"\nCET-1CEST,M3.5.0,M10.5.0/3\n")
        tz = host_timezone(path)
        self.assertEqual((tz.posix, tz.offset), ("CET-1CEST,M3.5.0,M10.5.0/3", 3600))
        self.assertEqual(host_timezone(path + ".missing"), TimeZone())


class NamesTests(unittest.TestCase):

    def test_the_set(self):
        cases = {
            "y000000000000.cfg": (("yealink",), "common", None),
            "000000000000.cfg": (("polycom",), "common", None),
            "001565123456.cfg": (("yealink", "polycom"), "config", "001565123456"),
            "0004f2aabbcc-allworx.cfg": (("polycom",), "settings", "0004f2aabbcc"),
            "cfg000b82000001.xml": (("grandstream",), "config", "000b82000001"),
            "000413000002.xml": (("snom",), "config", "000413000002"),
            "00041300000A.xml": (("snom",), "config", "00041300000a"),
            "spa001122000003.xml": (("cisco-spa",), "config", "001122000003"),
            "02aa00000004.baresip": (("generic",), "config", "02aa00000004"),
        }
        for name, (models, kind, mac) in cases.items():
            w = vendors.resolve(name)
            self.assertEqual((w.models, w.kind, w.mac), (models, kind, mac), name)

    def test_outside_the_set(self):
        for name in ("", "index.html", "../etc/passwd", "001565123456.CFG", "00156512345.cfg",
                     "00041300000a.xml", "sub/001565123456.cfg", "cfg000000000000.xml",
                     "001565123456.cfg.bak", "y000000000001.cfg"):
            self.assertIsNone(vendors.resolve(name), name)

    def test_model_guess(self):
        shared = vendors.resolve("0004f2aabbcc.cfg")
        self.assertEqual(vendors.guess_model(shared), "polycom")        # by the maker's OUI
        self.assertEqual(vendors.guess_model(shared, configured="yealink"), "yealink")
        self.assertEqual(vendors.guess_model(vendors.resolve("02aa00000009.cfg"),
                                             vendor_class="yealink SIP-T46S"), "yealink")
        self.assertEqual(vendors.guess_model(vendors.resolve("02aa00000009.cfg"),
                                             user_agent="PolycomVVX-VVX_400-UA/5.9"), "polycom")
        self.assertIsNone(vendors.guess_model(vendors.resolve("02aa00000009.cfg")))
        self.assertEqual(vendors.guess_model(vendors.resolve("cfg02aa00000009.xml"),
                                             configured="yealink"), "grandstream")


class YealinkTests(unittest.TestCase):

    def test_per_mac_file(self):
        text = render("001565123456.cfg", "yealink", "001565123456")
        self.assertTrue(text.startswith("#!version:1.0.0.1\n"))
        kv = key_values(text)
        expected = {
            "account.1.enable": "1", "account.1.label": "Front desk",
            "account.1.display_name": "Alice Archer", "account.1.user_name": "101",
            "account.1.auth_name": "101", "account.1.password": "s3cr3t-001565123456",
            "account.1.sip_server.1.address": "192.168.2.254",
            "account.1.sip_server.1.port": "5060", "account.1.sip_server.1.transport_type": "0",
            "account.1.subscribe_mwi": "1", "account.1.subscribe_mwi_to_vm": "1",
            "voice_mail.number.1": "400", "local_time.ntp_server1": "192.168.2.254",
            "local_time.time_zone": "+1", "local_time.time_zone_name": "Europe/Berlin",
            "network.primary_dns": "192.168.2.254", "lang.gui": "English",
        }
        for key, value in expected.items():
            self.assertEqual(kv.get(key), value, key)

    def test_common_file_has_no_account(self):
        text = vendors.render_common("y000000000000.cfg", "192.168.2.254",
                                     TimeZone("Asia/Kolkata", "IST-5:30", 19800)).decode()
        kv = key_values(text)
        self.assertEqual((kv["local_time.ntp_server1"], kv["local_time.time_zone"]),
                         ("192.168.2.254", "+5:30"))
        self.assertNotIn("account.", text)


class PolycomTests(unittest.TestCase):

    def test_master_files_name_the_settings_file(self):
        master = ET.fromstring(render("0004f2aabbcc.cfg", "polycom", "0004f2aabbcc"))
        self.assertEqual((master.tag, master.get("CONFIG_FILES")),
                         ("APPLICATION", "0004f2aabbcc-allworx.cfg"))
        default = ET.fromstring(vendors.render_common("000000000000.cfg", "192.168.2.254",
                                                      BERLIN))
        self.assertEqual(default.get("CONFIG_FILES"), "[PHONE_MAC_ADDRESS]-allworx.cfg")

    def test_settings(self):
        root = ET.fromstring(render("0004f2aabbcc-allworx.cfg", "polycom", "0004f2aabbcc"))
        self.assertEqual(root.tag, "polycomConfig")
        p = root[0].attrib
        expected = {
            "reg.1.address": "102", "reg.1.auth.userId": "102",
            "reg.1.auth.password": "s3cr3t-0004f2aabbcc", "reg.1.displayName": "Bob Baker",
            "reg.1.label": "102", "reg.1.server.1.address": "192.168.2.254",
            "reg.1.server.1.port": "5060", "reg.1.server.1.transport": "UDPOnly",
            "msg.mwi.1.subscribe": "102", "msg.mwi.1.callBackMode": "contact",
            "msg.mwi.1.callBack": "400", "tcpIpApp.sntp.address": "192.168.2.254",
            "tcpIpApp.sntp.gmtOffset": "3600", "device.dns.serverAddress": "192.168.2.254",
            "lcl.ml.lang": "English_United_States",
        }
        for key, value in expected.items():
            self.assertEqual(p.get(key), value, key)


class GrandstreamTests(unittest.TestCase):

    def test_p_values(self):
        root = ET.fromstring(render("cfg000b82000001.xml", "grandstream", "000b82000001"))
        self.assertEqual((root.tag, root.findtext("mac")), ("gs_provision", "000b82000001"))
        p = {e.tag: e.text for e in root.find("config")}
        expected = {"P271": "1", "P270": "101", "P47": "192.168.2.254", "P35": "101",
                    "P36": "101", "P34": "s3cr3t-000b82000001", "P3": "Alice Archer",
                    "P33": "400", "P99": "1", "P130": "0", "P30": "192.168.2.254",
                    "P64": "CET-1CEST,M3.5.0,M10.5.0/3", "P1362": "en"}
        self.assertEqual(p, expected)


class SnomTests(unittest.TestCase):

    def test_settings(self):
        root = ET.fromstring(render("000413000002.xml", "snom", "000413000002"))
        settings = {e.tag: e.text for e in root.find("phone-settings")}
        expected = {"user_active": "on", "user_name": "102", "user_pname": "102",
                    "user_pass": "s3cr3t-000413000002", "user_realname": "Bob Baker",
                    "user_host": "192.168.2.254:5060;transport=udp", "user_mailbox": "400",
                    "user_idle_text": "102", "ntp_server": "192.168.2.254",
                    "dns_server1": "192.168.2.254", "utc_offset": "3600",
                    "language": "English"}
        for key, value in expected.items():
            self.assertEqual(settings.get(key), value, key)
        self.assertEqual(root.find("phone-settings/user_name").get("idx"), "1")


class CiscoSpaTests(unittest.TestCase):

    def test_flat_profile(self):
        root = ET.fromstring(render("spa001122000003.xml", "cisco-spa", "001122000003"))
        self.assertEqual(root.tag, "flat-profile")
        p = {e.tag: e.text for e in root}
        expected = {"Proxy_1_": "192.168.2.254:5060", "User_ID_1_": "101",
                    "Auth_ID_1_": "101", "Use_Auth_ID_1_": "Yes",
                    "Password_1_": "s3cr3t-001122000003", "Display_Name_1_": "Alice Archer",
                    "SIP_Transport_1_": "UDP", "Voice_Mail_Number": "400",
                    "Mailbox_ID_1_": "101", "Primary_NTP_Server": "192.168.2.254",
                    "Primary_DNS": "192.168.2.254", "Time_Zone": "GMT+01:00"}
        for key, value in expected.items():
            self.assertEqual(p.get(key), value, key)


class GenericTests(unittest.TestCase):

    def test_baresip_lines(self):
        lines = render("02aa00000004.baresip", "generic", "02aa00000004").splitlines()
        self.assertEqual(lines[0], "# allworx generic provisioning for 02aa00000004")
        accounts = [l for l in lines if l.startswith("<sip:")]
        config = [l for l in lines if l and not l.startswith(("<sip:", "#"))]
        self.assertEqual(accounts, ["<sip:102@192.168.2.254>;auth_user=102;"
                                    "auth_pass=s3cr3t-02aa00000004;regint=600;mwi=yes"])
        self.assertEqual(config, ["dns_server 192.168.2.254:53"])
        # The label's characters that would end a line or a parameter are left out.
        self.assertIn("# Bob Baker, extension 102, Lab phone two", lines)

    def test_another_sip_port(self):
        config = office_config("\n[sip]\nport = 5070\n")
        f = build_facts(config, config.phone_by_mac("02aa00000004"), "x", BERLIN)
        text = vendors.render(vendors.resolve("02aa00000004.baresip"), "generic", f).decode()
        self.assertIn("<sip:102@192.168.2.254:5070>;", text)
