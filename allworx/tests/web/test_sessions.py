# -*- test-case-name: allworx.tests.web.test_sessions -*-
"""Sessions on task.Clock (the login lock-out: tests/core/test_guards)."""

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.web.sessions import SessionStore, tokens_match


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
