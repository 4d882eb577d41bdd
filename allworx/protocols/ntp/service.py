# -*- test-case-name: allworx.tests.ntp.test_service -*-
"""
The LAN's time server: SNTP (RFC 4330) on `[ntp] port`, answering client
requests (mode 3) with server replies (mode 4) from the system clock. DHCP
hands the server's LAN address out as the NTP server (SPEC 4, 6).

The kernel says whether the system clock is disciplined (adjtimex): if so
the server answers as stratum 2 with the kernel's error estimate as root
dispersion; if not, as an undisciplined local clock, stratum 10 with
reference id LOCL, the way ntpd's local-clock driver does, so the office
still agrees on one time. Peers outside the LAN get no answer.
"""

import ctypes
import ctypes.util
import struct

import attr
from prometheus_client import Counter
from twisted.internet import protocol
from twisted.logger import Logger

from allworx.servicebase import ListeningService
from allworx.guards import ClientRateLimit

log = Logger()

NTP_EPOCH = 2208988800          # seconds from 1900-01-01 to 1970-01-01
PACKET = struct.Struct("!BBbbII4sQQQQ")   # 48 bytes
MODE_CLIENT, MODE_SERVER = 3, 4
LI_NONE, LI_ALARM = 0, 3

REQUESTS = Counter("allworx_ntp_requests_total", "SNTP requests, by result", ["result"])


class NotARequest(ValueError):
    """The datagram is not an SNTP client request; the message says why."""


def to_ntp(t):
    """POSIX seconds (float) -> 64-bit NTP timestamp."""
    return int((t + NTP_EPOCH) * 2 ** 32) & 0xFFFFFFFFFFFFFFFF


def from_ntp(value):
    """64-bit NTP timestamp -> POSIX seconds (era 0)."""
    return value / 2 ** 32 - NTP_EPOCH


def _short(seconds):
    """Seconds -> NTP short format (16.16 fixed point), saturating."""
    return min(int(seconds * 65536), 0xFFFFFFFF)


@attr.s(frozen=True, slots=True)
class ClockState:
    """How good the system clock is, as the reply advertises it."""

    synchronized = attr.ib()
    max_error = attr.ib(default=1.0)      # seconds
    stratum = attr.ib(default=10)
    refid = attr.ib(default=b"LOCL")
    precision = attr.ib(default=-20)      # log2 seconds (about a microsecond)

    @classmethod
    def of(cls, synchronized, max_error):
        """The state to advertise for a synchronised or free-running clock."""
        if synchronized:
            return cls(True, max_error, 2)
        return cls(False, max_error, 10)


class _Timex(ctypes.Structure):
    _fields_ = ([("modes", ctypes.c_uint)] +
                [(n, ctypes.c_long) for n in ("offset", "freq", "maxerror", "esterror")] +
                [("status", ctypes.c_int)] +
                [(n, ctypes.c_long) for n in ("constant", "precision", "tolerance",
                                              "tv_sec", "tv_usec", "tick", "ppsfreq",
                                              "jitter")] +
                [("shift", ctypes.c_int)] +
                [(n, ctypes.c_long) for n in ("stabil", "jitcnt", "calcnt", "errcnt",
                                              "stbcnt")] +
                [("tai", ctypes.c_int)] + [("pad%d" % i, ctypes.c_int) for i in range(11)])


TIME_ERROR = 5


def system_clock_state():
    """The kernel's view of the system clock (adjtimex, read-only); unsynchronised if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return ClockState.of(False, 1.0)
    if state < 0 or state == TIME_ERROR:
        # The kernel's error bound grows to 16 s without discipline; clients
        # drop servers that far off, so an undisciplined clock claims 1 s.
        return ClockState.of(False, 1.0)
    return ClockState.of(True, tx.maxerror / 1e6)


def answer(data, received, transmit, clock):
    """
    The reply bytes to one SNTP request `data`, received at POSIX time
    `received` and sent at `transmit`; NotARequest for anything else.
    """
    if len(data) < PACKET.size:
        raise NotARequest("%d bytes is too short for NTP (48)" % len(data))
    first = data[0]
    version, mode = (first >> 3) & 7, first & 7
    if not 1 <= version <= 4:
        raise NotARequest("NTP version %d is not served" % version)
    if mode != MODE_CLIENT and not (version == 1 and mode == 0):
        raise NotARequest("mode %d is not a client request" % mode)
    poll = data[2]
    client_transmit = data[40:48]
    li = LI_NONE
    reply = PACKET.pack(
        (li << 6) | (version << 3) | MODE_SERVER, clock.stratum,
        max(4, min(poll if poll < 128 else 4, 17)), clock.precision,
        0, _short(clock.max_error), clock.refid,
        to_ntp(int(received)), 0, to_ntp(received), to_ntp(transmit))
    # The originate timestamp is the client's transmit timestamp, copied as is.
    return reply[:24] + client_transmit + reply[32:]


class SntpProtocol(protocol.DatagramProtocol):
    """UDP: answers LAN clients, ignores everyone else."""

    noisy = False

    def __init__(self, office, reactor, clock_state=system_clock_state):
        self.office = office
        self.reactor = reactor
        self.clock_state = clock_state
        self.limit = ClientRateLimit(reactor, rate=4.0, burst=16)
        self._state = None
        self._state_at = None

    def _clock(self):
        # Asking the kernel once a minute is plenty.
        now = self.reactor.seconds()
        if self._state is None or now - self._state_at >= 60:
            self._state, self._state_at = self.clock_state(), now
        return self._state

    def datagramReceived(self, data, addr):
        received = self.reactor.seconds()
        host = addr[0]
        if not self.office.is_lan_peer(host):
            REQUESTS.labels("refused").inc()
            log.debug("ntp: request from {peer}, not on the LAN: ignored", peer=host)
            return
        if not self.limit.allow(host):
            REQUESTS.labels("rate_limited").inc()
            return
        try:
            reply = answer(data, received, self.reactor.seconds(), self._clock())
        except NotARequest as e:
            REQUESTS.labels("malformed").inc()
            log.debug("ntp: {peer}: {why}", peer=host, why=e)
            return
        REQUESTS.labels("answered").inc()
        self.transport.write(reply, addr)


class NtpService(ListeningService):
    """The "ntp" child: SNTP on `[ntp] port` when enabled, restarted when that changes."""

    def __init__(self, office, reactor=None, clock_state=system_clock_state):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "ntp", office)
        self.reactor = reactor
        self.clock_state = clock_state

    def bound_settings(self, config):
        """Only the switch and the port decide what listens."""
        return (config.ntp.enabled, config.ntp.port)

    def disabled_reason(self, config):
        return None if config.ntp.enabled else "time server disabled in [ntp]"

    def build_listeners(self, config):
        port = config.ntp.port
        proto = SntpProtocol(self.office, self.reactor, self.clock_state)
        return [("udp %d" % port, port, lambda: self.reactor.listenUDP(port, proto))]
