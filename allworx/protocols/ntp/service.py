# -*- test-case-name: allworx.tests.ntp.test_service -*-
"""
The LAN's time server: SNTP (RFC 4330) on `[ntp] port`, answering client
requests (mode 3) with server replies (mode 4). DHCP hands the server's LAN
address out as the NTP server (SPEC 4, 6). Peers outside the LAN get no answer.

It tells the truth about its clock (SPEC 6):
- with an upstream of `[ntp] servers` that answered one of its last 3 polls
  (`client.SntpClient`), it answers with the host clock corrected by the
  offset measured to it, at the upstream's stratum + 1, leap indicator 0,
  reference id the upstream's address; the host clock is never touched;
- else from the host clock: while the kernel says it is unsynchronised
  (adjtimex STA_UNSYNC) with leap indicator 3 "alarm" and stratum 16
  (reference id INIT), so clients know not to trust it; when the kernel
  says it is synchronised (by something else on the host), at stratum 3,
  reference id 127.127.1.1 (the local clock), its error bound as root
  dispersion.

`TimeSource.status()` (ITimeStatus) tells the dashboard and the API the
same, and the metrics `allworx_ntp_*` show it to Prometheus.
"""

import socket

import attr
from prometheus_client import Counter, Gauge
from twisted.internet import defer, protocol
from twisted.logger import Logger

from allworx.guards import ClientRateLimit
from allworx.hostfacts import kernel_clock
from allworx.protocols.ntp.client import PHI, SntpClient
from allworx.protocols.ntp.wire import NTP_EPOCH, PACKET, from_ntp, short, to_ntp
from allworx.servicebase import ListeningService

__all__ = ["NTP_EPOCH", "PACKET", "from_ntp", "to_ntp", "ClockState", "TimeSource",
           "answer", "NotARequest", "SntpProtocol", "NtpService"]

log = Logger()

MODE_CLIENT, MODE_SERVER = 3, 4
LI_NONE, LI_ALARM = 0, 3
HOST_STRATUM, UNSYNC_STRATUM = 3, 16
LOCAL_REFID = bytes((127, 127, 1, 1))
UNSYNC_REFID = b"INIT"
MAX_DISPERSION = 16.0           # seconds: RFC 5905's MAXDISP, "no idea"
KERNEL_EVERY = 60.0             # seconds between two questions to the kernel

REQUESTS = Counter("allworx_ntp_requests_total", "SNTP requests, by result", ["result"])
SERVED_STRATUM = Gauge("allworx_ntp_stratum", "The stratum the time server answers with")
SERVED_LEAP = Gauge("allworx_ntp_leap_indicator",
                    "The leap indicator the time server answers with (3: not synchronised)")
OFFSET = Gauge("allworx_ntp_offset_seconds",
               "The host clock's offset from the upstream followed (0 without one)")
UPSTREAM_STRATUM = Gauge("allworx_ntp_upstream_stratum",
                         "The followed upstream's stratum (0 without one)")
UPSTREAM_USABLE = Gauge("allworx_ntp_upstreams_usable",
                        "Upstream time servers that answered one of their last 3 polls")
LAST_POLL = Gauge("allworx_ntp_last_poll_timestamp_seconds",
                  "When an upstream time server was last polled (0: never)")


class NotARequest(ValueError):
    """The datagram is not an SNTP client request; the message says why."""


