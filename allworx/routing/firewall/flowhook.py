# -*- test-case-name: allworx.tests.firewall.test_flowhook -*-
"""
The flow hook: the NFQUEUE the kernel ruleset sends new flows to, read in
the reactor.

The queue's netlink socket is watched by `reactor.addReader`; when it is
readable, up to `BATCH` waiting packets are taken in one go (netfilterqueue's
`run_socket` reading until the socket says EAGAIN, which `BatchedSocket` also
says once the batch is full, so a flood of new flows cannot starve the other
services of the reactor). Each packet is decided as it is read, and the
verdicts of the whole batch go back to the kernel together, as one netlink
send of one NFQNL_MSG_VERDICT message a packet (`verdict_message`), rather
than one send a packet: half the system calls of a new flow. Only the header
bytes a decision needs are copied to the process (`COPY_RANGE`) and parsed by
hand; no packet library in the hot path. Anything that goes wrong with a
packet drops it: the hook fails closed like the ruleset.
"""

import errno
import os
import socket
import struct

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from allworx.routing.firewall.policy import ACCEPT, ICMP, LAN, REJECT, TCP, UDP, WAN, Flow, decide
from allworx.routing.firewall.ruleset import QUEUE_NUM, REJECT_MARK

log = Logger()

# Enough for an IPv4 header with options and the first 14 bytes of TCP.
COPY_RANGE = 128
# Packets the kernel may hold for us before it drops new flows ("queue full").
QUEUE_MAX_LEN = 16384
# Receive buffer of the queue's socket, per packet the queue may hold: big
# enough that a burst fills the queue before it overflows the socket (each
# message's kernel buffer is about 1 KiB for COPY_RANGE bytes of packet).
SOCKET_BYTES_PER_PACKET = 2048
# Packets decided per readable event before the reactor gets a turn.
BATCH = 256
# Netfilter hook numbers (linux/netfilter.h) of the two queueing rules.
NF_INET_PRE_ROUTING = 0
NF_INET_FORWARD = 2
# Verdicts (linux/netfilter.h).
NF_DROP = 0
NF_ACCEPT = 1
NF_REPEAT = 4
# netlink / nfnetlink_queue (linux/netlink.h, linux/netfilter/nfnetlink*.h).
NLM_F_REQUEST = 0x1
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_VERDICT = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
# The kernel's netlink address: verdicts are sent to it.
KERNEL = (0, 0)

# Version/IHL, flags+fragment offset, protocol, source, destination.
_IPV4 = struct.Struct("!B5xHxB2xII")
_PORTS = struct.Struct("!HH")
_new_tuple = tuple.__new__
# A verdict message: nlmsghdr (native byte order), nfgenmsg (the queue number
# big-endian), then the NFQA_VERDICT_HDR attribute (verdict and packet id,
# big-endian) and, when there is a mark, NFQA_MARK (big-endian).
_NLMSG = struct.Struct("=IHHIIBBH")
_NLA = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_VERDICT_LEN = _NLMSG.size + _NLA.size + 8
_MARK_ATTR = _NLA.pack(_NLA.size + 4, NFQA_MARK)


def verdict_prefix(queue_num, verdict, with_mark):
    """
    The bytes of a verdict message up to the packet id: the message is this,
    the id (`_BE32`) and, `with_mark`, `_MARK_ATTR` and the mark (`_BE32`).
    """
    length = _VERDICT_LEN + (_NLA.size + 4 if with_mark else 0)
    return (_NLMSG.pack(length, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT, NLM_F_REQUEST,
                        0, 0, socket.AF_UNSPEC, 0, socket.htons(queue_num))
            + _NLA.pack(_NLA.size + 8, NFQA_VERDICT_HDR) + _BE32.pack(verdict))


def verdict_message(queue_num, packet_id, verdict, mark=None):
    """The NFQNL_MSG_VERDICT message giving packet `packet_id` of the queue `verdict` (and `mark`)."""
    msg = verdict_prefix(queue_num, verdict, mark is not None) + _BE32.pack(packet_id)
    if mark is not None:
        msg += _MARK_ATTR + _BE32.pack(mark)
    return msg


QUEUE_STATS = "/proc/net/netfilter/nfnetlink_queue"


