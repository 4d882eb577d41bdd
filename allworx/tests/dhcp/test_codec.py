"""Tests for allworx.protocols.dhcp.codec: round trips, option types, overload, fuzzing."""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.dhcp import codec as c
IP = ipaddress.IPv4Address


def discover(**options):
    p = c.DhcpPacket(op=c.BOOTREQUEST, xid=0x12345678,
                     chaddr=c.mac_to_chaddr("02:00:00:00:00:01"), flags=c.FLAG_BROADCAST)
    p.set(c.MESSAGE_TYPE, c.DISCOVER)
    for code, value in options.items():
        p.set(int(code[1:]), value)
    return p


class RoundTripTests(unittest.TestCase):

    def test_discover_round_trip(self):
        p = discover(o55=[1, 3, 6, 15, 42], o12="pc1", o50="192.168.2.7")
        wire = c.encode(p)
        self.assertGreaterEqual(len(wire), c.BOOTP_MIN_SIZE)
        back = c.decode(wire)
        self.assertEqual(back, p)
        self.assertEqual(back.mac, "02:00:00:00:00:01")
        self.assertEqual(back.message_type, c.DISCOVER)
        self.assertTrue(back.broadcast)
        self.assertEqual(back.get(c.PARAMETER_REQUEST_LIST), (1, 3, 6, 15, 42))
        self.assertEqual(back.get(c.HOST_NAME), "pc1")
        self.assertEqual(back.get(c.REQUESTED_ADDRESS), IP("192.168.2.7"))

    def test_header_fields(self):
        p = c.DhcpPacket(op=c.BOOTREPLY, xid=7, hops=1, secs=9, ciaddr="10.0.0.1",
                         yiaddr="10.0.0.2", siaddr="10.0.0.3", giaddr="10.0.0.4",
                         sname=b"server", file=b"boot.img")
        back = c.decode(c.encode(p))
        self.assertEqual((back.ciaddr, back.yiaddr, back.siaddr, back.giaddr),
                         tuple(IP("10.0.0.%d" % i) for i in (1, 2, 3, 4)))
        self.assertEqual((back.sname, back.file, back.hops, back.secs), (b"server", b"boot.img", 1, 9))

    def test_every_option_type(self):
        values = {"ip": IP("192.168.2.254"), "ips": (IP("1.2.3.4"), IP("5.6.7.8")),
                  "u8": 200, "u16": 1500, "u32": 86400, "u8s": (1, 3, 6),
                  "str": "example.com", "bytes": b"\x01\x02\x00\xff"}
        for code, kind in c.OPTION_TYPES.items():
            raw = c.pack_option(code, values[kind])
            self.assertEqual(c.unpack_option(code, raw), values[kind], (code, kind))
            if code in (c.OVERLOAD, c.MESSAGE_TYPE):
                continue  # structural: written by encode itself / checked on decode
            p = c.DhcpPacket(op=1, xid=1)
            p.options[c.MESSAGE_TYPE] = b"\x01"
            p.options[code] = raw
            self.assertEqual(c.decode(c.encode(p)).get(code), values[kind])

    def test_unknown_option_passes_through(self):
        p = discover()
        p.options[224] = b"private"
        self.assertEqual(c.decode(c.encode(p)).options[224], b"private")
        self.assertEqual(c.decode(c.encode(p)).get(224), b"private")

    def test_long_option_split_and_joined(self):
        p = discover()
        p.options[119] = bytes(range(256)) * 2  # 512 bytes: three instances on the wire
        back = c.decode(c.encode(p, max_size=1500))
        self.assertEqual(back.options[119], bytes(range(256)) * 2)

    def test_overload_written_and_read(self):
        p = discover()
        # 440 bytes of options do not fit a 576-byte message without overload:
        # they need the options field, file and sname (placed largest first;
        # placed in order, the last 40 bytes fitted nowhere).
        p.options[224] = b"a" * 250
        p.options[225] = b"b" * 100
        p.options[226] = b"c" * 40
        p.options[227] = b"d" * 40
        wire = c.encode(p)
        self.assertLessEqual(len(wire), 576 - 28)
        back = c.decode(wire)
        self.assertEqual(back.options[224], b"a" * 250)
        self.assertEqual(back.options[225], b"b" * 100)
        self.assertEqual(back.options[226], b"c" * 40)
        self.assertEqual(back.options[227], b"d" * 40)
        self.assertEqual([k for k in back.options if k != c.OVERLOAD][0], c.MESSAGE_TYPE)
        self.assertEqual(back.options[c.OVERLOAD], b"\x03")
        self.assertEqual((back.file, back.sname), (b"", b""))

    def test_too_many_options(self):
        p = discover()
        for code in range(200, 205):
            p.options[code] = b"x" * 200
        self.assertRaises(ValueError, c.encode, p)

    def test_bad_values_refused_on_encode(self):
        self.assertRaises(ValueError, c.pack_option, c.LEASE_TIME, -1)
        self.assertRaises(ValueError, c.pack_option, c.ROUTER, ["nope"])


