"""Tests for allworx.routing.firewall.flowhook: header parsing and verdicts through a fake queue."""

import itertools
import socket
import struct
import sys

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.routing.firewall import flowhook as H
from allworx.routing.firewall import policy as P
from allworx.routing.firewall.ruleset import REJECT_MARK
from allworx.tests.firewall.test_policy import make_config


def ipv4(proto, src, dst, l4=b"", ihl=5, frag=0):
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return header + b"\x00" * (ihl * 4 - 20) + l4


def tcp(sport, dport, flags=0x02):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 1024, 0, 0)


def udp(sport, dport):
    return struct.pack("!HHHH", sport, dport, 8, 0)


NLMSG = struct.Struct("=IHHIIBBH")     # nlmsghdr + nfgenmsg
NLA = struct.Struct("=HH")
BE32 = struct.Struct("!I")
VERDICT_LEN = NLMSG.size + NLA.size + 8


def parse_verdicts(data):
    """
    The verdict messages of one send, as [(queue, packet id, verdict, mark or
    None)]: as the kernel reads them (nfqnl_recv_verdict), written here apart from
    the hook's encoder so that each checks the other.
    Raises ValueError naming what does not fit.
    """
    out, offset = [], 0
    while offset < len(data):
        if len(data) - offset < NLMSG.size:
            raise ValueError("%d bytes left: shorter than a netlink header" % (len(data) - offset))
        length, kind, _flags, _seq, _pid, _family, _version, res_id = NLMSG.unpack_from(
            data, offset)
        if kind != (H.NFNL_SUBSYS_QUEUE << 8) | H.NFQNL_MSG_VERDICT or length < VERDICT_LEN \
                or offset + length > len(data):
            raise ValueError("not a verdict message at byte %d" % offset)
        verdict = packet_id = mark = None
        at = offset + NLMSG.size
        while at + NLA.size <= offset + length:
            size, attr = NLA.unpack_from(data, at)
            if size < NLA.size:
                raise ValueError("attribute of %d bytes at byte %d" % (size, at))
            if attr == H.NFQA_VERDICT_HDR:
                verdict, packet_id = struct.unpack_from("!II", data, at + NLA.size)
            elif attr == H.NFQA_MARK:
                mark = BE32.unpack_from(data, at + NLA.size)[0]
            at += (size + 3) & ~3
        if verdict is None:
            raise ValueError("verdict message at byte %d has no verdict" % offset)
        out.append((socket.ntohs(res_id), packet_id, verdict, mark))
        offset += (length + 3) & ~3
    return out



class ParseTests(unittest.TestCase):

    def test_tcp_syn(self):
        f = H.parse_flow(ipv4(6, "192.168.2.10", "198.51.100.10", tcp(40000, 80)), P.LAN)
        self.assertEqual(f, P.Flow(6, P.ip_int("192.168.2.10"), 40000,
                                   P.ip_int("198.51.100.10"), 80, P.LAN, True))

    def test_tcp_without_syn_or_with_ack(self):
        for flags in (0x10, 0x12, 0x04):
            f = H.parse_flow(ipv4(6, "1.2.3.4", "5.6.7.8", tcp(1, 2, flags)), P.WAN)
            self.assertFalse(f.syn, hex(flags))

    def test_udp_with_ip_options(self):
        f = H.parse_flow(ipv4(17, "1.2.3.4", "5.6.7.8", udp(5000, 53), ihl=7), P.WAN)
        self.assertEqual((f.proto, f.sport, f.dport), (17, 5000, 53))

    def test_icmp_type_is_the_port(self):
        f = H.parse_flow(ipv4(1, "1.2.3.4", "5.6.7.8", b"\x08\x00\x00\x00"), P.WAN)
        self.assertEqual((f.proto, f.sport, f.dport), (1, 0, 8))

    def test_later_fragment_has_no_ports(self):
        f = H.parse_flow(ipv4(17, "1.2.3.4", "5.6.7.8", udp(5000, 53), frag=10), P.WAN)
        self.assertEqual((f.sport, f.dport), (0, 0))

    def test_bad_packets_are_named(self):
        for payload, words in ((b"\x45\x00", "shorter"), (b"\x60" + b"\x00" * 39, "version 6"),
                               (b"\x4f" + b"\x00" * 25, "header length 60")):
            e = self.assertRaises(H.BadPacket, H.parse_flow, payload, P.WAN)
            self.assertIn(words, str(e))

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=80), st.sampled_from((P.LAN, P.WAN)))
    def test_any_bytes_give_a_flow_or_bad_packet(self, payload, side):
        try:
            f = H.parse_flow(payload, side)
        except H.BadPacket:
            return
        self.assertTrue(0 <= f.src < 2 ** 32 and 0 <= f.dport < 65536)


