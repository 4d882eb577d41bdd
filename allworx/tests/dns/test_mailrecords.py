"""
Tests of the mail's TXT records in the office zone (SPEC 18): DKIM keys, SPF,
DMARC, long values as several strings, `[record]` overrides, and the DNS
service publishing the keys the mail service makes.
"""

import os

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.dkimkeys import DkimKeys, mail_dns_records
from allworx.office import DkimKeysChanged, Office
from allworx.protocols.dns import service as dnsservice
from allworx.protocols.dns import zone as dnszone
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.dkimtesting import install_keys
from allworx.tests.dns import test_service as servicetests


def txt_strings(zone, name):
    """The character-strings of each TXT record at `name`."""
    return [rr.payload.data for rr in zone.answer(name, dns.TXT).answers if rr.type == dns.TXT]


class ZoneTests(unittest.TestCase):

    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.keys = install_keys(self.data_dir)

    def zone(self, text=MINIMAL):
        config = parse_config(text)
        keeper = dnszone.ZoneKeeper(Clock())
        keeper.rebuild(config, None, None, mail_dns_records(config, self.keys))
        return keeper.zone

    def test_dkim_key_split_into_strings_of_one_record(self):
        zone = self.zone()
        [strings] = txt_strings(zone, "allworx._domainkey.example.com")
        self.assertGreater(len(strings), 1)
        self.assertTrue(all(len(s) <= 255 for s in strings))
        self.assertEqual(b"".join(strings).decode(), self.keys.txt("allworx"))
        [ed] = txt_strings(zone, "allworx-ed25519._domainkey.example.com")
        self.assertEqual(b"".join(ed).decode(), self.keys.txt("allworx-ed25519"))
        # The zone-file form shows the strings too.
        [row] = [e for e in zone.entries if e.name == "allworx._domainkey.example.com"]
        self.assertEqual(row.value.count('" "'), len(strings) - 1)
        # _domainkey itself exists, empty: NODATA, not NXDOMAIN.
        self.assertEqual(zone.answer("_domainkey.example.com", dns.TXT).rcode, dns.OK)

    def test_spf_and_dmarc(self):
        zone = self.zone()
        self.assertEqual(txt_strings(zone, "example.com"), [[b"v=spf1 mx -all"]])
        self.assertEqual(txt_strings(zone, "_dmarc.example.com"), [[b"v=DMARC1; p=quarantine"]])

    def test_record_overrides_are_served_once(self):
        zone = self.zone(with_sections("""
[record _dmarc]
txt = v=DMARC1; p=reject

[record @]
txt = v=spf1 mx include:_spf.provider.example -all
"""))
        self.assertEqual(txt_strings(zone, "_dmarc.example.com"), [[b"v=DMARC1; p=reject"]])
        self.assertEqual(txt_strings(zone, "example.com"),
                         [[b"v=spf1 mx include:_spf.provider.example -all"]])
        [row] = [e for e in zone.entries if e.name == "_dmarc.example.com"]
        self.assertEqual(row.source, "record")

    def test_an_apex_txt_that_is_not_spf_sits_beside_it(self):
        zone = self.zone(with_sections("[record @]\ntxt = site-verification=abc\n"))
        self.assertEqual(sorted(txt_strings(zone, "example.com")),
                         [[b"site-verification=abc"], [b"v=spf1 mx -all"]])

    def test_long_record_txt_split_on_characters(self):
        text = "é" * 200       # 400 bytes: the split must not cut a character
        zone = self.zone(with_sections("[record long]\ntxt = %s\n" % text))
        [strings] = txt_strings(zone, "long.example.com")
        self.assertEqual([len(s) for s in strings], [254, 146])
        self.assertEqual(b"".join(strings).decode("utf-8"), text)

    def test_quotes_and_backslashes_survive(self):
        zone = self.zone(with_sections('[record odd]\ntxt = say "hi" \\ bye\n'))
        self.assertEqual(txt_strings(zone, "odd.example.com"), [[b'say "hi" \\ bye']])

    def test_without_mail_records_the_zone_is_as_before(self):
        config = parse_config(MINIMAL)
        self.assertFalse([e for e in dnszone.zone_entries(config) if e.rtype == "TXT"])


class ServicePublishesTests(servicetests.ServiceCase):
    """The DNS service publishes what is under data_dir/dkim, again when the keys change."""

    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.reactor = servicetests.UdpMemoryReactor()
        self.reactor.advance(1_700_000_000)
        self.office = Office(parse_config(MINIMAL), data_dir=self.data_dir)
        self.service = dnsservice.DnsService(self.office, reactor=self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def txt(self, name, peer):
        m = self.ask(name, dns.TXT, peer=peer)
        return [b"".join(rr.payload.data) for rr in m.answers if rr.type == dns.TXT]

    def test_keys_published_when_made_and_dropped_when_gone(self):
        name = "allworx._domainkey.example.com"
        self.assertEqual(self.txt(name, servicetests.LAN_PC), [])
        self.assertEqual(self.txt("_dmarc.example.com", servicetests.LAN_PC),
                         [b"v=DMARC1; p=quarantine"])
        keys = DkimKeys(self.data_dir)
        keys.ensure("allworx")
        self.office.emit(DkimKeysChanged(("allworx", "allworx-ed25519")))
        for peer in (servicetests.LAN_PC, servicetests.WAN_HOST):
            self.assertEqual(self.txt(name, peer), [keys.txt("allworx").encode()])
        # Dropped (a retired selector): the service reads the directory again.
        keys.drop("allworx")
        self.office.emit(DkimKeysChanged(()))
        self.assertEqual(self.txt(name, servicetests.LAN_PC), [])

    def test_selector_change_in_the_config_rebuilds(self):
        install_keys(self.data_dir, "office2")
        self.office.update_settings("mail", {"dkim_selector": "office2"})
        self.assertEqual(len(self.txt("office2._domainkey.example.com", servicetests.LAN_PC)), 1)
