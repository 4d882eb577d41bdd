"""
The DHCP options that point desk phones at the provisioning service, by
vendor class (SPEC 19), and the vendor class kept with the lease.
"""

import ipaddress

from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp import journal as lj
from allworx.protocols.dhcp.phoneoptions import (
    PhonePointers, phone_vendor, vendor_class_text)
from allworx.protocols.dhcp.pool import LeasePool, PoolSettings
from allworx.protocols.dhcp.responder import DhcpResponder
from allworx.tests.confs import MINIMAL, with_sections

IP = ipaddress.IPv4Address
PHONE = "80:5e:c0:12:34:56"
URL = "http://192.168.2.254:8089/"

# Vendor classes as the phones send them (from their DHCP DISCOVERs).
YEALINK = b"yealink"
POLYCOM = b"Polycom-VVX410"
GRANDSTREAM = b"Grandstream GXP2170 dslforum.org"
SNOM = b"snom320"
CISCO = b"Cisco SPA504G"
LINKSYS = b"LINKSYS SPA-942"


def request(kind, mac=PHONE, vendor=None, prl=None, ciaddr="0.0.0.0", **options):
    p = c.DhcpPacket(op=c.BOOTREQUEST, xid=7, chaddr=c.mac_to_chaddr(mac), ciaddr=ciaddr)
    p.set(c.MESSAGE_TYPE, kind)
    if vendor is not None:
        p.options[c.VENDOR_CLASS] = vendor
    if prl is not None:
        p.set(c.PARAMETER_REQUEST_LIST, prl)
    for name, value in options.items():
        p.set(int(name[1:]), value)
    return p


class VendorMatchTests(unittest.TestCase):

    def test_families_by_substring_without_case(self):
        self.assertEqual(phone_vendor(YEALINK), "yealink")
        self.assertEqual(phone_vendor(b"YEALINK SIP-T46S"), "yealink")
        self.assertEqual(phone_vendor(POLYCOM), "polycom")
        # Polycom's RFC 3925 style class: binary enterprise number, then text.
        self.assertEqual(phone_vendor(b"\x00\x00\x36\x3d\x05\x02\x07Polycom"), "polycom")
        self.assertEqual(phone_vendor(GRANDSTREAM), "grandstream")
        self.assertEqual(phone_vendor(SNOM), "snom")
        self.assertEqual(phone_vendor(CISCO), "cisco-spa")
        self.assertEqual(phone_vendor(LINKSYS), "cisco-spa")
        self.assertEqual(phone_vendor("Snom D735"), "snom")

    def test_unknown_and_absent(self):
        for raw in (None, b"", b"MSFT 5.0", b"udhcp 1.36.1", b"baresip", b"\xff\xfe"):
            self.assertIsNone(phone_vendor(raw), raw)

    def test_vendor_class_text(self):
        self.assertEqual(vendor_class_text(b"  Polycom-VVX410 "), "Polycom-VVX410")
        self.assertEqual(vendor_class_text(b"\x00\x00\x36\x3dPolycom\n"), "6=Polycom")
        self.assertEqual(len(vendor_class_text(b"x" * 300)), 64)
        self.assertIsNone(vendor_class_text(b"\x00\x01"))
        self.assertIsNone(vendor_class_text(None))


class PointerTests(unittest.TestCase):

    def pointers(self, extra=""):
        return PhonePointers.from_config(parse_config(with_sections(extra) if extra else MINIMAL))

    def test_each_family(self):
        p = self.pointers()
        self.assertEqual(p.url, URL)
        url = URL.encode()
        for family in ("yealink", "grandstream"):
            self.assertEqual(dict(p.options(family, None)), {66: url}, family)
        self.assertEqual(dict(p.options("polycom", None)), {66: url, 160: url})
        self.assertEqual(dict(p.options("cisco-spa", None)), {
            66: url, 160: url + b"spa$MA.xml", 150: IP("192.168.2.254").packed})
        snom = dict(p.options("snom", None))
        self.assertEqual(snom[66], url)
        self.assertEqual(snom[67], b"{mac}.xml")
        # Option 43: sub-option 66 (the URL), sub-option 67 (the file), NUL ended.
        self.assertEqual(snom[43], bytes((66, len(url) + 1)) + url + b"\0"
                         + bytes((67, 10)) + b"{mac}.xml\0")

    def test_port_from_the_config(self):
        p = self.pointers("[provisioning]\nport = 8090\n")
        self.assertEqual(dict(p.options("yealink", None))[66], b"http://192.168.2.254:8090/")

    def test_unknown_client_gets_tftp_only_when_asked(self):
        p = self.pointers()
        self.assertEqual(p.options(None, None), ())
        self.assertEqual(p.options(None, (1, 3, 6)), ())
        self.assertEqual(p.options(None, (1, 66, 3)), ((66, b"192.168.2.254"),))

    def test_disabled_sends_nothing(self):
        p = self.pointers("[provisioning]\nenabled = no\n")
        self.assertEqual(p.options("polycom", None), ())
        self.assertEqual(p.options(None, (66,)), ())


class ResponderTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.start(MINIMAL)

    def start(self, text):
        config = parse_config(text)
        self.pool = LeasePool(PoolSettings.from_config(config), self.clock)
        self.responder = DhcpResponder(config, self.pool)

    def reply(self, kind=c.DISCOVER, **kw):
        outcome = self.responder.handle(request(kind, **kw))
        return c.decode(c.encode(outcome.reply))

    def test_polycom_gets_66_and_160_unasked(self):
        offer = self.reply(vendor=POLYCOM, prl=[1, 3, 6])
        self.assertEqual(offer.get(66), URL)
        self.assertEqual(offer.get(160), URL)
        self.assertEqual(offer.get(c.ROUTER), (IP("192.168.2.254"),))

    def test_yealink_without_a_request_list(self):
        offer = self.reply(vendor=YEALINK)
        self.assertEqual(offer.get(66), URL)
        self.assertNotIn(160, offer.options)
        for code in (1, 3, 6, 15, 28, 42):          # everything else as before
            self.assertIn(code, offer.options)

    def test_snom_and_cisco_in_the_ack(self):
        offer = self.reply(vendor=SNOM, prl=[1, 3, 66, 67, 43])
        ack = self.reply(c.REQUEST, vendor=SNOM, prl=[1, 3, 66, 67, 43],
                         o50=offer.yiaddr, o54="192.168.2.254")
        self.assertEqual(ack.message_type, c.ACK)
        self.assertEqual((ack.get(66), ack.get(67)), (URL, "{mac}.xml"))
        self.assertIn(43, ack.options)
        cisco = self.reply(mac="00:0e:08:00:00:01", vendor=CISCO)
        self.assertEqual(cisco.get(160), URL + "spa$MA.xml")
        self.assertEqual(cisco.get(150), (IP("192.168.2.254"),))

    def test_unknown_vendor_gets_the_tftp_server_when_it_asks(self):
        self.assertNotIn(66, self.reply(vendor=b"MSFT 5.0", prl=[1, 3, 6]).options)
        self.assertNotIn(66, self.reply().options)
        self.assertEqual(self.reply(vendor=b"baresip", prl=[1, 3, 6, 66]).get(66),
                         "192.168.2.254")
        self.assertEqual(self.reply(prl=[1, 66]).get(66), "192.168.2.254")

    def test_inform_gets_the_pointer(self):
        # Polycom asks again with DHCPINFORM when the ACK had no boot server.
        ack = self.reply(c.INFORM, vendor=POLYCOM, prl=[66, 160], ciaddr="192.168.2.150")
        self.assertEqual(ack.message_type, c.ACK)
        self.assertEqual((ack.get(66), ack.get(160)), (URL, URL))

    def test_nak_carries_no_pointer(self):
        nak = self.reply(c.REQUEST, vendor=POLYCOM, o50="10.0.0.5")
        self.assertEqual(nak.message_type, c.NAK)
        self.assertNotIn(66, nak.options)

    def test_cache_keeps_families_apart(self):
        # Same type, lease time and request list: the block differs by family.
        prl = [1, 3, 6]
        self.assertEqual(self.reply(vendor=POLYCOM, prl=prl).get(160), URL)
        plain = self.reply(mac="02:00:00:00:00:09", prl=prl)
        self.assertNotIn(66, plain.options)
        self.assertNotIn(160, plain.options)
        self.assertEqual(self.reply(mac="02:00:00:00:00:0a", vendor=YEALINK, prl=prl).get(66),
                         URL)
        self.assertNotIn(160, self.reply(mac="02:00:00:00:00:0a", vendor=YEALINK,
                                         prl=prl).options)

    def test_disabled_and_reconfigured(self):
        self.assertEqual(self.reply(vendor=YEALINK).get(66), URL)
        self.responder.reconfigure(parse_config(with_sections("[provisioning]\nenabled = no\n")))
        self.assertNotIn(66, self.reply(vendor=YEALINK).options)
        self.assertNotIn(66, self.reply(prl=[66]).options)
        self.responder.reconfigure(parse_config(with_sections("[provisioning]\nport = 8090\n")))
        self.assertEqual(self.reply(vendor=YEALINK).get(66), "http://192.168.2.254:8090/")

    def test_lease_records_the_vendor_class(self):
        offer = self.reply(vendor=POLYCOM)
        self.assertEqual(self.pool.lease_of(PHONE).vendor_class, "Polycom-VVX410")
        self.reply(c.REQUEST, vendor=POLYCOM, o50=offer.yiaddr, o54="192.168.2.254")
        [lease] = self.pool.active_leases()
        self.assertEqual(lease.as_dict()["vendor_class"], "Polycom-VVX410")
        # A renewal without option 60 keeps what the phone said before.
        self.clock.advance(100)
        self.responder.handle(request(c.REQUEST, ciaddr=offer.yiaddr))
        self.assertEqual(self.pool.active_leases()[0].vendor_class, "Polycom-VVX410")
        self.assertEqual(self.pool.active_leases()[0].expires, self.clock.seconds() + 86400)

    def test_journal_keeps_the_vendor_class(self):
        offer = self.reply(vendor=GRANDSTREAM)
        self.reply(c.REQUEST, vendor=GRANDSTREAM, o50=offer.yiaddr, o54="192.168.2.254")
        [lease] = self.pool.active_leases()
        line = lj.encode_bind(lease)
        self.assertEqual(line, lj.encode_record(lj.bind_record(lease)))
        state, skipped = lj.replay([line])
        self.assertEqual((state[str(lease.address)], skipped), (lease, 0))
        # Old journal lines (no "vendor") still read, as leases without one.
        old = lj.encode_record({"op": "bind", "mac": PHONE, "ip": "192.168.2.7",
                                "expires": 5, "host": None})
        self.assertIsNone(lj.replay([old])[0]["192.168.2.7"].vendor_class)
