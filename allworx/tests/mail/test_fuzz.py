"""
Fuzzers of the mail command parsers (issue 21): POP3 and SMTP sessions fed
hostile command lines, pipelined and in odd chunks. Each must answer every
line in the protocol's shape, never raise, never log a traceback, and keep
answering afterwards.
"""

import re

from hypothesis import example, given, settings, strategies as st
from twisted.internet import address, defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.protocols.mail.pop3 import Pop3Factory
from allworx.tests.logwatch import LogWatch
from allworx.tests.mail.test_smtp import Session
from allworx.tests.mailtesting import PlainChecker, make_store

LAN = "192.168.2.10"
WAN = "198.51.100.10"


def _no_line_ends(data):
    return data.replace(b"\r", b"").replace(b"\n", b"")


def command_lines(verbs, words):
    """Lines of a known or random verb and known or random words, or plain junk."""
    word = st.sampled_from(words) | st.binary(max_size=12).map(_no_line_ends)
    verb = st.sampled_from(verbs) | word
    line = st.builds(lambda v, args: b" ".join([v] + args), verb, st.lists(word, max_size=4))
    return line | st.binary(max_size=80).map(_no_line_ends)


def chunked(data, sizes):
    """`data` cut into pieces of the given sizes (the rest in one piece)."""
    out, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        out.append(data[at:at + size])
        at += size
    if at < len(data):
        out.append(data[at:])
    return out


def _run_now(iterator):
    """POP3's coiterate, at once (LIST and UIDL write their lines in one go)."""
    for _ in iterator:
        pass
    return defer.succeed(None)


POP3_VERBS = [b"USER", b"PASS", b"STAT", b"LIST", b"RETR", b"DELE", b"TOP", b"UIDL", b"NOOP",
              b"RSET", b"QUIT", b"CAPA", b"APOP", b"AUTH", b"STLS", b"LAST", b"RPOP", b"retr", b"Top"]
POP3_WORDS = [b"0", b"1", b"2", b"3", b"4", b"-1", b"+1", b"4294967297", b"9" * 40, b"", b"x", b"\xff",
              b"alice", b"pw", b"\x00", b"1.5", b"\xd9\xa1"]
LOGIN = [b"USER alice", b"PASS pw"]


class Pop3FuzzTests(unittest.TestCase):
    """Hostile POP3 command lines get exactly one +OK or -ERR each, in order."""

    def setUp(self):
        self.office, self.store, _, self.clock = make_store(self)
        self.logs = LogWatch(self)

    def session(self):
        while len(self.store.list_messages("alice")) < 3:
            self.store.deliver(["alice"], b"Subject: x\r\n\r\nbody\r\n.line\r\n", "")
        factory = Pop3Factory(self.office, self.store, PlainChecker({"alice": "pw"}), self.clock)
        p = factory.buildProtocol(None)
        p.schedule = _run_now
        t = StringTransport(peerAddress=address.IPv4Address("TCP", LAN, 1100))
        p.makeConnection(t)
        t.clear()
        return factory, p, t

    @settings(max_examples=250, deadline=None)
    @given(st.lists(command_lines(POP3_VERBS, POP3_WORDS), max_size=8), st.booleans(),
           st.lists(st.integers(1, 40), max_size=10))
    @example([b"RETR 0", b"DELE 0", b"STAT x", b"RETR 1 2"], True, [])
    @example([b"RETR 1", b"STAT x", b"DELE 0", b"NOOP"], True, [])
    @example([b"LIST \xff", b"\xff\xfe", b"TOP 1 99999999999999"], True, [3, 3])
    def test_any_lines(self, lines, logged_in, sizes):
        self.logs.clear()
        factory, p, t = self.session()
        lines = (LOGIN if logged_in else []) + lines + [b"NOOP"]
        for piece in chunked(b"".join(line + b"\r\n" for line in lines), sizes):
            p.dataReceived(piece)
            while t.producer is not None:          # a message being sent
                t.producer.resumeProducing()
        out = t.value()
        answers = [line for line in out.split(b"\r\n") if line.startswith((b"+OK", b"-ERR"))]
        quit = [i for i, line in enumerate(lines) if line.upper() == b"QUIT"]
        expected = quit[0] + 1 if quit else len(lines)
        self.assertEqual(len(answers), expected, (lines, out))
        self.assertTrue(all(len(a) <= 510 for a in answers), answers)
        self.assertEqual(t.disconnecting, bool(quit), (lines, out))
        self.logs.assert_no_traceback()
        p.connectionLost(None)
        self.assertEqual(factory.realm.in_use, set())


SMTP_VERBS = [b"HELO", b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT", b"VRFY",
              b"EXPN", b"HELP", b"STARTTLS", b"AUTH", b"BDAT", b"ehlo", b"mail"]
SMTP_WORDS = [b"FROM:<a@b.example>", b"TO:<alice@example.com>", b"FROM:<>", b"TO:<postmaster>",
              b"TO:<x@other.example>", b"SIZE=100", b"SIZE=x", b"BODY=8BITMIME", b"BODY=x", b"PLAIN",
              b"LOGIN", b"AGFsaWNlAHNlY3JldA==", b"YWxpY2U=", b"c2VjcmV0", b"*", b"=", b"x", b"\xff",
              b"<", b"FROM:<\xff@b.example>", b'TO:<"a b"@example.com>', b"FROM:<@a,@b:c@d.example>",
              b"TO:<alice@[192.168.2.1]>", b".", b"", b"\x00", b"TO:<" + b"a" * 300 + b"@x.example>"]
REPLY = re.compile(rb"^[2-5][0-9][0-9][ -]")


class SmtpFuzzTests(unittest.TestCase):
    """Hostile SMTP sessions: only replies come back, each within RFC 5321's 512 octets."""

    def setUp(self):
        self.logs = LogWatch(self)

    @settings(max_examples=250, deadline=None)
    @given(st.lists(command_lines(SMTP_VERBS, SMTP_WORDS), max_size=10),
           st.sampled_from([LAN, WAN]), st.booleans(), st.booleans(),
           st.lists(st.integers(1, 60), max_size=10))
    @example([b"EHLO x", b"MAIL FROM:<a@b.example> " + b"X" * 1500], LAN, False, False, [])
    @example([b"EHLO x", b"AUTH PLAIN", b"AGFsaWNlAHNlY3JldA==", b"MAIL FROM:<a@b.example>",
              b"RCPT TO:<x@other.example>", b"DATA", b"hi"], WAN, True, True, [])
    def test_any_session(self, lines, peer, tls, submission, sizes):
        self.logs.clear()
        s = Session(self, peer=peer, tls=tls, submission=submission)
        # Whatever state the lines left (DATA, AUTH), this ends it and asks once more.
        wire = b"".join(line + b"\r\n" for line in lines) + b"\r\n.\r\nRSET\r\nNOOP\r\n"
        for piece in chunked(wire, sizes):
            s.send(piece)
        s.clock.advance(1)
        out = s.transport.value()
        replies = out.split(b"\r\n")
        self.assertEqual(replies[-1], b"", out)
        for reply in replies[:-1]:
            self.assertRegex(reply, REPLY)
            self.assertLessEqual(len(reply) + 2, 512, reply)
        if not (s.transport.disconnecting or s.proto._closed):
            self.assertTrue(out.endswith(b"250 2.0.0 OK\r\n"), (lines, out))
        self.logs.assert_no_traceback()
        s.proto.connectionLost(None)
