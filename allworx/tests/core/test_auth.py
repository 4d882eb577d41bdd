"""Tests for allworx.auth: one checker over the office's users."""

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.trial import unittest

from allworx.auth import ADMIN, AdminChecker, OfficeUserChecker, is_admin, user_for_login
from allworx.config import parse_config
from allworx.office import Office
from allworx.tests.confs import MINIMAL


def inline(f, *args):
    return defer.maybeDeferred(f, *args)


class CheckerTests(unittest.TestCase):

    def setUp(self):
        self.office = Office(parse_config(MINIMAL))
        self.checker = OfficeUserChecker(self.office, deferToThread=inline)

    def test_logins_by_name_address_extension(self):
        c = self.office.config
        self.assertEqual(user_for_login(c, "alice").name, "alice")
        self.assertEqual(user_for_login(c, b"Alice@example.com").name, "alice")
        self.assertEqual(user_for_login(c, "alice@allworx.example.com").name, "alice")
        self.assertEqual(user_for_login(c, "102").name, "bob")
        self.assertIsNone(user_for_login(c, "alice@other.example"))
        self.assertIsNone(user_for_login(c, "nobody"))

    @defer.inlineCallbacks
    def test_right_and_wrong(self):
        who = yield self.checker.requestAvatarId(UsernamePassword(b"alice", b"admin-demo"))
        self.assertEqual(who, "alice")
        yield self.assertFailure(self.checker.requestAvatarId(
            UsernamePassword(b"alice", b"nope")), UnauthorizedLogin)
        yield self.assertFailure(self.checker.requestAvatarId(
            UsernamePassword(b"nobody", b"admin-demo")), UnauthorizedLogin)

    @defer.inlineCallbacks
    def test_the_old_admin_password_beside_a_user_admin(self):
        """The old login keeps its rights even when [user admin] (no admin) has the same hash."""
        from allworx.tests.confs import PW_HASH
        office = Office(parse_config(MINIMAL + "\n[user admin]\npassword = %s\n" % PW_HASH))
        checker = AdminChecker(office, deferToThread=inline)
        who = yield checker.requestAvatarId(UsernamePassword(b"admin", b"admin-demo"))
        self.assertTrue(is_admin(office.config, who))
        self.assertFalse(is_admin(office.config, "admin"))     # the user himself is no admin

    @defer.inlineCallbacks
    def test_admin(self):
        checker = AdminChecker(self.office, deferToThread=inline)
        who = yield checker.requestAvatarId(UsernamePassword(b"admin", b"admin-demo"))
        self.assertEqual(who, ADMIN)
        self.assertTrue(is_admin(self.office.config, who))
        # A user with his own password logs in, but is no admin.
        who = yield checker.requestAvatarId(UsernamePassword(b"alice", b"admin-demo"))
        self.assertEqual(who, "alice")
        self.assertFalse(is_admin(self.office.config, who))
        yield self.assertFailure(checker.requestAvatarId(
            UsernamePassword(b"alice", b"wrong")), UnauthorizedLogin)
