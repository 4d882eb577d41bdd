# -*- test-case-name: allworx.tests.core.test_ipv4udp -*-
"""
IPv4/UDP packets built and read by hand, for the two places that must speak
DHCP below the socket layer: the LAN server's replies to clients with no
address yet and the WAN client, which broadcasts before it has an address
and hears replies sent to one it does not have yet.

Pure functions, no sockets. Reading refuses bytes that are not one whole
unfragmented IPv4/UDP packet with `MalformedPacket`, the same error the DHCP
codec raises for the message inside.
"""

import ipaddress
import struct

import attr

_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
UDP = 17


class MalformedPacket(ValueError):
    """The bytes are not a well-formed packet; the message says what is wrong."""


def internet_checksum(data):
    """The 16-bit ones' complement sum of RFC 1071."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp_packet(src, dst, sport, dport, payload, ident=0, dont_fragment=False):
    """An IPv4 packet carrying one UDP datagram, both checksums filled in."""
    src = ipaddress.IPv4Address(src).packed
    dst = ipaddress.IPv4Address(dst).packed
    udp_len = _UDP.size + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, UDP, udp_len)
    udp = _UDP.pack(sport, dport, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", internet_checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    header = _IP.pack(0x45, 0x10, _IP.size + udp_len, ident & 0xFFFF,
                      0x4000 if dont_fragment else 0, 64, UDP, 0, src, dst)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + udp


@attr.s(frozen=True, slots=True)
class Datagram:
    """A UDP datagram taken out of an IPv4 packet (addresses are IPv4Address)."""

    src = attr.ib()
    dst = attr.ib()
    sport = attr.ib()
    dport = attr.ib()
    payload = attr.ib()


def parse_ipv4_udp(packet):
    """
    The UDP datagram in an IPv4 packet (bytes from the IP header on, as a
    SOCK_DGRAM packet socket gives them); MalformedPacket for anything else:
    short, not IPv4 or not UDP, lengths that do not add up, a bad header
    checksum, a fragment. The UDP checksum is not checked: on a packet socket
    a locally offloaded checksum may not be filled in yet, and the payload is
    validated by its own codec anyway.
    """
    if len(packet) < _IP.size:
        raise MalformedPacket("%d bytes is too short for IPv4" % len(packet))
    (vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst) = _IP.unpack_from(packet)
    if vihl >> 4 != 4:
        raise MalformedPacket("not IPv4")
    ihl = (vihl & 0xF) * 4
    if ihl < _IP.size or total < ihl + _UDP.size or total > len(packet):
        raise MalformedPacket("IPv4 lengths do not add up")
    if internet_checksum(bytes(packet[:ihl])) != 0:
        raise MalformedPacket("bad IPv4 header checksum")
    if proto != UDP:
        raise MalformedPacket("not UDP")
    if frag & 0x3FFF:
        raise MalformedPacket("a fragment")
    sport, dport, length, _ = _UDP.unpack_from(packet, ihl)
    if length < _UDP.size or ihl + length > total:
        raise MalformedPacket("UDP length does not fit the packet")
    return Datagram(ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst), sport, dport,
                    bytes(packet[ihl + _UDP.size:ihl + length]))
