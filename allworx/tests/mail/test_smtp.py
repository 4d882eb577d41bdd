"""Tests for the SMTP server: allworx.protocols.mail.smtp and allworx.protocols.mail.smtpwire."""

import base64

from hypothesis import given, settings, strategies as st
from twisted.internet import address, defer, interfaces, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from allworx.protocols.mail import smtpwire
from allworx.protocols.mail.smtpwire import Reply
from allworx.protocols.mail.smtp import SmtpFactory
from allworx.protocols.mail.store import Delivered
from allworx.tests.mailtesting import PlainChecker, make_office

LAN = "192.168.2.10"
WAN = "198.51.100.10"


class FakeDelivery:
    """Stands in for the store's deliver; each call waits until `finish`ed."""

    def __init__(self, auto=True):
        self.auto = auto
        self.calls = []

    def __call__(self, recipients, message, sender):
        d = defer.Deferred()
        self.calls.append((list(recipients), bytes(message), sender, d))
        if self.auto:
            d.callback(Delivered("ID%d" % len(self.calls), tuple(recipients), ()))
        return d

    def finish(self, i=0):
        recipients = self.calls[i][0]
        self.calls[i][3].callback(Delivered("ID%d" % (i + 1), tuple(recipients), ()))


class Session:
    """An SmtpServer on a StringTransport, with helpers to talk to it."""

    def __init__(self, testcase, peer=LAN, submission=False, tls=False, auto=True,
                 tls_options=None, max_size=None, clock=None, **guards):
        # One office per test case: hypothesis runs many sessions in one test.
        office = getattr(testcase, "_office", None) if not max_size else None
        if office is None:
            office = make_office(testcase)
            if not max_size:
                testcase._office = office
        self.office = office
        if max_size:
            self.office.update_settings("mail", {"max_message_size": str(max_size)})
        self.clock = clock or task.Clock()
        self.delivery = FakeDelivery(auto)
        self.checker = CountingChecker({"alice": "secret"})
        self.factory = SmtpFactory(self.office, self.delivery, self.clock, self.checker,
                                   tls_options=tls_options, submission=submission, **guards)
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 40000))
        if tls:
            directlyProvides(self.transport, interfaces.ISSLTransport)
        self.proto.makeConnection(self.transport)

    def send(self, data):
        self.proto.dataReceived(data)

    def send_waiting(self, data):
        """Send, then wait out (on the clock) the answers a login throttle holds back."""
        self.send(data)
        self.waited = 0
        while self.proto._busy and self.waited < 60:
            self.clock.advance(0.25)
            self.waited += 0.25

    def replies(self):
        """Reply codes (and text) sent so far, then forget them."""
        out = self.transport.value().decode().split("\r\n")
        self.transport.clear()
        return [line for line in out if line]

    def codes(self):
        return [line[:3] for line in self.replies() if line[3:4] == " "]


class CountingChecker(PlainChecker):
    """A PlainChecker that counts the passwords it was asked to check."""

    checked = 0

    def requestAvatarId(self, creds):
        self.checked += 1
        return PlainChecker.requestAvatarId(self, creds)


def mail_transaction(rcpt=b"alice@example.com", body=b"Subject: hi\r\n\r\nhello\r\n"):
    return (b"EHLO pc1.example.com\r\nMAIL FROM:<x@internet.example>\r\nRCPT TO:<" + rcpt +
            b">\r\nDATA\r\n" + body + b".\r\n")