def parse_queue_stats(text, queue_num):
    """
    From /proc/net/netfilter/nfnetlink_queue: (waiting, dropped because the
    queue was full, dropped because the socket was full) for `queue_num`, or
    None when no process has the queue bound.
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0] == str(queue_num):
            try:
                return int(fields[2]), int(fields[5]), int(fields[6])
            except ValueError:
                return None
    return None


class BadPacket(ValueError):
    """A queued payload is not an IPv4 packet the hook can read."""


def parse_flow(payload, side):
    """
    The `Flow` of an IPv4 packet's first bytes. Raises BadPacket naming what
    is wrong when the bytes are not a readable IPv4 header.
    """
    n = len(payload)
    if n < 20:
        raise BadPacket("%d bytes is shorter than an IPv4 header" % n)
    b0, frag, proto, src, dst = _IPV4.unpack_from(payload)
    if b0 >> 4 != 4:
        raise BadPacket("IP version %d, not 4" % (b0 >> 4))
    ihl = (b0 & 0x0F) * 4
    if ihl < 20 or ihl > n:
        raise BadPacket("header length %d does not fit %d bytes" % (ihl, n))
    sport = dport = 0
    syn = True
    if not frag & 0x1FFF:      # the first fragment carries the ports
        if proto == TCP or proto == UDP:
            if n >= ihl + 4:
                sport, dport = _PORTS.unpack_from(payload, ihl)
            if proto == TCP:
                # SYN without ACK opens a connection.
                syn = n >= ihl + 14 and (payload[ihl + 13] & 0x12) == 0x02
        elif proto == ICMP and n > ihl:
            dport = payload[ihl]
    # tuple.__new__ directly: the named tuple's own __new__ is a Python frame.
    return _new_tuple(Flow, (proto, src, sport, dst, dport, side, syn))


class BatchedSocket:
    """
    The queue's socket as `run_socket` reads it: non-blocking, its `recv` the
    socket's own (no Python frame a message) from `start_batch()` until
    `full()`, after which it says EAGAIN, so one call handles at most a
    batch. Verdicts go back to the kernel on the same socket.
    """

    def __init__(self, sock):
        self.sock = sock
        self.recv = self._full

    def start_batch(self):
        self.recv = self.sock.recv

    def full(self):
        self.recv = self._full

    @staticmethod
    def _full(size):
        raise BlockingIOError(errno.EAGAIN, "batch complete")

    def send_to_kernel(self, data):
        return self.sock.sendto(data, KERNEL)

    def close(self):
        self.full()
        self.sock.close()


def socket_for_fd(fd):
    """A non-blocking socket object on a duplicate of the queue's netlink fd."""
    sock = socket.socket(fileno=os.dup(fd))
    sock.setblocking(False)
    return sock


