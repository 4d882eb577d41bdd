"""
Fuzzers of the DHCP server (issue 21) beyond random bytes (those are in
test_codec and test_service): requests whose frame is well formed and whose
options are fuzzed (message type, requested address, server identifier,
parameter request list, maximum size, client identifier, host name, lease
time, overload into sname and file, repeated and unknown options), from a
few clients so leases meet, through the whole server. Every reply must
decode, answer the request's xid, offer only LAN addresses, fit the size the
client allowed, and nothing may log a traceback.
"""

import ipaddress
import struct

from hypothesis import example, given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp import service as dhcp
from allworx.tests.confs import with_sections
from allworx.tests.dhcp.test_service import HOSTS, ManualThread
from allworx.tests.logwatch import LogWatch

LAN = ipaddress.IPv4Network("192.168.2.0/24")
SERVER = ipaddress.IPv4Address("192.168.2.254")
MACS = [bytes.fromhex("02a100000201"), bytes.fromhex("02a100000202"), bytes.fromhex("020000000050"),
        bytes.fromhex("0a6177787072")]          # two PCs, the printer (fixed address), the probe
ADDRESSES = [b"\0\0\0\0", bytes([192, 168, 2, 1]), bytes([192, 168, 2, 2]), bytes([192, 168, 2, 150]),
             SERVER.packed, bytes([192, 168, 2, 255]), bytes([10, 0, 0, 1]), b"\xff\xff\xff\xff"]


class RawPort:
    """The UDP port and the raw socket: what was sent, as bytes."""

    def __init__(self, sent):
        self.sent = sent

    def write(self, data, addr):
        self.sent.append(data)

    def send(self, payload, mac, ip, port=68):
        self.sent.append(payload)

    def stopListening(self):
        pass

    def close(self):
        pass


def tlv(code, value):
    """An option as on the wire, split in pieces of 255 bytes (RFC 3396)."""
    pieces = [value[i:i + 255] for i in range(0, len(value), 255)] or [b""]
    return b"".join(bytes((code, len(p))) + p for p in pieces)


def discover(client_id):
    """A DISCOVER from the first PC with this client identifier."""
    return struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 9, 0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                       b"\0" * 4, MACS[0].ljust(16, b"\0"), b"", b"") + c.MAGIC + \
        tlv(53, b"\x01") + tlv(61, client_id) + tlv(55, bytes([1, 3, 6, 15, 28, 42])) + b"\xff"


addresses = st.sampled_from(ADDRESSES) | st.binary(min_size=4, max_size=4)
option = st.one_of(
    st.tuples(st.just(c.MESSAGE_TYPE), st.sampled_from([1, 1, 3, 3, 4, 7, 8, 2, 5]).map(lambda t: bytes((t,)))),
    st.tuples(st.just(c.REQUESTED_ADDRESS), addresses | st.binary(max_size=6)),
    st.tuples(st.just(c.SERVER_ID), st.sampled_from([SERVER.packed, bytes([192, 168, 2, 1])]) | st.binary(max_size=6)),
    st.tuples(st.just(c.PARAMETER_REQUEST_LIST), st.binary(max_size=40) | st.just(bytes(range(256)))),
    st.tuples(st.just(c.MAX_MESSAGE_SIZE), st.sampled_from([0, 100, 575, 576, 1500, 65535]).map(
        lambda n: struct.pack("!H", n)) | st.binary(max_size=3)),
    st.tuples(st.just(c.CLIENT_ID), st.binary(max_size=300)),
    st.tuples(st.just(c.HOST_NAME), st.binary(max_size=300)),
    st.tuples(st.just(c.LEASE_TIME), st.binary(max_size=5)),
    st.tuples(st.integers(1, 254), st.binary(max_size=20)),
)


@st.composite
def requests(draw):
    """(wire, xid, the size the client allows)."""
    xid = draw(st.integers(0, 2 ** 32 - 1))
    mac = draw(st.sampled_from(MACS) | st.binary(min_size=16, max_size=16))
    options = [(c.MESSAGE_TYPE, bytes((draw(st.sampled_from([1, 3, 3, 4, 7, 8])),)))]
    options += draw(st.lists(option, max_size=8))
    sname = file_ = b""
    overload = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    if overload:
        options.append((c.OVERLOAD, bytes((overload,))))
        moved = b"".join(tlv(code, value) for code, value in draw(st.lists(option, max_size=3))) + b"\xff"
        file_ = moved[:128] if overload & 1 else b""
        sname = moved[:64] if overload == 2 else b""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s", c.BOOTREQUEST, draw(st.sampled_from([1, 1, 1, 6, 0])),
        draw(st.sampled_from([6, 6, 6, 0, 16])), draw(st.integers(0, 255)), xid, draw(st.integers(0, 65535)),
        draw(st.sampled_from([0, 0x8000, 0xffff])), draw(addresses), draw(addresses), draw(addresses),
        draw(st.sampled_from([b"\0\0\0\0"] * 6 + ADDRESSES)), mac.ljust(16, b"\0"), sname, file_)
    body = b"".join(tlv(code, value) for code, value in options)
    if draw(st.booleans()):
        body += b"\xff"
    wire = header + c.MAGIC + body
    try:
        allowed = c.read_option(c.decode(wire).options, c.MAX_MESSAGE_SIZE) or 0
    except c.MalformedPacket:
        allowed = 0                   # not answered at all
    return wire, xid, max(allowed, c.DEFAULT_MAX_SIZE) - 28


class DhcpFuzzTests(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.sent = []
        office = Office(parse_config(with_sections(HOSTS)), data_dir=self.mktemp())
        self.service = dhcp.DhcpService(office, self.clock, lambda *a: RawPort(self.sent),
                                        lambda *a: RawPort(self.sent), journal_thread=ManualThread())
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.logs = LogWatch(self)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(requests(), min_size=1, max_size=4), st.sampled_from(["0.0.0.0", "192.168.2.1", "10.0.0.1"]))
    @example([(discover(b"x" * 300), 9, 548)], "0.0.0.0")
    def test_requests_with_fuzzed_options(self, requests_, source):
        self.logs.clear()
        for wire, xid, size in requests_:
            del self.sent[:]
            self.service.server.datagram_received(wire, (source, 68))
            self.clock.advance(0)
            for reply in self.sent:
                self.assertLessEqual(len(reply), size, repr(wire))
                p = c.decode(reply)
                self.assertEqual((p.op, p.xid), (c.BOOTREPLY, xid), repr(wire))
                self.assertIn(p.message_type, (c.OFFER, c.ACK, c.NAK), repr(wire))
                if p.message_type == c.OFFER or (p.message_type == c.ACK and p.yiaddr != c.ZERO):
                    self.assertIn(p.yiaddr, LAN, repr(wire))
                    self.assertNotEqual(p.yiaddr, SERVER, repr(wire))
        self.clock.advance(10)        # past the per-client rate limit
        self.logs.assert_no_traceback()


class OversizeReplyTests(unittest.TestCase):
    """A reply that cannot fit the size the client takes is not sent, and says so in one line."""

    def start(self, domain="example.com"):
        self.clock = Clock()
        self.sent = []
        text = with_sections(HOSTS).replace("domain = example.com", "domain = " + domain)
        office = Office(parse_config(text), data_dir=self.mktemp())
        self.service = dhcp.DhcpService(office, self.clock, lambda *a: RawPort(self.sent),
                                        lambda *a: RawPort(self.sent), journal_thread=ManualThread())
        self.service.startService()
        self.addCleanup(self.service.stopService)
        return LogWatch(self)

    def test_client_identifier_longer_than_an_option(self):
        """Every reply echoes it (RFC 6842), so none could fit: no offer is even made."""
        logs = self.start()
        self.service.server.datagram_received(discover(b"x" * 300), ("0.0.0.0", 68))
        self.clock.advance(0)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.service.server.pool.counts()["offered"], 0)
        logs.assert_no_traceback()
        self.service.server.datagram_received(discover(b"x" * 255), ("0.0.0.0", 68))
        self.assertEqual(c.decode(self.sent[-1]).options[c.CLIENT_ID], b"x" * 255)

    def test_long_domain_and_client_identifier(self):
        logs = self.start(".".join(["a" * 63, "b" * 63, "c" * 63, "example"]))
        self.service.server.datagram_received(discover(b"x" * 255), ("0.0.0.0", 68))
        self.clock.advance(0)
        self.assertEqual(self.sent, [])
        self.assertEqual(logs.lines("allworx.protocols.dhcp"),
                         ["dhcp: no OFFER to 02:a1:00:00:02:01: options do not fit in 576 bytes even "
                          "with overload"])
        logs.assert_no_traceback()