class QueueStatsTests(unittest.TestCase):

    def test_parse(self):
        text = ("    0  1234     0 2 65531     0     0       10  1\n"
                "   24  5678    12 2   128    34    56  1000000  1\n")
        self.assertEqual(H.parse_queue_stats(text, 24), (12, 34, 56))
        self.assertIsNone(H.parse_queue_stats(text, 7))
        self.assertIsNone(H.parse_queue_stats("", 24))
        self.assertIsNone(H.parse_queue_stats("24 x y z w v u", 24))


_ids = itertools.count(1)
VERDICT_NAMES = {H.NF_ACCEPT: "accept", H.NF_DROP: "drop", H.NF_REPEAT: "repeat"}


class FakePacket:
    """A queued packet as netfilterqueue hands it over; its verdict comes back over netlink."""

    def __init__(self, payload, hook):
        self.payload = payload
        self.hook = hook
        self.id = next(_ids)
        self.verdict = None
        self.mark = None
        PACKETS[self.id] = self

    def get_payload(self):
        return self.payload


PACKETS = {}        # packet id -> FakePacket


def lan_udp_packets(n):
    """`n` new UDP flows from a LAN host to the internet, as queued at FORWARD."""
    return [FakePacket(ipv4(17, "192.168.2.10", "198.51.100.10", udp(1000 + i, 53)),
                       H.NF_INET_FORWARD) for i in range(n)]


class FakeQueue:
    """Stands in for NetfilterQueue: `waiting` packets are handed over by run()."""

    def __init__(self):
        self.waiting = []
        self.bound = None
        self.runs = 0

    def bind(self, num, callback, max_len, range, sock_len):
        self.bound = (num, max_len, range)
        self.sock_len = sock_len
        self.callback = callback

    def unbind(self):
        self.bound = None

    def get_fd(self):
        return 99

    def run_socket(self, sock):
        # As netfilterqueue does: read messages until the socket says EAGAIN.
        self.runs += 1
        while self.waiting:
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
            self.callback(self.waiting.pop(0))


class FakeSocket:
    """The queue's netlink socket: verdicts sent to the kernel land on their FakePackets."""

    closed = False

    def __init__(self, queue_num=24):
        self.queue_num = queue_num
        self.sends = []
        self.fail = 0           # sends still to fail with ENOBUFS

    def recv(self, size):
        return b"message"

    def sendto(self, data, address):
        if address != (0, 0):
            raise AssertionError("verdicts go to the kernel, not %r" % (address,))
        if self.fail:
            self.fail -= 1
            raise OSError(105, "No buffer space available")
        self.sends.append(data)
        for queue, packet_id, verdict, mark in parse_verdicts(data):
            if queue != self.queue_num:
                raise AssertionError("verdict for queue %d" % queue)
            pkt = PACKETS.pop(packet_id)
            if pkt.verdict is not None:
                raise AssertionError("a second verdict for packet %d" % packet_id)
            pkt.verdict, pkt.mark = VERDICT_NAMES[verdict], mark

    def close(self):
        self.closed = True


