# -*- test-case-name: allworx.tests.core.test_guards -*-
"""
The guards every listening protocol shares (SPEC 10, 13), once:

- `PeerLimit`: at most N connections at once from one peer address, so one
  client cannot hold every socket of the server. A protocol that has a way to
  say "too many" (SMTP's 421, POP3's -ERR) consults it itself; the others are
  wrapped in a `PeerConnectionLimit` factory, which also closes a connection
  whose input makes its protocol raise (`GuardedConnection`).
- `LoginThrottle`: failed logins counted per user at a source and per source,
  with lock-outs (and, for SIP, answers that come ever later), on an injected
  clock. Web, LDAP, SMTP AUTH, POP3 and SIP digest use it; one instance can be
  shared by all of them, so a guess on one protocol counts on the others.
- `ClientRateLimit`: a token bucket per client for the datagram services
  (DHCP by MAC, NTP by address), so one chatty client cannot take the
  reactor's time from the others.
"""

import time
from collections import OrderedDict

import attr
from twisted.logger import Logger
from twisted.protocols import policies

from allworx.auth import user_for_login

log = Logger()


# ---------------------------------------------------------------- connections

class PeerLimit:
    """
    Open connections per peer address: `admit(host)` counts one more and says
    True, or says False (counting nothing) when `host` already has `limit`;
    `release(host)` when an admitted connection ends.
    """

    def __init__(self, limit):
        self.limit = limit
        self.counts = {}

    def admit(self, host):
        n = self.counts.get(host, 0)
        if n >= self.limit:
            return False
        self.counts[host] = n + 1
        return True

    def release(self, host):
        left = self.counts.get(host, 0) - 1
        if left > 0:
            self.counts[host] = left
        else:
            self.counts.pop(host, None)

    def open_from(self, host):
        """How many admitted connections `host` holds now."""
        return self.counts.get(host, 0)

    def total(self):
        """Admitted connections in all."""
        return sum(self.counts.values())


class GuardedConnection(policies.ProtocolWrapper):
    """
    A connection whose protocol raising on input is closed, with one log
    line, instead of the exception reaching the reactor (twisted.web's own
    parser has such paths on garbage, e.g. a header line before any request).
    """

    def dataReceived(self, data):
        try:
            policies.ProtocolWrapper.dataReceived(self, data)
        except Exception as e:
            log.info("{label}: closing the connection from {peer} after bad input: {why!r}",
                     label=self.factory.label, peer=getattr(self, "peer_host", "?"), why=e)
            self.transport.loseConnection()


class PeerConnectionLimit(policies.WrappingFactory):
    """
    Wraps a server factory: at most `limit` connections at once from one peer
    address (`limit` is a number, or a PeerLimit to share with other
    factories); one more is closed at once (and logged). A connection the
    wrapped factory refuses (buildProtocol returning None) is not counted.
    """

    protocol = GuardedConnection

    def __init__(self, wrapped, limit, label=""):
        policies.WrappingFactory.__init__(self, wrapped)
        self.peers = limit if isinstance(limit, PeerLimit) else PeerLimit(limit)
        self.label = label or type(wrapped).__name__

    @property
    def counts(self):
        return self.peers.counts

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        if self.peers.open_from(host) >= self.peers.limit:
            log.warn("{label}: refused a connection from {peer}: already {limit} open",
                     label=self.label, peer=host, limit=self.peers.limit)
            return None
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        self.peers.admit(host)
        wrapper = self.protocol(self, inner)
        wrapper.peer_host = host
        return wrapper

    def unregisterProtocol(self, p):
        policies.WrappingFactory.unregisterProtocol(self, p)
        self.peers.release(getattr(p, "peer_host", None))


# ---------------------------------------------------------------- logins

@attr.s(slots=True)
class _Failures:
    times = attr.ib(factory=list)       # failure times inside the window
    locked_until = attr.ib(default=0.0)


