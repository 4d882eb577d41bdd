# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
The WAN DHCP client's messages (RFC 2131, options RFC 2132) and the UDP/IPv4
framing it needs on a packet socket, where no kernel UDP stack helps: a
client without an address sends from 0.0.0.0 and hears replies addressed to
an address it does not have yet.

Pure functions and values, no sockets. Everything that reads bytes raises
`MalformedPacket` with a sentence naming the problem.
"""

import ipaddress
import struct

import attr

from allworx.ipv4udp import internet_checksum, ipv4_udp_packet

BOOTREQUEST, BOOTREPLY = 1, 2
MAGIC = b"\x63\x82\x53\x63"
CLIENT_PORT, SERVER_PORT = 68, 67

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {DISCOVER: "DHCPDISCOVER", OFFER: "DHCPOFFER", REQUEST: "DHCPREQUEST",
                 DECLINE: "DHCPDECLINE", ACK: "DHCPACK", NAK: "DHCPNAK",
                 RELEASE: "DHCPRELEASE", INFORM: "DHCPINFORM"}

# Option codes this client reads or writes.
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_HOSTNAME = 12
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETERS = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_CLIENT_ID = 61

# What the client asks for: mask, router, lease, T1, T2. Never DNS servers
# (6) or domain (15): those are entered by hand (guide 5).
PARAMETERS = bytes([OPT_SUBNET_MASK, OPT_ROUTER, OPT_LEASE_TIME, OPT_T1, OPT_T2])

ZERO = ipaddress.IPv4Address(0)
BROADCAST = ipaddress.IPv4Address("255.255.255.255")

_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes before the cookie
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


class MalformedPacket(ValueError):
    """Bytes that are not a usable DHCP reply; the message says what is wrong."""


def _ip(raw):
    return ipaddress.IPv4Address(raw)


def mac_bytes(mac):
    """`02:a1:00:00:71:fe` -> 6 bytes."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError("%r is not a MAC address" % (mac,))
    return bytes(int(p, 16) for p in parts)


def mac_text(raw):
    return ":".join("%02x" % b for b in raw)


@attr.s(frozen=True, slots=True)
class DhcpMessage:
    """One BOOTP/DHCP message; `options` maps option code -> bytes."""

    op = attr.ib()
    xid = attr.ib()
    chaddr = attr.ib()                       # 6 bytes
    ciaddr = attr.ib(default=ZERO)
    yiaddr = attr.ib(default=ZERO)
    siaddr = attr.ib(default=ZERO)
    giaddr = attr.ib(default=ZERO)
    secs = attr.ib(default=0)
    flags = attr.ib(default=0)
    options = attr.ib(factory=dict)

    @property
    def message_type(self):
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @property
    def kind(self):
        """`DHCPOFFER`, `DHCPACK`, ... or None."""
        return MESSAGE_NAMES.get(self.message_type)

    def address_option(self, code):
        """An option holding one IPv4 address (the first of a list), or None."""
        value = self.options.get(code)
        if not value or len(value) % 4:
            return None
        return _ip(value[:4])

    def seconds_option(self, code):
        value = self.options.get(code)
        if value is None or len(value) != 4:
            return None
        return struct.unpack("!I", value)[0]

    @property
    def server_id(self):
        return self.address_option(OPT_SERVER_ID)

    def encode(self):
        """The message as bytes (padded to the BOOTP minimum of 300)."""
        fixed = _FIXED.pack(self.op, 1, 6, 0, self.xid, self.secs, self.flags,
                            self.ciaddr.packed, self.yiaddr.packed, self.siaddr.packed,
                            self.giaddr.packed, self.chaddr.ljust(16, b"\0"), b"", b"")
        opts = bytearray()
        # Message type first, as servers expect; then the rest in code order.
        for code in sorted(self.options, key=lambda c: (c != OPT_MESSAGE_TYPE, c)):
            value = self.options[code]
            for start in range(0, max(len(value), 1), 255):
                chunk = value[start:start + 255]
                opts += bytes([code, len(chunk)]) + chunk
        opts.append(OPT_END)
        data = fixed + MAGIC + bytes(opts)
        return data.ljust(300, b"\0")

    @classmethod
    def decode(cls, data):
        """Parse bytes into a DhcpMessage; MalformedPacket if they are not one."""
        if len(data) < _FIXED.size + 4:
            raise MalformedPacket("%d bytes is too short for a DHCP message" % len(data))
        (op, htype, hlen, _hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
         chaddr, sname, bootfile) = _FIXED.unpack_from(data)
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise MalformedPacket("op %d is neither request nor reply" % op)
        if htype != 1 or hlen != 6:
            raise MalformedPacket("hardware type %d/%d is not Ethernet" % (htype, hlen))
        if data[_FIXED.size:_FIXED.size + 4] != MAGIC:
            raise MalformedPacket("no DHCP magic cookie")
        options = parse_options(data[_FIXED.size + 4:])
        overload = options.get(OPT_OVERLOAD)
        if overload and len(overload) == 1:
            # RFC 2131 4.1: options may continue in the file and sname fields.
            if overload[0] & 1:
                _merge(options, parse_options(bootfile, need_end=False))
            if overload[0] & 2:
                _merge(options, parse_options(sname, need_end=False))
        return cls(op=op, xid=xid, chaddr=chaddr[:6], ciaddr=_ip(ciaddr),
                   yiaddr=_ip(yiaddr), siaddr=_ip(siaddr), giaddr=_ip(giaddr),
                   secs=secs, flags=flags, options=options)


