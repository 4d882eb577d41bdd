# -*- test-case-name: allworx.tests.ntp.test_client -*-
"""
The time server's own SNTP client (RFC 4330; SPEC 6): it polls the
upstream servers of `[ntp] servers` and measures how far the host clock is
from each, without ever touching the host clock.

- Each upstream is polled from one ephemeral UDP port, at most once per
  poll interval: 64 s at first, doubling up to 1024 s after 4 answers in a
  row that agree (within 128 ms) with the one before, halving back towards
  64 s when a poll goes unanswered (to learn soon whether it is gone), and
  backing off again once it has missed its last 8 polls. A kiss-o'-death
  RATE doubles the interval twice; DENY or RSTR stop polling that server
  until the config names it anew.
- A name is resolved through `resolve(name)` (the host's resolver by
  default) when it is first polled and again after a missed poll (a new
  address forgets the old one's answers).
- An answer counts only if it passes the sanity checks: from the server's
  address and port 123, at least 48 bytes, mode 4 (server), version 1-4,
  our transmit timestamp as its origin, stratum 1-15 (0 is a kiss-o'-death),
  leap indicator not 3 (the server says it is unsynchronised), a transmit
  timestamp, and a root distance under 1.5 s (RFC 5905's MAXDIST).
- Offset and delay are RFC 4330's: offset = ((T2 - T1) + (T3 - T4)) / 2,
  delay = (T4 - T1) - (T3 - T2). Of the last 8 answers the one with the
  least delay gives the offset (a jump of more than 128 ms starts anew).
- An upstream is usable while it answered at least one of its last 3 polls
  (the reach register, as ntpq shows it); `best()` is the usable one of the
  lowest stratum, then the shortest root distance.
"""

import ipaddress
import socket

import attr
from twisted.internet import defer, protocol
from twisted.logger import Logger

from allworx.protocols.ntp.wire import PACKET, from_ntp, to_ntp

log = Logger()

MIN_POLL, MAX_POLL = 6, 10          # log2 seconds: 64 to 1024 s
REPLY_TIMEOUT = 4.0                 # seconds to wait for one answer
REACH_POLLS = 3                     # usable while one of the last 3 polls was answered
STABLE_ANSWERS = 4                  # answers in a row that agree before backing off
STEP = 0.128                        # seconds: offsets further apart do not agree
MAX_DISTANCE = 1.5                  # seconds of root distance an answer may claim
FILTER_SIZE = 8
PHI = 15e-6                         # the dispersion a sample gains each second (RFC 5905)
MODE_CLIENT, MODE_SERVER = 3, 4
LI_ALARM = 3
STOP_CODES = (b"DENY", b"RSTR")


class BadReply(ValueError):
    """An answer that fails a sanity check; the message says which."""


class NotOurs(BadReply):
    """A datagram that is not the answer to our request (the real one may still come)."""


class KissOfDeath(BadReply):
    """A stratum 0 answer: the server's kiss code (`code`, e.g. b"RATE")."""

    def __init__(self, code):
        self.code = code
        BadReply.__init__(self, "kiss-o'-death %s" % code.decode("ascii", "replace"))


@attr.s(frozen=True, slots=True)
class Sample:
    """One sane answer: the host clock's offset from the server and what the server said."""

    offset = attr.ib()              # seconds to add to the host clock
    delay = attr.ib()               # round trip, seconds
    stratum = attr.ib()
    root_delay = attr.ib()
    root_dispersion = attr.ib()
    at = attr.ib()                  # host POSIX time the answer arrived

    def distance(self, now):
        """Root distance at `now`: what the served time may be off by, at most."""
        return (self.root_delay + self.delay) / 2 + self.root_dispersion + PHI * max(0, now - self.at)


def request(transmit):
    """A client request (mode 3, version 4) carrying the 64-bit `transmit` timestamp."""
    return PACKET.pack((4 << 3) | MODE_CLIENT, 0, MIN_POLL, 0, 0, 0, b"\0" * 4, 0, 0, 0, transmit)


def _seconds(short):
    return short / 65536.0


