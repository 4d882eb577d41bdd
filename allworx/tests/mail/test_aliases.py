"""Tests for allworx.protocols.mail.aliases and allworx.protocols.mail.policy: who an address means, who may relay."""

import attr
from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.config import Alias, parse_config
from allworx.protocols.mail.aliases import AliasLoop, Expansion, classify, expand, split_address
from allworx.protocols.mail.policy import Client, recipient_verdict, sender_verdict
from allworx.tests.mailtesting import MAIL_CONF

CONFIG = parse_config(MAIL_CONF)


def with_aliases(config, **aliases):
    new = dict(config.aliases)
    for name, to in aliases.items():
        new[name] = Alias(name=name, to=tuple(to.split()))
    return attr.evolve(config, aliases=new)


class ClassifyTests(unittest.TestCase):

    def test_local_domains(self):
        for addr in ("alice@example.com", "ALICE@Example.COM", "alice@allworx.example.com",
                     "sales@example.com", "alice", "postmaster@example.com"):
            self.assertEqual(classify(CONFIG, addr), "local", addr)

    def test_unknown_and_external(self):
        self.assertEqual(classify(CONFIG, "nobody@example.com"), "unknown")
        self.assertEqual(classify(CONFIG, "alice@other.example"), "external")
        self.assertEqual(classify(CONFIG, "alice@sub.example.com"), "external")

    def test_split(self):
        self.assertEqual(split_address("<Bob@Example.COM.>"), ("bob", "example.com"))
        self.assertEqual(split_address(b"bob"), ("bob", ""))


class ExpandTests(unittest.TestCase):

    def test_user(self):
        self.assertEqual(expand(CONFIG, ["alice@example.com"]), Expansion(users=("alice",)))

    def test_group(self):
        self.assertEqual(expand(CONFIG, ["sales"]).users, ("alice", "bob"))

    def test_push_model_keeps_local_copy(self):
        """guide 9.2: bob = bob bob@elsewhere.example."""
        e = expand(CONFIG, ["bob@example.com"])
        self.assertEqual(e.users, ("bob",))
        self.assertEqual(e.external, ("bob@elsewhere.example",))

    def test_email_forward(self):
        e = expand(CONFIG, ["carol"])
        self.assertEqual(e, Expansion(users=("carol",), external=("carol@home.example",)))

    def test_nested_once_and_deduplicated(self):
        e = expand(CONFIG, ["everyone", "alice", "team"])
        self.assertEqual(sorted(e.users), ["admin", "alice", "bob", "carol"])
        self.assertEqual(sorted(e.external), ["bob@elsewhere.example", "carol@home.example"])

    def test_external_kept(self):
        e = expand(CONFIG, ["x@Other.Example"])
        self.assertEqual(e.external, ("x@other.example",))

    def test_role_names_reach_admin(self):
        self.assertEqual(expand(CONFIG, ["postmaster@example.com"]).users, ("admin",))

    def test_role_names_without_an_admin_user(self):
        """RFC 5321 4.5.1: postmaster always exists: admin_email, else the first user."""
        users = {k: v for k, v in CONFIG.users.items() if k != "admin"}
        no_admin = attr.evolve(CONFIG, users=users)
        first = next(iter(users))
        self.assertEqual(classify(no_admin, "postmaster@example.com"), "local")
        self.assertEqual(expand(no_admin, ["abuse@example.com"]).users, (first,))
        mailed = attr.evolve(no_admin, system=attr.evolve(no_admin.system,
                                                          admin_email="it@outside.example"))
        self.assertEqual(expand(mailed, ["postmaster"]).external, ("it@outside.example",))

    def test_unknown(self):
        self.assertEqual(expand(CONFIG, ["ghost"]).unknown, ("ghost",))

    def test_loop_detected(self):
        config = with_aliases(CONFIG, a="b", b="c alice", c="a")
        e = self.assertRaises(AliasLoop, expand, config, ["a"])
        self.assertEqual(e.path, ("a", "b", "c", "a"))
        self.assertIn("a -> b -> c -> a", str(e))

    def test_self_loop_without_user(self):
        config = with_aliases(CONFIG, ring="ring")
        self.assertRaises(AliasLoop, expand, config, ["ring"])

    def test_alias_by_full_address(self):
        config = with_aliases(CONFIG, x="sales@example.com carol@allworx.example.com")
        self.assertEqual(sorted(expand(config, ["x"]).users), ["alice", "bob", "carol"])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(["alice", "bob", "carol", "admin", "sales", "team",
                                     "everyone", "ghost", "x@y.example", "alice@example.com",
                                     "postmaster"]), max_size=8))
    def test_expansion_is_sane(self, names):
        e = expand(CONFIG, names)
        self.assertTrue(set(e.users) <= set(CONFIG.users))
        self.assertEqual(len(e.users), len(set(e.users)))
        self.assertEqual(len(e.external), len(set(e.external)))


class RelayPolicyTests(unittest.TestCase):
    """Relay decisions for each source and recipient kind."""

    def verdict(self, rcpt, from_lan=False, user=None, relay_from_wan=False, submission=False):
        config = CONFIG
        if relay_from_wan:
            config = attr.evolve(config, mail=attr.evolve(config.mail, relay_from_wan=True))
        r = recipient_verdict(config, Client(from_lan, user, submission), rcpt)
        return None if r is None else (r.code, r.status)

    def test_table(self):
        table = [
            # recipient, from_lan, user, relay_from_wan, expected
            ("alice@example.com", False, None, False, None),
            ("alice@example.com", True, None, False, None),
            ("sales@example.com", False, None, False, None),
            ("nobody@example.com", True, None, False, (550, "5.1.1")),
            ("nobody@example.com", False, "alice", False, (550, "5.1.1")),
            ("x@internet.example", True, None, False, None),
            ("x@internet.example", False, "alice", False, None),
            ("x@internet.example", False, None, False, (550, "5.7.1")),
            ("x@internet.example", False, None, True, None),
        ]
        for rcpt, lan, user, rfw, expected in table:
            self.assertEqual(self.verdict(rcpt, lan, user, rfw), expected, (rcpt, lan, user, rfw))

    def test_submission_needs_auth(self):
        r = sender_verdict(CONFIG, Client(True, None, True), "alice@example.com")
        self.assertEqual((r.code, r.status), (530, "5.7.0"))
        self.assertIsNone(sender_verdict(CONFIG, Client(True, "alice", True), "alice@example.com"))
        self.assertIsNone(sender_verdict(CONFIG, Client(False, None, False), ""))
