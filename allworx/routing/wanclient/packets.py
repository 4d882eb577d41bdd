# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
What is the WAN DHCP client's own in DHCP (RFC 2131 client side): the
messages it sends, its view of a server's reply, the `Lease` it reads from a
DHCPACK, and the ARP probe of a new address (RFC 5227). The bytes are the
shared codec's (`allworx.protocols.dhcp.codec`: header, options, the T1/T2
rule) and the IPv4/UDP framing is `allworx.ipv4udp`'s.

Pure functions and values, no sockets. Everything that reads bytes raises
`MalformedPacket` with a sentence naming the problem.
"""

import ipaddress
import struct

import attr

from allworx.protocols.dhcp import codec
from allworx.protocols.dhcp.codec import (
    BOOTREQUEST, BROADCAST, CLIENT_ID, DISCOVER, HOST_NAME, LEASE_TIME,
    MAX_MESSAGE_SIZE, MESSAGE_NAMES, MESSAGE_TYPE, PARAMETER_REQUEST_LIST, REBINDING_TIME,
    RENEWAL_TIME, REQUEST, REQUESTED_ADDRESS, ROUTER, SERVER_ID, SUBNET_MASK, ZERO,
    MalformedPacket, read_option, renewal_times)

# What the client asks for: mask, router, lease, T1, T2. Never DNS servers
# (6) or domain (15): those are entered by hand (guide 5).
PARAMETERS = bytes([SUBNET_MASK, ROUTER, LEASE_TIME, RENEWAL_TIME, REBINDING_TIME])
# The largest reply it takes (option 57): an Ethernet frame.
ACCEPTED_SIZE = 1500
# Its own messages hold a few short options and are never overloaded: they
# are limited only by IPv4.
_SEND_LIMIT = 0xFFFF


def mac_bytes(mac):
    """`02:a1:00:00:71:fe` -> 6 bytes."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError("%r is not a MAC address" % (mac,))
    return bytes(int(p, 16) for p in parts)


@attr.s(frozen=True, slots=True)
class DhcpMessage:
    """
    One DHCP message as the client sees it: an Ethernet client's header
    fields and `options` (option code -> bytes). Encoded and decoded by the
    shared codec.
    """

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
        value = self.options.get(MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @property
    def kind(self):
        """`DHCPOFFER`, `DHCPACK`, ... or None."""
        name = MESSAGE_NAMES.get(self.message_type)
        return "DHCP" + name if name else None

    def address_option(self, code):
        """An option holding one IPv4 address (the first of a list), or None."""
        value = read_option(self.options, code)
        return value[0] if isinstance(value, tuple) else value

    def seconds_option(self, code):
        """A time option (lease time, T1, T2) in seconds, or None."""
        return read_option(self.options, code)

    @property
    def server_id(self):
        return self.address_option(SERVER_ID)

    def encode(self):
        """The message as bytes (padded to the BOOTP minimum of 300)."""
        # Message type first, as servers expect; then the rest in code order,
        # each as given (the codec sends an encoded option area as is).
        body = codec.encode_options(
            (code, self.options[code])
            for code in sorted(self.options, key=lambda c: (c != MESSAGE_TYPE, c)))
        packet = codec.DhcpPacket(
            op=self.op, xid=self.xid, chaddr=self.chaddr.ljust(16, b"\0"), secs=self.secs,
            flags=self.flags, ciaddr=self.ciaddr, yiaddr=self.yiaddr, siaddr=self.siaddr,
            giaddr=self.giaddr, options=self.options, encoded_options=body)
        return codec.encode(packet, max_size=_SEND_LIMIT)

    @classmethod
    def decode(cls, data):
        """Parse bytes into a DhcpMessage; MalformedPacket if they are not one."""
        p = codec.decode(data)
        if p.htype != 1 or p.hlen != 6:
            raise MalformedPacket("hardware type %d/%d is not Ethernet" % (p.htype, p.hlen))
        return cls(op=p.op, xid=p.xid, chaddr=p.chaddr[:6], ciaddr=p.ciaddr,
                   yiaddr=p.yiaddr, siaddr=p.siaddr, giaddr=p.giaddr,
                   secs=p.secs, flags=p.flags, options=p.options)


# ---------------------------------------------------------------- requests

def client_options(kind, mac, hostname=None, requested=None, server=None):
    """The options of a client message: type, client id, parameters, and the rest."""
    opts = {MESSAGE_TYPE: bytes([kind]), CLIENT_ID: b"\x01" + mac}
    if kind in (DISCOVER, REQUEST):
        opts[PARAMETER_REQUEST_LIST] = PARAMETERS
        opts[MAX_MESSAGE_SIZE] = codec.pack_option(MAX_MESSAGE_SIZE, ACCEPTED_SIZE)
        if hostname:
            opts[HOST_NAME] = hostname.encode("ascii", "replace")[:63]
    if requested is not None:
        opts[REQUESTED_ADDRESS] = requested.packed
    if server is not None:
        opts[SERVER_ID] = server.packed
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
    lease_time = msg.seconds_option(LEASE_TIME)
    if lease_time is None:
        raise ValueError("no lease time")
    if lease_time == 0xFFFFFFFF:
        lease_time = 0x7FFFFFFF  # "infinite": far enough
    if lease_time < 10:
        raise ValueError("lease of %d seconds is too short to use" % lease_time)
    mask = msg.address_option(SUBNET_MASK)
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
    router = msg.address_option(ROUTER)
    if router is not None and router in (ZERO, BROADCAST, address.ip):
        raise ValueError("router %s cannot be a gateway" % router)
    # A router outside the subnet (an ISP giving a /32) is reached on-link.
    # The server's T1 and T2 when they make sense, else the rule it should have used.
    default_t1, default_t2 = renewal_times(lease_time)
    t1 = msg.seconds_option(RENEWAL_TIME)
    t2 = msg.seconds_option(REBINDING_TIME)
    if t2 is None or not 0 < t2 < lease_time:
        t2 = default_t2
    if t1 is None or not 0 < t1 < t2:
        t1 = min(default_t1, t2 - 1)
    return Lease(address=address, router=router, server=server, lease_time=lease_time,
                 t1=t1, t2=t2, obtained=obtained)


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
        return sha.hex(":")
    return None
