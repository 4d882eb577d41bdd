"""Tests for FETCH's responses (allworx.protocols.mail.imapfetch): framing, partial fetches, flow."""

import io
import os
import re
import weakref

from hypothesis import given, settings, strategies as st
from twisted.mail import imap4

from allworx.protocols.mail import imapfetch, imapmessage, imapmime
from allworx.protocols.mail.imapmessage import SelectedMailbox
from allworx.tests.mail.test_imap import ImapCase


def literals(out):
    """[(label, literal bytes)] of every `LABEL {n}\\r\\n` literal in a response."""
    found, at = [], 0
    for m in re.finditer(rb"([A-Z0-9.\[\]<>]+) \{(\d+)\}\r\n", out):
        if m.start() < at:
            continue
        n = int(m.group(2))
        found.append((m.group(1), out[m.end():m.end() + n]))
        at = m.end() + n
    return found


class FramingTests(ImapCase):

    def test_whole_messages_are_literals_of_their_exact_size(self):
        p, t = self.select()
        out = self.talk(p, t, b"f1 UID FETCH 1:* (BODY.PEEK[])")
        self.assertEqual(literals(out), [
            (b"BODY[]", b"From: x@y.example\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n))
            for n in range(3)])
        self.assertIn(b"* 1 FETCH (BODY[] {42}\r\n", out)
        self.assertIn(b"body 0\r\n UID 1)\r\n", out)
        self.assertTrue(out.endswith(b"f1 OK FETCH completed\r\n"), out[-80:])
        self.assertNotIn(b"\\Seen", out)                # PEEK: no flag change
        self.assertFalse(self.store.list_messages("alice")[0].seen)

    def test_items_in_the_order_asked_with_literals_between(self):
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 2 (FLAGS BODY.PEEK[TEXT] RFC822.SIZE RFC822.HEADER UID)")
        self.assertIn(b"* 2 FETCH (FLAGS () BODY[TEXT] {8}\r\nbody 1\r\n RFC822.SIZE 42 "
                      b"RFC822.HEADER {34}\r\nFrom: x@y.example\r\nSubject: m1\r\n\r\n UID 2)\r\n", out)

    def test_rfc822_and_body_without_peek_set_seen(self):
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 1 RFC822", b"f2 FETCH 2 BODY[]", b"f3 FETCH 3 RFC822.TEXT")
        self.assertIn(b"* 1 FETCH (RFC822 {42}\r\nFrom: x@y.example\r\nSubject: m0\r\n\r\nbody 0\r\n)", out)
        self.assertIn(b"* 2 FETCH (BODY[] {42}\r\n", out)
        self.assertIn(b"* 3 FETCH (RFC822.TEXT {8}\r\nbody 2\r\n)", out)
        self.assertEqual([m.seen for m in self.store.list_messages("alice")], [True] * 3)
        self.assertIn(b"FLAGS (\\Seen)", out)

    def test_partial_fetch_sends_only_the_range_asked(self):
        """RFC 3501 6.4.5: BODY[]<origin.count> answers `BODY[]<origin>` and those octets only."""
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 1 (BODY.PEEK[]<6.13>)", b"f2 FETCH 1 (BODY.PEEK[TEXT]<2.100>)",
                        b"f3 FETCH 1 (BODY.PEEK[]<900.10>)")
        self.assertIn(b"* 1 FETCH (BODY[]<6> {13}\r\nx@y.example\r\n)", out)
        self.assertIn(b"* 1 FETCH (BODY[TEXT]<2> {6}\r\ndy 0\r\n)", out)
        self.assertIn(b"* 1 FETCH (BODY[]<900> {0}\r\n)", out)

    def test_parts_of_a_multipart_message(self):
        self.deliver(b"Subject: mp\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
                     b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b\r\n"
                     b"Content-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (BODY.PEEK[2] BODY.PEEK[1.MIME])", b"f2 FETCH 4 BODY.PEEK[3]",
                        b"f3 FETCH 1 BODY.PEEK[2.TEXT]", b"n1 NOOP")
        self.assertIn(b"BODY[2] {6}\r\nsecond", out)
        self.assertIn(b"BODY[1.MIME] {", out)
        self.assertIn(b"* 4 FETCH (BODY[3] {0}\r\n)", out)     # no such part: empty, as Dovecot
        self.assertIn(b"* 1 FETCH (BODY[2.TEXT] {0}\r\n)", out)
        self.assertIn(b"f3 OK", out)
        self.assertIn(b"n1 OK", out)                                # the session goes on

    def test_a_message_whose_file_went_is_left_out(self):
        p, t = self.select()
        self.patch(imapfetch.Message, "data", _gone)
        out = self.talk(p, t, b"f1 FETCH 1:2 BODY.PEEK[]", b"n1 NOOP")
        self.assertNotIn(b"* 1 FETCH", out)
        self.assertIn(b"f1 NO [EXPUNGEISSUED]", out)
        self.assertIn(b"n1 OK", out)

    def test_commands_sent_during_a_fetch_wait_for_it(self):
        for n in range(5):
            self.deliver(b"Subject: big %d\r\n\r\n" % n + b"w" * 30000)
        p, t = self.select()
        t.clear()
        t.write = _pausing(t, p)
        p.dataReceived(b"f1 FETCH 1:* BODY.PEEK[]\r\nn1 NOOP\r\n")
        self.assertNotIn(b"n1 OK", t.value())
        while t.producer is not None:
            t.producer.resumeProducing()
        out = t.value()
        self.assertLess(out.index(b"f1 OK"), out.index(b"n1 OK"))


