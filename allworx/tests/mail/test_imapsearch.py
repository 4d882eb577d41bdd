"""
Tests for SEARCH (allworx.protocols.mail.imapsearch) through an IMAP session. Each of the
first tests failed on twisted's SEARCH, which this replaces; allworx.tests.lab.test_imapdovecot
compares the answers with Dovecot's on random messages and searches.
"""

import os

from allworx.protocols.mail import imapsearch
from allworx.tests.mail.test_imap import ImapCase

MESSAGES = [
    b"From: Alice Example <alice@example.com>\r\nTo: bob@example.com\r\nSubject: Quarterly report\r\n"
    b"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nThe numbers are in.\r\n",
    b'From: "Doe,\r\n\tJ" <jd@example.com>\r\nSubject: =?utf-8?q?Caf=C3=A9?= tomorrow\r\n'
    b"Date: Tue, 8 Dec 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"RMOpasOgIHZ1LCBzZWUgeW91IHRoZXJlLg==\r\n--b\r\n"
    b"Content-Type: application/octet-stream\r\n\r\nsecret words in a file\r\n--b--\r\n",
    b"From: carol@example.org\r\nSubject: lunch\r\nX-Priority: 1\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nCr=E8me br=FBl=E9e at noon\r\n",
]


class SearchCase(ImapCase):

    def setUp(self):
        super().setUp()
        for data in MESSAGES:
            self.deliver(data)          # sequence numbers 4, 5 and 6, after ImapCase's three
        self.p, self.t = self.select()

    def search(self, *lines):
        return self.talk(self.p, self.t, *lines)

    def found(self, text):
        out = self.search(b"s1 " + text)
        self.assertIn(b"s1 OK SEARCH completed", out)
        line = [x for x in out.split(b"\r\n") if x.startswith(b"* SEARCH")]
        self.assertEqual(len(line), 1, out)
        return [int(n) for n in line[0].split()[2:]]


class KeyTests(SearchCase):

    def test_header_keys_that_twisted_answered_bad(self):
        self.assertEqual(self.found(b"SEARCH SUBJECT report"), [4])
        self.assertEqual(self.found(b"SEARCH FROM alice"), [4])
        self.assertEqual(self.found(b'SEARCH FROM "Doe, J"'), [5])        # the fold is a space
        self.assertEqual(self.found(b"SEARCH TO bob"), [4])
        self.assertEqual(self.found(b"SEARCH HEADER X-Priority 1"), [6])
        self.assertEqual(self.found(b'SEARCH HEADER X-Priority ""'), [6])  # the field is there
        self.assertEqual(self.found(b"SEARCH SENTON 8-Dec-2026"), [5])     # the Date's own day
        self.assertEqual(self.found(b"SEARCH SENTBEFORE 8-Dec-2026"), [1, 2, 3, 4, 6])   # none: 1970

    def test_nothing_found_still_answers_search(self):
        out = self.search(b"s1 SEARCH SUBJECT nowhere")
        self.assertIn(b"* SEARCH\r\ns1 OK SEARCH completed", out)

    def test_encoded_words_charsets_and_decomposition(self):
        self.assertEqual(self.found(b"SEARCH SUBJECT cafe"), [5])          # Café decomposes
        out = self.search(b"s1 SEARCH CHARSET UTF-8 SUBJECT {5}")
        self.assertIn(b"+ ", out)                                          # the literal is asked for
        out = self.search(b"caf\xc3\xa9 BODY {6}")
        self.assertIn(b"+ ", out)
        out = self.search(b"d\xc3\xa9j\xc3\xa0")
        self.assertIn(b"* SEARCH 5\r\ns1 OK", out)                         # base64 in utf-8
        self.assertEqual(self.found(b'SEARCH BODY "at noon"'), [6])        # quoted-printable
        self.search(b"s1 SEARCH CHARSET UTF-8 BODY {8}")
        self.assertIn(b"* SEARCH 6\r\ns1 OK", self.search(b"br\xc3\xbbl\xc3\xa9e"))   # latin-1
        self.assertEqual(self.found(b"SEARCH BODY secret"), [])            # not a text part
        self.assertEqual(self.found(b"SEARCH TEXT x-priority"), [6])       # TEXT: headers too

    def test_flags_sets_uids_and_combinations(self):
        self.assertIn(b"OK", self.search(b"st STORE 4,6 +FLAGS.SILENT (\\Flagged)"))
        self.assertEqual(self.found(b"SEARCH FLAGGED"), [4, 6])
        self.assertEqual(self.found(b"SEARCH 2:* UNFLAGGED"), [2, 3, 5])
        self.assertEqual(self.found(b"SEARCH OR SUBJECT lunch (FROM alice FLAGGED)"), [4, 6])
        self.assertEqual(self.found(b"SEARCH NOT 1:4"), [5, 6])
        self.assertEqual(self.found(b"UID SEARCH UID 5:* NOT SUBJECT lunch"), [5])
        self.assertEqual(self.found(b"SEARCH LARGER 300 SMALLER 100000"), [5])
        self.assertEqual(self.found(b"SEARCH RECENT"), [])                 # no \\Recent is kept
        self.assertEqual(self.found(b"SEARCH OLD"), [1, 2, 3, 4, 5, 6])

    def test_internal_dates(self):
        folder = self.store.maildir("alice")
        names = sorted(os.listdir(os.path.join(folder, "new")) + os.listdir(os.path.join(folder, "cur")))
        self.assertTrue(names)
        day = 1796601600                    # 7-Dec-2026 00:00 UTC
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(folder, sub)):
                os.utime(os.path.join(folder, sub, name), (day + 3600, day + 3600))
        self.assertEqual(self.found(b"SEARCH ON 7-Dec-2026"), [1, 2, 3, 4, 5, 6])
        self.assertEqual(self.found(b'SEARCH SINCE "8-Dec-2026"'), [])
        self.assertEqual(self.found(b"SEARCH BEFORE 8-Dec-2026"), [1, 2, 3, 4, 5, 6])


