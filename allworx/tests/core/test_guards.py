"""Tests of the shared guards (allworx.guards): the per-peer limit and the login throttle."""

import os
import time

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from allworx import guards
from allworx.config import parse_config
from allworx.guards import (
    LINGER_SECONDS, PEER_FULL, SERVER_BUSY, ClientRateLimit, LockedOut, LoginThrottle,
    PeerConnectionLimit, PeerLimit, login_name, until_text)
from allworx.lockoutfile import LockoutFile
from allworx.tests.confs import MINIMAL, PW_HASH


class HalfClosing(StringTransport):
    """A StringTransport that can close its writing half, as TCP's can."""

    half_closed = False

    def loseWriteConnection(self):
        self.half_closed = True


class PeerLimitTests(unittest.TestCase):

    def test_admit_and_release(self):
        peers = PeerLimit(2)
        self.assertTrue(peers.admit("a"))
        self.assertTrue(peers.admit("a"))
        self.assertFalse(peers.admit("a"))
        self.assertTrue(peers.admit("b"))
        self.assertEqual((peers.open_from("a"), peers.total()), (2, 3))
        peers.release("a")
        self.assertTrue(peers.admit("a"))
        for _ in range(3):
            peers.release("b")      # more releases than admits: never below zero
        self.assertEqual(peers.counts, {"a": 2})

    def test_a_cap_that_leaves_room_for_other_peers(self):
        peers = PeerLimit(3, cap=12, reserve=2)
        for host in "abc":                      # three greedy peers, each at its share...
            for _ in range(3):
                self.assertTrue(peers.admit(host))
        self.assertEqual(peers.refusal("a"), PEER_FULL)
        # ...then the last places (the reserve) go only to peers holding none.
        self.assertTrue(peers.admit("d"))
        self.assertEqual(peers.refusal("d"), SERVER_BUSY)
        self.assertTrue(peers.admit("e"))
        self.assertTrue(peers.admit("f"))
        self.assertEqual(peers.total(), 12)
        self.assertEqual(peers.refusal("g"), SERVER_BUSY)     # the cap itself
        self.assertFalse(peers.admit("g"))
        peers.release("f")
        self.assertTrue(peers.admit("g"))
        self.assertEqual(peers.total(), 12)

    def test_the_cap_is_more_than_one_share(self):
        self.assertRaises(ValueError, PeerLimit, 20, cap=20)
        self.assertEqual(PeerLimit(20, cap=500).reserve, 50)