# Dovecot 2.3's answers for these messages and items are the expected bytes below.
HEADER = (b"Return-Path: <a@b.example>\r\nReceived: from one\r\n\tby two; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
          b"From: x@y.example\r\nsubject: Hello\r\n  folded there\r\nReceived: second\r\nX-Empty:\r\n"
          b"To: z@y.example\r\n\r\n")
MULTIPART = (b"Subject: mp\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
             b"--b\r\nContent-Type: text/plain\r\nX-Part: one\r\n\r\nfirst\r\n"
             b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: i@y.example\r\n\r\n"
             b"inner body\r\n--b--\r\n")


class HeaderTests(ImapCase):
    """RFC 3501 6.4.5: a header is the message's own octets, its blank line included."""

    def test_header_items_end_with_the_blank_line_and_only_body_header_sets_seen(self):
        self.deliver(HEADER + b"body line 1\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (RFC822.HEADER BODY.PEEK[HEADER])")
        self.assertIn(b"* 4 FETCH (RFC822.HEADER {187}\r\n" + HEADER +
                      b" BODY[HEADER] {187}\r\n" + HEADER + b")\r\n", out)
        out = self.talk(p, t, b"f2 FETCH 1 BODY[HEADER]")
        self.assertIn(b"BODY[HEADER] {34}\r\nFrom: x@y.example\r\nSubject: m0\r\n\r\n)\r\n", out)
        self.assertEqual([m.seen for m in self.store.list_messages("alice")], [True, False, False, False])

    def test_header_fields_as_they_are_in_order_named_in_any_case(self):
        self.deliver(HEADER + b"body line 1\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (BODY.PEEK[HEADER.FIELDS (subject RECEIVED)] "
                              b"BODY.PEEK[HEADER.FIELDS.NOT (Received x-empty)] "
                              b"BODY.PEEK[HEADER.FIELDS (x-none)])",
                        b'f2 FETCH 4 BODY.PEEK[HEADER.FIELDS ("X-Empty" to)]')
        self.assertIn(b"* 4 FETCH (BODY[HEADER.FIELDS (SUBJECT RECEIVED)] {113}\r\n"
                      b"Received: from one\r\n\tby two; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                      b"subject: Hello\r\n  folded there\r\nReceived: second\r\n\r\n"
                      b" BODY[HEADER.FIELDS.NOT (RECEIVED X-EMPTY)] {98}\r\n"
                      b"Return-Path: <a@b.example>\r\nFrom: x@y.example\r\nsubject: Hello\r\n"
                      b"  folded there\r\nTo: z@y.example\r\n\r\n"
                      b" BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n)\r\n", out)
        self.assertIn(b'* 4 FETCH (BODY[HEADER.FIELDS ("X-EMPTY" TO)] {29}\r\n'
                      b"X-Empty:\r\nTo: z@y.example\r\n\r\n)\r\n", out)
        self.assertFalse(self.store.list_messages("alice")[3].seen)

    def test_partial_headers_send_only_the_octets_asked(self):
        self.deliver(HEADER + b"body line 1\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (BODY.PEEK[HEADER]<0.10> BODY.PEEK[HEADER]<20.1000> "
                              b"BODY.PEEK[HEADER.FIELDS (subject)]<3.5> BODY.PEEK[HEADER]<1000.10>)")
        self.assertIn(b"* 4 FETCH (BODY[HEADER]<0> {10}\r\nReturn-Pat BODY[HEADER]<20> {167}\r\n" +
                      HEADER[20:] + b" BODY[HEADER.FIELDS (SUBJECT)]<3> {5}\r\nject:"
                      b" BODY[HEADER]<1000> {0}\r\n)\r\n", out)

    def test_mime_headers_and_an_enclosed_message_s_header(self):
        self.deliver(MULTIPART)
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4 (BODY.PEEK[1.MIME] BODY.PEEK[2.MIME] BODY.PEEK[2.HEADER] "
                              b"BODY.PEEK[1.HEADER] BODY.PEEK[2.HEADER.FIELDS (from)] BODY.PEEK[2.1.MIME] "
                              b"BODY.PEEK[2.MIME]<5.10> BODY.PEEK[3.MIME])",
                        b"f2 FETCH 1 (BODY.PEEK[1.MIME] BODY.PEEK[1.HEADER] BODY.PEEK[2.MIME])")
        self.assertIn(b"* 4 FETCH (BODY[1.MIME] {41}\r\nContent-Type: text/plain\r\nX-Part: one\r\n\r\n"
                      b" BODY[2.MIME] {32}\r\nContent-Type: message/rfc822\r\n\r\n"
                      b" BODY[2.HEADER] {37}\r\nSubject: inner\r\nFrom: i@y.example\r\n\r\n"
                      b" BODY[1.HEADER] {0}\r\n"
                      b" BODY[2.HEADER.FIELDS (FROM)] {21}\r\nFrom: i@y.example\r\n\r\n"
                      b" BODY[2.1.MIME] {37}\r\nSubject: inner\r\nFrom: i@y.example\r\n\r\n"
                      b" BODY[2.MIME]<5> {10}\r\nnt-Type: m"
                      b" BODY[3.MIME] {0}\r\n)\r\n", out)     # no such part: empty, as BODY[3]
        self.assertIn(b"* 1 FETCH (BODY[1.MIME] {34}\r\nFrom: x@y.example\r\nSubject: m0\r\n\r\n"
                      b" BODY[1.HEADER] {0}\r\n BODY[2.MIME] {0}\r\n)\r\n", out)

    def test_a_message_all_header_or_with_an_empty_header(self):
        self.deliver(b"Subject: headers only\r\nFrom: x@y.example\r\n")
        self.deliver(b"\r\nbody after an empty header\r\n")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 4:5 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] "
                              b"BODY.PEEK[HEADER.FIELDS.NOT (subject)])")
        self.assertIn(b"* 4 FETCH (BODY[HEADER] {42}\r\nSubject: headers only\r\nFrom: x@y.example\r\n"
                      b" BODY[TEXT] {0}\r\n BODY[HEADER.FIELDS.NOT (SUBJECT)] {19}\r\n"
                      b"From: x@y.example\r\n)\r\n", out)       # no blank line to end it, as Dovecot
        self.assertIn(b"* 5 FETCH (BODY[HEADER] {2}\r\n\r\n BODY[TEXT] {28}\r\n"
                      b"body after an empty header\r\n BODY[HEADER.FIELDS.NOT (SUBJECT)] {2}\r\n\r\n)\r\n",
                      out)