class GreetingTests(unittest.TestCase):

    def test_greeting_and_ehlo(self):
        s = Session(self)
        self.assertEqual(s.codes(), ["220"])
        s.send(b"EHLO me\r\n")
        lines = s.replies()
        self.assertEqual(lines[0], "250-allworx.example.com")
        for ext in ("PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertIn("250-" + ext, lines + ["250-" + lines[-1][4:]])
        self.assertNotIn("AUTH", " ".join(lines))   # not before TLS

    def test_auth_offered_under_tls(self):
        s = Session(self, tls=True)
        s.replies()
        s.send(b"EHLO me\r\n")
        self.assertIn("250 AUTH PLAIN LOGIN", s.replies())

    def test_commands_before_helo(self):
        s = Session(self)
        s.replies()
        s.send(b"MAIL FROM:<a@b.example>\r\nNOOP\r\nFOO\r\n")
        self.assertEqual(s.codes(), ["503", "250", "502"])

    def test_quit(self):
        s = Session(self)
        s.replies()
        s.send(b"QUIT\r\n")
        self.assertEqual(s.codes(), ["221"])
        self.assertTrue(s.transport.disconnecting)


class TransactionTests(unittest.TestCase):

    def test_local_delivery(self):
        s = Session(self, peer=WAN)
        s.replies()
        s.send(mail_transaction())
        self.assertEqual(s.codes(), ["250", "250", "250", "354", "250"])
        rcpts, message, sender, _ = s.delivery.calls[0]
        self.assertEqual(rcpts, ["alice@example.com"])
        self.assertEqual(sender, "x@internet.example")
        self.assertTrue(message.startswith(b"Received: from pc1.example.com ([198.51.100.10])\n"))
        self.assertTrue(message.endswith(b"Subject: hi\r\n\r\nhello\r\n"))

    def test_unknown_local_refused(self):
        s = Session(self)
        s.replies()
        s.send(mail_transaction(rcpt=b"nobody@example.com"))
        lines = s.replies()
        self.assertIn("550 5.1.1 no such user here", lines)
        self.assertIn("554 5.5.1 no valid recipients", lines)

    def test_relay_from_wan_refused(self):
        s = Session(self, peer=WAN)
        s.replies()
        s.send(mail_transaction(rcpt=b"x@other.example"))
        self.assertTrue(any(line.startswith("550 5.7.1") for line in s.replies()))
        self.assertEqual(s.delivery.calls, [])

    def test_relay_from_lan(self):
        s = Session(self, peer=LAN)
        s.replies()
        s.send(mail_transaction(rcpt=b"x@other.example"))
        self.assertEqual(s.codes()[-1], "250")

    def test_null_sender_and_postmaster(self):
        s = Session(self, peer=WAN)
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(s.codes(), ["250", "250", "250", "354", "250"])
        self.assertEqual(s.delivery.calls[0][0], ["postmaster@example.com"])
        self.assertEqual(s.delivery.calls[0][2], "")

    def test_250_only_after_store_and_in_order(self):
        """Pipelined: the next MAIL's reply waits for the message's 250."""
        s = Session(self, auto=False)
        s.replies()
        s.send(mail_transaction() + b"MAIL FROM:<y@internet.example>\r\nRCPT TO:<bob@example.com>\r\n")
        self.assertEqual(s.codes(), ["250", "250", "250", "354"])
        s.delivery.finish(0)
        self.assertEqual(s.codes(), ["250", "250", "250"])

    def test_store_failure_is_temporary(self):
        s = Session(self, auto=False)
        s.replies()
        s.send(mail_transaction())
        s.replies()
        s.delivery.calls[0][3].errback(OSError(28, "No space left on device"))
        self.assertEqual(s.replies(), ["451 4.3.0 local error, try again later"])
        self.flushLoggedErrors(OSError)

    def test_dot_unstuffing(self):
        s = Session(self)
        s.replies()
        s.send(mail_transaction(body=b"..leading\r\n.\r\n"[:-3]))
        self.assertTrue(s.delivery.calls[0][1].endswith(b"\n.leading\r\n"))

    def test_empty_message(self):
        s = Session(self)
        s.replies()
        s.send(mail_transaction(body=b""))
        self.assertEqual(s.codes()[-1], "250")

    def test_duplicate_recipient_once(self):
        s = Session(self)
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\n"
               b"RCPT TO:<ALICE@example.com>\r\nDATA\r\nx\r\n.\r\n")
        self.assertEqual(s.delivery.calls[0][0], ["alice@example.com"])

    def test_rset(self):
        s = Session(self)
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRSET\r\nRCPT TO:<alice@example.com>\r\n")
        self.assertEqual(s.codes(), ["250", "250", "250", "503"])


