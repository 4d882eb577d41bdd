"""Tests for multi-drop routing (allworx.protocols.mail.multidrop) over tricky headers."""

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.mail.multidrop import header_addresses, route
from allworx.tests.mailtesting import MAIL_CONF

CONFIG = parse_config(MAIL_CONF)


class RouteTests(unittest.TestCase):

    def route(self, head):
        return route(CONFIG, head + b"\n\nbody To: bob@example.com\n")

    def test_to_and_cc(self):
        self.assertEqual(self.route(b"To: alice@example.com\nCc: Bob <bob@example.com>"),
                         ["alice", "bob"])

    def test_each_once_case_insensitive(self):
        self.assertEqual(self.route(b"To: Alice@EXAMPLE.com, alice@example.com\nCc: alice@example.com"),
                         ["alice"])

    def test_envelope_headers(self):
        for name in (b"Delivered-To", b"X-Original-To", b"Envelope-To"):
            self.assertEqual(self.route(b"To: list@other.example\n" + name + b": carol@example.com"),
                             ["carol"], name)

    def test_alias_named(self):
        self.assertEqual(self.route(b"To: Sales Team <sales@example.com>"), ["sales"])

    def test_hostname_domain(self):
        self.assertEqual(self.route(b"To: bob@allworx.example.com"), ["bob"])

    def test_none_local_goes_to_admin(self):
        self.assertEqual(self.route(b"To: stranger@other.example\nCc: ghost@example.com"), ["admin"])
        self.assertEqual(route(CONFIG, b"no header at all"), ["admin"])

    def test_body_is_not_read(self):
        self.assertEqual(self.route(b"To: stranger@other.example"), ["admin"])

    def test_folded_quoted_and_encoded(self):
        head = (b'To: "Archer, Alice" <alice@example.com>,\n\t=?utf-8?q?B=C3=B6b?= <bob@example.com>,\n'
                b' "carol@example.com" <x@other.example>\nCc: (comment) carol@example.com')
        self.assertEqual(self.route(head), ["alice", "bob", "carol"])

    def test_multiple_to_headers_and_crlf(self):
        msg = b"To: alice@example.com\r\nTo: bob@example.com\r\n\r\nCc: carol@example.com\r\n"
        self.assertEqual(route(CONFIG, msg), ["alice", "bob"])

    def test_garbage_headers(self):
        self.assertEqual(self.route(b"To: <<<>>>\nCc: @@@, ,,\nTo: \xff\xfe@example.com"), ["admin"])

    def test_header_addresses(self):
        self.assertEqual(header_addresses(b"To: A <a@x.example>\nCc: b@y.example, a@x.example\n\n"),
                         ["a@x.example", "b@y.example"])

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_any_bytes(self, data):
        names = route(CONFIG, data)
        self.assertTrue(names)
        self.assertEqual(len(names), len(set(names)))
        for name in names:
            self.assertTrue(name in CONFIG.users or name in CONFIG.aliases or name == "postmaster"
                            or name == "abuse", name)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(["alice", "bob", "carol", "sales", "ghost", "x"]), min_size=1, max_size=6),
           st.sampled_from(["To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"]))
    def test_named_locals_found(self, names, header):
        line = ", ".join("%s@example.com" % n for n in names)
        got = route(CONFIG, ("%s: %s\n\nbody\n" % (header, line)).encode())
        expected = [n for n in dict.fromkeys(names) if n in CONFIG.users or n in CONFIG.aliases]
        self.assertEqual(got, expected or ["admin"])
