"""
Mail clients' automatic set-up in the zone (SPEC 17, guide 8.3): the SRV
records of RFC 6186 and RFC 8314 with their ports from the configuration,
the built-in names for mail and set-up, a `[record]` taking a generated
SRV's place, and the SRV records on the wire for LAN and WAN peers.
"""

import ipaddress
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import BUILTIN_NAMES, parse_config
from allworx.protocols.dns import zone as dnszone
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.dns.test_service import LAN_PC, WAN_HOST, ServiceCase, parse, query
from allworx.tests.dns.test_zone import LAN, WAN, addresses, zone_for

# (owner, port, target) as SPEC 17 lists them with the default ports.
EXPECTED = [
    ("_submission._tcp.example.com", 587, b"smtp.example.com"),
    ("_submissions._tcp.example.com", 465, b"smtp.example.com"),
    ("_imap._tcp.example.com", 143, b"imap.example.com"),
    ("_imaps._tcp.example.com", 993, b"imap.example.com"),
    ("_pop3._tcp.example.com", 110, b"pop.example.com"),
    ("_pop3s._tcp.example.com", 995, b"pop.example.com"),
]


def srv(result):
    """(priority, weight, port, target) of each SRV answer."""
    return [(rr.payload.priority, rr.payload.weight, rr.payload.port, rr.payload.target.name)
            for rr in result.answers if rr.type == dns.SRV]


class SrvRecordTests(unittest.TestCase):
    """The six SRV records, priority 0 weight 1, with their targets' addresses."""

    def test_every_mail_service_with_default_ports(self):
        zone = zone_for(MINIMAL)
        for owner, port, target in EXPECTED:
            result = zone.answer(owner, dns.SRV)
            self.assertEqual(result.rcode, dns.OK, owner)
            self.assertEqual(srv(result), [(0, 1, port, target)], owner)
            self.assertTrue(all(rr.auth for rr in result.answers))
            # The target's addresses come along in the additional section.
            glue = sorted(rr.payload.dottedQuad() for rr in result.additional)
            self.assertEqual(glue, sorted([LAN, str(WAN)]), owner)

    def test_ports_come_from_the_configuration(self):
        conf = with_sections("[pop3]\nport = 1110\npop3s_port = 1995\n", MINIMAL.replace(
            "[dns]", "[mail]\nsubmission_port = 2587\n\n[dns]"))
        zone = zone_for(conf)
        self.assertEqual(srv(zone.answer("_submission._tcp.example.com", dns.SRV)),
                         [(0, 1, 2587, b"smtp.example.com")])
        self.assertEqual(srv(zone.answer("_pop3._tcp.example.com", dns.SRV)),
                         [(0, 1, 1110, b"pop.example.com")])
        self.assertEqual(srv(zone.answer("_pop3s._tcp.example.com", dns.SRV)),
                         [(0, 1, 1995, b"pop.example.com")])

    def test_optional_sections_are_read_when_present(self):
        # [imap] and [mail] submissions_port come with SPEC 17; stand-ins for them.
        class Section:
            def __init__(self, **kw):
                self.__dict__.update(kw)

        class Config:
            def __init__(self, config, **sections):
                self._config = config
                self.__dict__.update(sections)

            def __getattr__(self, name):
                return getattr(self._config, name)

        base = parse_config(MINIMAL)
        mail = Section(enabled=True, submission_port=587, submissions_port=1465)
        config = Config(base, mail=mail, imap=Section(enabled=True, port=1143, imaps_port=1993))
        self.assertEqual(dnszone.mail_services(config), [
            ("_submission._tcp", 587, "smtp"), ("_submissions._tcp", 1465, "smtp"),
            ("_imap._tcp", 1143, "imap"), ("_imaps._tcp", 1993, "imap"),
            ("_pop3._tcp", 110, "pop"), ("_pop3s._tcp", 995, "pop")])
        config.imap = Section(enabled=False, port=143, imaps_port=993)
        config.mail = Section(enabled=True, submission_port=587, submissions_port=0)
        services = dict((label, (port, target)) for label, port, target in
                        dnszone.mail_services(config))
        self.assertEqual(services["_imaps._tcp"], (0, None))
        self.assertEqual(services["_submissions._tcp"], (0, None))
        self.assertEqual(services["_submission._tcp"], (587, "smtp"))

    def test_a_service_that_is_off_is_decidedly_not_available(self):
        zone = zone_for(with_sections("[pop3]\nenabled = no\n"))
        # RFC 6186 section 3.4: target "." and port 0.
        self.assertEqual(srv(zone.answer("_pop3s._tcp.example.com", dns.SRV)), [(0, 1, 0, b"")])
        self.assertEqual(zone.answer("_pop3s._tcp.example.com", dns.SRV).additional, ())
        self.assertIn(("_pop3s._tcp.example.com", "SRV", "0 1 0 .", dnszone.TTL), zone.rows())

    def test_rows_and_zone_text(self):
        zone = zone_for(MINIMAL)
        self.assertIn(("_imaps._tcp.example.com", "SRV", "0 1 993 imap.example.com",
                       dnszone.TTL), zone.rows())
        self.assertIn("_imaps._tcp.example.com.\t300\tIN\tSRV\t0 1 993 imap.example.com",
                      zone.as_text())

    def test_the_tcp_label_is_an_empty_non_terminal(self):
        zone = zone_for(MINIMAL)
        result = zone.answer("_tcp.example.com", dns.A)
        self.assertEqual((result.rcode, result.answers), (dns.OK, ()))
        self.assertEqual(zone.answer("_nothing._tcp.example.com", dns.SRV).rcode, dns.ENAME)
        # Another type at an SRV owner is NODATA, and ANY brings the SRV.
        self.assertEqual(zone.answer("_imap._tcp.example.com", dns.A).answers, ())
        self.assertEqual(len(srv(zone.answer("_imap._tcp.example.com", dns.ALL_RECORDS))), 1)

    def test_a_record_of_the_same_name_wins(self):
        zone = zone_for(with_sections(
            "[record _imaps._tcp]\ncname = srv-imaps.example.net\n\n"
            "[record _submission._tcp]\ntxt = handled elsewhere\n"))
        result = zone.answer("_imaps._tcp.example.com", dns.SRV)
        self.assertEqual(srv(result), [])
        self.assertEqual([rr.payload.name.name for rr in result.answers],
                         [b"srv-imaps.example.net"])
        self.assertEqual(srv(zone.answer("_submission._tcp.example.com", dns.SRV)), [])
        self.assertEqual(len(zone.answer("_submission._tcp.example.com", dns.TXT).answers), 1)
        # The others stay.
        self.assertEqual(srv(zone.answer("_imap._tcp.example.com", dns.SRV)),
                         [(0, 1, 143, b"imap.example.com")])


