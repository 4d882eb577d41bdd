# -*- test-case-name: allworx.tests.core.test_guards -*-
"""
The guards every listening protocol shares (SPEC 10, 13), once:

- `PeerLimit`: at most N connections at once from one peer address (its
  share), and a cap in all that keeps room for other peers, so one client
  cannot hold every socket of the server. A protocol that has a way to say
  "too many" (SMTP's 421, POP3's -ERR) consults it itself; the others are
  wrapped in a `PeerConnectionLimit` factory, which answers the protocol's
  "too busy" (if it has one) and closes, and also closes a connection whose
  input makes its protocol raise (`GuardedConnection`).
- `LoginThrottle`: failed logins counted per user at a source and per
  source: a growing delay, then a lock-out that expires, one rule on an
  injected clock for web, LDAP, SMTP AUTH, POP3 and SIP digest; one instance
  is shared by all of them, so a guess on one protocol counts on the others.
  Its lock-outs are listed on the Users page and the API, and cleared there
  or by `allworx unlock`.
- `ClientRateLimit`: a token bucket per client for the datagram services
  (DHCP by MAC, NTP by address), so one chatty client cannot take the
  reactor's time from the others.
"""

import time
from collections import OrderedDict

import attr
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.protocols import policies

from allworx.auth import user_for_login

log = Logger()


# ---------------------------------------------------------------- connections

PEER_FULL = "peer"      # PeerLimit.refusal: the peer holds its whole share
SERVER_BUSY = "busy"    # PeerLimit.refusal: the service is at its cap


