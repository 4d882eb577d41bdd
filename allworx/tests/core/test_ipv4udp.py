"""
Tests for allworx.ipv4udp: the IPv4/UDP builder and parser agree, checksums
hold, and what is not one whole IPv4/UDP packet is refused with the DHCP
codec's error (the server builds with this module, the WAN client builds and
parses with it).
"""

import ipaddress
import struct

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx import ipv4udp
from allworx.ipv4udp import internet_checksum, ipv4_udp_packet, parse_ipv4_udp
from allworx.protocols.dhcp import codec

IP = ipaddress.IPv4Address
ANY = IP("0.0.0.0")
BROADCAST = IP("255.255.255.255")


def with_ip_checksum(header):
    """`header` (bytes) with its IPv4 checksum recomputed."""
    header = bytearray(header)
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header)


class RoundTripTests(unittest.TestCase):

    @given(st.binary(max_size=1400), st.integers(0, 0xFFFF), st.booleans())
    def test_build_then_parse(self, payload, ident, dont_fragment):
        packet = ipv4_udp_packet(ANY, BROADCAST, 68, 67, payload, ident=ident,
                                 dont_fragment=dont_fragment)
        d = parse_ipv4_udp(packet)
        self.assertEqual((d.src, d.dst, d.sport, d.dport, d.payload),
                         (ANY, BROADCAST, 68, 67, payload))
        self.assertEqual(internet_checksum(packet[:20]), 0)
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
        self.assertEqual(internet_checksum(pseudo + packet[20:]), 0)

    def test_a_dhcp_reply_through_both(self):
        reply = codec.DhcpPacket(op=codec.BOOTREPLY, xid=7, yiaddr="192.168.2.7",
                                 options={codec.MESSAGE_TYPE: bytes([codec.ACK])})
        wire = codec.encode(reply)
        d = parse_ipv4_udp(ipv4_udp_packet("192.168.2.254", "192.168.2.7",
                                           codec.SERVER_PORT, codec.CLIENT_PORT, wire))
        self.assertEqual((d.sport, d.dport), (67, 68))
        self.assertEqual(codec.decode(d.payload), reply)

    def test_trailing_bytes_after_the_packet_are_not_payload(self):
        # An Ethernet frame pads short packets: the IPv4 total length decides.
        packet = ipv4_udp_packet(ANY, BROADCAST, 68, 67, b"abc") + b"\0" * 20
        self.assertEqual(parse_ipv4_udp(packet).payload, b"abc")


class RefusalTests(unittest.TestCase):
    """Each refusal is the codec's MalformedPacket, naming the problem."""

    def good(self):
        return bytearray(ipv4_udp_packet(ANY, BROADCAST, 68, 67, b"payload"))

    def assertRefused(self, packet, words):
        e = self.assertRaises(codec.MalformedPacket, parse_ipv4_udp, bytes(packet))
        self.assertIn(words, str(e))

    def test_one_error_class(self):
        self.assertIs(ipv4udp.MalformedPacket, codec.MalformedPacket)
        self.assertTrue(issubclass(codec.MalformedPacket, ValueError))

    def test_short(self):
        self.assertRefused(b"", "too short")
        self.assertRefused(self.good()[:19], "too short")

    def test_truncated(self):
        self.assertRefused(self.good()[:30], "lengths do not add up")

    def test_bad_header_checksum(self):
        packet = self.good()
        packet[8] ^= 1          # the TTL, not the checksum that covers it
        self.assertRefused(packet, "checksum")

    def test_not_ipv4(self):
        packet = self.good()
        packet[0] = 0x65
        self.assertRefused(packet, "not IPv4")

    def test_not_udp(self):
        packet = self.good()
        packet[:20] = with_ip_checksum(bytes(packet[:9]) + b"\x06" + bytes(packet[10:20]))
        self.assertRefused(packet, "not UDP")

    def test_fragment(self):
        packet = self.good()
        packet[:20] = with_ip_checksum(bytes(packet[:6]) + b"\x20\x00" + bytes(packet[8:20]))
        self.assertRefused(packet, "fragment")

    def test_udp_length_beyond_the_packet(self):
        packet = self.good()
        packet[24:26] = struct.pack("!H", len(packet))
        self.assertRefused(packet, "UDP length")

    @settings(max_examples=300)
    @given(st.binary(max_size=700))
    def test_garbage_raises_only_malformed(self, data):
        try:
            parse_ipv4_udp(data)
        except codec.MalformedPacket:
            pass

    @settings(max_examples=300)
    @given(st.integers(0, 200), st.integers(0, 255))
    def test_mutated_packets_parse_or_refuse(self, where, value):
        packet = bytearray(ipv4_udp_packet(ANY, BROADCAST, 68, 67, b"x" * 40))
        packet[where % len(packet)] = value
        try:
            parse_ipv4_udp(bytes(packet))
        except codec.MalformedPacket:
            pass
