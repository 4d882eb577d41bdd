# -*- test-case-name: allworx.tests.web.test_sessions -*-
"""Sessions and the lock-out on task.Clock."""

from hypothesis import given, settings, strategies as st
from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.web.sessions import LoginThrottle, SessionStore, tokens_match


class SessionStoreTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = SessionStore(self.clock, idle=100, lifetime=1000, limit=3)

    def test_create_and_get(self):
        s = self.store.create()
        self.assertIs(self.store.get(s.id), s)
        self.assertIs(self.store.get(s.id.encode()), s)
        self.assertIsNone(self.store.get("nope"))
        self.assertIsNone(self.store.get(None))
        self.assertNotEqual(s.id, s.csrf)
        self.assertGreaterEqual(len(s.id), 40)

    def test_idle_expiry_and_touch(self):
        s = self.store.create()
        self.clock.advance(90)
        self.assertIs(self.store.get(s.id), s)
        self.clock.advance(90)
        self.assertIs(self.store.get(s.id), s)
        self.clock.advance(101)
        self.assertIsNone(self.store.get(s.id))

    def test_absolute_lifetime(self):
        s = self.store.create()
        for _ in range(11):
            self.clock.advance(95)
            self.store.get(s.id)
        self.assertIsNone(self.store.get(s.id))

    def test_login_rotates_id_and_keeps_notices(self):
        s = self.store.create()
        s.notices.append("hello")
        fresh = self.store.login(s, "admin")
        self.assertNotEqual(fresh.id, s.id)
        self.assertIsNone(self.store.get(s.id))
        self.assertEqual((fresh.user, fresh.take_notices()), ("admin", ["hello"]))
        self.assertEqual(fresh.take_notices(), [])

    def test_bounded(self):
        ids = [self.store.create().id for _ in range(5)]
        self.assertEqual(len(self.store), 3)
        self.assertIsNone(self.store.get(ids[0]))
        self.assertIsNotNone(self.store.get(ids[-1]))

    def test_end(self):
        s = self.store.create()
        self.store.end(s.id.encode())
        self.assertIsNone(self.store.get(s.id))
        t = self.store.create()
        self.store.end_all()
        self.assertIsNone(self.store.get(t.id))

    def test_tokens_match(self):
        self.assertTrue(tokens_match("abc", "abc"))
        self.assertTrue(tokens_match("abc", b"abc"))
        self.assertFalse(tokens_match("abc", "abd"))
        self.assertFalse(tokens_match("abc", None))
        self.assertFalse(tokens_match("", ""))


class ThrottleTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.t = LoginThrottle(self.clock, limit=3, window=60, lockout=300, max_sources=4)

    def test_locks_after_limit(self):
        self.assertFalse(self.t.failed("a"))
        self.assertFalse(self.t.failed("a"))
        self.assertTrue(self.t.failed("a"))
        self.assertEqual(self.t.locked_for("a"), 300)
        self.assertEqual(self.t.locked_for("b"), 0)
        self.clock.advance(299)
        self.assertEqual(self.t.locked_for("a"), 1)
        self.clock.advance(1)
        self.assertEqual(self.t.locked_for("a"), 0)

    def test_failures_outside_the_window_forgotten(self):
        self.t.failed("a")
        self.t.failed("a")
        self.clock.advance(61)
        self.assertFalse(self.t.failed("a"))

    def test_success_clears(self):
        self.t.failed("a")
        self.t.failed("a")
        self.t.succeeded("a")
        self.assertFalse(self.t.failed("a"))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 100)), max_size=60))
    def test_bounded_memory(self, events):
        for source, dt in events:
            self.clock.advance(dt)
            self.t.failed(source)
        self.assertLessEqual(len(self.t._sources), 4)