def read_reply(data, sent, t1, t4):
    """
    The Sample of a server's answer `data` to our request carrying `sent`
    (its 64-bit transmit timestamp), sent at host time `t1` and received at
    `t4`; BadReply (KissOfDeath) says why an answer is not used.
    """
    if len(data) < PACKET.size:
        raise NotOurs("%d bytes is too short for NTP (48)" % len(data))
    (first, stratum, _poll, _precision, root_delay, root_dispersion, refid, _ref, origin,
     received, transmit) = PACKET.unpack(data[:PACKET.size])
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != MODE_SERVER:
        raise NotOurs("mode %d is not a server reply" % mode)
    if not 1 <= version <= 4:
        raise NotOurs("NTP version %d" % version)
    if origin != sent:
        raise NotOurs("origin timestamp does not match our request")
    if stratum == 0:
        raise KissOfDeath(refid)
    if stratum > 15:
        raise BadReply("stratum %d: the server is not synchronised" % stratum)
    if leap == LI_ALARM:
        raise BadReply("leap indicator 3: the server is not synchronised")
    if transmit == 0:
        raise BadReply("no transmit timestamp")
    t2, t3 = from_ntp(received), from_ntp(transmit)
    sample = Sample(offset=((t2 - t1) + (t3 - t4)) / 2, delay=max(0.0, (t4 - t1) - (t3 - t2)),
                    stratum=stratum, root_delay=_seconds(root_delay),
                    root_dispersion=_seconds(root_dispersion), at=t4)
    if sample.distance(t4) >= MAX_DISTANCE:
        raise BadReply("root distance %.3f s is too far (at most %.1f s)"
                       % (sample.distance(t4), MAX_DISTANCE))
    return sample


def _is_address(name):
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


class Upstream:
    """One upstream server: its address, reach register, poll interval and samples."""

    def __init__(self, name):
        self.name = name
        self.address = name if _is_address(name) else None
        self.reach = 0              # one bit per completed poll, newest lowest
        self.completed = 0          # polls answered or given up
        self.poll_exp = MIN_POLL
        self.stable = 0
        self.samples = []           # newest last
        self.last_poll = None       # host POSIX times
        self.last_answer = None
        self.error = None
        self.stopped = False        # a DENY/RSTR kiss: polled no more
        self.pending = None         # (transmit, t1, timeout DelayedCall) of the poll in flight
        self.timer = None
        self.resolve_again = False      # after a missed poll, a name is looked up again

    @property
    def poll_interval(self):
        return 2 ** self.poll_exp

    @property
    def usable(self):
        return bool(self.reach & ((1 << REACH_POLLS) - 1)) and bool(self.samples)

    def sample(self):
        """The filtered sample: of the last answers, the one with the least delay."""
        return min(self.samples, key=lambda s: s.delay) if self.samples else None

    def answered(self, sample):
        self.reach = ((self.reach << 1) | 1) & 0xFF
        self.completed += 1
        self.last_answer, self.error = sample.at, None
        last = self.samples[-1] if self.samples else None
        if last is not None and abs(sample.offset - last.offset) < STEP:
            self.stable += 1
        else:
            self.stable = 0
            if last is not None:
                self.samples = []       # a step: the older answers no longer hold
        self.samples = (self.samples + [sample])[-FILTER_SIZE:]
        if self.stable >= STABLE_ANSWERS and self.poll_exp < MAX_POLL:
            self.poll_exp += 1
            self.stable = 0

    def missed(self, why, kiss=None):
        self.reach = (self.reach << 1) & 0xFF
        self.completed += 1
        self.error, self.stable = why, 0
        if kiss in STOP_CODES:
            self.stopped = True
        elif kiss == b"RATE":
            self.poll_exp = min(MAX_POLL, self.poll_exp + 2)
        elif self.reach or self.completed < 8:
            self.poll_exp = max(MIN_POLL, self.poll_exp - 1)
        else:
            self.poll_exp = min(MAX_POLL, self.poll_exp + 1)
        self.resolve_again = not _is_address(self.name)

    def as_json(self):
        sample = self.sample()
        return {"name": self.name, "address": self.address, "usable": self.usable,
                "reach": "%03o" % self.reach, "poll_s": self.poll_interval,
                "last_poll": self.last_poll, "last_answer": self.last_answer,
                "offset_s": None if sample is None else sample.offset,
                "delay_s": None if sample is None else sample.delay,
                "stratum": None if sample is None else sample.stratum,
                "error": ("refused us (%s): polled no more" % self.error) if self.stopped
                else self.error}


