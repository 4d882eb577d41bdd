# -*- test-case-name: allworx.tests.firewall.test_flowhook -*-
"""
The flow hook: the NFQUEUE the kernel ruleset sends new flows to, read in
the reactor.

The queue's netlink socket is watched by `reactor.addReader`; when it is
readable, up to `BATCH` waiting packets are taken in one go (netfilterqueue's
`run_socket` reading until the socket says EAGAIN, which `BatchedSocket` also
says once the batch is full, so a flood of new flows cannot starve the other
services of the reactor) and each gets its verdict at once. Only the header bytes a decision needs are copied to
the process (`COPY_RANGE`) and parsed by hand; no packet library in the hot
path. Anything that goes wrong with a packet drops it: the hook fails closed
like the ruleset.
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

# Version/IHL, flags+fragment offset, protocol, source, destination.
_IPV4 = struct.Struct("!B5xHxB2xII")
_PORTS = struct.Struct("!HH")
_new_tuple = tuple.__new__


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
    The queue's socket as `run_socket` reads it: non-blocking, and "empty"
    (EAGAIN) after `limit` messages, so one call handles at most a batch.
    """

    def __init__(self, sock):
        self.sock = sock
        self.left = 0

    def start_batch(self, limit):
        self.left = limit

    def recv(self, size):
        if self.left <= 0:
            raise BlockingIOError(errno.EAGAIN, "batch complete")
        self.left -= 1
        return self.sock.recv(size)

    def close(self):
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
        self._sock.close()
        self._sock = None
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
        self._sock.start_batch(self.batch)
        try:
            self._queue.run_socket(self._sock)
        except OSError as e:
            log.error("reading NFQUEUE {queue} failed: {error}", queue=self.queue_num,
                      error=e)
        if self.after_batch is not None:
            self.after_batch()

    def connectionLost(self, reason):
        log.error("NFQUEUE {queue} socket lost: {reason}", queue=self.queue_num,
                  reason=reason.getErrorMessage())
        self._queue = None

    # ------------------------------------------------------------ decisions

    def _on_packet(self, pkt):
        # Called from C inside run(): it must never raise. The common case of
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
                    pkt.set_mark(mark)
                pkt.accept()
            elif action == REJECT and side == LAN:
                # Rejected by the forward chain's REJECT_MARK rule on the way back in.
                pkt.set_mark(REJECT_MARK)
                pkt.repeat()
            else:
                pkt.drop()
        except Exception as e:
            self.errors += 1
            try:
                pkt.drop()
            except Exception:
                pass
            if self.errors <= 10 or self.errors % 1000 == 0:   # no log flood
                log.warn("flow hook dropped a packet it could not decide ({errors} so far): "
                         "{error}", errors=self.errors, error=e)
            return
        self.packets += 1
        self.record(self._now, flow, action, reason)


def _close(queue):
    try:
        queue.unbind()
    except Exception as e:
        log.warn("unbinding NFQUEUE failed: {error}", error=e)