class HookTests(unittest.TestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000)
        self.queue = FakeQueue()
        self.records = []
        self.policy = P.FlowPolicy.build(make_config())
        self.hook = H.FlowHook(self.reactor, self.policy,
                               lambda *entry: self.records.append(entry),
                               queue_factory=lambda: self.queue,
                               after_batch=lambda: self.records.append("batch"),
                               socket_factory=self.make_socket)
        self.hook.start()

    def make_socket(self, fd):
        self.assertEqual(fd, 99)
        self.socket = FakeSocket()
        return self.socket

    def test_binds_with_a_big_queue_and_a_short_copy(self):
        self.assertEqual(self.queue.bound, (24, H.QUEUE_MAX_LEN, H.COPY_RANGE))
        self.assertGreaterEqual(self.queue.sock_len, H.QUEUE_MAX_LEN * 1024)
        self.assertIn(self.hook, self.reactor.getReaders())
        self.assertEqual(self.hook.fileno(), 99)

    def test_one_read_decides_every_waiting_packet(self):
        lan_out = FakePacket(ipv4(6, "192.168.2.10", "198.51.100.10", tcp(40000, 80)),
                             H.NF_INET_FORWARD)
        to_admin = FakePacket(ipv4(6, "198.51.100.10", "203.0.113.2", tcp(40000, 8080)),
                              H.NF_INET_PRE_ROUTING)
        forward = FakePacket(ipv4(6, "198.51.100.10", "203.0.113.2", tcp(40000, 8081)),
                             H.NF_INET_PRE_ROUTING)
        garbage = FakePacket(b"\x00" * 10, H.NF_INET_PRE_ROUTING)
        self.queue.waiting = [lan_out, to_admin, forward, garbage]
        self.hook.doRead()
        self.assertEqual(self.queue.runs, 1)
        self.assertEqual((lan_out.verdict, lan_out.mark), ("accept", None))
        self.assertEqual(to_admin.verdict, "drop")
        self.assertEqual((forward.verdict, forward.mark), ("accept", P.MARK_BASE | 1))
        self.assertEqual(garbage.verdict, "drop")
        self.assertEqual((self.hook.packets, self.hook.errors, self.hook.reads), (3, 1, 1))
        self.assertEqual(self.records.pop(), "batch")
        self.assertEqual([(r[0], r[2]) for r in self.records],
                         [(1000, "accept"), (1000, "drop"), (1000, "accept")])
        self.assertEqual(self.records[1][3], "admin pages is LAN-only")
        self.assertEqual(self.records[1][1].side, P.WAN)

    def test_a_batch_at_a_time(self):
        self.hook.batch = 2
        packets = lan_udp_packets(5)
        self.queue.waiting = list(packets)
        self.hook.doRead()
        self.assertEqual([p.verdict for p in packets], ["accept"] * 2 + [None] * 3)
        self.hook.doRead()
        self.hook.doRead()
        self.assertEqual([p.verdict for p in packets], ["accept"] * 5)
        self.assertEqual(self.hook.reads, 3)

    @settings(max_examples=600, deadline=None)
    @given(st.one_of(
        st.binary(max_size=80),
        st.builds(lambda proto, l4, frag, ihl: ipv4(proto, "10.1.2.3", "203.0.113.2", l4,
                                                    ihl=ihl, frag=frag),
                  st.sampled_from([1, 6, 17, 47]), st.binary(max_size=24),
                  st.sampled_from([0, 0, 0x2000, 5, 0x4000]), st.sampled_from([5, 5, 6]))),
        st.sampled_from([H.NF_INET_FORWARD, H.NF_INET_PRE_ROUTING]))
    def test_the_inlined_parse_agrees_with_parse_flow(self, payload, hook):
        self.records.clear()
        pkt = FakePacket(payload, hook)
        self.queue.waiting = [pkt]
        self.hook.doRead()
        side = P.WAN if hook == H.NF_INET_PRE_ROUTING else P.LAN
        try:
            expected = H.parse_flow(payload, side)
        except H.BadPacket:
            self.assertEqual(pkt.verdict, "drop")
            self.assertEqual(self.records, ["batch"])
            return
        self.assertEqual(self.records[0][1], expected)
        self.assertIn(pkt.verdict, ("accept", "drop", "repeat"))

    def test_one_send_gives_the_whole_batch_its_verdicts(self):
        lan_out = FakePacket(ipv4(17, "192.168.2.10", "198.51.100.10", udp(1000, 53)),
                             H.NF_INET_FORWARD)
        forward = FakePacket(ipv4(6, "198.51.100.10", "203.0.113.2", tcp(40000, 8081)),
                             H.NF_INET_PRE_ROUTING)
        to_admin = FakePacket(ipv4(6, "198.51.100.10", "203.0.113.2", tcp(40000, 8080)),
                              H.NF_INET_PRE_ROUTING)
        self.queue.waiting = [lan_out, forward, to_admin]
        self.hook.doRead()
        self.assertEqual(len(self.socket.sends), 1)
        self.assertEqual(self.hook.sends, 1)
        # The hook's inlined messages are exactly verdict_message's.
        self.assertEqual(self.socket.sends[0], b"".join([
            H.verdict_message(24, lan_out.id, H.NF_ACCEPT),
            H.verdict_message(24, forward.id, H.NF_ACCEPT, P.MARK_BASE | 1),
            H.verdict_message(24, to_admin.id, H.NF_DROP)]))
        self.hook.doRead()          # nothing waiting: nothing sent
        self.assertEqual(len(self.socket.sends), 1)

    def test_verdict_message_is_what_the_kernel_reads(self):
        # struct nlmsghdr (host order: x86 is little-endian), nfgenmsg with the
        # queue big-endian, NFQA_VERDICT_HDR {be32 verdict, be32 id}, NFQA_MARK be32.
        self.assertEqual(sys.byteorder, "little", "the expected bytes are little-endian")
        self.assertEqual(H.verdict_message(24, 0x01020304, H.NF_ACCEPT, 0x10001), bytes.fromhex(
            "28000000" "0103" "0100" "00000000" "00000000" "00" "00" "0018"
            "0c000200" "00000001" "01020304" "08000300" "00010001"))
        self.assertEqual(H.verdict_message(7, 5, H.NF_DROP), bytes.fromhex(
            "20000000" "0103" "0100" "00000000" "00000000" "00" "00" "0007"
            "0c000200" "00000000" "00000005"))
        self.assertEqual(parse_verdicts(H.verdict_message(24, 9, H.NF_REPEAT, REJECT_MARK)),
                         [(24, 9, H.NF_REPEAT, REJECT_MARK)])

    def test_a_failed_send_is_retried_a_message_at_a_time(self):
        packets = lan_udp_packets(3)
        self.queue.waiting = list(packets)
        self.socket.fail = 1
        self.hook.doRead()
        self.assertEqual([p.verdict for p in packets], ["accept"] * 3)
        self.assertEqual((len(self.socket.sends), self.hook.errors), (3, 0))

    def test_verdicts_that_cannot_be_sent_are_counted(self):
        packets = lan_udp_packets(2)
        self.queue.waiting = list(packets)
        self.socket.fail = 2            # the batch's send and the first message's
        self.hook.doRead()
        self.assertEqual([p.verdict for p in packets], [None, "accept"])
        self.assertEqual((self.hook.packets, self.hook.errors), (2, 1))
        PACKETS.pop(packets[0].id)

    def test_stop_while_a_batch_is_decided(self):
        # The kernel drops what is queued when the queue is unbound; the
        # verdicts that can no longer be sent are counted, nothing raises.
        def close(*entry):
            self.hook.stop()
        self.hook.record = close
        self.socket.sendto = self.closed_sendto
        packets = lan_udp_packets(2)
        self.queue.waiting = list(packets)
        self.hook.doRead()
        self.assertEqual((self.hook.packets, self.hook.errors), (1, 1))
        self.assertEqual(self.queue.waiting, [packets[1]])
        self.assertFalse(self.hook.running)
        PACKETS.pop(packets[0].id)
        PACKETS.pop(packets[1].id)

    def closed_sendto(self, data, address):
        raise OSError(9, "Bad file descriptor")

    def test_reject_goes_back_through_the_forward_chain_marked(self):
        self.hook.policy = P.FlowPolicy.build(make_config("lan-only"))
        pkt = FakePacket(ipv4(17, "192.168.2.10", "198.51.100.10", udp(1, 2)), H.NF_INET_FORWARD)
        self.queue.waiting = [pkt]
        self.hook.doRead()
        self.assertEqual((pkt.verdict, pkt.mark), ("repeat", REJECT_MARK))

    def test_stop_unbinds(self):
        self.hook.stop()
        self.assertIsNone(self.queue.bound)
        self.assertTrue(self.socket.closed)
        self.assertNotIn(self.hook, self.reactor.getReaders())
        self.hook.doRead()  # a late readable event does nothing
        self.hook.stop()

    def test_bind_failure_leaves_nothing_behind(self):
        class NoRoot(FakeQueue):
            def bind(self, *a, **kw):
                raise OSError("Failed to create queue 24.")
        queue = NoRoot()
        hook = H.FlowHook(self.reactor, self.policy, None, queue_factory=lambda: queue)
        self.assertRaises(OSError, hook.start)
        self.assertFalse(hook.running)
        self.assertNotIn(hook, self.reactor.getReaders())