class LocateTests(ImapCase):
    """imapmime.find: a part found by its boundaries in the message's own bytes."""

    def test_lines_that_only_begin_like_a_delimiter_and_digest_parts(self):
        # As Dovecot reads it: a line that begins with --b is a boundary line, whatever follows.
        data = (b"Content-Type: multipart/digest; boundary=\"b\"\r\n\r\npreamble\r\n--b  \r\n"
                b"\r\nSubject: one\r\n\r\nfirst\r\n--bx is a boundary too\r\n"
                b"Content-Type: text/plain\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n--b\r\nX: not a part\r\n\r\n")
        root = imapmime.parse(data)
        one = imapmime.find(root, [1])
        self.assertEqual((data[one.start:one.body], data[one.body:one.end], one.kind),
                         (b"\r\n", b"Subject: one\r\n\r\nfirst", imapmime.MESSAGE))
        inner = imapmime.find(root, [1, 1])                 # the enclosed message
        self.assertEqual(data[inner.start:inner.body], b"Subject: one\r\n\r\n")
        two = imapmime.find(root, [2])
        self.assertEqual((data[two.start:two.body], data[two.body:two.end], two.kind),
                         (b"Content-Type: text/plain\r\n\r\n", b"two", imapmime.TEXT))
        self.assertIsNone(imapmime.find(root, [3]))          # after the close: none
        self.assertIsNone(imapmime.find(root, [2, 2]))


