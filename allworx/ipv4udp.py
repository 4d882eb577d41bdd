# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
IPv4/UDP packets built by hand, for the two places that must speak DHCP below
the socket layer: the LAN server's replies to clients with no address yet and
the WAN client's broadcasts before it has one.
"""

import ipaddress
import struct

_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
UDP = 17


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
