# -*- test-case-name: allworx.tests.test_flowhook -*-
"""
The flow hook: the NFQUEUE the kernel ruleset sends new flows to, read in
the reactor.

The queue's netlink socket is watched by `reactor.addReader`; when it is
readable, every packet waiting is taken in one go (`run(block=False)` reads
until EAGAIN) and each gets its verdict at once, so the kernel never waits on
anything but this loop. Only the header bytes a decision needs are copied to
the process (`COPY_RANGE`) and parsed by hand; no packet library in the hot
path. Anything that goes wrong with a packet drops it: the hook fails closed
like the ruleset.
"""

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from allworx.routing.policy import ACCEPT, DROP, LAN, REJECT, TCP, UDP, ICMP, WAN, Flow, decide
from allworx.routing.ruleset import QUEUE_NUM, REJECT_MARK

log = Logger()

# Enough for an IPv4 header with options and the first 14 bytes of TCP.
COPY_RANGE = 128
# Packets the kernel may hold for us before it drops new flows ("queue full").
QUEUE_MAX_LEN = 16384
# Netfilter hook numbers (linux/netfilter.h) of the two queueing rules.
NF_INET_PRE_ROUTING = 0
NF_INET_FORWARD = 2


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
    b0 = payload[0]
    if b0 >> 4 != 4:
        raise BadPacket("IP version %d, not 4" % (b0 >> 4))
    ihl = (b0 & 0x0F) * 4
    if ihl < 20 or ihl > n:
        raise BadPacket("header length %d does not fit %d bytes" % (ihl, n))
    proto = payload[9]
    src = int.from_bytes(payload[12:16], "big")
    dst = int.from_bytes(payload[16:20], "big")
    first_fragment = (int.from_bytes(payload[6:8], "big") & 0x1FFF) == 0
    sport = dport = 0
    syn = True
    if first_fragment:
        if proto == TCP or proto == UDP:
            if n >= ihl + 4:
                sport = int.from_bytes(payload[ihl:ihl + 2], "big")
                dport = int.from_bytes(payload[ihl + 2:ihl + 4], "big")
            if proto == TCP:
                # SYN without ACK opens a connection.
                syn = n >= ihl + 14 and (payload[ihl + 13] & 0x12) == 0x02
        elif proto == ICMP and n > ihl:
            dport = payload[ihl]
    return Flow(proto, src, sport, dst, dport, side, syn)


@implementer(IReadDescriptor)
class FlowHook:
    """
    Decides each queued packet with `decide(policy, flow)` and gives the
    kernel its verdict (with the forward's mark when NAT needs one); each
    decision goes to `record(now, flow, action, reason)`.

    `queue_factory` makes the NetfilterQueue (a double in unit tests).
    """

    def __init__(self, reactor, policy, record, queue_num=QUEUE_NUM,
                 queue_factory=None, max_len=QUEUE_MAX_LEN):
        self.reactor = reactor
        self.policy = policy
        self.record = record
        self.queue_num = queue_num
        self.max_len = max_len
        self._queue_factory = queue_factory
        self._queue = None
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
                       range=COPY_RANGE)
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
        """Decide every packet waiting in the queue, then return to the reactor."""
        if self._queue is None:
            return
        self.reads += 1
        self._now = self.reactor.seconds()
        try:
            self._queue.run(block=False)
        except OSError as e:
            log.error("reading NFQUEUE {queue} failed: {error}", queue=self.queue_num,
                      error=e)

    def connectionLost(self, reason):
        log.error("NFQUEUE {queue} socket lost: {reason}", queue=self.queue_num,
                  reason=reason.getErrorMessage())
        self._queue = None

    # ------------------------------------------------------------ decisions

    def _on_packet(self, pkt):
        # Called from C inside run(): it must never raise.
        try:
            side = WAN if pkt.hook == NF_INET_PRE_ROUTING else LAN
            flow = parse_flow(pkt.get_payload(), side)
            action, reason, mark = decide(self.policy, flow)
        except Exception as e:
            self.errors += 1
            try:
                pkt.drop()
            except Exception:
                pass
            log.warn("flow hook dropped an unreadable packet: {error}", error=e)
            return
        self.packets += 1
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
        self.record(self._now, flow, action, reason)


def _close(queue):
    try:
        queue.unbind()
    except Exception as e:
        log.warn("unbinding NFQUEUE failed: {error}", error=e)


__all__ = ["FlowHook", "parse_flow", "BadPacket", "DROP"]
