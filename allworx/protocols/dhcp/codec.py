# -*- test-case-name: allworx.tests.dhcp.test_codec -*-
"""
The DHCP wire format (RFC 2131 packets, RFC 2132 options): bytes to a
`DhcpPacket` and back, with no sockets and no decisions.

Options are kept as raw bytes by code (repeated codes concatenated, RFC 3396);
`OPTION_TYPES` says how the known ones read and write, and unknown codes pass
through untouched. Decoding refuses anything malformed with `MalformedPacket`
(a ValueError whose message names the problem) and never raises anything
else; options carried in the `file` and `sname` fields (overload, option 52)
are read, and written when a reply does not fit the client's maximum size.

Shared by the LAN server (`responder`, `service`) and the WAN client
(`allworx.routing.wanclient`): the ports, the option table, and the rule for
the renewal times T1 and T2 (`renewal_times`) live here once. Pure: no
sockets, no reactor.
"""

import ipaddress
import struct

import attr

# One error for refused bytes, from the IPv4/UDP header to the last option:
# defined with the framing, raised here for the DHCP message.
from allworx.ipv4udp import MalformedPacket

SERVER_PORT, CLIENT_PORT = 67, 68
ZERO = ipaddress.IPv4Address(0)
BROADCAST = ipaddress.IPv4Address("255.255.255.255")

BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = HEADER.size          # 236
OPTIONS_OFFSET = HEADER_SIZE + 4   # after the magic cookie
BOOTP_MIN_SIZE = 300               # old relays and clients expect at least this
DEFAULT_MAX_SIZE = 576             # RFC 2131: every client accepts this much
FLAG_BROADCAST = 0x8000

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST",
                 DECLINE: "DECLINE", ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE",
                 INFORM: "INFORM"}

# Option codes used by name.
PAD, END = 0, 255
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOST_NAME = 12
DOMAIN_NAME = 15
BROADCAST_ADDRESS = 28
NTP_SERVERS = 42
REQUESTED_ADDRESS = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_REQUEST_LIST = 55
MESSAGE = 56
MAX_MESSAGE_SIZE = 57
RENEWAL_TIME = 58
REBINDING_TIME = 59
VENDOR_CLASS = 60
CLIENT_ID = 61
VENDOR_SPECIFIC = 43       # RFC 2132 8.4: vendor-encapsulated options
TFTP_SERVER_NAME = 66      # RFC 2132 9.4; phones read a provisioning URL from it
BOOTFILE_NAME = 67         # RFC 2132 9.5
TFTP_SERVERS = 150         # RFC 5859: TFTP server addresses (Cisco)
PROVISIONING_URL = 160     # site-specific (RFC 3942): Polycom's and Cisco's provisioning URL

# How known options read and write. Kinds: ip, ips (a list), u8, u16, u32,
# u8s (list of codes), str (text), bytes (opaque).
OPTION_TYPES = {
    SUBNET_MASK: "ip", ROUTER: "ips", 4: "ips", DNS_SERVERS: "ips",
    HOST_NAME: "str", DOMAIN_NAME: "str", 26: "u16", BROADCAST_ADDRESS: "ip",
    NTP_SERVERS: "ips", 44: "ips", REQUESTED_ADDRESS: "ip", LEASE_TIME: "u32",
    OVERLOAD: "u8", MESSAGE_TYPE: "u8", SERVER_ID: "ip",
    PARAMETER_REQUEST_LIST: "u8s", MESSAGE: "str", MAX_MESSAGE_SIZE: "u16",
    RENEWAL_TIME: "u32", REBINDING_TIME: "u32", VENDOR_CLASS: "bytes",
    CLIENT_ID: "bytes", 81: "bytes", 82: "bytes", 119: "bytes",
    VENDOR_SPECIFIC: "bytes", TFTP_SERVER_NAME: "str", BOOTFILE_NAME: "str",
    TFTP_SERVERS: "ips", PROVISIONING_URL: "str",
}

_FIXED = {"ip": 4, "u8": 1, "u16": 2, "u32": 4}


# ---------------------------------------------------------------- option values

