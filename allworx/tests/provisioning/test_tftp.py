"""TFTP (RFC 1350, 2347, 2348, 2349) on task.Clock: the state machine and the server."""

import struct

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.provisioning import tftp
from allworx.protocols.provisioning.files import Provisioner
from allworx.tests.provisioning.fakes import BERLIN, FakeLeases, FakePhoneBook, office_config

PHONE = ("192.168.2.41", 40001)


def rrq(name, mode="octet", **options):
    parts = [name, mode] + [x for kv in options.items() for x in (kv[0], str(kv[1]))]
    return struct.pack("!H", tftp.RRQ) + b"".join(p.encode() + b"\0" for p in parts)


def ack(n):
    return struct.pack("!HH", tftp.ACK, n)


def decode(packet):
    opcode = struct.unpack("!H", packet[:2])[0]
    if opcode == tftp.DATA:
        return ("DATA", struct.unpack("!H", packet[2:4])[0], packet[4:])
    if opcode == tftp.ERROR:
        return ("ERROR", struct.unpack("!H", packet[2:4])[0], packet[4:-1].decode())
    if opcode == tftp.OACK:
        fields = packet[2:-1].decode().split("\0")
        return ("OACK", dict(zip(fields[::2], fields[1::2])))
    raise AssertionError(packet)


class TransferTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.sent = []
        self.ended = []

    def transfer(self, body, **kw):
        t = tftp.Transfer(self.clock, lambda p: self.sent.append(decode(p)), body,
                          finished=lambda ok, why: self.ended.append((ok, why)), **kw)
        t.start()
        return t

    def test_blocks_and_the_last_short_one(self):
        t = self.transfer(b"x" * 1000)
        self.assertEqual(self.sent, [("DATA", 1, b"x" * 512)])
        t.ack(1)
        self.assertEqual(self.sent[-1], ("DATA", 2, b"x" * 488))
        t.ack(2)
        self.assertEqual(self.ended, [(True, "sent")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_multiple_of_the_block_size_ends_with_an_empty_block(self):
        t = self.transfer(b"y" * 1024)
        t.ack(1)
        t.ack(2)
        self.assertEqual(self.sent[-1], ("DATA", 3, b""))
        self.assertEqual(self.ended, [])
        t.ack(3)
        self.assertEqual(self.ended, [(True, "sent")])

    def test_lost_ack_retransmits_then_gives_up(self):
        self.transfer(b"z" * 10, timeout=2.0, retries=3)
        self.clock.advance(1.9)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.sent, [("DATA", 1, b"z" * 10)] * 2)
        self.clock.pump([2.0, 2.0])
        self.assertEqual(len(self.sent), 4)
        self.assertEqual(self.ended, [])
        self.clock.advance(2.0)
        self.assertEqual(len(self.sent), 4)
        self.assertEqual(self.ended[0][0], False)
        self.assertIn("after 4 tries", self.ended[0][1])

    def test_a_late_ack_after_a_resend_goes_on(self):
        t = self.transfer(b"a" * 600, timeout=1.0)
        self.clock.advance(1.0)                 # DATA 1 sent again
        t.ack(1)
        self.assertEqual(self.sent[-1], ("DATA", 2, b"a" * 88))
        t.ack(1)                                # the first ACK 1, late: not a reason to resend
        self.assertEqual(len(self.sent), 3)
        t.ack(2)
        self.assertEqual(self.ended, [(True, "sent")])

    def test_options_start_with_an_oack(self):
        t = self.transfer(b"b" * 20, blksize=8, acked=[("blksize", 8), ("tsize", 20)])
        self.assertEqual(self.sent, [("OACK", {"blksize": "8", "tsize": "20"})])
        self.clock.advance(tftp.DEFAULT_TIMEOUT)
        self.assertEqual(self.sent[-1], ("OACK", {"blksize": "8", "tsize": "20"}))  # resent
        t.ack(0)
        self.assertEqual(self.sent[-1], ("DATA", 1, b"b" * 8))
        t.ack(1)
        t.ack(2)
        self.assertEqual(self.sent[-1], ("DATA", 3, b"b" * 4))

    def test_block_numbers_wrap(self):
        t = self.transfer(b"c" * (8 * 65536 + 3), blksize=8)
        for n in range(1, 65536):
            t.ack(n)
        self.assertEqual(self.sent[-1], ("DATA", 0, b"c" * 8))      # block 65536
        t.ack(0)
        self.assertEqual(self.sent[-1], ("DATA", 1, b"c" * 3))
        t.ack(1)
        self.assertEqual(self.ended, [(True, "sent")])

    def test_client_error_ends_it(self):
        t = self.transfer(b"d", acked=[("blksize", 1024)])
        t.error(8, "no")
        self.assertEqual(self.ended, [(False, "the client ended it: error 8 no")])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NegotiationTests(unittest.TestCase):

    def test_blksize_range(self):
        self.assertEqual(tftp.negotiate({"blksize": "1428"}, 5)[0::2],
                         (1428, [("blksize", 1428)]))
        self.assertEqual(tftp.negotiate({"blksize": "70000"}, 5)[0], 65464)
        for bad in ("7", "x"):
            with self.assertRaises(tftp.TftpError) as cm:
                tftp.negotiate({"blksize": bad}, 5)
            self.assertEqual(cm.exception.code, tftp.OPTIONS)

    def test_timeout_and_tsize(self):
        self.assertEqual(tftp.negotiate({"timeout": "7", "tsize": "0"}, 123),
                         (512, 7.0, [("timeout", 7), ("tsize", 123)]))
        self.assertEqual(tftp.negotiate({"timeout": "0", "frobnicate": "1"}, 1),
                         (512, tftp.DEFAULT_TIMEOUT, []))

    def test_parse_request(self):
        self.assertEqual(tftp.parse_request(rrq("a.cfg", "OCTET", BlkSize=512)),
                         (tftp.RRQ, "a.cfg", "octet", {"blksize": "512"}))
        for bad in (b"\0\1", b"\0\3\0\1abcd", b"\0\1a.cfg\0octet", b"\0\1a.cfg\0"):
            self.assertRaises(tftp.TftpError, tftp.parse_request, bad)


class FakeTransport:
    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((decode(data), addr))


class FakePort:
    def __init__(self, proto):
        self.proto = proto
        self.stopped = False
        proto.transport = FakeTransport()

    def stopListening(self):
        self.stopped = True


class ServerTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.book = FakePhoneBook()
        config = office_config()
        provisioner = Provisioner(lambda: config, self.book,
                                  FakeLeases({"02aa00000004": "192.168.2.41"}), self.clock,
                                  timezone=lambda: BERLIN)
        self.ports = []
        self.server = tftp.TftpServer(provisioner, self.clock, self.listen,
                                      lambda host: host.startswith("192.168.2."))
        self.server.transport = FakeTransport()

    def listen(self, proto):
        port = FakePort(proto)
        self.ports.append(port)
        return port

    def test_a_phone_gets_its_file_from_its_own_port(self):
        self.server.datagramReceived(rrq("/02aa00000004.baresip", blksize=64, tsize=0), PHONE)
        self.assertEqual(self.server.transport.written, [])
        port = self.ports[0]
        (oack, to), = port.proto.transport.written
        self.assertEqual(to, PHONE)
        size = int(oack[1]["tsize"])
        self.assertEqual(oack, ("OACK", {"blksize": "64", "tsize": str(size)}))
        # A repeated request while the transfer runs is not a second transfer.
        self.server.datagramReceived(rrq("/02aa00000004.baresip", blksize=64, tsize=0), PHONE)
        self.assertEqual(len(self.ports), 1)
        # Another port's packet to the transfer: error 5, the transfer goes on.
        port.proto.datagramReceived(ack(0), ("192.168.2.41", 40002))
        self.assertEqual(port.proto.transport.written[-1],
                         (("ERROR", tftp.UNKNOWN_TID, "unknown transfer ID"),
                          ("192.168.2.41", 40002)))
        body, n = b"", 0
        while True:
            port.proto.datagramReceived(ack(n), PHONE)
            packet, _ = port.proto.transport.written[-1]
            if packet[0] != "DATA" or packet[1] == n:
                break
            n, data = packet[1], packet[2]
            body += data
            if len(data) < 64:
                port.proto.datagramReceived(ack(n), PHONE)
                break
        self.assertEqual(len(body), size)
        self.assertIn(b"auth_pass=secret-02aa00000004", body)
        self.assertTrue(port.stopped)
        self.assertEqual(self.server.transfers, {})
        self.assertEqual(self.book.seen[-1].filename, "02aa00000004.baresip")

    def errors(self):
        return [packet for packet, _ in self.server.transport.written]

    def test_errors(self):
        self.server.datagramReceived(rrq("02aa00000004.baresip"), ("192.168.2.50", 1000))
        self.server.datagramReceived(rrq("../../etc/passwd"), PHONE)
        self.server.datagramReceived(rrq("tap.conf"), PHONE)
        self.server.datagramReceived(struct.pack("!H", tftp.WRQ) + b"x.cfg\0octet\0", PHONE)
        self.server.datagramReceived(rrq("02aa00000004.baresip", blksize=4), PHONE)
        self.server.datagramReceived(rrq("02aa00000004.baresip", mode="mail"), PHONE)
        codes = [e[1] for e in self.errors()]
        self.assertEqual(codes, [tftp.ACCESS, tftp.NOT_FOUND, tftp.NOT_FOUND, tftp.ACCESS,
                                 tftp.OPTIONS, tftp.ILLEGAL])
        self.assertEqual(self.ports, [])

    def test_wan_peers_get_nothing(self):
        self.server.datagramReceived(rrq("y000000000000.cfg"), ("203.0.113.9", 1000))
        self.assertEqual((self.server.transport.written, self.ports), ([], []))

    def test_lost_acks_end_the_transfer_and_free_the_port(self):
        self.server.datagramReceived(rrq("y000000000000.cfg"), PHONE)
        port = self.ports[0]
        self.clock.pump([tftp.DEFAULT_TIMEOUT] * (tftp.RETRIES + 1))
        self.assertEqual(len(port.proto.transport.written), tftp.RETRIES + 1)
        self.assertTrue(port.stopped)
        self.assertEqual(self.server.transfers, {})

    def test_netascii(self):
        self.server.datagramReceived(rrq("y000000000000.cfg", mode="netascii"), PHONE)
        (data, _), = self.ports[0].proto.transport.written
        self.assertIn(b"\r\n", data[2])
        self.assertNotIn(b"\r\n", tftp.netascii(b"a\rb").replace(b"\r\0", b""))

    def test_transfers_per_host_are_bounded(self):
        for port in range(tftp.MAX_PER_HOST + 1):
            self.server.datagramReceived(rrq("y000000000000.cfg"), ("192.168.2.41", 2000 + port))
        self.assertEqual(len(self.ports), tftp.MAX_PER_HOST)
        self.assertEqual(self.errors(), [("ERROR", tftp.UNDEFINED, "busy, try again")])
        self.server.stop()
        self.assertTrue(all(p.stopped for p in self.ports))