def _gone(message):
    raise KeyError(message.name)


def _pausing(t, p):
    """The transport's write, pausing the producer after every write (a full socket buffer)."""
    write = t.write

    def paused_write(data):
        write(data)
        if t.producer is not None:
            t.producer.pauseProducing()
    return paused_write


class FlowTests(ImapCase):
    """A FETCH of a big mailbox: read and written as the transport takes it, never all at once."""

    def test_a_big_mailbox_streams_with_bounded_memory(self):
        body = b"x" * 20000 + b"\r\n"
        for n in range(60):
            self.deliver(b"Subject: big %d\r\n\r\n" % n + body)
        p, t = self.select()
        reads, alive = [], weakref.WeakSet()
        real = imapfetch.Message.data

        def data(message):
            if message._data is None:
                reads.append(message.uid)
                alive.add(message)
            return real(message)
        self.patch(imapfetch.Message, "data", data)
        t.clear()
        t.write = _pausing(t, p)
        p.dataReceived(b"f1 FETCH 1:* BODY.PEEK[]\r\n")
        self.assertIsNotNone(t.producer)
        rounds = 0
        while t.producer is not None:
            # never more read than written, nor more than a batch written while paused
            self.assertLessEqual(len(t.value()), (rounds + 1) * (imapfetch.WRITE + len(body) + 100))
            self.assertLessEqual(len(reads), 4 + len(t.value()) // len(body))   # 3 small ones first
            self.assertLessEqual(len(alive), 1)         # nothing read is kept once written
            t.producer.resumeProducing()
            rounds += 1
        self.assertGreater(rounds, 10)
        self.assertEqual(len(reads), 63)
        self.assertEqual(len(literals(t.value())), 63)
        self.assertIn(b"f1 OK FETCH completed", t.value())

    def test_without_pauses_each_turn_writes_a_bounded_batch(self):
        for n in range(40):
            self.deliver(b"Subject: big %d\r\n\r\n" % n + b"y" * 30000)
        p, t = self.select()
        t.clear()
        p.dataReceived(b"f1 FETCH 1:* BODY.PEEK[]\r\n")
        self.assertLess(len(t.value()), imapfetch.BATCH + 40000)
        self.assertTrue(self.clock.getDelayedCalls())               # the rest on the next turn
        while self.clock.getDelayedCalls() and t.producer is not None:
            self.clock.advance(0)
        self.assertIn(b"f1 OK FETCH completed", t.value())
        self.assertEqual(len(literals(t.value())), 43)

    def test_a_connection_lost_mid_fetch_stops_it(self):
        for n in range(30):
            self.deliver(b"Subject: big %d\r\n\r\n" % n + b"z" * 30000)
        p, t = self.select()
        t.write = _pausing(t, p)
        p.dataReceived(b"f1 FETCH 1:* BODY.PEEK[]\r\n")
        producer = t.producer
        p.connectionLost(None)
        producer.stopProducing()
        before = len(t.value())
        producer.resumeProducing()
        self.assertEqual(len(t.value()), before)


class SelectTests(ImapCase):
    """SelectedMailbox.select: binary searches a range, the same answer as a pass over every message."""

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 60), unique=True, max_size=30),
           st.lists(st.tuples(st.integers(1, 70) | st.none(), st.integers(1, 70) | st.none()),
                    min_size=1, max_size=4),
           st.booleans())
    def test_the_same_as_every_message_looked_at(self, uids, ranges, uid):
        view = _View(sorted(uids))
        box = SelectedMailbox.__new__(SelectedMailbox)
        box.view, box.folder = view, view.folder
        messages = imap4.MessageSet()
        for low, high in ranges:
            messages.add(low, high)
        got = box.select(messages, uid)
        seq = view.seq
        if uid:
            expected = [(i + 1, u) for i, u in enumerate(seq) if u in messages]
        else:
            expected = [(i + 1, u) for i, u in enumerate(seq) if i + 1 in messages]
        self.assertEqual(got, expected)

    def test_a_uid_range_of_a_big_mailbox_looks_at_no_other_message(self):
        view = _View(list(range(1, 200001)))
        box = SelectedMailbox.__new__(SelectedMailbox)
        box.view, box.folder = view, view.folder
        messages = imap4.MessageSet(150001, 150100)
        self.patch(imap4.MessageSet, "__contains__", lambda *_: self.fail("a pass over every UID"))
        got = box.select(messages, 1)
        self.assertEqual(got[0], (150001, 150001))
        self.assertEqual(len(got), 100)