class MailNameTests(unittest.TestCase):
    """The built-in names SPEC 17 adds, and the server's own name."""

    def test_new_names_are_built_in(self):
        for name in ("imap", "mail", "autoconfig", "autodiscover"):
            self.assertIn(name, BUILTIN_NAMES)
            self.assertEqual(dnszone.BUILTIN_SIDES[name], ("lan", "wan"))

    def test_new_names_have_lan_and_wan_addresses(self):
        zone = zone_for(MINIMAL)
        for name in ("imap", "mail", "autoconfig", "autodiscover", "allworx"):
            self.assertEqual(addresses(zone.answer(name + ".example.com", dns.A)),
                             sorted([LAN, str(WAN)]), name)

    def test_without_a_wan_address_the_names_still_exist(self):
        zone = zone_for(MINIMAL, wan=None)
        for name in ("imap", "mail", "autoconfig", "autodiscover"):
            self.assertEqual(addresses(zone.answer(name + ".example.com", dns.A)), [LAN])

    def test_a_dhcp_client_cannot_take_them(self):
        dhcp = dnszone.DhcpView({"autoconfig": ipaddress.IPv4Address("192.168.2.77"),
                                 "allworx": ipaddress.IPv4Address("192.168.2.78")}, {})
        zone = zone_for(MINIMAL, dhcp=dhcp)
        self.assertEqual(addresses(zone.answer("autoconfig.example.com", dns.A)),
                         sorted([LAN, str(WAN)]))
        self.assertEqual(addresses(zone.answer("allworx.example.com", dns.A)),
                         sorted([LAN, str(WAN)]))


class SrvOnTheWireTests(ServiceCase):
    """The SRV records as LAN and WAN peers get them, full path and fast path."""

    conf = MINIMAL

    def test_both_sides_get_the_srv_records(self):
        # Each side gets the target's address of its own view (issue 15: the
        # LAN address inside, the WAN address outside; no longer both).
        for peer, address in ((LAN_PC, LAN), (WAN_HOST, str(WAN))):
            for _ in range(2):   # the second answer comes from the fast path
                m = self.ask("_imaps._tcp.example.com", dns.SRV, peer=peer)
                self.assertEqual(m.rCode, dns.OK)
                self.assertTrue(m.auth)
                self.assertEqual(srv(m), [(0, 1, 993, b"imap.example.com")])
                self.assertEqual([rr.payload.dottedQuad() for rr in m.additional
                                  if rr.type == dns.A], [address])
        self.assertGreater(self.service.fast.zone_hits, 0)

    def test_the_target_is_not_compressed(self):
        m = self.ask("_submissions._tcp.example.com", dns.SRV)
        self.assertEqual(srv(m), [(0, 1, 465, b"smtp.example.com")])
        wire = self.port.sent[-1][0]
        # RFC 2782: the target is written out in full, never as a pointer.
        rdata = (b"\x00\x00\x00\x01\x01\xd1" + b"\x04smtp\x07example\x03com\x00")
        self.assertIn(rdata, wire)

    def test_a_port_change_moves_the_record(self):
        self.assertEqual(srv(self.ask("_pop3s._tcp.example.com", dns.SRV)),
                         [(0, 1, 995, b"pop.example.com")])
        self.office.update_settings("pop3", {"pop3s_port": "1995"})
        self.assertEqual(srv(self.ask("_pop3s._tcp.example.com", dns.SRV)),
                         [(0, 1, 1995, b"pop.example.com")])

    def test_tcp_answers_srv(self):
        proto = self.service.factory.buildProtocol(("192.168.2.10", 40001))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.168.2.10", 40001))
        proto.makeConnection(transport)
        data = query("_pop3._tcp.example.com", dns.SRV)
        proto.dataReceived(struct.pack("!H", len(data)) + data)
        out = transport.value()
        self.assertEqual(srv(parse(out[2:])), [(0, 1, 110, b"pop.example.com")])
        proto.connectionLost(None)
