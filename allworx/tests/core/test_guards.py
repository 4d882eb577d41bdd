"""Tests of the shared guards (allworx.guards): the per-peer limit and the login throttle."""

import time

from hypothesis import given, settings, strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.guards import (
    ClientRateLimit, LoginThrottle, PeerConnectionLimit, PeerLimit, login_name, until_text)
from allworx.tests.confs import MINIMAL, PW_HASH


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
        for name in ("u1", "u2", "u3", "u4"):
            self.assertFalse(self.t.failed("a", name))
        self.assertTrue(self.t.failed("a", "u5"))
        self.assertEqual(self.t.locked_for("a", "anyone"), 300)
        self.assertEqual(self.t.locked_for("a"), 300)
        self.assertEqual(self.t.locked_for("b", "anyone"), 0)

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
        # 3 failures + 2 refused attempts: the source is locked too.
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