class PeerConnectionLimitTests(unittest.TestCase):
    """At most N connections at once per peer address."""

    def connect(self, factory, addr):
        proto = factory.buildProtocol(addr)
        if proto is not None:
            proto.makeConnection(StringTransport(peerAddress=addr))
        return proto

    def test_limit_and_release(self):
        inner = ServerFactory.forProtocol(Protocol)
        limited = PeerConnectionLimit(inner, 2)
        a = IPv4Address("TCP", "192.168.2.10", 1)
        b = IPv4Address("TCP", "192.168.2.11", 1)
        first = self.connect(limited, a)
        self.connect(limited, a)
        self.assertIsNone(limited.buildProtocol(a))
        self.assertIsNotNone(limited.buildProtocol(b))
        first.connectionLost(None)
        self.assertIsNotNone(limited.buildProtocol(a))

    def test_one_limit_shared_by_two_ports(self):
        peers = PeerLimit(3)
        one = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), peers, "one")
        two = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), peers, "two")
        a = IPv4Address("TCP", "198.51.100.10", 1)
        b = IPv4Address("TCP", "198.51.100.11", 1)
        self.connect(one, a)
        self.connect(one, a)
        last = self.connect(two, a)
        self.assertIsNone(two.buildProtocol(a))
        self.assertIsNone(one.buildProtocol(a))
        self.assertIsNotNone(self.connect(two, b))
        last.connectionLost(None)
        self.assertIsNotNone(self.connect(one, a))
        self.assertEqual(peers.counts, {"198.51.100.10": 3, "198.51.100.11": 1})

    def test_a_refused_connection_is_told_the_busy_answer(self):
        busy = b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
        limited = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), PeerLimit(1, cap=2), "x", busy)
        a = IPv4Address("TCP", "192.168.2.10", 1)
        self.connect(limited, a)
        refused = limited.buildProtocol(a)
        t = StringTransport(peerAddress=a)
        refused.makeConnection(t)
        self.assertEqual((t.value(), t.disconnecting), (busy, True))
        refused.connectionLost(None)
        self.assertEqual(limited.peers.total(), 1)      # a refusal is not counted

    def test_a_refused_connection_is_answered_then_read_until_the_client_closes(self):
        # Its request, in flight as it was refused, must not meet a closed
        # socket: the reset would throw the unread 503 away at the client.
        busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\n\r\n"
        clock = task.Clock()
        limited = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), PeerLimit(1, cap=2), "x",
                                      busy, clock=clock)
        a = IPv4Address("TCP", "192.168.2.10", 1)
        self.connect(limited, a)
        refused, t = limited.buildProtocol(a), HalfClosing(peerAddress=a)
        refused.makeConnection(t)
        self.assertEqual((t.value(), t.half_closed, t.disconnecting), (busy, True, False))
        refused.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")     # read and dropped
        self.assertEqual(t.value(), busy)
        refused.connectionLost(None)                    # the client closes: no timer left
        self.assertEqual(clock.getDelayedCalls(), [])
        # A client that never closes is closed after LINGER_SECONDS.
        refused, t = limited.buildProtocol(a), HalfClosing(peerAddress=a)
        refused.makeConnection(t)
        clock.advance(LINGER_SECONDS - 0.1)
        self.assertFalse(t.disconnecting)
        clock.advance(0.1)
        self.assertTrue(t.disconnecting)
        self.assertEqual(limited.peers.total(), 1)      # refusals are not counted

    def test_no_more_than_linger_max_linger_at_once(self):
        clock = task.Clock()
        self.patch(guards, "LINGER_MAX", 2)
        self.patch(guards._Refusal, "lingering", 0)
        limited = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), 1, "x", b"busy", clock=clock)
        a = IPv4Address("TCP", "192.168.2.10", 1)
        self.connect(limited, a)
        refused = []
        for _ in range(3):
            t = HalfClosing(peerAddress=a)
            p = limited.buildProtocol(a)
            p.makeConnection(t)
            refused.append((p, t))
        self.assertEqual([(t.half_closed, t.disconnecting) for _, t in refused],
                         [(True, False), (True, False), (False, True)])
        refused[0][0].connectionLost(None)              # one closes: room for one more
        clock.advance(LINGER_SECONDS)                   # the other is closed by its timer
        self.assertTrue(refused[1][1].disconnecting)
        self.assertEqual(guards._Refusal.lingering, 0)
        refused[1][0].connectionLost(None)              # ... and counted once
        self.assertEqual(guards._Refusal.lingering, 0)

    def test_a_refusal_over_tls_closes_at_once(self):
        clock = task.Clock()
        limited = PeerConnectionLimit(ServerFactory.forProtocol(Protocol), 1, "x", b"busy", clock=clock)
        a = IPv4Address("TCP", "192.168.2.10", 1)
        self.connect(limited, a)
        t = HalfClosing(peerAddress=a)
        directlyProvides(t, ISSLTransport)
        limited.buildProtocol(a).makeConnection(t)
        self.assertEqual((t.value(), t.half_closed, t.disconnecting), (b"busy", False, True))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_raising_protocol_is_closed(self):
        class Bad(Protocol):
            def dataReceived(self, data):
                raise ValueError("garbage")
        limited = PeerConnectionLimit(ServerFactory.forProtocol(Bad), 1, "bad")
        addr = IPv4Address("TCP", "192.168.2.10", 1)
        proto = limited.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        proto.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)


class ThrottleTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.t = LoginThrottle(self.clock, user_limit=3, source_limit=5, window=60, lockout=300,
                               max_records=4)

    def test_locks_the_user_at_the_source_after_limit(self):
        self.assertFalse(self.t.failed("a", "alice"))
        self.assertFalse(self.t.failed("a", "alice"))
        self.assertTrue(self.t.failed("a", "alice"))
        self.assertEqual(self.t.locked_for("a", "alice"), 300)
        self.assertEqual(self.t.locked_until("a", "alice"), self.clock.seconds() + 300)
        # Others are not affected: alice elsewhere, bob at that source, the source itself.
        self.assertEqual(self.t.locked_for("b", "alice"), 0)
        self.assertEqual(self.t.locked_for("a", "bob"), 0)
        self.assertEqual(self.t.locked_for("a"), 0)
        self.clock.advance(299)
        self.assertEqual(self.t.locked_for("a", "alice"), 1)
        self.clock.advance(1)
        self.assertEqual(self.t.locked_for("a", "alice"), 0)

    def test_user_names_are_compared_as_typed_loosely(self):
        self.t.failed("a", b"Alice")
        self.t.failed("a", " alice")
        self.t.failed("a", "ALICE")
        self.assertTrue(self.t.locked_for("a", "alice"))

    def test_guessing_across_user_names_locks_the_source(self):
        self.t.max_records = 100
        for name in ("u1", "u2", "u3", "u4"):
            self.assertFalse(self.t.failed("a", name))
        self.assertTrue(self.t.failed("a", "u5"))
        self.assertEqual(self.t.locked_for("a"), 300)
        # Every login from that source is refused (SPEC 10: "whatever the
        # users, lock the source"), the names guessed and any other...
        self.assertEqual(self.t.locked_for("a", "u1"), 300)
        self.assertEqual(self.t.locked_for("a", "U5 "), 300)
        self.assertEqual(self.t.locked_for("a", "anyone"), 300)
        # ...but nobody elsewhere.
        self.assertEqual(self.t.locked_for("b", "u1"), 0)

    def test_failures_outside_the_window_forgotten(self):
        self.t.failed("a", "alice")
        self.t.failed("a", "alice")
        self.clock.advance(61)
        self.assertFalse(self.t.failed("a", "alice"))
        self.assertEqual(self.t.locked_for("a", "alice"), 0)

    def test_success_clears_the_user_not_the_source(self):
        self.t.failed("a", "alice")
        self.t.failed("a", "alice")
        self.t.succeeded("a", "alice")
        self.assertFalse(self.t.failed("a", "alice"))
        self.assertFalse(self.t.failed("a", "alice"))
        # The source has counted all four: one more, whoever it is, locks it.
        self.assertTrue(self.t.failed("a", "bob"))
        self.assertTrue(self.t.locked_for("a"))

    def test_check_refuses_a_locked_login_and_counts_it_against_the_source(self):
        for _ in range(3):
            self.t.failed("a", "alice")
        self.assertEqual(self.t.check("a", "bob"), 0)
        until = self.t.check("a", "alice")
        self.assertEqual(until, self.clock.seconds() + 300)
        self.t.check("a", "alice")
        # 3 failures + 2 refused attempts: the source is locked too, which
        # refuses everyone there (SPEC 10), bob included.
        self.assertEqual(self.t.locked_until("a"), self.clock.seconds() + 300)
        self.assertEqual(self.t.check("a", "bob"), self.clock.seconds() + 300)

    def test_delay_grows_after_the_free_failures(self):
        t = LoginThrottle(self.clock, user_limit=100, source_limit=100, slow_after=2, max_delay=4)
        delays = []
        for n in range(6):
            t.failed("a", "u%d" % n)
            delays.append(t.delay("a"))
        self.assertEqual(delays, [0, 0, 0.5, 1, 2, 4])
        self.assertEqual(t.delay("b"), 0)
        self.clock.advance(t.window)
        self.assertEqual(t.delay("a"), 0)

    def test_ready_is_the_long_answer_whatever_was_counted(self):
        # The fast path (nothing counted) must agree with "neither locked nor delayed" throughout.
        t = LoginThrottle(self.clock, user_limit=3, source_limit=6, slow_after=1, max_delay=4)
        logins = [("a", "alice"), ("a", "Bob"), ("b", "alice"), ("c", None), ("a", None), ("b", b"bob")]
        answers = set()
        steps = ["failed", "succeeded", "failed", "failed", "advance", "failed", "check", "failed",
                 "failed", "advance", "unlock", "failed", "succeeded", "advance"]
        for i, step in enumerate(steps * 3):
            source, user = logins[i % len(logins)]
            if step == "advance":
                self.clock.advance(t.window / 2 if i % 2 else t.lockout + 1)
            elif step == "unlock":
                t.unlock(source=source)
            else:
                getattr(t, step)(source, user)
            for s, u in logins:
                ready = t.ready(s, u)
                answers.add(ready)
                self.assertEqual(ready, not t.locked_until(s, u) and not t.delay(s, u), (i, step, s, u))
                if (s, None) not in t._records:
                    self.assertEqual(t.delay(s), 0)
        self.assertEqual(answers, {True, False})

    def test_unlock(self):
        for _ in range(3):
            self.t.failed("a", "alice")
            self.t.failed("b", "alice")
        self.t.unlock("alice", "a")
        self.assertEqual((self.t.locked_for("a", "alice") == 0, self.t.locked_for("b", "alice") > 0),
                         (True, True))
        self.t.unlock("alice")
        self.assertEqual(self.t.locked_for("b", "alice"), 0)

    def test_the_answer_says_until_when(self):
        when = time.mktime(time.strptime("2024-03-01 14:32", "%Y-%m-%d %H:%M")) - time.timezone
        self.assertEqual(until_text(when), "locked until 14:32 UTC")

    def test_login_names_follow_the_user(self):
        config = parse_config(MINIMAL.format(pw=PW_HASH))
        for login in ("alice", b"Alice@Example.com", "101"):
            self.assertEqual(login_name(config, login), "alice")
        self.assertEqual(login_name(config, b"zed"), "zed")

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from([None, "u", "v"]),
                              st.floats(0, 100)), max_size=60))
    def test_bounded_memory(self, events):
        for source, user, dt in events:
            self.clock.advance(dt)
            self.t.failed(source, user)
            self.t.check(source, user)
        self.assertLessEqual(len(self.t), 4)