class ErrorTests(SearchCase):

    def test_what_does_not_read_is_bad_and_names_the_problem(self):
        for text, why in ((b"SEARCH FOO", b"unknown search key"), (b"SEARCH SUBJECT", b"needs a string"),
                          (b"SEARCH SINCE 32-Foo-2026", b"a date must read like"),
                          (b"SEARCH (SEEN", b"a ( without its )"), (b"SEARCH SEEN)", b"a ) without"),
                          (b"SEARCH LARGER big", b"needs a number"), (b"SEARCH", b"missing")):
            out = self.search(b"s1 " + text)
            self.assertIn(b"s1 BAD", out, text)
            self.assertIn(why, out, text)
        self.assertIn(b"s2 NO [BADCHARSET (US-ASCII UTF-8)]",
                      self.search(b"s2 SEARCH CHARSET KOI8-R SUBJECT x"))
        self.assertIn(b"n1 OK", self.search(b"n1 NOOP"))                  # the session goes on

    def test_only_with_a_mailbox_selected(self):
        p, t = self.login()
        self.assertIn(b"s1 BAD SEARCH needs a selected mailbox", self.talk(p, t, b"s1 SEARCH ALL"))


class FlowTests(SearchCase):

    def test_a_long_search_gives_the_reactor_back_and_commands_wait(self):
        for n in range(40):
            self.deliver(b"Subject: m%d\r\n\r\nx\r\n" % n)
        self.assertIn(b"s0 OK", self.search(b"s0 SELECT INBOX"))
        self.patch(imapsearch, "BUDGET", -1)        # one message a turn
        turns = []
        run = imapsearch.Search.run
        self.patch(imapsearch.Search, "run", lambda search: (turns.append(1), run(search)))
        self.p.dataReceived(b"s1 SEARCH SUBJECT m37\r\nn1 NOOP\r\n")
        self.assertNotIn(b"s1 OK", self.t.value())
        self.assertTrue(self.clock.getDelayedCalls())
        self.clock.advance(0)
        out = self.t.value()
        self.assertEqual(len(turns), 46)
        self.assertIn(b"* SEARCH 44\r\ns1 OK SEARCH completed\r\n", out)
        self.assertLess(out.index(b"s1 OK"), out.index(b"n1 OK"))

    def test_a_session_lost_mid_search_stops_it(self):
        for n in range(20):
            self.deliver(b"Subject: m%d\r\n\r\nx\r\n" % n)
        self.search(b"s0 SELECT INBOX")
        self.patch(imapsearch, "BUDGET", -1)
        self.p.dataReceived(b"s1 SEARCH BODY x\r\n")
        self.p.connectionLost(None)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