class SmugglingTests(unittest.TestCase):
    """Only CRLF.CRLF ends DATA; bare LF/CR dots stay content."""

    def check_not_ended(self, smuggled):
        s = Session(self)
        s.replies()
        s.send(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
               b"Subject: x\r\n\r\nfirst" + smuggled +
               b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nevil\r\n.\r\n")
        codes = s.codes()
        self.assertEqual(codes, ["250", "250", "250", "354", "250"])
        self.assertEqual(len(s.delivery.calls), 1)
        message = s.delivery.calls[0][1]
        self.assertIn(b"MAIL FROM:<evil@b.example>", message)
        return message

    def test_lf_dot_lf(self):
        self.check_not_ended(b"\n.\n")

    def test_cr_dot_lf(self):
        self.check_not_ended(b"\r.\n")

    def test_crlf_dot_lf(self):
        self.check_not_ended(b"\r\n.\n")

    def test_lf_dot_crlf(self):
        self.check_not_ended(b"\n.\r\n")

    def test_cr_dot_cr(self):
        self.check_not_ended(b"\r.\r")

    def test_split_across_packets(self):
        s = Session(self)
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nabc\r")
        s.send(b"\n.")
        s.send(b"\r")
        self.assertEqual(s.delivery.calls, [])
        s.send(b"\nNOOP\r\n")
        self.assertEqual(s.codes(), ["250", "250", "250", "354", "250", "250"])
        self.assertTrue(s.delivery.calls[0][1].endswith(b"\nabc\r\n"))


class LimitTests(unittest.TestCase):

    def test_size_parameter(self):
        s = Session(self, max_size=2048)
        s.replies()
        s.send(b"EHLO x\r\nMAIL FROM:<a@b.example> SIZE=4096\r\nMAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n")
        lines = s.replies()
        self.assertTrue(lines[-2].startswith("552 5.3.4"))
        self.assertTrue(lines[-1].startswith("250"))

    def test_size_enforced_while_receiving(self):
        s = Session(self, max_size=2048)
        s.replies()
        s.send(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        for _ in range(100):
            s.send(b"x" * 70 + b"\r\n")
        self.assertLess(len(s.proto._data or b""), 2048 + 4096 + 100)
        s.send(b".\r\nNOOP\r\n")
        codes = s.codes()
        self.assertEqual(codes[-2:], ["552", "250"])
        self.assertEqual(s.delivery.calls, [])

    def test_long_text_line(self):
        s = Session(self)
        s.replies()
        s.send(mail_transaction(body=b"x" * 999 + b"\r\n"))
        self.assertTrue(s.replies()[-1].startswith("554 5.6.0"))
        s.send(mail_transaction(body=b"x" * 998 + b"\r\n"))
        self.assertEqual(s.codes()[-1], "250")

    def test_long_command_line(self):
        s = Session(self)
        s.replies()
        s.send(b"NOOP " + b"x" * 5000)
        s.send(b"\r\nNOOP\r\n")
        self.assertEqual(s.codes(), ["500", "500", "250"])

    def test_recipient_limit(self):
        s = Session(self)
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<a@b.example>\r\n" +
               b"".join(b"RCPT TO:<u%d@other.example>\r\n" % i for i in range(101)))
        codes = s.codes()
        self.assertEqual(codes.count("250"), 102)
        self.assertEqual(codes[-1], "452")

    def test_unknown_parameter(self):
        s = Session(self)
        s.replies()
        s.send(b"EHLO x\r\nMAIL FROM:<a@b.example> FOO=1\r\n")
        self.assertEqual(s.codes()[-1], "555")

    def test_too_many_errors_closes(self):
        s = Session(self)
        s.replies()
        s.send(b"BAD\r\n" * 25)
        self.assertTrue(s.transport.disconnecting)
        self.assertEqual(s.codes()[-1], "421")

    def test_idle_timeout(self):
        s = Session(self)
        s.replies()
        s.clock.advance(301)
        self.assertEqual(s.codes(), ["421"])


class AuthTests(unittest.TestCase):

    def test_auth_needs_tls(self):
        s = Session(self, submission=True)
        s.replies()
        s.send(b"EHLO x\r\nAUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(s.codes()[-1], "538")

    def test_submission_needs_auth(self):
        s = Session(self, submission=True, tls=True)
        s.replies()
        s.send(b"EHLO x\r\nMAIL FROM:<alice@example.com>\r\n")
        self.assertEqual(s.codes()[-1], "530")

    def test_auth_plain_then_relay(self):
        s = Session(self, peer=WAN, submission=True, tls=True)
        s.replies()
        s.send(b"EHLO x\r\nAUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
        self.assertEqual(s.codes()[-1], "235")
        s.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<x@other.example>\r\nDATA\r\nhi\r\n.\r\n")
        self.assertEqual(s.codes(), ["250", "250", "354", "250"])
        self.assertIn(b"with ESMTPSA", s.delivery.calls[0][1])

    def test_auth_login(self):
        s = Session(self, tls=True)
        s.replies()
        s.send(b"EHLO x\r\nAUTH LOGIN\r\n")
        self.assertEqual(s.replies()[-1], "334 VXNlcm5hbWU6")
        s.send(base64.b64encode(b"alice") + b"\r\n")
        self.assertEqual(s.replies(), ["334 UGFzc3dvcmQ6"])
        s.send(base64.b64encode(b"secret") + b"\r\n")
        self.assertEqual(s.codes(), ["235"])

    def test_bad_password_three_times_closes(self):
        s = Session(self, tls=True)
        s.replies()
        s.send(b"EHLO x\r\n")
        for _ in range(3):
            s.send_waiting(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n")
        self.assertEqual(s.codes()[-3:], ["535", "535", "535"])
        s.clock.advance(0)
        self.assertTrue(s.transport.disconnecting)

    def test_failures_across_sessions_lock_out(self):
        from allworx.guards import LoginThrottle
        clock = task.Clock()
        throttle = LoginThrottle(clock)
        wrong = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n"
        right = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
        first = Session(self, peer=WAN, tls=True, clock=clock, throttle=throttle)
        first.send_waiting(b"EHLO x\r\n" + wrong * 3)
        self.assertEqual(first.codes()[-3:], ["535", "535", "535"])
        second = Session(self, peer=WAN, submission=True, tls=True, clock=clock, throttle=throttle)
        second.send_waiting(b"EHLO x\r\n" + wrong * 2 + right)
        replies = second.replies()
        self.assertEqual([r[:3] for r in replies[-3:]], ["535", "535", "454"])
        self.assertRegex(replies[-1], r"^454 4\.7\.0 too many failed logins, locked until \d\d:\d\d UTC$")
        self.assertEqual(second.checker.checked, 2)     # the last one was not checked
        # Another client is not affected; after the lock-out alice gets in again.
        other = Session(self, peer="198.51.100.77", tls=True, clock=clock, throttle=throttle)
        other.send(b"EHLO x\r\n" + right)
        self.assertEqual(other.codes()[-1], "235")
        clock.advance(throttle.locked_until(WAN, "alice") - clock.seconds())
        third = Session(self, peer=WAN, tls=True, clock=clock, throttle=throttle)
        third.send_waiting(b"EHLO x\r\n" + right)
        self.assertEqual(third.codes()[-1], "235")

    def test_200_wrong_passwords_meet_the_delay_then_the_lock_out(self):
        from allworx.guards import LoginThrottle
        clock = task.Clock()
        throttle = LoginThrottle(clock)
        wrong = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n"
        replies, waits, checked = [], [], 0
        session = None
        for _ in range(200):
            if session is None or session.transport.disconnecting:
                if session is not None:
                    checked += session.checker.checked
                    session.proto.connectionLost(None)
                session = Session(self, peer=LAN, submission=True, tls=True, clock=clock,
                                  throttle=throttle)
                session.send(b"EHLO x\r\n")
                session.replies()
            session.send_waiting(wrong)
            clock.advance(0)            # a session closed after three failures
            replies.append(session.replies()[-1])
            waits.append(session.waited)
        checked += session.checker.checked
        self.assertEqual([r[:3] for r in replies[:5]], ["535"] * 5)
        self.assertEqual(waits[:5], [0, 0, 0.5, 1.0, 2.0])
        self.assertEqual({r[:40] for r in replies[5:]}, {"454 4.7.0 too many failed logins, locked"})
        self.assertEqual(set(waits[5:]), {0})
        self.assertEqual(checked, 5)

    def test_a_source_locked_by_guessing_refuses_a_colleague_too(self):
        from allworx.guards import LoginThrottle
        clock = task.Clock()
        throttle = LoginThrottle(clock)
        for n in range(20):
            throttle.failed(LAN, "guess%d" % n)
        s = Session(self, peer=LAN, tls=True, clock=clock, throttle=throttle)
        s.checker.passwords["bob"] = "bob-pw"
        s.send(b"EHLO x\r\n")
        s.send_waiting(b"AUTH PLAIN " + base64.b64encode(b"\0guess3\0x") + b"\r\n")
        self.assertEqual((s.codes()[-1], s.waited), ("454", 0))
        s.send_waiting(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0bob-pw") + b"\r\n")
        self.assertEqual((s.codes()[-1], s.waited), ("454", 0))

    def test_auth_cancel_and_garbage(self):
        s = Session(self, tls=True)
        s.replies()
        s.send(b"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n")
        self.assertEqual(s.codes()[-3:], ["501", "501", "504"])

    def test_starttls_drops_pipelined_commands(self):
        s = Session(self, tls_options=object())
        started = []
        s.transport.startTLS = lambda options: started.append(options)
        s.replies()
        s.send(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@b.example>\r\n")
        self.assertEqual(s.codes(), ["250", "220"])
        self.assertEqual(len(started), 1)
        s.send(b"MAIL FROM:<a@b.example>\r\n")
        self.assertEqual(s.codes(), ["503"])   # EHLO again after TLS


class WireTests(unittest.TestCase):

    def test_parse_path(self):
        p = smtpwire.parse_path(b"FROM:<a.b+c@example.com> SIZE=10 BODY=8BITMIME", b"FROM")
        self.assertEqual(p.address, "a.b+c@example.com")
        self.assertEqual(p.params, {"SIZE": "10", "BODY": "8BITMIME"})
        self.assertEqual(smtpwire.parse_path(b"TO:<@relay.example:bob@example.com>", b"TO").address,
                         "bob@example.com")
        self.assertEqual(smtpwire.parse_path(b'TO:<"odd name"@example.com>', b"TO").address,
                         '"odd name"@example.com')

    def test_bad_paths(self):
        for arg, kw in ((b"FROM:a@b.example", b"FROM"), (b"TO:<>", b"TO"), (b"TO:<a b@c>", b"TO"),
                        (b"TO:<a@b@c.example>", b"TO"), (b"FROM:<a@-b.example>", b"FROM"),
                        (b"TO:<a@b.example> X=\x01", b"TO"), (b"FROM:<a@b.example>", b"TO")):
            self.assertRaises(smtpwire.Reply, smtpwire.parse_path, arg, kw)

    def test_reply_multiline(self):
        self.assertEqual(smtpwire.Reply(250, "", "a\nb").line(), b"250-a\r\n250 b\r\n")

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_command_line_gets_one_reply(self, line):
        """Hostile command lines: a reply per line, never a crash."""
        line = line.replace(b"\n", b"").replace(b"\r", b"")
        s = Session(self)
        s.replies()
        s.send(b"HELO x\r\n" + line + b"\r\nNOOP\r\n")
        out = s.transport.value()
        self.assertTrue(out.endswith(b"250 2.0.0 OK\r\n") or s.transport.disconnecting, out)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b),
                    max_size=20))
    def test_body_round_trip(self, lines):
        """Any body, dot-stuffed on the wire, arrives as sent (CRLF kept)."""
        body = b"".join(line + b"\r\n" for line in lines)
        stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
        s = Session(self, peer=WAN)     # no Date/Message-ID added for the internet
        s.replies()
        s.send(b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n" +
               stuffed + b".\r\n")
        message = s.delivery.calls[0][1]
        self.assertEqual(message[message.index(b"\n", message.index(b"for <")) + 1:], body)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
    def test_data_in_any_chunks(self, body, chunk):
        """However the data is split, the message ends at CRLF.CRLF and nowhere else."""
        body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        wire = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n" + \
            body + b"\r\n.\r\nNOOP\r\n"
        s = Session(self)
        s.replies()
        for i in range(0, len(wire), chunk):
            s.send(wire[i:i + chunk])
        codes = s.codes()
        self.assertEqual(codes[-1], "250")
        self.assertLessEqual(len(s.delivery.calls), 1)


class QueueFullTests(unittest.TestCase):

    def test_452_when_queue_full(self):
        from allworx.protocols.mail.queue import QueueFull
        s = Session(self, auto=False)
        s.replies()
        s.send(mail_transaction(rcpt=b"x@other.example"))
        s.replies()
        s.delivery.calls[0][3].errback(QueueFull("full"))
        self.assertEqual(s.replies(), ["452 4.3.1 outbound queue full, try again later"])


class OriginHeaderTests(unittest.TestCase):

    def test_added_for_lan_clients(self):
        s = Session(self, peer=LAN)
        s.replies()
        s.send(mail_transaction(body=b"Subject: bare\r\n\r\nhi\r\n"))
        message = s.delivery.calls[0][1]
        self.assertRegex(message, rb"\nDate: .*\n")
        self.assertRegex(message, rb"\nMessage-ID: <\d+\.[0-9a-f]{12}@allworx\.example\.com>\n")

    def test_kept_and_not_added_for_the_internet(self):
        s = Session(self, peer=WAN)
        s.replies()
        s.send(mail_transaction(body=b"Subject: bare\r\n\r\nhi\r\n"))
        self.assertNotIn(b"Message-ID", s.delivery.calls[0][1])
        s = Session(self, peer=LAN)
        s.replies()
        s.send(mail_transaction(body=b"Message-Id: <a@b>\r\nDATE: x\r\n\r\nMessage-ID: body\r\n"))
        self.assertEqual(s.delivery.calls[0][1].count(b"Message-I"), 2)
        self.assertNotIn(b"\nDate:", s.delivery.calls[0][1])

    def test_missing_origin_headers(self):
        self.assertEqual(smtpwire.missing_origin_headers(b"Subject: x\r\n\r\nDate: y\r\n"),
                         [b"date", b"message-id"])
        self.assertEqual(smtpwire.missing_origin_headers(b"date: y\nmessage-id: <x>\n\n"), [])


class ConnectionLimitTests(unittest.TestCase):

    def test_per_wan_client_and_total(self):
        first = Session(self, peer=WAN)
        sessions = [first]
        for _ in range(first.factory.max_per_client - 1):
            p = first.factory.buildProtocol(None)
            t = StringTransport(peerAddress=address.IPv4Address("TCP", WAN, 40001))
            p.makeConnection(t)
            sessions.append((p, t))
        p = first.factory.buildProtocol(None)
        t = StringTransport(peerAddress=address.IPv4Address("TCP", WAN, 40002))
        p.makeConnection(t)
        self.assertTrue(t.value().startswith(b"421 4.7.0"))
        self.assertTrue(t.disconnecting)
        p.connectionLost(None)
        sessions[1][0].connectionLost(None)      # one leaves: room again
        p = first.factory.buildProtocol(None)
        t = StringTransport(peerAddress=address.IPv4Address("TCP", WAN, 40003))
        p.makeConnection(t)
        self.assertTrue(t.value().startswith(b"220 "))

    def connect(self, factory, peer):
        p = factory.buildProtocol(None)
        t = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 40000))
        p.makeConnection(t)
        self.addCleanup(p.connectionLost, None)
        return t.value().decode()

    def test_a_greedy_lan_host_holds_only_its_share(self):
        """The LAN is limited too: one LAN host cannot take SMTP from the others."""
        factory = Session(self, peer=LAN).factory
        greetings = [self.connect(factory, LAN) for _ in range(factory.max_per_client - 1)]
        self.assertEqual({g[:4] for g in greetings}, {"220 "})
        self.assertEqual(self.connect(factory, LAN),
                         "421 4.7.0 too many connections from your address, try again later\r\n")
        self.assertEqual(self.connect(factory, "192.168.2.11")[:4], "220 ")

    def test_the_cap_leaves_room_for_other_peers(self):
        from allworx.guards import PeerLimit
        factory = Session(self, peer=LAN, peer_limit=PeerLimit(2, cap=5, reserve=1)).factory
        for _ in range(2):
            self.assertEqual(self.connect(factory, "192.168.2.20")[:4], "220 ")
        self.assertEqual(self.connect(factory, "192.168.2.20")[:4], "421 ")
        self.assertEqual(self.connect(factory, "192.168.2.21")[:4], "220 ")
        self.assertEqual(self.connect(factory, "192.168.2.22")[:4], "220 ")   # the reserve
        self.assertEqual(self.connect(factory, "192.168.2.21"), "421 4.7.0 too busy, try again later\r\n")
        self.assertEqual(factory.peers.total(), 5)

    def test_flood_while_writing_pauses_reading(self):
        s = Session(self, auto=False)
        s.replies()
        s.send(mail_transaction())
        s.send(b"NOOP\r\n" * 20000)
        self.assertEqual(s.transport.producerState, "paused")
        s.delivery.finish(0)
        self.assertEqual(s.transport.producerState, "producing")


class LoopTests(unittest.TestCase):

    def test_too_many_hops(self):
        s = Session(self)
        s.replies()
        head = b"".join(b"Received: from hop%d by x; date\r\n" % i for i in range(50))
        s.send(mail_transaction(body=head + b"Subject: loop\r\n\r\nbody\r\n"))
        self.assertEqual(s.replies()[-1], "554 5.4.6 too many hops: mail forwarding loop")
        self.assertEqual(s.delivery.calls, [])
        s.send(mail_transaction(body=head[:-40] + b"\r\nbody Received: x\r\n"))
        self.assertEqual(s.codes()[-1], "250")

    def test_long_line_check_is_linear(self):
        """
        A big message of lawful lines just under the limit is checked in a
        moment (the unanchored pattern re-read each line from every position:
        about 5 s of the reactor for these 2 MB).
        """
        import time
        message = (b"a" * (smtpwire.MAX_TEXT_LINE - 8) + b"\r\n") * 2000
        started = time.perf_counter()
        self.assertFalse(smtpwire.has_long_line(message))
        self.assertLess(time.perf_counter() - started, 1.0)
        self.assertTrue(smtpwire.has_long_line(message + b"b" * (smtpwire.MAX_TEXT_LINE + 1)))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"x" * 997, b"x" * 998,
                                     b"x" * 999, b"x" * 1500]), max_size=8))
    def test_long_line_answers(self, parts):
        message = b"".join(parts)
        longest = max(len(line) for line in message.replace(b"\r", b"\n").split(b"\n"))
        self.assertEqual(smtpwire.has_long_line(message), longest > smtpwire.MAX_TEXT_LINE)

    def test_hop_count_header_only(self):
        self.assertEqual(smtpwire.hop_count(b"Received: a\nreceived : b\n\nReceived: c\n"), 2)


