"""Tests for IMAP keywords (allworx.protocols.mail.imapkeywords) and their use by the session."""

import os

from twisted.trial import unittest

from allworx.protocols.mail import imapkeywords
from allworx.protocols.mail.imapkeywords import Keywords
from allworx.tests.mail.test_imap import ImapCase


class KeywordsTests(unittest.TestCase):

    def setUp(self):
        self.path = self.mktemp()
        os.makedirs(self.path)

    def test_letters_in_order_kept_in_dovecot_s_file(self):
        k = Keywords(self.path)
        self.assertEqual((k.letter("$Forwarded", make=True), k.letter("$Junk", make=True)), ("a", "b"))
        self.assertEqual(k.letter("$junk"), "b")                    # any case, kept as first written
        self.assertIsNone(k.letter("$Other"))                       # not made unless asked
        with open(os.path.join(self.path, "dovecot-keywords")) as f:
            self.assertEqual(f.read(), "0 $Forwarded\n1 $Junk\n")
        again = Keywords(self.path)
        self.assertEqual((again.name("a"), again.name("b"), again.name("c")), ("$Forwarded", "$Junk", None))
        self.assertEqual(again.all(), ["$Forwarded", "$Junk"])

    def test_a_file_dovecot_wrote_with_a_gap_and_lines_that_are_not_keywords(self):
        with open(os.path.join(self.path, "dovecot-keywords"), "w") as f:
            f.write("0 $label1\n2 NonJunk\nx broken\n30 far\n3 (bad)\n")
        k = Keywords(self.path)
        self.assertEqual(k.all(), ["$label1", "NonJunk"])
        self.assertEqual(k.letter("nonjunk"), "c")
        self.assertEqual(k.letter("$new", make=True), "b")          # the first free letter

    def test_at_most_26_and_no_system_flag_or_non_atom(self):
        k = Keywords(self.path)
        for n in range(26):
            self.assertEqual(k.letter("k%d" % n, make=True), "abcdefghijklmnopqrstuvwxyz"[n])
        self.assertTrue(k.full())
        self.assertIsNone(k.letter("k26", make=True))
        for bad in ("\\Seen", "two words", "a(b", "", "x" * 200):
            self.assertFalse(imapkeywords.valid(bad), bad)
        lines = imapkeywords.flag_lines(["\\Seen"], k, True)
        self.assertNotIn(b"\\*", lines[1])                          # no room: none new


class SessionTests(ImapCase):

    def test_store_fetch_search_and_other_sessions_are_told(self):
        p, t = self.select()
        other, ot = self.select()
        out = self.talk(p, t, b"s1 STORE 1 +FLAGS ($Junk \\Seen)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen $Junk))", out)
        self.assertIn(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)", out)
        self.assertIn(b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk \\*)]", out)
        told = self.talk(other, ot, b"n1 NOOP")
        self.assertIn(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)", told)
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Seen $Junk))", told)
        self.assertIn(b"* SEARCH 1\r\n", self.talk(p, t, b"s2 SEARCH KEYWORD $junk"))
        self.assertIn(b"* SEARCH 2 3\r\n", self.talk(p, t, b"s3 SEARCH UNKEYWORD $Junk"))
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen))", self.talk(p, t, b"s4 STORE 1 -FLAGS ($JUNK)"))
        names = os.listdir(os.path.join(self.store.maildir("alice"), "cur"))
        self.assertTrue(any(n.endswith(":2,S") for n in names), names)

    def test_append_and_copy_keep_keywords_by_name(self):
        p, t = self.select()
        self.assertIn(b"OK", self.talk(p, t, b"c1 CREATE Archive"))
        self.assertIn(b"OK", self.talk(p, t, b"a1 APPEND Archive ($label2) {9}", b"Subject: "))
        self.assertIn(b"OK", self.talk(p, t, b"s1 STORE 2 +FLAGS ($Forwarded $label2)"))
        self.assertIn(b"OK [COPYUID", self.talk(p, t, b"c2 COPY 2 Archive"))
        self.assertIn(b"OK", self.talk(p, t, b"x1 SELECT Archive"))
        out = self.talk(p, t, b"f1 FETCH 1:* (FLAGS)")
        self.assertIn(b"* 1 FETCH (FLAGS ($label2))", out)
        self.assertIn(b"* 2 FETCH (FLAGS ($label2 $Forwarded))", out)    # b and a there: by name
