"""Tests for the POP3 server (allworx.protocols.mail.pop3) over the store."""

from twisted.internet import address, defer, interfaces
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from allworx.protocols.mail.pop3 import Pop3Factory
from allworx.office import MailboxChanged
from allworx.tests.logwatch import LogWatch
from allworx.tests.mailtesting import PlainChecker, make_store

def _run_now(iterator):
    for _ in iterator:
        pass
    return defer.succeed(None)


LAN = "192.168.2.10"
WAN = "198.51.100.10"


class Pop3Tests(unittest.TestCase):

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        for n in range(3):
            self.store.deliver(["alice"], b"Subject: m%d\r\n\r\nline one\r\n.dot line\r\n" % n, "x@y.example")
        self.uids = [m.uid for m in self.store.list_messages("alice")]
        self.factory = Pop3Factory(self.office, self.store, PlainChecker({"alice": "pw", "bob": "pw"}), self.clock)

    def connect(self, peer=LAN, tls=False):
        p = self.factory.buildProtocol(None)
        p.schedule = _run_now
        t = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 1100))
        if tls:
            directlyProvides(t, interfaces.ISSLTransport)
        p.makeConnection(t)
        self.addCleanup(lambda: p.connectionLost(None) if not t.disconnecting else None)
        return p, t

    def talk(self, p, t, *lines):
        """Send lines; the answers, a login's delay waited out on the clock (in `self.waited`)."""
        t.clear()
        self.waited = 0
        for line in lines:
            p.dataReceived(line + b"\r\n")
            while t.producer is not None:      # a message being sent
                t.producer.resumeProducing()
            while p.blocked is not None and self.waited < 60:      # a login being checked
                self.clock.advance(0.25)
                self.waited += 0.25
        return t.value()

    def login(self, user=b"alice", peer=LAN):
        p, t = self.connect(peer)
        out = self.talk(p, t, b"USER " + user, b"PASS pw")
        self.assertIn(b"+OK Authentication succeeded", out)
        return p, t

    def test_greeting_has_no_apop_challenge(self):
        p, t = self.connect()
        self.assertEqual(t.value(), b"+OK allworx POP3 ready\r\n")
        self.assertIn(b"-ERR APOP is not offered", self.talk(p, t, b"APOP alice 0123"))

    def test_capabilities(self):
        p, t = self.connect()
        out = self.talk(p, t, b"CAPA")
        for cap in (b"TOP", b"UIDL", b"USER", b"RESP-CODES"):
            self.assertIn(cap + b"\r\n", out)

    def test_stat_list_uidl(self):
        p, t = self.login()
        out = self.talk(p, t, b"STAT")
        size = self.store.list_messages("alice")[0].size
        self.assertEqual(out, b"+OK 3 %d\r\n" % (3 * size))
        out = self.talk(p, t, b"UIDL")
        for i, uid in enumerate(self.uids):
            self.assertIn(b"%d %s\r\n" % (i + 1, uid.encode()), out)
        self.assertIn(b"2 %d\r\n" % size, self.talk(p, t, b"LIST"))

    def test_retr_byte_stuffs_and_marks_seen(self):
        p, t = self.login()
        out = self.talk(p, t, b"RETR 1")
        self.assertIn(b"line one\r\n..dot line\r\n.\r\n", out)
        self.assertTrue(self.store.list_messages("alice")[0].seen)

    def test_top(self):
        p, t = self.login()
        out = self.talk(p, t, b"TOP 2 0")
        self.assertIn(b"Subject: m1\r\n", out)
        self.assertNotIn(b"line one", out)

    def test_dele_applies_at_quit_and_rset(self):
        p, t = self.login()
        self.talk(p, t, b"DELE 1", b"DELE 2", b"RSET", b"DELE 3")
        self.assertEqual(len(self.store.list_messages("alice")), 3)
        self.assertIn(b"-ERR", self.talk(p, t, b"RETR 3"))
        self.talk(p, t, b"QUIT")
        self.assertEqual([m.uid for m in self.store.list_messages("alice")], self.uids[:2])

    def test_uids_stable_across_sessions(self):
        p, t = self.login()
        first = self.talk(p, t, b"UIDL")
        self.talk(p, t, b"QUIT")
        p.connectionLost(None)
        p, t = self.login()
        self.assertEqual(self.talk(p, t, b"UIDL"), first)

    def test_one_session_per_mailbox(self):
        p, t = self.login()
        p2, t2 = self.connect()
        out = self.talk(p2, t2, b"USER alice", b"PASS pw")
        self.assertIn(b"-ERR [IN-USE]", out)
        self.talk(p, t, b"QUIT")
        p.connectionLost(None)
        p3, t3 = self.connect()
        self.assertIn(b"+OK Authentication succeeded", self.talk(p3, t3, b"USER alice", b"PASS pw"))

    def test_wrong_password(self):
        p, t = self.connect()
        self.assertIn(b"-ERR [AUTH]", self.talk(p, t, b"USER alice", b"PASS nope"))
        self.assertIn(b"-ERR", self.talk(p, t, b"STAT"))

    def test_wan_refused_unless_enabled(self):
        p, t = self.connect(peer=WAN)
        self.assertTrue(t.value().startswith(b"-ERR"))
        self.assertTrue(t.disconnecting)
        self.office.update_settings("pop3", {"wan": "yes"})
        p, t = self.connect(peer=WAN)
        self.assertEqual(t.value(), b"+OK allworx POP3 ready\r\n")
        # On the WAN a password is only taken under TLS.
        self.assertIn(b"-ERR [AUTH] use STLS", self.talk(p, t, b"USER alice", b"PASS pw"))

    def test_voicemail_deleted_by_pop3_announced(self):
        events = []
        self.office.subscribe(MailboxChanged, events.append)
        self.store.deliver(["bob"], b"X-Allworx-Voicemail: yes\r\n\r\nvm\r\n", "")
        p, t = self.login(b"bob")
        self.talk(p, t, b"DELE 1", b"QUIT")
        self.assertEqual(events, [MailboxChanged("bob", 1, 0), MailboxChanged("bob", 0, 0)])

    def test_stls(self):
        started = []
        self.factory.tls_options = object()
        p, t = self.connect()
        t.startTLS = started.append
        self.assertIn(b"STLS\r\n", self.talk(p, t, b"CAPA"))
        self.assertEqual(self.talk(p, t, b"STLS"), b"+OK begin TLS negotiation\r\n")
        self.assertEqual(started, [self.factory.tls_options])
        self.assertNotIn(b"STLS", self.talk(p, t, b"CAPA"))


    def count_orders(self):
        from allworx.protocols.mail import store as store_module
        calls = []
        real = store_module._order

        def counting(uid):
            calls.append(uid)
            return real(uid)
        self.patch(store_module, "_order", counting)
        return calls

    def test_a_second_login_does_not_sort_again(self):
        p, t = self.login()
        self.talk(p, t, b"QUIT")
        p.connectionLost(None)
        calls = self.count_orders()
        p, t = self.login()
        self.assertEqual(self.talk(p, t, b"STAT").split()[:2], [b"+OK", b"3"])
        self.assertEqual(calls, [])

    def test_stat_does_not_list_every_message(self):
        p, t = self.login()
        listed = []
        real = p.mbox.listMessages
        self.patch(p.mbox, "listMessages", lambda *a: listed.append(a) or real(*a))
        self.talk(p, t, b"DELE 2")
        size = self.store.list_messages("alice")[0].size
        self.assertEqual(self.talk(p, t, b"STAT"), b"+OK 3 %d\r\n" % (2 * size))
        self.assertEqual(listed, [])

    def test_delivery_extends_the_listing_and_sessions_keep_theirs(self):
        p, t = self.login()
        calls = self.count_orders()
        self.clock.advance(5)       # a newer id
        self.store.deliver(["alice"], b"Subject: m3\r\n\r\nfour\r\n", "x@y.example")
        self.assertEqual(len(calls), 2)     # the new one and the last: not the mailbox
        self.assertIn(b"+OK 3 ", self.talk(p, t, b"STAT"))     # the view at login
        self.assertIn(b"-ERR", self.talk(p, t, b"LIST 4"))
        self.talk(p, t, b"DELE 1", b"QUIT")
        p.connectionLost(None)
        uids = [uid for uid, _ in self.store.sizes("alice")]
        self.assertEqual(len(uids), 3)
        self.assertNotIn(self.uids[0], uids)
        p, t = self.login()
        self.assertIn(b"+OK 3 ", self.talk(p, t, b"STAT"))
        self.assertIn(b"3 %s\r\n" % uids[2].encode(), self.talk(p, t, b"UIDL"))