def pack_option(code, value):
    """The raw bytes of option `code` holding `value` (by its type in OPTION_TYPES)."""
    kind = OPTION_TYPES.get(code, "bytes")
    try:
        if kind == "ip":
            return ipaddress.IPv4Address(value).packed
        if kind == "ips":
            return b"".join(ipaddress.IPv4Address(v).packed for v in value)
        if kind == "u8":
            return struct.pack("!B", value)
        if kind == "u16":
            return struct.pack("!H", value)
        if kind == "u32":
            return struct.pack("!I", value)
        if kind == "u8s":
            return bytes(value)
        if kind == "str":
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return bytes(value)
    except (ValueError, TypeError, struct.error) as e:
        raise ValueError("option %d (%s): cannot hold %r: %s" % (code, kind, value, e))


def unpack_option(code, raw):
    """The value of option `code` from its raw bytes; MalformedPacket if they do not fit its type."""
    kind = OPTION_TYPES.get(code, "bytes")
    size = _FIXED.get(kind)
    if size is not None and len(raw) != size:
        raise MalformedPacket("option %d should be %d bytes, got %d" % (code, size, len(raw)))
    if kind == "ip":
        return ipaddress.IPv4Address(raw)
    if kind == "ips":
        if not raw or len(raw) % 4:
            raise MalformedPacket("option %d should be a list of IPv4 addresses, got %d bytes"
                                  % (code, len(raw)))
        return tuple(ipaddress.IPv4Address(raw[i:i + 4]) for i in range(0, len(raw), 4))
    if kind == "u8":
        return raw[0]
    if kind == "u16":
        return struct.unpack("!H", raw)[0]
    if kind == "u32":
        return struct.unpack("!I", raw)[0]
    if kind == "u8s":
        return tuple(raw)
    if kind == "str":
        return raw.decode("utf-8", "replace")
    return bytes(raw)


def read_option(options, code, default=None):
    """The typed value of option `code` in `options` (code -> raw bytes), or `default`
    when it is absent or malformed."""
    raw = options.get(code)
    if raw is None:
        return default
    try:
        return unpack_option(code, raw)
    except MalformedPacket:
        return default


def renewal_times(lease_time):
    """
    T1 and T2 for a lease of `lease_time` seconds: half and seven eighths of
    it (RFC 2131 4.4.5). What the server sends with every lease, and what the
    WAN client uses when a server sends none.
    """
    return lease_time // 2, lease_time * 7 // 8


# ---------------------------------------------------------------- the packet

def _ip(value):
    return value if isinstance(value, ipaddress.IPv4Address) else ipaddress.IPv4Address(value)


@attr.s(slots=True, eq=True)
class DhcpPacket:
    """
    One BOOTP/DHCP message. Addresses are IPv4Address; `chaddr` is the raw
    16-byte field; `options` maps code -> raw bytes in the order they appear.
    """

    op = attr.ib()
    xid = attr.ib()
    chaddr = attr.ib(default=b"\0" * 16)
    htype = attr.ib(default=1)
    hlen = attr.ib(default=6)
    hops = attr.ib(default=0)
    secs = attr.ib(default=0)
    flags = attr.ib(default=0)
    ciaddr = attr.ib(default=ZERO, converter=_ip)
    yiaddr = attr.ib(default=ZERO, converter=_ip)
    siaddr = attr.ib(default=ZERO, converter=_ip)
    giaddr = attr.ib(default=ZERO, converter=_ip)
    sname = attr.ib(default=b"")
    file = attr.ib(default=b"")
    options = attr.ib(factory=dict)
    # The option area already encoded (a server's precomputed reply options);
    # when set, `encode` sends it as is and `options` only serves reading.
    encoded_options = attr.ib(default=None, eq=False, repr=False)

    @property
    def mac(self):
        """The client's hardware address as `aa:bb:cc:dd:ee:ff` (Ethernet), else hex."""
        return self.chaddr[:min(self.hlen, 16)].hex(":")

    @property
    def message_type(self):
        """Option 53 as a number, or None for plain BOOTP or a bad value."""
        raw = self.options.get(MESSAGE_TYPE)
        return raw[0] if raw is not None and len(raw) == 1 else None

    @property
    def broadcast(self):
        return bool(self.flags & FLAG_BROADCAST)

    def get(self, code, default=None):
        """The typed value of option `code`, or `default` when absent or malformed."""
        return read_option(self.options, code, default)

    def set(self, code, value):
        """Put option `code` with a typed value (see OPTION_TYPES)."""
        self.options[code] = pack_option(code, value)