class _Folder:
    uidnext = 100


class _View:
    def __init__(self, seq):
        self.seq = seq
        self.folder = _Folder()


class ReadTests(ImapCase):
    """imapmessage._read: a message file in one fstat and one read, short reads gone on with."""

    def test_whole_file_and_mtime_even_when_reads_come_short(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"a" * 5000 + b"b" * 5000)
        os.utime(path, (1000, 1000))
        real, calls = os.read, []

        def short(fd, n):
            calls.append(n)
            return real(fd, min(n, 3000))
        self.patch(imapmessage.os, "read", short)
        with open(path, "rb") as f:
            self.assertEqual(imapmessage._read(f), (b"a" * 5000 + b"b" * 5000, 1000))
        self.assertEqual(calls, [10000, 7000, 4000, 1000])

    def test_a_file_object_without_a_descriptor(self):
        self.assertEqual(imapmessage._read(io.BytesIO(b"x\n")), (b"x\n", 0))


class FailureTests(ImapCase):

    def test_a_message_that_cannot_be_made_ends_the_fetch_with_no(self):
        p, t = self.select()
        real = imapfetch.Message.data

        def data(message):
            if message.uid == 2:
                raise RuntimeError("unreadable")
            return real(message)
        self.patch(imapfetch.Message, "data", data)
        out = self.talk(p, t, b"f1 FETCH 1:3 BODY.PEEK[]", b"n1 NOOP")
        self.assertIn(b"* 1 FETCH (BODY[] {42}", out)
        self.assertNotIn(b"* 2 FETCH", out)
        self.assertIn(b"f1 NO [SERVERBUG]", out)
        self.assertIn(b"n1 OK", out)
        self.assertIsNone(t.producer)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