def _merge(into, more):
    for code, value in more.items():
        into[code] = into.get(code, b"") + value


def parse_options(data, need_end=True):
    """Option bytes -> {code: value}; split options are joined (RFC 3396)."""
    options = {}
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return options
        if i + 1 >= n:
            raise MalformedPacket("option %d has no length byte" % code)
        length = data[i + 1]
        if i + 2 + length > n:
            raise MalformedPacket("option %d claims %d bytes, only %d left"
                                  % (code, length, n - i - 2))
        options[code] = options.get(code, b"") + bytes(data[i + 2:i + 2 + length])
        i += 2 + length
    if need_end and n:
        raise MalformedPacket("options do not end with the end option")
    return options


# ---------------------------------------------------------------- requests

def client_options(kind, mac, hostname=None, requested=None, server=None):
    """The options of a client message: type, client id, parameters, and the rest."""
    opts = {OPT_MESSAGE_TYPE: bytes([kind]), OPT_CLIENT_ID: b"\x01" + mac}
    if kind in (DISCOVER, REQUEST):
        opts[OPT_PARAMETERS] = PARAMETERS
        opts[OPT_MAX_SIZE] = struct.pack("!H", 1500)
        if hostname:
            opts[OPT_HOSTNAME] = hostname.encode("ascii", "replace")[:63]
    if requested is not None:
        opts[OPT_REQUESTED_IP] = requested.packed
    if server is not None:
        opts[OPT_SERVER_ID] = server.packed
    return opts


def client_message(kind, xid, mac, ciaddr=ZERO, secs=0, **options):
    """A BOOTREQUEST of `kind` (DISCOVER, REQUEST, ...) from the client `mac` (6 bytes)."""
    return DhcpMessage(op=BOOTREQUEST, xid=xid, chaddr=mac, ciaddr=ciaddr,
                       secs=min(secs, 0xFFFF),
                       options=client_options(kind, mac, **options))


# ---------------------------------------------------------------- leases