@attr.s(frozen=True, slots=True)
class ClockState:
    """What a reply says of the clock it comes from, and the correction it applies."""

    leap = attr.ib()
    stratum = attr.ib()
    refid = attr.ib()                     # 4 bytes
    offset = attr.ib(default=0.0)         # seconds added to the host clock
    root_delay = attr.ib(default=0.0)
    root_dispersion = attr.ib(default=MAX_DISPERSION)
    reference = attr.ib(default=None)     # POSIX time the clock was last set; None: never
    precision = attr.ib(default=-20)      # log2 seconds (about a microsecond)
    upstream = attr.ib(default=None)      # the upstream's name, when following one

    @classmethod
    def from_host(cls, kernel, now):
        """The host clock as the kernel judges it (`hostfacts.kernel_clock()`, None: unknown)."""
        if kernel is not None and kernel["synchronised"]:
            return cls(LI_NONE, HOST_STRATUM, LOCAL_REFID,
                       root_dispersion=min(kernel["max_error_s"], MAX_DISPERSION),
                       reference=int(now))
        return cls(LI_ALARM, UNSYNC_STRATUM, UNSYNC_REFID)

    @classmethod
    def from_upstream(cls, upstream, sample, now):
        """The host clock corrected by `sample`, the filtered answer of `upstream`."""
        return cls(LI_NONE, sample.stratum + 1, socket.inet_aton(upstream.address),
                   offset=sample.offset, root_delay=sample.root_delay + sample.delay,
                   root_dispersion=sample.root_dispersion + PHI * max(0.0, now - sample.at),
                   reference=sample.at + sample.offset, upstream=upstream.name)