class SntpClient(protocol.DatagramProtocol):
    """
    Polls the upstream servers (`set_servers`) from one UDP port while
    started; `best()` is the (Upstream, Sample) the time server follows, or
    None; `changed()` is called after each poll ends.
    """

    noisy = False

    def __init__(self, reactor, resolve=None, changed=lambda: None):
        self.reactor = reactor
        self.resolve = resolve or reactor.resolve
        self.changed = changed
        self.upstreams = {}         # name -> Upstream, in config order
        self.port = None

    # ------------------------------------------------------------ running

    def start(self, names):
        if self.port is None:
            self.port = self.reactor.listenUDP(0, self)
        self.set_servers(names)

    def stop(self):
        self.set_servers(())
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()

    def set_servers(self, names):
        """Poll `names` from now on: new ones at once, dropped ones no more."""
        for name in list(self.upstreams):
            if name not in names:
                self._cancel(self.upstreams.pop(name))
        for name in names:
            if name not in self.upstreams:
                up = self.upstreams[name] = Upstream(name)
                up.timer = self.reactor.callLater(0, self._poll, up)
        self.upstreams = {name: self.upstreams[name] for name in names}

    def _cancel(self, up):
        for call in (up.timer, up.pending and up.pending[2]):
            if call is not None and call.active():
                call.cancel()
        up.timer = up.pending = None

    # ------------------------------------------------------------ one poll

    def _poll(self, up):
        # The next poll is set when this one ends (answered, refused or timed
        # out), a poll interval later: never two in flight, never sooner.
        up.timer = None
        if up.stopped or self.upstreams.get(up.name) is not up:
            return
        up.last_poll = self.reactor.seconds()
        if up.address and not up.resolve_again:
            d = defer.succeed(up.address)
        else:
            d = defer.maybeDeferred(self.resolve, up.name)
        d.addCallbacks(lambda address: self._send(up, address),
                       lambda f: self._complete(up, None, "%s does not resolve (%s)"
                                                % (up.name, f.getErrorMessage())))

    def _schedule(self, up):
        if not up.stopped and self.upstreams.get(up.name) is up and up.timer is None:
            up.timer = self.reactor.callLater(up.poll_interval, self._poll, up)

    def _send(self, up, address):
        if self.port is None or self.upstreams.get(up.name) is not up:
            return
        if address != up.address:
            up.samples = []         # another server behind the name: its own answers only
        up.address, up.resolve_again = address, False
        t1 = self.reactor.seconds()
        transmit = to_ntp(t1)
        timeout = self.reactor.callLater(REPLY_TIMEOUT, self._complete, up, None,
                                         "no answer in %d s" % REPLY_TIMEOUT)
        up.pending = (transmit, t1, timeout)
        try:
            self.transport.write(request(transmit), (address, 123))
        except (OSError, socket.error) as e:
            timeout.cancel()
            self._complete(up, None, "cannot send to %s: %s" % (address, e))

    def _complete(self, up, sample, why=None, kiss=None):
        if up.pending is not None and up.pending[2].active():
            up.pending[2].cancel()
        up.pending = None
        if sample is not None:
            up.answered(sample)
            log.debug("ntp: {name} ({address}) stratum {stratum}: offset {offset:.6f} s, "
                      "delay {delay:.6f} s", name=up.name, address=up.address,
                      stratum=sample.stratum, offset=sample.offset, delay=sample.delay)
        else:
            was_usable = up.usable
            up.missed(why, kiss)
            if was_usable and not up.usable:
                log.warn("ntp: upstream {name} did not answer its last {n} polls ({why})",
                         name=up.name, n=REACH_POLLS, why=why)
            else:
                log.info("ntp: upstream {name}: {why}", name=up.name, why=why)
        self._schedule(up)
        self.changed()

    def datagramReceived(self, data, addr):
        t4 = self.reactor.seconds()
        for up in self.upstreams.values():
            if up.pending is not None and addr == (up.address, 123):
                transmit, t1, _ = up.pending
                try:
                    sample = read_reply(data, transmit, t1, t4)
                except NotOurs as e:
                    # A forged or stray datagram must not end the poll: the real answer may follow.
                    log.info("ntp: {name} ({address}): datagram ignored: {why}",
                             name=up.name, address=up.address, why=e)
                except KissOfDeath as e:
                    self._complete(up, None, str(e), kiss=e.code)
                except BadReply as e:
                    self._complete(up, None, "answer not used: %s" % e)
                else:
                    self._complete(up, sample)
                return

    # ------------------------------------------------------------ what it found

    def best(self):
        """(Upstream, Sample) of the usable upstream to follow, or None."""
        now = self.reactor.seconds()
        usable = [(up, up.sample()) for up in self.upstreams.values() if up.usable]
        if not usable:
            return None
        return min(usable, key=lambda pair: (pair[1].stratum, pair[1].distance(now)))

    def status(self):
        return [up.as_json() for up in self.upstreams.values()]