@implementer(IReadDescriptor)
class FlowHook:
    """
    Decides each queued packet with `decide(policy, flow)` and gives the
    kernel its verdict (with the forward's mark when NAT needs one); each
    decision goes to `record(now, flow, action, reason)`.

    `after_batch()` is called once the waiting packets are decided (metrics).
    `queue_factory` makes the NetfilterQueue (a double in unit tests).
    """

    def __init__(self, reactor, policy, record, queue_num=QUEUE_NUM,
                 queue_factory=None, max_len=QUEUE_MAX_LEN, after_batch=None,
                 socket_factory=socket_for_fd, batch=BATCH):
        self.reactor = reactor
        self.policy = policy
        self.record = record
        self.after_batch = after_batch
        self.queue_num = queue_num
        self.max_len = max_len
        self._queue_factory = queue_factory
        self._socket_factory = socket_factory
        self.batch = batch
        self._queue = None
        self._sock = None
        self._now = 0.0
        self._left = 0          # packets the current batch may still take
        self._verdicts = []     # verdict messages of the current batch
        queue_num = self.queue_num
        self._accept = verdict_prefix(queue_num, NF_ACCEPT, False)
        self._accept_mark = verdict_prefix(queue_num, NF_ACCEPT, True)
        self._drop = verdict_prefix(queue_num, NF_DROP, False)
        self._repeat_mark = verdict_prefix(queue_num, NF_REPEAT, True)
        self.sends = 0          # netlink sends of verdicts
        self.reads = 0          # readable events handled
        self.packets = 0        # packets decided
        self.errors = 0         # packets dropped because something failed

    # ------------------------------------------------------------ lifecycle

    def start(self):
        """Bind the queue and watch its socket; raises OSError without CAP_NET_ADMIN."""
        factory = self._queue_factory
        if factory is None:
            from netfilterqueue import NetfilterQueue as factory
        queue = factory()
        try:
            queue.bind(self.queue_num, self._on_packet, max_len=self.max_len,
                       range=COPY_RANGE, sock_len=self.max_len * SOCKET_BYTES_PER_PACKET)
            self._sock = BatchedSocket(self._socket_factory(queue.get_fd()))
        except BaseException:
            _close(queue)
            raise
        self._queue = queue
        self.reactor.addReader(self)
        log.info("flow hook bound to NFQUEUE {queue} (max {max_len} waiting)",
                 queue=self.queue_num, max_len=self.max_len)

    def stop(self):
        """Stop watching and unbind; queued packets are then dropped by the kernel."""
        if self._queue is None:
            return
        self.reactor.removeReader(self)
        queue, self._queue = self._queue, None
        # Closed but kept: a batch being decided (stop() from a callback)
        # finds a socket that is full and whose sends fail, and logs them.
        self._sock.close()
        _close(queue)
        log.info("flow hook unbound from NFQUEUE {queue}", queue=self.queue_num)

    @property
    def running(self):
        return self._queue is not None

    # ------------------------------------------------------------ IReadDescriptor

    def fileno(self):
        return self._queue.get_fd() if self._queue is not None else -1

    def logPrefix(self):
        return "FlowHook"

    def doRead(self):
        """Decide up to a batch of waiting packets, then return to the reactor."""
        if self._queue is None:
            return
        self.reads += 1
        self._now = self.reactor.seconds()
        self._left = self.batch
        self._sock.start_batch()
        try:
            self._queue.run_socket(self._sock)
        except OSError as e:
            log.error("reading NFQUEUE {queue} failed: {error}", queue=self.queue_num,
                      error=e)
        finally:
            self._sock.full()
            if self._verdicts:
                self._send_verdicts()
        if self.after_batch is not None:
            self.after_batch()

    def _send_verdicts(self):
        """The batch's verdicts to the kernel in one send (one a message if that fails)."""
        verdicts, self._verdicts = self._verdicts, []
        try:
            self._sock.send_to_kernel(b"".join(verdicts))
            self.sends += 1
            return
        except OSError as e:
            error = e
        failed = 0
        for message in verdicts:
            try:
                self._sock.send_to_kernel(message)
                self.sends += 1
            except OSError as e:
                failed += 1
                error = e
        if failed:
            # The kernel holds those packets until the queue is unbound.
            self.errors += failed
            log.error("sending {count} verdicts to NFQUEUE {queue} failed: {error}",
                      count=failed, queue=self.queue_num, error=error)

    def connectionLost(self, reason):
        log.error("NFQUEUE {queue} socket lost: {reason}", queue=self.queue_num,
                  reason=reason.getErrorMessage())
        self._queue = None

    # ------------------------------------------------------------ decisions

    def _on_packet(self, pkt):
        # Called from C inside run_socket(): it must never raise. The verdict
        # is queued as a netlink message, sent with the batch's. The common case of
        # `parse_flow` is inlined here (one Python frame less per new flow);
        # anything unusual goes through `parse_flow` itself. The tests check
        # that both give the same flow for any bytes.
        try:
            side = WAN if pkt.hook == NF_INET_PRE_ROUTING else LAN
            payload = pkt.get_payload()
            n = len(payload)
            if n >= 24 and payload[0] == 0x45:
                b0, frag, proto, src, dst = _IPV4.unpack_from(payload)
                sport = dport = 0
                syn = True
                if not frag & 0x1FFF:
                    if proto == TCP:
                        sport, dport = _PORTS.unpack_from(payload, 20)
                        syn = n >= 34 and (payload[33] & 0x12) == 0x02
                    elif proto == UDP:
                        sport, dport = _PORTS.unpack_from(payload, 20)
                    elif proto == ICMP:
                        dport = payload[20]
                flow = _new_tuple(Flow, (proto, src, sport, dst, dport, side, syn))
            else:
                flow = parse_flow(payload, side)
            action, reason, mark = decide(self.policy, flow)
            if action == ACCEPT:
                if mark:
                    verdict = self._accept_mark + _BE32.pack(pkt.id) + _MARK_ATTR + _BE32.pack(mark)
                else:
                    verdict = self._accept + _BE32.pack(pkt.id)
            elif action == REJECT and side == LAN:
                # Rejected by the forward chain's REJECT_MARK rule on the way back in.
                verdict = (self._repeat_mark + _BE32.pack(pkt.id) + _MARK_ATTR
                           + _BE32.pack(REJECT_MARK))
            else:
                verdict = self._drop + _BE32.pack(pkt.id)
            self._verdicts.append(verdict)
        except Exception as e:
            self.errors += 1
            try:
                self._verdicts.append(self._drop + _BE32.pack(pkt.id))
            except Exception:
                pass
            if self.errors <= 10 or self.errors % 1000 == 0:   # no log flood
                log.warn("flow hook dropped a packet it could not decide ({errors} so far): "
                         "{error}", errors=self.errors, error=e)
            return
        finally:
            self._left -= 1
            if self._left <= 0:
                self._sock.full()
        self.packets += 1
        self.record(self._now, flow, action, reason)


def _close(queue):
    try:
        queue.unbind()
    except Exception as e:
        log.warn("unbinding NFQUEUE failed: {error}", error=e)