class MailTransactionTests(unittest.TestCase):
    """The transaction machine on its own."""

    def test_order(self):
        from allworx.protocols.mail.transaction import MailTransaction
        t = MailTransaction()
        for call, code in ((lambda: t.rcpt("a@b.example"), 503), (t.data, 503),
                           (t.message_ended, 503)):
            self.assertEqual(self.assertRaises(Reply, call).code, code)
        t.mail("s@x.example", "8BITMIME")
        self.assertEqual(self.assertRaises(Reply, t.data).code, 554)
        self.assertEqual(self.assertRaises(Reply, t.mail, "again@x.example", None).code, 503)
        t.rcpt("a@b.example")
        t.rcpt("A@B.example")
        t.data()
        self.assertEqual(self.assertRaises(Reply, t.rcpt, "c@d.example").code, 503)
        self.assertEqual(t.message_ended(), [("s@x.example", ["a@b.example"])])
        self.assertFalse(t.open)

    def test_every_state_and_input(self):
        """
        The table names every input in every state; each refusal leaves the
        state and the envelope as they were, and reset returns to idle from
        anywhere.
        """
        from allworx.protocols.mail import transaction
        inputs = {"mail": lambda t: t.mail("s@x.example", None), "rcpt": lambda t: t.rcpt("r@y.example"),
                  "data": lambda t: t.data(), "message_ended": lambda t: t.message_ended()}
        reach = {transaction.IDLE: [], transaction.HAS_SENDER: ["mail"],
                 transaction.HAS_RECIPIENTS: ["mail", "rcpt"],
                 transaction.RECEIVING: ["mail", "rcpt", "data"]}
        for state, path in reach.items():
            for name, call in inputs.items():
                t = transaction.MailTransaction()
                for step in path:
                    inputs[step](t)
                self.assertEqual(t.state, state)
                before = (t.sender, list(t.recipients))
                target = transaction.TRANSITIONS[state, name]
                if isinstance(target, tuple):
                    self.assertEqual(self.assertRaises(Reply, call, t).code, target[0])
                    self.assertEqual((t.state, t.sender, t.recipients), (state,) + before)
                else:
                    call(t)
                    self.assertEqual(t.state, target)
                t.reset()
                self.assertEqual((t.state, t.sender, t.recipients), (transaction.IDLE, None, []))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(["mail", "rcpt", "data", "end", "reset"]), max_size=30))
    def test_any_sequence(self, steps):
        """Whatever the order, the envelope matches the state and nothing else breaks."""
        from allworx.protocols.mail.transaction import MailTransaction
        t = MailTransaction()
        receiving = False
        for step in steps:
            try:
                if step == "mail":
                    t.mail("s@x.example", None)
                elif step == "rcpt":
                    t.rcpt("r%d@y.example" % len(t.recipients))
                elif step == "data":
                    t.data()
                    receiving = True
                elif step == "end":
                    sender, rcpts = t.message_ended()[0]
                    self.assertTrue(receiving and sender and rcpts)
                    receiving = False
                else:
                    t.reset()
                    receiving = False
            except Reply as r:
                self.assertIn(r.code, (503, 554))
            self.assertEqual(t.open, t.sender is not None)
            if not t.open:
                self.assertEqual(t.recipients, [])