class PeerLimit:
    """
    Open connections per peer address, and in all: `admit(host)` counts one
    more and says True, or says False (counting nothing) when `host` already
    holds its share (`limit`), or the service is full (`cap` in all). The last
    `reserve` places under the cap (a tenth of it by default) go only to
    peers that hold none yet, so that peers that each hold many cannot take
    the service from the others. `release(host)` when an admitted connection
    ends; `refusal(host)` says why one would be refused (PEER_FULL,
    SERVER_BUSY) or None.
    """

    def __init__(self, limit, cap=None, reserve=None):
        if cap is not None and cap <= limit:
            raise ValueError("the cap (%d) must leave room beyond one peer's share (%d)" % (cap, limit))
        self.limit = limit
        self.cap = cap
        self.reserve = reserve if reserve is not None else (max(1, cap // 10) if cap else 0)
        self.counts = {}
        self._total = 0

    def refusal(self, host):
        """None when `host` may open one more connection, else PEER_FULL or SERVER_BUSY."""
        n = self.counts.get(host, 0)
        if n >= self.limit:
            return PEER_FULL
        if self.cap is not None:
            if self._total >= self.cap or (n and self._total >= self.cap - self.reserve):
                return SERVER_BUSY
        return None

    def admit(self, host):
        if self.refusal(host) is not None:
            return False
        self.counts[host] = self.counts.get(host, 0) + 1
        self._total += 1
        return True

    def release(self, host):
        n = self.counts.get(host, 0)
        if n <= 0:
            return
        self._total -= 1
        if n > 1:
            self.counts[host] = n - 1
        else:
            del self.counts[host]

    def open_from(self, host):
        """How many admitted connections `host` holds now."""
        return self.counts.get(host, 0)

    def total(self):
        """Admitted connections in all."""
        return self._total

    def why(self, reason, host):
        """A log line's words for a refusal."""
        if reason == PEER_FULL:
            return "%s already holds %d connections" % (host, self.limit)
        return "%d connections open, the cap is %d" % (self._total, self.cap)


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


LINGER_SECONDS = 5      # how long a refused connection is read after its answer
LINGER_MAX = 256        # refused connections lingering at once; more are closed at once


class _Refusal(protocol.Protocol):
    """
    A refused connection: told `answer` (if any), then closed. Over plain TCP
    the close lingers (what the client sends, its request in flight, is read
    and dropped until it closes, `LINGER_SECONDS` at most): closed at once,
    its request would meet a closed socket, whose reset can throw the unread
    503 away at the client. Over TLS, or with `LINGER_MAX` lingering already
    (a flood must not hold every file descriptor), it is closed at once.
    """

    timer = None
    lingering = 0           # of the whole process

    def __init__(self, answer, clock):
        self.answer = answer
        self.clock = clock

    def connectionMade(self):
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if (not self.answer or half_close is None or ISSLTransport.providedBy(self.transport)
                or _Refusal.lingering >= LINGER_MAX):
            if self.answer:
                self.transport.write(self.answer)
            self.transport.loseConnection()
            return
        self.transport.write(self.answer)
        half_close()
        _Refusal.lingering += 1
        self.timer = self.clock.callLater(LINGER_SECONDS, self._close)

    def _close(self):
        self._release()
        self.transport.loseConnection()

    def _release(self):
        if self.timer is not None:
            _Refusal.lingering -= 1
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def dataReceived(self, data):
        pass        # the refused request: read, so that closing sends no reset

    def connectionLost(self, reason=None):
        self._release()


class PeerConnectionLimit(policies.WrappingFactory):
    """
    Wraps a server factory: at most `limit` connections at once from one peer
    address (`limit` is a number, or a PeerLimit to share with other
    factories, which may also cap the total); one more is refused (and
    logged): told `busy` (the protocol's "too busy" answer, e.g. HTTP's 503)
    and closed (a lingering close, on `clock`), or closed at once when there
    is none. A connection the
    wrapped factory refuses (buildProtocol returning None) is not counted.
    """

    protocol = GuardedConnection

    def __init__(self, wrapped, limit, label="", busy=None, clock=None):
        policies.WrappingFactory.__init__(self, wrapped)
        self.peers = limit if isinstance(limit, PeerLimit) else PeerLimit(limit)
        self.label = label or type(wrapped).__name__
        self.busy = busy
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock      # times a refused connection's lingering close

    @property
    def counts(self):
        return self.peers.counts

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        reason = self.peers.refusal(host)
        if reason is not None:
            log.warn("{label}: refused a connection from {peer}: {why}",
                     label=self.label, peer=host, why=self.peers.why(reason, host))
            return _Refusal(self.busy, self.clock) if self.busy is not None else None
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

class LockedOut(Exception):
    """A login the throttle refused, its password unchecked; `until`: the clock time it ends."""

    def __init__(self, until):
        Exception.__init__(self, until_text(until))
        self.until = until


@attr.s(frozen=True, slots=True)
class Lockout:
    """A lock-out in force: `user` at `source`, or (`user` None) the source itself."""

    source = attr.ib()
    user = attr.ib()
    until = attr.ib()
    failures = attr.ib()

    def describe(self):
        if self.user is None:
            return "source %s (every login from it)" % self.source
        return "%s at %s" % (self.user, self.source)


@attr.s(slots=True)
class _Failures:
    times = attr.ib(factory=list)       # failure times inside the window
    locked_until = attr.ib(default=0.0)
    locked_after = attr.ib(default=0)   # the failures that started the lock-out


class LoginThrottle:
    """
    One rule for failed logins, the same for every protocol (SPEC 10), on
    the injected `clock`. Failures are counted per user at a source and per
    source, within `window` seconds:

    - delay: past `user_free` failures of a user at a source, or `slow_after`
      of a source, each further attempt waits before its password is checked:
      `first_delay` seconds, doubling with each failure, at most `max_delay`
      (the answer comes later; nothing blocks). A locked source makes every
      attempt from it wait `max_delay`. At most `max_waiting` attempts from one
      source wait at once; more are refused like a lock-out;
    - lock-out: `user_limit` failures lock that user at that source, and
      `source_limit` (whatever the user names) lock the source, for `lockout`
      seconds: a login is then refused at once, its password unchecked, with
      the time the lock ends. A user's lock-out at one source leaves him free
      elsewhere and others free at that source (colleagues behind one NAT
      address are not locked out by one person's typos); a source's lock-out
      (guessing across user names) refuses every login from it (SPEC 10);
    - it expires, or `unlock` ends it (the Users page, the API, `allworx unlock`).

    Every protocol goes through `attempt(source, user, check)`, then tells
    `failed` or `succeeded`. A success clears that user's record at that
    source, not the source's count. Each lock-out is logged once as it starts:
    who, where, until when. With a `store` (allworx.lockoutfile.LockoutFile)
    the lock-outs in force survive a restart, and `start()` takes the unlock
    requests `allworx unlock` leaves. At most `max_records` records are kept:
    stale ones go first, then the oldest.
    """

    def __init__(self, clock, user_limit=5, source_limit=20, window=600, lockout=900,
                 user_free=1, slow_after=5, first_delay=0.5, max_delay=16.0, max_waiting=16,
                 max_records=10000, store=None):
        self.clock = clock
        self.user_limit = user_limit
        self.source_limit = source_limit
        self.window = window
        self.lockout = lockout
        self.user_free = user_free
        self.slow_after = slow_after
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.max_waiting = max_waiting
        self.max_records = max_records
        self.store = store
        self._records = {}      # (source, user) and (source, None) -> _Failures
        self._waiting = {}      # source -> attempts waiting out their delay now
        self._poller = None
        self._saving = self._dirty = False
        if store is not None:
            self._restore()

    # ---- the gate

    def ready(self, source, user):
        """
        True when a login of `user` from `source` may be checked now, neither
        locked nor delayed: what `attempt` would do at once, without its
        Deferred (the hot path of a protocol that logs in on every request).
        """
        records = self._records
        if (source, None) not in records and (user is None or (source, _user_key(user)) not in records):
            return True         # nothing counted against either: neither locked nor delayed
        return not self.locked_until(source, user) and not self.delay(source, user)

    def attempt(self, source, user, check):
        """
        One login of `user` from `source`: a Deferred firing with what
        `check()` (which checks the password; it may return a Deferred)
        gives, called at once or after the delay; or failing with LockedOut,
        the password unchecked.
        """
        until = self.check(source, user)
        if until:
            return defer.fail(LockedOut(until))
        wait = self.delay(source, user)
        if not wait:
            return defer.maybeDeferred(check)
        held = self._waiting.get(source, 0)
        if held >= self.max_waiting:
            self._count([((source, None), self.source_limit)])
            return defer.fail(LockedOut(self.clock.seconds() + wait))
        self._waiting[source] = held + 1

        def waited():
            left = self._waiting.pop(source, 1) - 1
            if left > 0:
                self._waiting[source] = left
            until = self.locked_until(source, user)
            if until:
                raise LockedOut(until)
            return check()
        return task.deferLater(self.clock, wait, waited)

    def locked_until(self, source, user=None):
        """
        The clock time until which this login is refused (0 when it may try
        now); for `user` None, the source's own lock-out.
        """
        now = self.clock.seconds()
        source_until = self._lock_of((source, None), now)
        if user is None:
            return source_until
        record = self._records.get((source, _user_key(user)))
        until = record.locked_until if record is not None and record.locked_until > now else 0.0
        return max(until, source_until)

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

    def delay(self, source, user=None):
        """Seconds an attempt from `source` (as `user`) waits before its password is checked."""
        if user is None and (source, None) not in self._records:
            return 0            # nothing counted against the source (a challenge's usual case)
        now = self.clock.seconds()
        if self._lock_of((source, None), now):
            return self.max_delay
        wait = self._delay_of((source, None), self.slow_after, now)
        if user is not None:
            wait = max(wait, self._delay_of((source, _user_key(user)), self.user_free, now))
        return wait

    # ---- what the pages, the API and the CLI see and do

    def lockouts(self):
        """The lock-outs in force, the soonest to end first."""
        now = self.clock.seconds()
        return sorted((Lockout(s, u, r.locked_until, r.locked_after)
                       for (s, u), r in self._records.items() if r.locked_until > now),
                      key=lambda l: (l.until, l.source, l.user or ""))

    def unlock(self, user=None, source=None, by=None):
        """
        Forget the records of `user` (at `source`, or everywhere), or of
        everything at `source`: its lock-outs end and its failures are
        forgotten. The lock-outs that ended (logged, naming `by`).
        """
        key = _user_key(user) if user is not None else None
        now = self.clock.seconds()
        ended = []
        for s, u in list(self._records):
            if (source is None or s == source) and (user is None or u == key):
                record = self._records.pop((s, u))
                if record.locked_until > now:
                    ended.append(Lockout(s, u, record.locked_until, record.locked_after))
        for lockout in ended:
            log.info("login throttle: {who} unlocked{by}", who=lockout.describe(),
                     by=" by %s" % by if by else "", user=lockout.user, source=lockout.source)
        if ended:
            self._changed()
        return ended

    def __len__(self):
        return len(self._records)

    # ---- kept across restarts

    def start(self, interval=1.0):
        """Take `allworx unlock`'s requests every `interval` seconds (with a store)."""
        if self.store is not None and self._poller is None:
            self._poller = task.LoopingCall(self.poll)
            self._poller.clock = self.clock
            self._poller.start(interval, now=True)

    def stop(self):
        if self._poller is not None:
            self._poller.stop()
            self._poller = None

    def poll(self):
        """Apply the unlock requests waiting in the store."""
        try:
            for user, source in self.store.take_requests():
                self.unlock(user, source, by="allworx unlock")
        except Exception:
            log.failure("login throttle: could not take the unlock requests")

    def _restore(self):
        now = self.clock.seconds()
        for entry in self.store.load():
            try:
                source, user = str(entry["source"]), entry.get("user")
                until, failures = float(entry["until"]), int(entry.get("failures", 0))
            except (KeyError, TypeError, ValueError):
                continue
            if until > now:
                key = (source, _user_key(user) if user is not None else None)
                self._records[key] = _Failures(locked_until=until, locked_after=failures)
        self.poll()     # what was asked while the server was down

    def _changed(self):
        """Save the lock-outs in force, one write at a time (the last one wins)."""
        if self.store is None:
            return
        if self._saving:
            self._dirty = True
            return
        self._saving = True

        def saved(_):
            self._saving = False
            if self._dirty:
                self._dirty = False
                self._changed()
        self.store.save([{"source": l.source, "user": l.user, "until": l.until,
                          "failures": l.failures} for l in self.lockouts()]).addBoth(saved)

    # ---- records

    def _keys(self, source, user):
        keys = [(source, None)]
        if user is not None:
            keys.append((source, _user_key(user)))
        return keys

    def _lock_of(self, key, now):
        record = self._records.get(key)
        return record.locked_until if record is not None and record.locked_until > now else 0.0

    def _delay_of(self, key, free, now):
        record = self._records.get(key)
        if record is None:
            return 0
        recent = sum(1 for t in record.times if now - t < self.window)
        if recent <= free:
            return 0
        return min(self.max_delay, self.first_delay * 2 ** (recent - free - 1))

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
                record.locked_after = len(record.times)
                record.times = []
                locked = True
                source, user = key
                log.warn("login throttle: {who} locked out until {until} after {count} failures "
                         "in {window} s", who=_who(key), until=_clock_text(record.locked_until),
                         count=limit, window=self.window, source=source, user=user)
                self._changed()
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
    return "%s at %s" % (user, source) if user is not None else "source %s (every login from it)" % source


def _clock_text(when):
    """2024-03-01 14:32:10 UTC, for the log."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


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