class CountingChecker(PlainChecker):
    """A PlainChecker that counts the passwords it was asked to check."""

    checked = 0

    def requestAvatarId(self, creds):
        self.checked += 1
        return PlainChecker.requestAvatarId(self, creds)


class Pop3GuardTests(unittest.TestCase):
    """The shared guards on POP3: the login throttle and the per-peer connection limit."""

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        self.checker = CountingChecker({"alice": "pw", "bob": "pw"})
        self.factory = Pop3Factory(self.office, self.store, self.checker, self.clock)
        self.connect = Pop3Tests.connect.__get__(self)
        self.talk = Pop3Tests.talk.__get__(self)

    def test_locked_after_bad_passwords_then_let_in_after_the_lock_out(self):
        for _ in range(5):
            p, t = self.connect()
            self.assertIn(b"-ERR [AUTH] wrong", self.talk(p, t, b"USER alice", b"PASS nope"))
        self.assertEqual(self.checker.checked, 5)
        until = self.factory.throttle.locked_until(LAN, "alice")
        p, t = self.connect()
        self.talk(p, t, b"USER alice")
        out = self.talk(p, t, b"PASS pw")
        # Refused at once, the password unchecked, saying until when.
        self.assertRegex(out, rb"^-ERR \[AUTH\] too many failed logins, locked until \d\d:\d\d UTC\r\n$")
        self.assertEqual((self.checker.checked, self.waited), (5, 0))
        # Bob at the same address and alice from another are not affected.
        self.assertIn(b"+OK Authentication", self.talk(p, t, b"USER bob", b"PASS pw"))
        p, t = self.connect(peer="192.168.2.11")
        self.assertIn(b"+OK Authentication", self.talk(p, t, b"USER alice", b"PASS pw"))
        self.talk(p, t, b"QUIT")
        p.connectionLost(None)
        self.clock.advance(until - 1 - self.clock.seconds())
        p, t = self.connect()
        self.assertIn(b"-ERR [AUTH] too many", self.talk(p, t, b"USER alice", b"PASS pw"))
        self.clock.advance(1)
        self.assertIn(b"+OK Authentication succeeded", self.talk(p, t, b"USER alice", b"PASS pw"))

    def test_200_wrong_passwords_meet_the_delay_then_the_lock_out(self):
        answers, waits = [], []
        for _ in range(200):
            p, t = self.connect()
            answers.append(self.talk(p, t, b"USER alice", b"PASS nope").split(b"\r\n")[1])
            waits.append(self.waited)
            p.connectionLost(None)
        self.assertEqual(answers[:5], [b"-ERR [AUTH] wrong user name or password"] * 5)
        self.assertEqual(waits[:5], [0, 0, 0.5, 1.0, 2.0])
        self.assertEqual({a[:42] for a in answers[5:]}, {b"-ERR [AUTH] too many failed logins, locked"})
        self.assertEqual(set(waits[5:]), {0})
        self.assertEqual(self.checker.checked, 5)

    def test_a_source_locked_by_guessing_refuses_a_colleague_too(self):
        for n in range(20):
            p, t = self.connect()
            self.talk(p, t, b"USER guess%d" % n, b"PASS nope")
            p.connectionLost(None)
        self.assertTrue(self.factory.throttle.locked_for(LAN))
        p, t = self.connect()
        self.assertIn(b"-ERR [AUTH] too many", self.talk(p, t, b"USER guess3", b"PASS nope"))
        self.assertIn(b"-ERR [AUTH] too many failed logins, locked until",
                      self.talk(p, t, b"USER bob", b"PASS pw"))
        self.assertEqual(self.waited, 0)

    def test_commands_sent_during_a_delayed_login_wait_for_it(self):
        for _ in range(3):
            p, t = self.connect()
            self.talk(p, t, b"USER alice", b"PASS nope")
        p, t = self.connect()
        t.clear()
        p.dataReceived(b"USER alice\r\nPASS pw\r\nSTAT\r\n")
        self.assertEqual(t.value(), b"+OK USER accepted, send PASS\r\n")
        self.clock.advance(self.factory.throttle.delay(LAN, "alice"))
        lines = t.value().split(b"\r\n")
        self.assertEqual(lines[1], b"+OK Authentication succeeded")
        self.assertTrue(lines[2].startswith(b"+OK 0 "), lines)

    def test_auth_command_throttled_too(self):
        from twisted.cred.credentials import CramMD5Credentials
        import base64
        self.factory.challengers = {b"CRAM-MD5": CramMD5Credentials}
        answer = base64.b64encode(b"alice 0123456789abcdef")
        p, t = self.connect()
        for _ in range(5):
            self.talk(p, t, b"AUTH CRAM-MD5")
            self.assertIn(b"-ERR [AUTH] wrong", self.talk(p, t, answer))
        self.talk(p, t, b"AUTH CRAM-MD5")
        self.assertIn(b"-ERR [AUTH] too many failed logins", self.talk(p, t, answer))
        self.assertIn(b"-ERR [AUTH] too many failed logins", self.talk(p, t, b"USER alice", b"PASS pw"))
        self.assertEqual(self.checker.checked, 0)   # CRAM-MD5 never reached the checker

    def test_one_throttle_for_all_protocols(self):
        from allworx.guards import LoginThrottle
        shared = LoginThrottle(self.clock)
        factory = Pop3Factory(self.office, self.store, self.checker, self.clock, throttle=shared)
        for _ in range(5):
            shared.failed(LAN, "alice")        # e.g. wrong SMTP AUTH or LDAP binds
        self.factory = factory
        p, t = self.connect()
        self.assertIn(b"-ERR [AUTH] too many", self.talk(p, t, b"USER Alice@example.com", b"PASS pw"))

    def test_connections_per_peer_are_bounded(self):
        from allworx.protocols.mail.pop3 import MAX_CONNECTIONS_PER_PEER
        held = [self.connect(peer=LAN) for _ in range(MAX_CONNECTIONS_PER_PEER)]
        self.assertTrue(all(t.value().startswith(b"+OK") for _, t in held))
        p, t = self.connect(peer=LAN)
        self.assertEqual(t.value(), b"-ERR [SYS/TEMP] too many connections from your address\r\n")
        self.assertTrue(t.disconnecting)
        p.connectionLost(None)
        p2, t2 = self.connect(peer="192.168.2.11")
        self.assertTrue(t2.value().startswith(b"+OK allworx POP3 ready"))
        held[0][0].connectionLost(None)        # one leaves: room again
        p3, t3 = self.connect(peer=LAN)
        self.assertTrue(t3.value().startswith(b"+OK allworx POP3 ready"))
        self.assertEqual(self.factory.peers.open_from(LAN), MAX_CONNECTIONS_PER_PEER)

    def test_the_cap_leaves_room_for_other_peers(self):
        from allworx.guards import PeerLimit
        self.factory.peers = PeerLimit(2, cap=5, reserve=1)
        for host in ("192.168.2.20", "192.168.2.21"):       # greedy hosts at their share
            for _ in range(2):
                self.assertTrue(self.connect(peer=host)[1].value().startswith(b"+OK"))
        p, t = self.connect(peer="192.168.2.22")            # a newcomer: the reserve
        self.assertTrue(t.value().startswith(b"+OK"))
        p, t = self.connect(peer="192.168.2.22")
        self.assertEqual(t.value(), b"-ERR [SYS/TEMP] too busy, try again later\r\n")
        self.assertTrue(t.disconnecting)
        p.connectionLost(None)
        self.assertEqual(self.factory.peers.total(), 5)