class Outcome:
    """What one `attempt` came to: checked (and when) or refused until when."""

    def __init__(self, d, clock):
        self.checked_at = self.refused_until = None
        self.clock = clock
        d.addCallbacks(self._checked, self._refused)

    def _checked(self, result):
        self.checked_at = self.clock.seconds()

    def _refused(self, failure):
        failure.trap(LockedOut)
        self.refused_until = failure.value.until

    @property
    def done(self):
        return self.checked_at is not None or self.refused_until is not None


class GateTests(unittest.TestCase):
    """`attempt`: the one rule every protocol goes through, on task.Clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.t = LoginThrottle(self.clock)
        self.events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def guess(self, source="192.168.2.50", user="alice", right=False):
        """One attempt, waited out on the clock; counted as the protocols do."""
        outcome = Outcome(self.t.attempt(source, user, lambda: right), self.clock)
        start = self.clock.seconds()
        while not outcome.done:
            self.clock.advance(0.25)
        outcome.waited = self.clock.seconds() - start
        if outcome.checked_at is not None:
            (self.t.succeeded if right else self.t.failed)(source, user)
        return outcome

    def lock_lines(self):
        return [e for e in self.events if "locked out until" in e.get("log_format", "")]

    def test_growing_delay_then_lock_out_then_expiry(self):
        outcomes = [self.guess() for _ in range(200)]
        waits = [o.waited for o in outcomes[:5]]
        self.assertEqual(waits, [0, 0, 0.5, 1.0, 2.0])
        self.assertTrue(all(o.checked_at for o in outcomes[:5]))
        until = outcomes[5].refused_until
        self.assertTrue(all(o.refused_until == until and o.waited == 0 for o in outcomes[5:]),
                        "195 guesses after the fifth are refused at once, unchecked")
        self.assertEqual(len(self.t.lockouts()), 2, "alice at the source, then the source")
        # One log line per lock-out as it starts, naming who, where and until when.
        lines = self.lock_lines()
        self.assertEqual([(e["user"], e["source"]) for e in lines],
                         [("alice", "192.168.2.50"), (None, "192.168.2.50")])
        self.assertIn(time.strftime("%H:%M", time.gmtime(until)), lines[0]["until"])
        # It expires: the right password is then taken (after the source's delay: it is
        # still locked for alice's refused guesses, which counted against it).
        self.clock.advance(until - self.clock.seconds())
        self.assertIsNotNone(self.guess(right=True).checked_at)
        self.assertEqual(self.t.locked_for("192.168.2.50", "alice"), 0)

    def test_a_locked_source_refuses_every_user_until_it_ends(self):
        for n in range(20):
            self.guess(user="u%d" % n)
        until = self.t.locked_until("192.168.2.50")
        self.assertTrue(until)
        self.assertEqual(self.guess(user="u3").refused_until, until)
        bob = self.guess(user="bob", right=True)
        self.assertEqual((bob.checked_at, bob.refused_until), (None, until))
        # Elsewhere nobody waits.
        self.assertEqual(self.guess(source="192.168.2.51", user="u3", right=True).waited, 0)
        # When it ends, bob's right password is taken.
        self.clock.advance(until - self.clock.seconds())
        self.assertIsNotNone(self.guess(user="bob", right=True).checked_at)

    def test_five_typos_lock_that_user_only(self):
        """One person's typos behind a shared address leave the colleagues free."""
        for _ in range(5):
            self.guess()
        self.assertTrue(self.t.locked_for("192.168.2.50", "alice"))
        self.assertEqual(self.t.locked_for("192.168.2.50"), 0)
        bob = self.guess(user="bob", right=True)
        self.assertIsNotNone(bob.checked_at)
        self.assertIsNone(bob.refused_until)

    def test_the_right_user_is_taken_once_the_lock_outs_end(self):
        """The attacker goes on after alice's lock-out: the source's lock outlasts it."""
        for _ in range(5):
            self.guess()
        alice_until = self.t.locked_until("192.168.2.50", "alice")
        for _ in range(40):
            self.clock.advance(10)
            self.guess()                # refused, counted against the source
        source_until = self.t.locked_until("192.168.2.50")
        self.assertGreater(source_until, alice_until)
        self.clock.advance(alice_until - self.clock.seconds())
        self.assertEqual(self.guess(right=True).refused_until, source_until)
        self.clock.advance(source_until - self.clock.seconds())
        right = self.guess(right=True)
        self.assertIsNotNone(right.checked_at)
        self.assertLessEqual(right.waited, self.t.max_delay)

    def test_parallel_attempts_wait_in_a_bounded_queue(self):
        for n in range(8):
            self.guess(user="u%d" % n)       # the source's delay now 2 s
        held = [Outcome(self.t.attempt("192.168.2.50", "v%d" % n, lambda: False), self.clock)
                for n in range(self.t.max_waiting + 3)]
        refused = [o for o in held if o.done]
        self.assertEqual(len(refused), 3)
        self.assertTrue(all(o.refused_until for o in refused))
        self.clock.advance(self.t.delay("192.168.2.50"))
        self.assertTrue(all(o.checked_at for o in held if o not in refused))
        self.assertEqual(self.t._waiting, {})

    def test_a_lock_out_that_starts_while_waiting_refuses(self):
        for _ in range(2):
            self.guess()
        waiting = Outcome(self.t.attempt("192.168.2.50", "alice", lambda: True), self.clock)
        for _ in range(3):
            self.t.failed("192.168.2.50", "alice")     # e.g. on other connections
        self.clock.advance(self.t.max_delay)
        self.assertEqual((waiting.checked_at, bool(waiting.refused_until)), (None, True))

    def test_lockouts_listed_and_unlocked(self):
        for _ in range(5):
            self.guess()
            self.guess(source="192.168.2.60")
        listed = self.t.lockouts()
        self.assertEqual([(l.user, l.source, l.failures) for l in listed],
                         [("alice", "192.168.2.50", 5), ("alice", "192.168.2.60", 5)])
        self.assertEqual(listed[0].describe(), "alice at 192.168.2.50")
        ended = self.t.unlock("Alice", "192.168.2.50", by="the admin pages")
        self.assertEqual([l.source for l in ended], ["192.168.2.50"])
        self.assertTrue(any("unlocked by the admin pages" in e.get("log_format", "").replace(
            "{by}", e.get("by", "")) for e in self.events))
        self.assertEqual(self.guess(right=True).waited, 0)
        self.assertEqual(self.t.unlock("alice"), [listed[1]])
        self.assertEqual(self.t.lockouts(), [])