class _FakeSocket:
    def __init__(self, takes=None, error=None):
        self.sent, self.takes, self.error = [], takes, error

    def send(self, data):
        if self.error is not None:
            raise self.error
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class _FakeTcp:
    """The attributes of a twisted TCP connection that write_now looks at."""

    def __init__(self, sock):
        self.socket, self.TLS, self.connected, self.disconnecting = sock, False, 1, 0
        self.dataBuffer, self._tempDataBuffer, self.written = b"", [], []

    def write(self, data):
        self.written.append(bytes(data))
        self._tempDataBuffer.append(bytes(data))


class WriteNowTests(unittest.TestCase):
    """Replies go straight to a plain TCP socket only when nothing is queued before them."""

    def setUp(self):
        from allworx.protocols.mail import smtp
        self.smtp = smtp
        self.patch(smtp, "DIRECT_TRANSPORTS", (_FakeTcp,))

    def test_straight_to_the_socket(self):
        t = _FakeTcp(_FakeSocket())
        self.smtp.write_now(t, b"250 2.0.0 OK\r\n")
        self.assertEqual((t.socket.sent, t.written), ([b"250 2.0.0 OK\r\n"], []))

    def test_what_the_socket_leaves_is_queued(self):
        t = _FakeTcp(_FakeSocket(takes=4))
        self.smtp.write_now(t, b"250 2.0.0 OK\r\n")
        self.assertEqual((t.socket.sent, t.written), ([b"250 "], [b"2.0.0 OK\r\n"]))
        # Queued data now comes first: the next reply waits behind it.
        self.smtp.write_now(t, b"221 bye\r\n")
        self.assertEqual((t.socket.sent, t.written), ([b"250 "], [b"2.0.0 OK\r\n", b"221 bye\r\n"]))

    def test_would_block_or_gone(self):
        for error in (BlockingIOError(11, "again"), ConnectionResetError(104, "reset")):
            t = _FakeTcp(_FakeSocket(error=error))
            self.smtp.write_now(t, b"250 OK\r\n")
            self.assertEqual(t.written, [b"250 OK\r\n"])

    def test_queued_tls_closing_or_other_transports_use_write(self):
        cases = []
        t = _FakeTcp(_FakeSocket())
        t.dataBuffer = b"x"
        cases.append(t)
        t = _FakeTcp(_FakeSocket())
        t.TLS = True
        cases.append(t)
        t = _FakeTcp(_FakeSocket())
        t.disconnecting = 1
        cases.append(t)
        t = _FakeTcp(_FakeSocket())
        t.connected = 0
        cases.append(t)

        class Wrapped(_FakeTcp):
            pass
        cases.append(Wrapped(_FakeSocket()))
        for t in cases:
            self.smtp.write_now(t, b"250 OK\r\n")
            self.assertEqual((t.socket.sent, t.written), ([], [b"250 OK\r\n"]))