@attr.s(frozen=True, slots=True)
class Lease:
    """
    What a DHCPACK granted: the address with its netmask, the router, the
    server that granted it and the times, counted from `obtained` (POSIX
    seconds when the request that got it was sent, as RFC 2131 4.4.1 says).
    """

    address = attr.ib()          # IPv4Interface
    router = attr.ib()           # IPv4Address or None
    server = attr.ib()           # IPv4Address: the server identifier
    lease_time = attr.ib()
    t1 = attr.ib()
    t2 = attr.ib()
    obtained = attr.ib()

    @property
    def renew_at(self):
        return self.obtained + self.t1

    @property
    def rebind_at(self):
        return self.obtained + self.t2

    @property
    def expires_at(self):
        return self.obtained + self.lease_time

    def describe(self):
        router = "router %s" % self.router if self.router else "no router"
        return "%s %s lease %ds (T1 %ds, T2 %ds)" % (
            self.address, router, self.lease_time, self.t1, self.t2)

    def as_json(self):
        return {"address": str(self.address), "router": str(self.router or ""),
                "server": str(self.server), "lease_time": self.lease_time,
                "t1": self.t1, "t2": self.t2, "obtained": self.obtained}

    @classmethod
    def from_json(cls, data):
        """A lease saved by `as_json`; ValueError naming the field if it is bad."""
        try:
            lease = cls(address=ipaddress.IPv4Interface(data["address"]),
                        router=ipaddress.IPv4Address(data["router"]) if data["router"] else None,
                        server=ipaddress.IPv4Address(data["server"]),
                        lease_time=int(data["lease_time"]), t1=int(data["t1"]),
                        t2=int(data["t2"]), obtained=float(data["obtained"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("saved lease is unusable: %s" % (e,))
        if not 0 < lease.t1 < lease.t2 < lease.lease_time:
            raise ValueError("saved lease has inconsistent times")
        return lease


def lease_from_ack(msg, obtained, avoid=()):
    """
    The Lease a DHCPACK (or the offer of one) grants, taking only the
    address, netmask and router. ValueError, naming what is wrong, when the
    reply cannot be used: no address, no lease time, an address inside one
    of the networks in `avoid` (the LAN), a router that cannot be one.
    """
    if msg.yiaddr == ZERO:
        raise ValueError("no address offered")
    server = msg.server_id or (msg.siaddr if msg.siaddr != ZERO else None)
    if server is None:
        raise ValueError("no server identifier")
    lease_time = msg.seconds_option(OPT_LEASE_TIME)
    if lease_time is None:
        raise ValueError("no lease time")
    if lease_time == 0xFFFFFFFF:
        lease_time = 0x7FFFFFFF  # "infinite": far enough
    if lease_time < 10:
        raise ValueError("lease of %d seconds is too short to use" % lease_time)
    mask = msg.address_option(OPT_SUBNET_MASK)
    try:
        prefix = ipaddress.IPv4Network("0.0.0.0/%s" % mask).prefixlen if mask else None
    except ValueError:
        raise ValueError("netmask %s is not a valid mask" % mask)
    if prefix is None:
        # RFC 2132 3.3 lets a server omit it: fall back to the address's class.
        first = int(msg.yiaddr) >> 24
        prefix = 8 if first < 128 else 16 if first < 192 else 24
    address = ipaddress.IPv4Interface("%s/%d" % (msg.yiaddr, prefix))
    for net in avoid:
        if address.network.overlaps(net):
            raise ValueError("%s overlaps the LAN %s" % (address, net))
    router = msg.address_option(OPT_ROUTER)
    if router is not None and router in (ZERO, BROADCAST, address.ip):
        raise ValueError("router %s cannot be a gateway" % router)
    # A router outside the subnet (an ISP giving a /32) is reached on-link.
    t1 = msg.seconds_option(OPT_T1)
    t2 = msg.seconds_option(OPT_T2)
    if t2 is None or not 0 < t2 < lease_time:
        t2 = lease_time * 7 // 8
    if t1 is None or not 0 < t1 < t2:
        t1 = min(lease_time // 2, t2 - 1)
    return Lease(address=address, router=router, server=server, lease_time=lease_time,
                 t1=t1, t2=t2, obtained=obtained)


# ---------------------------------------------------------------- UDP/IPv4

def udp_ip_packet(src, dst, payload, sport=CLIENT_PORT, dport=SERVER_PORT, ident=0):
    """The client's DHCP message as an IPv4/UDP packet."""
    return ipv4_udp_packet(src, dst, sport, dport, payload, ident=ident)


@attr.s(frozen=True, slots=True)
class Datagram:
    """A UDP datagram taken out of an IPv4 packet."""

    src = attr.ib()
    dst = attr.ib()
    sport = attr.ib()
    dport = attr.ib()
    payload = attr.ib()


def parse_udp_ip(packet):
    """
    The UDP datagram in an IPv4 packet. The UDP checksum is not checked: on
    a packet socket a locally offloaded checksum may not be filled in yet,
    and the DHCP message is validated on its own anyway.
    """
    if len(packet) < _IP.size:
        raise MalformedPacket("%d bytes is too short for IPv4" % len(packet))
    (vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst) = _IP.unpack_from(packet)
    if vihl >> 4 != 4:
        raise MalformedPacket("not IPv4")
    ihl = (vihl & 0xF) * 4
    if ihl < 20 or total < ihl + _UDP.size or total > len(packet):
        raise MalformedPacket("IPv4 lengths do not add up")
    if internet_checksum(packet[:ihl]) != 0:
        raise MalformedPacket("bad IPv4 header checksum")
    if proto != 17:
        raise MalformedPacket("not UDP")
    if frag & 0x3FFF:
        raise MalformedPacket("a fragment")
    sport, dport, length, _ = _UDP.unpack_from(packet, ihl)
    if length < _UDP.size or ihl + length > total:
        raise MalformedPacket("UDP length does not fit the packet")
    return Datagram(_ip(src), _ip(dst), sport, dport,
                    bytes(packet[ihl + _UDP.size:ihl + length]))


# ---------------------------------------------------------------- ARP (RFC 5227)

ETH_P_ARP = 0x0806
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_REQUEST, ARP_REPLY = 1, 2


def arp_probe(mac, ip):
    """An ARP probe for `ip` from `mac` (6 bytes): who has it? (sender address 0.0.0.0)."""
    return _ARP.pack(1, 0x0800, 6, 4, ARP_REQUEST, mac, ZERO.packed, b"\0" * 6, ip.packed)


def arp_conflict(packet, ip, mac):
    """
    The MAC (text) of another host claiming `ip` in this ARP packet, or None:
    a reply or announcement from it, or its own probe for the same address.
    """
    if len(packet) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(packet)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    if sha == mac:
        return None
    if spa == ip.packed or (op == ARP_REQUEST and spa == ZERO.packed and tpa == ip.packed):
        return mac_text(sha)
    return None