class MalformedTests(unittest.TestCase):

    def good(self):
        return bytearray(c.encode(discover(o12="pc")))

    def assertRefused(self, data, words):
        e = self.assertRaises(c.MalformedPacket, c.decode, bytes(data))
        self.assertIn(words, str(e))

    def test_short(self):
        self.assertRefused(b"\x01" * 100, "too short")

    def test_bad_op(self):
        data = self.good()
        data[0] = 9
        self.assertRefused(data, "op 9")

    def test_no_cookie(self):
        data = self.good()
        data[236:240] = b"\0\0\0\0"
        self.assertRefused(data, "magic cookie")

    def test_hlen(self):
        data = self.good()
        data[2] = 17
        self.assertRefused(data, "hardware address length")

    def test_option_overruns(self):
        data = c.encode(discover())[:c.OPTIONS_OFFSET] + b"\x35\x01\x01\x0c\x20ab"
        self.assertRefused(data, "option 12")

    def test_option_without_length(self):
        data = c.encode(discover())[:c.OPTIONS_OFFSET] + b"\x35\x01\x01\x0c"
        self.assertRefused(data, "no length")

    def test_bad_message_type(self):
        data = c.encode(discover())[:c.OPTIONS_OFFSET] + b"\x35\x01\x09\xff"
        self.assertRefused(data, "message type")

    def test_bad_overload(self):
        data = c.encode(discover())[:c.OPTIONS_OFFSET] + b"\x35\x01\x01\x34\x01\x07\xff"
        self.assertRefused(data, "overload")

    def test_malformed_typed_option_reads_as_default(self):
        p = discover()
        p.options[c.REQUESTED_ADDRESS] = b"\x01\x02"
        back = c.decode(c.encode(p))
        self.assertIsNone(back.get(c.REQUESTED_ADDRESS))
        self.assertRaises(c.MalformedPacket, c.unpack_option, c.REQUESTED_ADDRESS, b"\x01\x02")
        self.assertRaises(c.MalformedPacket, c.unpack_option, c.ROUTER, b"")

    def test_not_bytes(self):
        e = self.assertRaises(c.MalformedPacket, c.decode, 12)
        self.assertIn("expected bytes", str(e))


option_items = st.dictionaries(
    st.integers(1, 254), st.binary(min_size=0, max_size=300), max_size=6)


class FuzzTests(unittest.TestCase):

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=700))
    def test_random_bytes_decode_or_refuse(self, data):
        try:
            c.decode(data)
        except c.MalformedPacket:
            pass

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=400), st.integers(0, 399), st.integers(0, 255))
    def test_mutated_packets_decode_or_refuse(self, tail, where, value):
        data = bytearray(c.encode(discover(o12="pc1", o55=[1, 3, 6])) + tail)
        data[where % len(data)] = value
        try:
            p = c.decode(bytes(data))
        except c.MalformedPacket:
            return
        for code in p.options:
            p.get(code)  # typed reads never raise

    @settings(max_examples=200, deadline=None)
    @given(option_items, st.integers(0, 2 ** 32 - 1), st.integers(576, 1500))
    def test_round_trip_any_options(self, options, xid, max_size):
        options.pop(c.OVERLOAD, None)
        options[c.MESSAGE_TYPE] = b"\x05"
        p = c.DhcpPacket(op=c.BOOTREPLY, xid=xid, options=dict(options))
        try:
            wire = c.encode(p, max_size=max_size)
        except ValueError:
            return  # did not fit even with overload
        self.assertLessEqual(len(wire), max(max_size - 28, c.BOOTP_MIN_SIZE))
        back = c.decode(wire)
        back.options.pop(c.OVERLOAD, None)
        self.assertEqual(back.options, {k: v for k, v in options.items()})


class SharedPiecesTests(unittest.TestCase):
    """What the server and the WAN client take from the codec."""

    def test_renewal_times(self):
        self.assertEqual(c.renewal_times(86400), (43200, 75600))
        self.assertEqual(c.renewal_times(120), (60, 105))
        self.assertEqual(c.renewal_times(3601), (1800, 3150))

    def test_read_option(self):
        options = {c.LEASE_TIME: b"\x00\x00\x0e\x10", c.ROUTER: b"\x01\x02"}
        self.assertEqual(c.read_option(options, c.LEASE_TIME), 3600)
        self.assertIsNone(c.read_option(options, c.ROUTER))          # malformed
        self.assertEqual(c.read_option(options, c.MESSAGE, ""), "")  # absent

    def test_ports(self):
        self.assertEqual((c.SERVER_PORT, c.CLIENT_PORT), (67, 68))


class AddressTextTests(unittest.TestCase):

    def test_same_as_str_and_bounded(self):
        for n in range(9000):
            address = ipaddress.IPv4Address(0xC6120000 + n)
            self.assertEqual(c.address_text(address), str(address))
        self.assertLessEqual(len(c._TEXTS), 8192)