def mac_to_chaddr(mac):
    """`aa:bb:cc:dd:ee:ff` -> the 16-byte chaddr field."""
    raw = bytes(int(part, 16) for part in mac.split(":"))
    if len(raw) > 16:
        raise ValueError("hardware address %r is longer than 16 bytes" % mac)
    return raw.ljust(16, b"\0")


# ---------------------------------------------------------------- decoding

def _read_options(data, start, end, into, where):
    """Parse an option area into `into` (code -> bytes, RFC 3396 concatenation)."""
    i = start
    while i < end:
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            return
        if i + 1 >= end:
            raise MalformedPacket("option %d in the %s has no length byte" % (code, where))
        length = data[i + 1]
        if i + 2 + length > end:
            raise MalformedPacket("option %d in the %s claims %d bytes, only %d left"
                                  % (code, where, length, end - i - 2))
        value = data[i + 2:i + 2 + length]
        previous = into.get(code)
        into[code] = value if previous is None else previous + value
        i += 2 + length
    # No END: tolerated, many embedded clients omit it.


def decode(data):
    """
    A DhcpPacket from `data`; MalformedPacket (naming the problem) for
    anything that is not a well-formed DHCP message.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedPacket("expected bytes, got %s" % type(data).__name__)
    data = bytes(data)
    if len(data) < OPTIONS_OFFSET:
        raise MalformedPacket("%d bytes is too short for DHCP (at least %d)"
                              % (len(data), OPTIONS_OFFSET))
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
     chaddr, sname, file_) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket("op %d is neither BOOTREQUEST nor BOOTREPLY" % op)
    if hlen > 16:
        raise MalformedPacket("hardware address length %d exceeds 16" % hlen)
    if data[HEADER_SIZE:OPTIONS_OFFSET] != MAGIC:
        raise MalformedPacket("no DHCP magic cookie (plain BOOTP is not served)")
    options = {}
    _read_options(data, OPTIONS_OFFSET, len(data), options, "options field")
    overload = options.get(OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise MalformedPacket("option overload must be 1, 2 or 3, got %r" % overload)
        # RFC 2131 4.1: the file field is read before sname.
        if overload[0] & 1:
            _read_options(file_, 0, len(file_), options, "file field")
            file_ = b""
        if overload[0] & 2:
            _read_options(sname, 0, len(sname), options, "sname field")
            sname = b""
    mt = options.get(MESSAGE_TYPE)
    if mt is not None and (len(mt) != 1 or not DISCOVER <= mt[0] <= INFORM):
        raise MalformedPacket("message type %r is not 1-8" % mt)
    # Built field by field: the hot path of the server skips the converters.
    p = _new_packet(DhcpPacket)
    p.op, p.xid, p.chaddr, p.htype, p.hlen, p.hops, p.secs, p.flags = (
        op, xid, chaddr, htype, hlen, hops, secs, flags)
    p.ciaddr, p.yiaddr, p.siaddr, p.giaddr = (
        _address(ciaddr), _address(yiaddr), _address(siaddr), _address(giaddr))
    p.sname, p.file, p.options, p.encoded_options = (
        sname.rstrip(b"\0"), file_.rstrip(b"\0"), options, None)
    return p


_new_packet = object.__new__
_ZERO_BYTES = b"\0\0\0\0"


_ADDRESSES = {_ZERO_BYTES: ZERO}   # raw -> IPv4Address: relays and clients repeat


def _address(raw):
    address = _ADDRESSES.get(raw)
    if address is None:
        address = ipaddress.IPv4Address(raw)
        if len(_ADDRESSES) < 4096:
            _ADDRESSES[raw] = address
    return address


_TEXTS = {}   # IPv4Address -> its dotted text


def address_text(address):
    """
    `str(address)`, memoised: the hot path writes the same addresses (the
    relay's, the pool's) into every reply and journal line, and the lookup
    costs a quarter of building the text. Bounded: past 8192 addresses (a
    pool larger than a /19) the rest are built each time.
    """
    text = _TEXTS.get(address)
    if text is None:
        text = str(address)
        if len(_TEXTS) < 8192:
            _TEXTS[address] = text
    return text


def _packed(address):
    return _ZERO_BYTES if address is ZERO else address.packed


# ---------------------------------------------------------------- encoding

def encode_options(options):
    """The option area for (code, raw) pairs, splitting values over 255 bytes (RFC 3396)."""
    out = bytearray()
    for code, raw in options:
        if code in (PAD, END):
            raise ValueError("option code %d is reserved" % code)
        if not raw:
            out += bytes((code, 0))
        for i in range(0, len(raw), 255):
            chunk = raw[i:i + 255]
            out += bytes((code, len(chunk)))
            out += chunk
    return bytes(out)


def _pieces(options):
    """Each option as its own encoded piece, so overload can move whole options."""
    return [encode_options([(code, raw)]) for code, raw in options]


def _overload(items, room, max_size):
    """
    Options that do not fit the options field, spread over it, `file` and
    `sname` (RFC 2131 4.1): the message type and server identifier stay first
    in the options field, the others are placed largest first where they fit
    (so one long option, such as a client identifier echoed, finds room), and
    each area keeps the options' order. ValueError if one fits nowhere.
    """
    pieces = _pieces(items)
    free = {"options": room, "file": 127, "sname": 63}     # each area ends with END
    where = [None] * len(pieces)
    first = (MESSAGE_TYPE, SERVER_ID)
    for i in sorted(range(len(pieces)), key=lambda i: (items[i][0] not in first, -len(pieces[i]))):
        for area in ("options", "file", "sname"):
            if len(pieces[i]) <= free[area]:
                where[i] = area
                free[area] -= len(pieces[i])
                break
        else:
            raise ValueError("options do not fit in %d bytes even with overload" % max_size)
    return {area: b"".join(p for p, w in zip(pieces, where) if w == area)
            for area in ("options", "file", "sname")}


def encode(packet, max_size=DEFAULT_MAX_SIZE):
    """
    The wire bytes of `packet`. If the options do not fit in `max_size` (the
    client's option 57, at least 576) they spill into `file`, then `sname`,
    with option 52 saying so; ValueError if even that is not enough.
    """
    if len(packet.sname) > 64 or len(packet.file) > 128:
        raise ValueError("sname is at most 64 bytes and file at most 128")
    if len(packet.chaddr) > 16:
        raise ValueError("chaddr is at most 16 bytes")
    max_size = max(DEFAULT_MAX_SIZE, max_size or 0)
    # Room for options in the UDP payload: the IP and UDP headers count too.
    room = max_size - 28 - OPTIONS_OFFSET - 1
    sname, file_ = packet.sname, packet.file
    body = packet.encoded_options
    if body is not None and len(body) <= room:
        items = None
    else:
        if body is not None:
            options = {}
            _read_options(body, 0, len(body), options, "encoded options")
        else:
            options = packet.options
        items = [(c, bytes(v)) for c, v in options.items() if c != OVERLOAD]
        body = encode_options(items)
    if len(body) <= room:
        tail = body + b"\xff"
    else:
        areas = _overload(items, room - 3, max_size)     # 3: the overload option itself
        overload = 1 | (2 if areas["sname"] else 0)
        tail = bytes((OVERLOAD, 1, overload)) + areas["options"] + b"\xff"
        file_ = areas["file"] + b"\xff"
        if areas["sname"]:
            sname = areas["sname"] + b"\xff"
    header = HEADER.pack(
        packet.op, packet.htype, packet.hlen, packet.hops, packet.xid & 0xFFFFFFFF,
        packet.secs, packet.flags, _packed(packet.ciaddr), _packed(packet.yiaddr),
        _packed(packet.siaddr), _packed(packet.giaddr), packet.chaddr,
        sname, file_)
    wire = header + MAGIC + tail
    if len(wire) < BOOTP_MIN_SIZE:
        wire += b"\0" * (BOOTP_MIN_SIZE - len(wire))
    return wire