def answer(data, received, transmit, clock):
    """
    The reply bytes to one SNTP request `data`, received at host POSIX time
    `received` and sent at `transmit`, from `clock` (a ClockState);
    NotARequest for anything else.
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
    reference = 0 if clock.reference is None else to_ntp(clock.reference)
    reply = PACKET.pack(
        (clock.leap << 6) | (version << 3) | MODE_SERVER, clock.stratum,
        max(4, min(poll if poll < 128 else 4, 17)), clock.precision,
        short(clock.root_delay), short(clock.root_dispersion), clock.refid,
        reference, 0, to_ntp(received + clock.offset), to_ntp(transmit + clock.offset))
    # The originate timestamp is the client's transmit timestamp, copied as is.
    return reply[:24] + client_transmit + reply[32:]


class TimeSource:
    """
    What the time server serves (`state()`): the best upstream of `client`,
    else the host clock as `kernel()` judges it (asked once a minute);
    `status()` says the same for people (ITimeStatus).
    """

    def __init__(self, reactor, client=None, kernel=kernel_clock):
        self.reactor = reactor
        self.client = client
        self.kernel = kernel
        self._kernel, self._kernel_at = None, None
        self.running = False

    def kernel_state(self):
        now = self.reactor.seconds()
        if self._kernel_at is None or not 0 <= now - self._kernel_at < KERNEL_EVERY:
            self._kernel, self._kernel_at = self.kernel(), now
        return self._kernel

    def state(self):
        now = self.reactor.seconds()
        best = self.client.best() if self.client is not None else None
        if best is not None:
            return ClockState.from_upstream(best[0], best[1], now)
        return ClockState.from_host(self.kernel_state(), now)

    def status(self):
        """
        {"serving", "source" ("upstream" or "host"), "upstream", "address",
        "offset_s", "stratum", "leap", "reference_id", "kernel_synchronised",
        "servers": [per upstream: name, address, usable, reach, poll_s,
        last_poll, last_answer, offset_s, delay_s, stratum, error]} (POSIX times).
        """
        state = self.state()
        kernel = self.kernel_state()
        best = self.client.best() if self.client is not None else None
        servers = self.client.status() if self.client is not None else []
        out = {"serving": self.running,
               "source": "upstream" if best else "host",
               "upstream": best[0].name if best else None,
               "address": best[0].address if best else None,
               "upstream_stratum": best[1].stratum if best else None,
               "offset_s": best[1].offset if best else None,
               "stratum": state.stratum, "leap": state.leap,
               "reference_id": (socket.inet_ntoa(state.refid) if state.stratum < UNSYNC_STRATUM
                                else state.refid.decode("ascii")),
               "kernel_synchronised": None if kernel is None else kernel["synchronised"],
               "servers": servers}
        return out

    def _best_value(self, get):
        def read():
            best = self.client.best() if self.client is not None else None
            return get(best) if best else 0
        return read

    def _upstreams(self):
        return list(self.client.upstreams.values()) if self.client is not None else []

    def export(self):
        """Bind the `allworx_ntp_*` gauges to this source: each scrape reads what is served then."""
        SERVED_STRATUM.set_function(lambda: self.state().stratum)
        SERVED_LEAP.set_function(lambda: self.state().leap)
        OFFSET.set_function(self._best_value(lambda best: best[1].offset))
        UPSTREAM_STRATUM.set_function(self._best_value(lambda best: best[1].stratum))
        UPSTREAM_USABLE.set_function(lambda: sum(1 for up in self._upstreams() if up.usable))
        LAST_POLL.set_function(lambda: max([up.last_poll for up in self._upstreams()
                                            if up.last_poll is not None] or [0]))


class SntpProtocol(protocol.DatagramProtocol):
    """UDP: answers LAN clients from `clock_state()` (a ClockState), ignores everyone else."""

    noisy = False

    def __init__(self, office, reactor, clock_state):
        self.office = office
        self.reactor = reactor
        self.clock_state = clock_state
        self.limit = ClientRateLimit(reactor, rate=4.0, burst=16)

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
            reply = answer(data, received, self.reactor.seconds(), self.clock_state())
        except NotARequest as e:
            REQUESTS.labels("malformed").inc()
            log.debug("ntp: {peer}: {why}", peer=host, why=e)
            return
        REQUESTS.labels("answered").inc()
        self.transport.write(reply, addr)


class NtpService(ListeningService):
    """
    The "ntp" child: SNTP on `[ntp] port` when enabled, restarted when that
    changes; while enabled, it polls `[ntp] servers` (followed live).
    `time` is its TimeSource (the web's ITimeStatus).
    """

    def __init__(self, office, reactor=None, kernel=kernel_clock, resolve=None):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "ntp", office)
        self.reactor = reactor
        self.client = SntpClient(reactor, resolve=resolve, changed=self._changed)
        self.time = TimeSource(reactor, self.client, kernel)
        self._last_state = None

    def bound_settings(self, config):
        """Only the switch and the port decide what listens."""
        return (config.ntp.enabled, config.ntp.port)

    def disabled_reason(self, config):
        return None if config.ntp.enabled else "time server disabled in [ntp]"

    def build_listeners(self, config):
        port = config.ntp.port
        proto = SntpProtocol(self.office, self.reactor, self.time.state)
        return [("udp %d" % port, port, lambda: self.reactor.listenUDP(port, proto))]

    def startService(self):
        ListeningService.startService(self)
        self.time.export()
        self.time.running = self.office.config.ntp.enabled
        self._poll_upstreams(self.office.config)
        self._changed()

    def config_changed(self, event):
        if event.touches("ntp"):
            self.time.running = event.new.ntp.enabled
            self._poll_upstreams(event.new)
            self._changed()

    def stopService(self):
        self.time.running = False
        return defer.gatherResults([ListeningService.stopService(self),
                                    defer.maybeDeferred(self.client.stop)])

    def _poll_upstreams(self, config):
        if config.ntp.enabled and config.ntp.servers:
            try:
                self.client.start(config.ntp.servers)
            except OSError as e:
                log.error("ntp: cannot open a port to poll the upstream servers: {why}", why=e)
        else:
            self.client.stop()

    def _changed(self):
        """After each poll: a log line when what is served changes."""
        state = self.time.state()
        said = (state.upstream, state.stratum, state.leap)
        if said != self._last_state:
            self._last_state = said
            if state.upstream:
                log.info("ntp: following {upstream} ({address}): serving stratum {stratum}, "
                         "host clock offset {offset:+.6f} s", upstream=state.upstream,
                         address=socket.inet_ntoa(state.refid), stratum=state.stratum,
                         offset=state.offset)
            else:
                log.info("ntp: no upstream answering: serving the host clock at stratum "
                         "{stratum}, leap indicator {leap}", stratum=state.stratum,
                         leap=state.leap)