class PendingChecker(PlainChecker):
    """A PlainChecker whose answers wait until `answer()`: an argon2 check in a thread."""

    def __init__(self, passwords):
        PlainChecker.__init__(self, passwords)
        self.pending = []

    def requestAvatarId(self, creds):
        d = defer.Deferred()
        self.pending.append((PlainChecker.requestAvatarId(self, creds), d))
        return d

    def answer(self):
        for result, d in self.pending:
            result.chainDeferred(d)
        self.pending = []


class MailboxLockTests(unittest.TestCase):
    """An attack must not leave the real user with `-ERR [IN-USE]`."""

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        self.checker = PendingChecker({"alice": "pw"})
        self.factory = Pop3Factory(self.office, self.store, self.checker, self.clock)
        self.connect = Pop3Tests.connect.__get__(self)
        self.talk = Pop3Tests.talk.__get__(self)

    def log_in(self, peer=LAN):
        p, t = self.connect(peer)
        self.talk(p, t, b"USER alice", b"PASS pw")
        self.checker.answer()
        return p, t

    def test_a_login_that_completes_after_its_client_left_holds_no_lock(self):
        p, t = self.connect(peer="192.168.2.66")
        self.talk(p, t, b"USER alice", b"PASS pw")      # the right password, being checked
        p.connectionLost(None)                          # the client gives up
        self.checker.answer()
        self.assertEqual(self.factory.realm.in_use, set())
        p, t = self.log_in()
        self.assertIn(b"+OK Authentication succeeded", t.value())

    def test_sessions_that_did_not_log_in_hold_no_lock(self):
        held = []
        for n in range(10):
            p, t = self.connect(peer="192.168.2.66")
            self.talk(p, t, b"USER alice", b"PASS wrong%d" % n)
            self.checker.answer()
            held.append(p)
        p, t = self.connect(peer="192.168.2.66")
        self.talk(p, t, b"USER alice")
        held.append(p)
        self.assertEqual(self.factory.realm.in_use, set())
        p, t = self.log_in()
        self.assertIn(b"+OK Authentication succeeded", t.value())

    def test_the_lock_is_released_whatever_the_state(self):
        p, t = self.log_in()
        self.assertEqual(self.factory.realm.in_use, {"alice"})
        self.talk(p, t, b"DELE 1")
        p.connectionLost(None)                          # no QUIT
        self.assertEqual(self.factory.realm.in_use, set())

    def test_a_lock_whose_session_is_gone_is_released_by_the_next_login(self):
        p, t = self.log_in()
        p._onLogout = None          # its release lost, as if the session ended uncleanly
        p.connectionLost(None)
        self.assertEqual(self.factory.realm.in_use, {"alice"})
        p, t = self.log_in()
        self.assertIn(b"+OK Authentication succeeded", t.value())
        # A live session's lock still holds.
        p2, t2 = self.log_in(peer="192.168.2.11")
        self.assertIn(b"-ERR [IN-USE]", t2.value())

    def test_no_second_login_in_a_session(self):
        p, t = self.log_in()
        self.assertEqual(self.talk(p, t, b"USER alice"), b"-ERR already logged in\r\n")
        self.assertEqual(self.talk(p, t, b"PASS pw"), b"-ERR already logged in\r\n")