def sync_thread(f, *args, **kwargs):
    return defer.maybeDeferred(f, *args, **kwargs)


class KeptAcrossRestartsTests(unittest.TestCase):
    """Lock-outs in data_dir/lockouts.json; `allworx unlock`'s requests taken from the spool."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.dir = self.mktemp()
        self.store = LockoutFile(self.dir, sync_thread)

    def lock(self, throttle, source="192.168.2.50", user="alice"):
        for _ in range(throttle.user_limit):
            throttle.failed(source, user)

    def test_lock_outs_survive_a_restart(self):
        first = LoginThrottle(self.clock, store=self.store)
        self.lock(first)
        until = first.locked_until("192.168.2.50", "alice")
        self.assertEqual(self.store.read(now=self.clock.seconds()),
                         [{"source": "192.168.2.50", "user": "alice", "until": until, "failures": 5}])
        self.assertEqual(oct(os.stat(self.store.path).st_mode & 0o777), "0o600")
        second = LoginThrottle(self.clock, store=LockoutFile(self.dir, sync_thread))
        self.assertEqual(second.locked_until("192.168.2.50", "Alice"), until)
        # Ended ones are not restored.
        self.clock.advance(first.lockout)
        self.assertEqual(LoginThrottle(self.clock, store=self.store).lockouts(), [])

    def test_unlock_requests_are_taken_by_the_running_server(self):
        throttle = LoginThrottle(self.clock, store=self.store)
        throttle.start()
        self.addCleanup(throttle.stop)
        self.lock(throttle)
        self.lock(throttle, source="192.168.2.60")
        path = self.store.request_unlock("alice", "192.168.2.60")
        self.assertTrue(os.path.exists(path))
        self.clock.advance(1)
        self.assertFalse(os.path.exists(path))
        self.assertEqual([l.source for l in throttle.lockouts()], ["192.168.2.50"])
        self.assertEqual([e["source"] for e in self.store.read(now=self.clock.seconds())],
                         ["192.168.2.50"])

    def test_requests_left_while_the_server_was_down_apply_at_start(self):
        self.lock(LoginThrottle(self.clock, store=self.store))
        self.store.request_unlock(user="alice")
        self.assertEqual(LoginThrottle(self.clock, store=self.store).lockouts(), [])
        self.assertEqual(self.store.read(now=self.clock.seconds()), [])

    def test_bad_requests_and_files_are_ignored(self):
        os.makedirs(self.store.requests)
        for name, text in (("1.json", "{not json"), ("2.json", '{"user": 5}'),
                           ("3.json", "{}"), ("4.json", '{"source": "192.168.2.50"}')):
            with open(os.path.join(self.store.requests, name), "w") as f:
                f.write(text)
        self.assertEqual(self.store.take_requests(), [(None, "192.168.2.50")])
        self.assertEqual(os.listdir(self.store.requests), [])
        with open(self.store.path, "w") as f:
            f.write('{"lockouts": [{"source": "x"}, 7, {"source": "y", "until": "soon"}]}')
        self.assertEqual(LoginThrottle(self.clock, store=self.store).lockouts(), [])
        self.assertRaises(ValueError, self.store.request_unlock)


class RateLimitTests(unittest.TestCase):

    def test_bucket(self):
        clock = task.Clock()
        limit = ClientRateLimit(clock, rate=2, burst=3)
        self.assertEqual([limit.allow("02:00:00:00:00:0a") for _ in range(4)], [True, True, True, False])
        self.assertTrue(limit.allow("02:00:00:00:00:0b"))
        clock.advance(0.5)
        self.assertEqual([limit.allow("02:00:00:00:00:0a"), limit.allow("02:00:00:00:00:0a")], [True, False])

    def test_bounded_memory(self):
        clock = task.Clock()
        limit = ClientRateLimit(clock, max_clients=10)
        for i in range(100):
            limit.allow(i)
        self.assertEqual(len(limit._buckets), 10)