class LoopbackTests(unittest.TestCase):
    """A whole conversation over a real loopback connection (the reactor's own TCP transport)."""

    def test_replies_go_straight_out_in_order(self):
        from twisted.internet import protocol as tprotocol, reactor, tcp
        from allworx.protocols.mail import smtp
        self.assertEqual(smtp.DIRECT_TRANSPORTS, (tcp.Server,))
        queued = []
        real_write = tcp.Server.write

        def write(transport, data):
            queued.append(bytes(data))
            return real_write(transport, data)
        self.patch(tcp.Server, "write", write)
        delivery = FakeDelivery()
        factory = SmtpFactory(make_office(self), delivery, reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        heard = defer.Deferred()

        class Client(tprotocol.Protocol):
            received = b""

            def connectionMade(self):
                self.transport.write(mail_transaction() + b"QUIT\r\n")

            def dataReceived(self, data):
                self.received += data

            def connectionLost(self, reason):
                heard.callback(self.received)
        tprotocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port.getHost().port)

        def check(received):
            lines = received.decode().split("\r\n")
            codes = [line[:3] for line in lines if line[3:4] == " "]
            self.assertEqual(codes, ["220", "250", "250", "250", "354", "250", "221"], received)
            self.assertEqual(len(delivery.calls), 1)
            self.assertEqual(queued, [], "replies queued instead of sent at once")
        return heard.addCallback(check)