class Pop3MalformedTests(unittest.TestCase):
    """
    Malformed commands (issue 21, item 2): each gets `-ERR` with a short
    reason and one log line, never a traceback, never silence, also when
    pipelined behind a command still being answered.
    """

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        for n in range(3):
            self.store.deliver(["alice"], b"Subject: m%d\r\n\r\nbody\r\n" % n, "x@y.example")
        self.factory = Pop3Factory(self.office, self.store, PlainChecker({"alice": "pw"}), self.clock)
        self.connect = Pop3Tests.connect.__get__(self)
        self.talk = Pop3Tests.talk.__get__(self)
        self.logs = LogWatch(self)

    def login(self):
        p, t = self.connect()
        self.assertIn(b"+OK Authentication succeeded", self.talk(p, t, b"USER alice", b"PASS pw"))
        self.logs.clear()
        return p, t

    def assertRefused(self, p, t, line, reason=None):
        out = self.talk(p, t, line)
        self.assertTrue(out.startswith(b"-ERR ") and out.endswith(b"\r\n") and out.count(b"\r\n") == 1,
                        (line, out))
        if reason is not None:
            self.assertIn(reason, out, line)
        self.assertLess(len(out), 120, line)
        self.assertEqual(len(self.logs.lines("allworx.protocols.mail.pop3")), 1, (line, self.logs.events))
        self.logs.assert_no_traceback()
        self.logs.clear()
        self.assertFalse(t.disconnecting, line)
        return out

    def test_message_numbers_out_of_range(self):
        p, t = self.login()
        for command in (b"RETR", b"DELE", b"LIST", b"UIDL", b"TOP"):
            for number in (b"0", b"-1", b"4", b"+1", b"1_0", b"\xd9\xa1", b"9" * 30, b"9" * 5000):
                line = command + b" " + number + (b" 1" if command == b"TOP" else b"")
                self.assertRefused(p, t, line, b"no such message")
        self.assertEqual([m.seen for m in self.store.list_messages("alice")], [False] * 3)

    def test_arguments_not_numbers(self):
        p, t = self.login()
        for line in (b"RETR abc", b"DELE one", b"LIST 1.0", b"UIDL 0x1", b"TOP 1 x", b"TOP 1 -1",
                     b"RETR \xff", b"TOP \xff 1"):
            self.assertRefused(p, t, line)

    def test_wrong_number_of_arguments(self):
        p, t = self.login()
        for line in (b"RETR", b"RETR 1 2", b"DELE", b"DELE 1 1", b"LIST 1 2", b"UIDL 1 2", b"TOP 1",
                     b"TOP 1 2 3", b"STAT x", b"STAT 1 2", b"NOOP x", b"RSET x", b"LAST 1",
                     b"CAPA x", b"USER", b"RETR  1"):
            self.assertRefused(p, t, line, b"argument")
        out = self.talk(p, t, b"QUIT now")
        self.assertTrue(out.startswith(b"-ERR"), out)
        self.assertEqual(self.talk(p, t, b"NOOP"), b"+OK \r\n")

    def test_deleted_message(self):
        p, t = self.login()
        self.assertEqual(self.talk(p, t, b"DELE 2"), b"+OK \r\n")
        self.logs.clear()
        for line in (b"DELE 2", b"RETR 2", b"TOP 2 0", b"LIST 2", b"UIDL 2"):
            self.assertRefused(p, t, line, b"deleted")

    def test_before_login(self):
        p, t = self.connect()
        self.logs.clear()
        for line in (b"STAT", b"RETR 1", b"DELE 0", b"LIST", b"QUITX", b"RETR 1 2 3"):
            self.assertRefused(p, t, line, b"log in first")
        self.assertEqual(self.talk(p, t, b"PASS pw"), b"-ERR USER required before PASS\r\n")

    def test_unknown_and_non_utf8_commands(self):
        p, t = self.login()
        for line in (b"", b" ", b"XYZZY", b"\xff\xfe", b"US\xffER alice", b"RETR\x001", b"do_RETR 1",
                     b"\x00"):
            self.assertRefused(p, t, line)

    def test_overlong_line(self):
        p, t = self.login()
        t.clear()
        p.dataReceived(b"RETR " + b"1" * (p.MAX_LENGTH + 10))
        self.assertTrue(t.value().startswith(b"-ERR "), t.value())
        self.assertTrue(t.disconnecting)
        self.logs.assert_no_traceback()
        self.assertEqual(len(self.logs.lines("allworx.protocols.mail.pop3")), 1)

    def test_pipelined_behind_a_message_being_sent(self):
        """Commands queued while RETR sends are answered in order, bad ones with -ERR."""
        p, t = self.login()
        t.clear()
        p.dataReceived(b"RETR 1\r\nSTAT x\r\nDELE 0\r\nRETR 0\r\nRETR 1 2\r\n\xff\r\nNOOP\r\n")
        while t.producer is not None:
            t.producer.resumeProducing()
        lines = t.value().split(b"\r\n")
        answers = [l for l in lines if l.startswith((b"+OK", b"-ERR"))]
        self.assertEqual(len(answers), 7, t.value())
        self.assertTrue(answers[0].startswith(b"+OK"))
        self.assertTrue(all(a.startswith(b"-ERR") for a in answers[1:6]), answers)
        self.assertEqual(answers[6], b"+OK ")
        self.logs.assert_no_traceback()
        self.assertEqual(len(self.logs.lines("allworx.protocols.mail.pop3")), 5)
        self.assertEqual([m.seen for m in self.store.list_messages("alice")], [True, False, False])
        # The session still answers and times out as before.
        self.assertEqual(self.talk(p, t, b"NOOP"), b"+OK \r\n")
        self.clock.advance(p.timeOut)
        self.assertTrue(t.disconnecting)