class LoginThrottle:
    """
    Failed logins, on the injected `clock` (SPEC 10):

    - `user_limit` failures for one user from one source within `window`
      seconds lock that user at that source for `lockout` seconds (the user
      may still log in from elsewhere, and others from that source);
    - `source_limit` failures from one source within `window`, whatever the
      user names, lock the whole source for `lockout` seconds.

    A protocol asks `check(source, user)` before it checks a password (a
    locked login is refused at once, unchecked), then tells `failed` or
    `succeeded`. A success clears that user's record at that source, not the
    source's count. `delay(source)` is how long a source that keeps failing
    should wait for its answer (SIP's slow-down). At most `max_records`
    records are kept: stale ones go first, then the oldest.
    """

    def __init__(self, clock, user_limit=5, source_limit=20, window=600, lockout=900,
                 slow_after=5, max_delay=16.0, max_records=10000):
        self.clock = clock
        self.user_limit = user_limit
        self.source_limit = source_limit
        self.window = window
        self.lockout = lockout
        self.slow_after = slow_after
        self.max_delay = max_delay
        self.max_records = max_records
        self._records = {}      # (source, user) and (source, None) -> _Failures

    def locked_until(self, source, user=None):
        """The clock time until which this login is refused (0 when it may try now)."""
        now = self.clock.seconds()
        until = 0.0
        for key in self._keys(source, user):
            record = self._records.get(key)
            if record is not None and record.locked_until > now:
                until = max(until, record.locked_until)
        return until

    def locked_for(self, source, user=None):
        """Whole seconds until this login may try again (0 when it may now)."""
        until = self.locked_until(source, user)
        return max(0, int(until - self.clock.seconds() + 0.999)) if until else 0

    def check(self, source, user=None):
        """
        Before a password is checked: 0 when it may be, else the clock time the
        lock ends. A login refused here counts as a failure of its source
        (guessing on at a locked user still brings the source's lock nearer).
        """
        until = self.locked_until(source, user)
        if until:
            self._count([((source, None), self.source_limit)])
        return until

    def failed(self, source, user=None):
        """
        Count a failed login against the source and the user at that source
        (a record that is locked already is left as it is); True if this
        failure locked one of them.
        """
        return self._count(zip(self._keys(source, user), (self.source_limit, self.user_limit)))

    def succeeded(self, source, user=None):
        """A good login clears that user's failures at that source."""
        if user is not None:
            self._records.pop((source, _user_key(user)), None)

    def delay(self, source):
        """Seconds to hold the answer to `source`: 0 for its first `slow_after` failures, then doubling."""
        record = self._records.get((source, None))
        if record is None:
            return 0
        now = self.clock.seconds()
        recent = sum(1 for t in record.times if now - t < self.window)
        if recent <= self.slow_after:
            return 0
        return min(self.max_delay, 0.5 * 2 ** (recent - self.slow_after - 1))

    def unlock(self, user=None, source=None):
        """Forget the records of `user` (at `source`, or everywhere), or of `source`."""
        key = _user_key(user) if user is not None else None
        for s, u in list(self._records):
            if (source is None or s == source) and (user is None or u == key):
                del self._records[(s, u)]

    def __len__(self):
        return len(self._records)

    def _keys(self, source, user):
        keys = [(source, None)]
        if user is not None:
            keys.append((source, _user_key(user)))
        return keys

    def _count(self, keys_and_limits):
        now = self.clock.seconds()
        locked = False
        for key, limit in keys_and_limits:
            record = self._record(key, now)
            if record.locked_until > now:
                continue
            record.times = [t for t in record.times if now - t < self.window] + [now]
            if len(record.times) >= limit:
                record.locked_until = now + self.lockout
                record.times = []
                locked = True
                log.warn("login throttle: {who} locked out for {seconds} s after {count} failures",
                         who=_who(key), seconds=self.lockout, count=limit)
        return locked

    def _record(self, key, now):
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= self.max_records:
                self._forget_stale(now)
            record = self._records[key] = _Failures()
        return record

    def _forget_stale(self, now):
        for key, record in list(self._records.items()):
            if record.locked_until <= now and all(now - t >= self.window for t in record.times):
                del self._records[key]
        while len(self._records) >= self.max_records:
            # Still full of live records: drop the oldest rather than grow
            # without bound (of equal age, a user's before a source's).
            def age(key):
                record = self._records[key]
                return max(record.times or [record.locked_until]), key[1] is None
            del self._records[min(self._records, key=age)]


def login_name(config, login):
    """The name a login is throttled under: the user it names, else the text as sent."""
    user = user_for_login(config, login)
    if user is not None:
        return user.name
    return login.decode("utf-8", "replace") if isinstance(login, bytes) else login


def until_text(when):
    """`locked until 14:32 UTC` for a clock time, the way every protocol says it."""
    return "locked until %s UTC" % time.strftime("%H:%M", time.gmtime(when))


def _user_key(user):
    if isinstance(user, bytes):
        user = user.decode("utf-8", "replace")
    return user.strip().lower()


def _who(key):
    source, user = key
    return "%s at %s" % (user, source) if user is not None else "source %s" % source


class ClientRateLimit:
    """
    A token bucket per client (MAC): `rate` packets a second with bursts of
    `burst`. Remembers at most `max_clients` clients, forgetting the idlest.
    """

    def __init__(self, clock, rate=10.0, burst=20, max_clients=4096):
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets = OrderedDict()   # key -> (tokens, last time)

    def allow(self, key):
        """True if `key` may send one more packet now."""
        now = self.clock.seconds()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed
