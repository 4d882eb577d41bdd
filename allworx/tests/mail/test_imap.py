"""Tests for the IMAP server (allworx.protocols.mail.imap) over the store, on StringTransport."""

import base64
import os
import random
import re

from hypothesis import given, settings, strategies as st, HealthCheck
from twisted.internet import address, defer, interfaces
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import directlyProvides

from allworx.office import MailboxChanged
from allworx.protocols.mail.imap import MAX_SESSIONS_PER_USER, ImapFactory
from allworx.protocols.mail.imapstore import UIDLIST
from allworx.tests.mailtesting import PlainChecker, make_store

LAN = "192.168.2.10"
WAN = "198.51.100.10"
VM = (b"From: Voicemail <voicemail@corp.example>\r\nSubject: Voicemail from 201\r\n"
      b"X-Allworx-Voicemail: yes\r\n\r\nA message.\r\n")


def run_now(iterator):
    """twisted's scheduler, without the reactor: each step at once, waiting on Deferreds."""
    done = defer.Deferred()

    def step(_=None):
        for result in iterator:
            if isinstance(result, defer.Deferred) and not result.called:
                result.addCallback(step)
                return
        done.callback(None)
    step()
    return done


class TLSTransport(StringTransport):
    """A StringTransport that can start TLS (it only records that it did)."""

    tls_started = None

    def startTLS(self, options):
        self.tls_started = options


directlyProvides(TLSTransport, interfaces.ITLSTransport)


class ImapCase(unittest.TestCase):

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        self.events = []
        self.office.subscribe(MailboxChanged, self.events.append)
        for n in range(3):
            self.deliver(b"From: x@y.example\r\nSubject: m%d\r\n\r\nbody %d\r\n" % (n, n))
        self.factory = self.make_factory()

    def make_factory(self):
        return ImapFactory(self.office, self.store, PlainChecker({"alice": "pw", "bob": "pw"}),
                           self.clock, tls_options=object(), scheduler=run_now)

    def deliver(self, data, users=("alice",)):
        d = self.store.deliver(list(users), data, "x@y.example")
        self.assertTrue(d.called)
        return d

    def connect(self, peer=LAN, tls=True, factory=None):
        p = (factory or self.factory).buildProtocol(None)
        t = TLSTransport(peerAddress=address.IPv4Address("TCP", peer, 1143))
        interfaces_ = [interfaces.ITLSTransport]
        if tls:
            interfaces_.append(interfaces.ISSLTransport)
        directlyProvides(t, *interfaces_)
        p.makeConnection(t)
        self.addCleanup(lambda: p.connectionLost(None) if not p.gone else None)
        return p, t

    def talk(self, p, t, *lines):
        t.clear()
        for line in lines:
            p.dataReceived(line + b"\r\n")
            for _ in range(200):
                if t.producer is not None:
                    t.producer.resumeProducing()
                elif p.blocked is not None:
                    self.clock.advance(0.25)
                else:
                    break
        return t.value()

    def login(self, user=b"alice", peer=LAN):
        p, t = self.connect(peer)
        out = self.talk(p, t, b"a1 LOGIN " + user + b" pw")
        self.assertIn(b"a1 OK", out)
        return p, t

    def select(self, name=b"INBOX", user=b"alice"):
        p, t = self.login(user)
        out = self.talk(p, t, b"s1 SELECT " + name)
        self.assertIn(b"s1 OK [READ-WRITE]", out)
        return p, t


class GreetingAndLoginTests(ImapCase):

    def test_greeting_and_capabilities_before_and_after_starttls(self):
        p, t = self.connect(tls=False)
        greeting = t.value()
        self.assertTrue(greeting.startswith(b"* OK [CAPABILITY IMAP4rev1"), greeting)
        self.assertIn(b"STARTTLS", greeting)
        self.assertIn(b"LOGINDISABLED", greeting)
        self.assertNotIn(b"AUTH=PLAIN", greeting)
        out = self.talk(p, t, b"c1 LOGIN alice pw", b"c2 AUTHENTICATE PLAIN")
        self.assertIn(b"c1 NO [PRIVACYREQUIRED]", out)
        self.assertIn(b"c2 NO [PRIVACYREQUIRED]", out)
        out = self.talk(p, t, b"c3 STARTTLS")
        self.assertIn(b"c3 OK", out)
        self.assertIsNotNone(t.tls_started)
        out = self.talk(p, t, b"c4 CAPABILITY")
        self.assertNotIn(b"LOGINDISABLED", out)
        self.assertNotIn(b"STARTTLS", out)
        for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE", b"AUTH=PLAIN"):
            self.assertIn(cap, out)
        self.assertIn(b"c5 OK", self.talk(p, t, b"c5 LOGIN alice pw"))

    def test_commands_sent_with_starttls_are_dropped(self):
        p, t = self.connect(tls=False)
        out = self.talk(p, t, b"c1 STARTTLS\r\nc2 LOGIN alice pw")
        self.assertIn(b"c1 OK", out)
        self.assertNotIn(b"c2", out)
        self.assertIsNone(p.user)

    def test_authenticate_plain_and_wrong_password(self):
        p, t = self.connect()
        out = self.talk(p, t, b"a1 LOGIN alice wrong")
        self.assertIn(b"a1 NO [AUTHENTICATIONFAILED]", out)
        out = self.talk(p, t, b"a2 AUTHENTICATE PLAIN", base64.b64encode(b"\0alice\0pw"))
        self.assertIn(b"a2 OK", out)
        self.assertEqual(p.user, "alice")

    def test_wan_refused_unless_allowed(self):
        p, t = self.connect(peer=WAN)
        self.assertIn(b"* BYE", t.value())
        self.assertTrue(t.disconnecting)

    def test_sessions_per_user_bounded(self):
        for _ in range(MAX_SESSIONS_PER_USER):
            self.login()
        p, t = self.connect()
        self.assertIn(b"a1 NO [LIMIT]", self.talk(p, t, b"a1 LOGIN alice pw"))

    def test_failed_logins_share_the_throttle(self):
        p, t = self.connect()
        for n in range(12):
            out = self.talk(p, t, b"x%d LOGIN alice wrong" % n)
        self.assertIn(b"too many failed logins", out)


class FolderTests(ImapCase):

    def test_list_has_special_use_folders(self):
        p, t = self.login()
        out = self.talk(p, t, b'l1 LIST "" "*"')
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "INBOX"', out)
        for name, attr in ((b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"),
                           (b"Trash", b"\\Trash"), (b"Junk", b"\\Junk")):
            self.assertIn(b'* LIST (\\HasNoChildren %s) "/" "%s"' % (attr, name), out)
        self.assertTrue(os.path.isdir(os.path.join(self.store.maildir("alice"), ".Sent", "cur")))
        out = self.talk(p, t, b'l2 LIST "" "*" RETURN (SPECIAL-USE)')
        self.assertIn(b"\\Trash", out)
        out = self.talk(p, t, b'l3 LIST (SPECIAL-USE) "" "*"')
        self.assertNotIn(b"INBOX", out.split(b"l3 OK")[0])
        self.assertIn(b'"Junk"', out)
        out = self.talk(p, t, b'l4 LSUB "" "*"')
        self.assertIn(b'* LSUB () "/" "Sent"', out)
        out = self.talk(p, t, b'l5 NAMESPACE')
        self.assertIn(b'* NAMESPACE (("" "/")) NIL NIL', out)

    def test_create_rename_delete(self):
        p, t = self.login()
        out = self.talk(p, t, b"c1 CREATE Projects/2024", b'c2 LIST "" "%"', b'c3 LIST "" "*"')
        self.assertIn(b"c1 OK", out)
        self.assertIn(b'"Projects/2024"', out.split(b"c2 OK")[1])
        self.assertNotIn(b'"Projects/2024"', out.split(b"c2 OK")[0])
        self.assertIn(b"d1 NO", self.talk(p, t, b"d1 DELETE Trash"))
        self.assertIn(b"d2 NO", self.talk(p, t, b"d2 CREATE bad.name"))
        self.assertIn(b"d3 OK", self.talk(p, t, b"d3 RENAME Projects/2024 Projects/2025"))
        self.assertIn(b"d4 OK", self.talk(p, t, b"d4 DELETE Projects/2025"))

    def test_rename_takes_the_inferior_names_and_their_subscriptions_along(self):
        # RFC 3501 6.3.5 (this answered NO "mailbox has inferior hierarchical names")
        p, t = self.login()
        for line in (b"c1 CREATE Work/Sub/Deep", b"c2 SUBSCRIBE Work/Sub", b"c3 CREATE Other",
                     b"c4 APPEND Work/Sub {9}"):
            self.assertIn(b"OK", self.talk(p, t, line) if not line.startswith(b"c4") else
                          self.talk(p, t, line, b"Subject: "))
        self.assertIn(b"r1 NO mailbox already exists", self.talk(p, t, b"r1 RENAME Work Other"))
        self.assertIn(b"r2 OK", self.talk(p, t, b"r2 RENAME Work Projects"))
        out = self.talk(p, t, b'l1 LIST "" "*"', b'l2 LSUB "" "*"')
        listed, subscribed = out.split(b"l1 OK")
        for name in (b'"Projects"', b'"Projects/Sub"', b'"Projects/Sub/Deep"'):
            self.assertIn(name, listed)
        self.assertNotIn(b'"Work', listed)
        self.assertIn(b'"Projects/Sub"', subscribed)
        self.assertNotIn(b'"Work/Sub"', subscribed)
        self.assertIn(b"* STATUS \"Projects/Sub\" (MESSAGES 1)",
                      self.talk(p, t, b"s1 STATUS Projects/Sub (MESSAGES)"))
        self.assertIn(b"s2 OK", self.talk(p, t, b"s2 SELECT Projects/Sub/Deep"))
        self.assertIn(b"r3 NO mailbox is in use", self.talk(p, t, b"r3 RENAME Projects Elsewhere"))

    def test_select_and_examine(self):
        p, t = self.login()
        out = self.talk(p, t, b"s1 SELECT inbox")
        self.assertIn(b"* 3 EXISTS", out)
        self.assertIn(b"* OK [UIDVALIDITY ", out)
        self.assertIn(b"* OK [UIDNEXT 4]", out)
        self.assertIn(b"PERMANENTFLAGS (\\Answered", out)
        out = self.talk(p, t, b"s2 EXAMINE INBOX", b"s3 STORE 1 +FLAGS (\\Seen)")
        self.assertIn(b"s2 OK [READ-ONLY]", out)
        self.assertIn(b"s3 NO", out)
        self.assertIn(b"s4 NO", self.talk(p, t, b"s4 SELECT Nowhere"))
        self.assertIn(b"s5 BAD", self.talk(p, t, b"s5 FETCH 1 FLAGS"))   # not selected any more
        self.assertIn(b"* OK [UNSEEN 1] ", self.talk(p, t, b"s6 SELECT INBOX"))
        self.talk(p, t, b"s7 STORE 1:2 +FLAGS (\\Seen)")
        self.assertIn(b"* OK [UNSEEN 3] ", self.talk(p, t, b"s8 SELECT INBOX"))
        self.talk(p, t, b"s9 STORE 3 +FLAGS (\\Seen)")
        self.assertNotIn(b"UNSEEN", self.talk(p, t, b"s10 SELECT INBOX"))    # none: not said

    def test_status(self):
        p, t = self.login()
        out = self.talk(p, t, b"s1 STATUS INBOX (MESSAGES UNSEEN UIDNEXT)")
        self.assertIn(b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 3 UIDNEXT 4)', out)


class MessageTests(ImapCase):

    def test_fetch_and_peek(self):
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE ", out)
        self.assertIn(b"Subject: m0", out)
        self.assertIn(b"f1 OK", out)
        out = self.talk(p, t, b"f2 FETCH 2 BODY[]")
        self.assertIn(b"Subject: m1\r\n\r\nbody 1\r\n", out)
        self.assertIn(b"FLAGS (\\Seen)", out)
        self.assertTrue(self.store.list_messages("alice")[1].seen)
        out = self.talk(p, t, b"f3 UID FETCH 3 (FLAGS)")
        self.assertIn(b"* 3 FETCH (FLAGS () UID 3)", out)

    def test_a_store_of_many_messages_syncs_the_directory_once(self):
        """Flags of every message on disk before OK, with one fsync of cur/, not one a message."""
        from allworx.protocols.mail import store as store_module
        synced = []
        self.patch(store_module, "fsync_directory", synced.append)
        p, t = self.select()
        out = self.talk(p, t, b"s1 STORE 1:3 +FLAGS (\\Flagged)")
        self.assertIn(b"s1 OK", out)
        self.assertEqual(synced, [os.path.join(self.store.maildir("alice"), "cur")])
        names = sorted(os.listdir(os.path.join(self.store.maildir("alice"), "cur")))
        self.assertEqual([n.rsplit(",", 1)[1] for n in names], ["F", "F", "F"])

    def test_store_flags_persist_with_uids(self):
        p, t = self.select()
        out = self.talk(p, t, b"s1 STORE 1 +FLAGS (\\Flagged \\Answered)",
                        b"s2 UID STORE 2 +FLAGS.SILENT (\\Seen)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Answered \\Flagged))", out)
        self.assertNotIn(b"* 2 FETCH", out)
        names = sorted(os.listdir(os.path.join(self.store.maildir("alice"), "cur")))
        self.assertEqual([n.rsplit(",", 1)[1] for n in names], ["FR", "S"])
        # A new store and a new server: the same UIDs, flags and UIDVALIDITY.
        before = self.talk(p, t, b"v1 STATUS INBOX (UIDVALIDITY)")
        _, store2, _, _ = make_store(self, office=self.office, clock=self.clock)
        self.store = store2
        self.factory = self.make_factory()
        p2, t2 = self.select()
        out = self.talk(p2, t2, b"f1 FETCH 1:3 (UID FLAGS)", b"v2 STATUS INBOX (UIDVALIDITY)")
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Flagged))", out)
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS (\\Seen))", out)
        self.assertIn(b"* 3 FETCH (UID 3 FLAGS ())", out)
        self.assertEqual(re.findall(rb"UIDVALIDITY \d+", before), re.findall(rb"UIDVALIDITY \d+", out))

    def test_uid_expunge_only_the_named(self):
        p, t = self.select()
        self.talk(p, t, b"s1 STORE 1:2 +FLAGS (\\Deleted)")
        out = self.talk(p, t, b"e1 UID EXPUNGE 2")
        self.assertIn(b"* 2 EXPUNGE", out)
        self.assertNotIn(b"* 1 EXPUNGE", out)
        self.assertEqual(len(self.store.list_messages("alice")), 2)
        out = self.talk(p, t, b"e2 EXPUNGE")
        self.assertIn(b"* 1 EXPUNGE", out)
        self.assertEqual(len(self.store.list_messages("alice")), 1)

    def test_move_and_copy_with_copyuid(self):
        p, t = self.select()
        out = self.talk(p, t, b"m1 MOVE 1 Trash")
        self.assertIn(b"* OK [COPYUID ", out)
        self.assertIn(b"* 1 EXPUNGE", out)
        self.assertIn(b"m1 OK", out)
        out = self.talk(p, t, b"c1 UID COPY 2:3 Archive", b"c2 COPY 1 Sent")
        self.assertIn(b"c1 NO [TRYCREATE]", out)
        m = re.search(rb"c2 OK \[COPYUID (\d+) 2 1\]", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(len(self.store.list_messages("alice")), 2)
        out = self.talk(p, t, b"s1 STATUS Trash (MESSAGES)", b"s2 STATUS Sent (MESSAGES)")
        self.assertIn(b'"Trash" (MESSAGES 1)', out)
        self.assertIn(b'"Sent" (MESSAGES 1)', out)

    def test_append_with_appenduid(self):
        p, t = self.login()
        msg = b"Subject: draft\r\n\r\nhello\r\n"
        out = self.talk(p, t, b"a1 APPEND Drafts (\\Draft \\Seen) {%d}" % len(msg))
        self.assertIn(b"+ ", out)
        out = self.talk(p, t, msg)
        self.assertRegex(out, rb"a1 OK \[APPENDUID \d+ 1\]")
        [name] = os.listdir(os.path.join(self.store.maildir("alice"), ".Drafts", "cur"))
        self.assertTrue(name.endswith(":2,DS"), name)
        out = self.talk(p, t, b"a2 APPEND Nowhere {3}")
        self.assertIn(b"a2 NO [TRYCREATE]", self.talk(p, t, b"abc"))

    def test_append_keeps_the_date_asked_as_the_internal_date(self):
        # as mbsync or imapsync moving an old mailbox here: the dates were all "now" before
        p, t = self.login()
        msg = b"Subject: old\r\n\r\nfrom 2019\r\n"
        for box in (b"INBOX", b"Drafts"):
            self.talk(p, t, b'a1 APPEND %s (\\Seen) " 5-Mar-2019 09:30:00 +0100" {%d}' % (box, len(msg)))
            self.assertIn(b"a1 OK [APPENDUID", self.talk(p, t, msg))
        self.assertIn(b"OK", self.talk(p, t, b"s1 SELECT Drafts"))
        self.assertIn(b'* 1 FETCH (INTERNALDATE "05-Mar-2019 08:30:00 +0000")',
                      self.talk(p, t, b"f1 FETCH 1 INTERNALDATE"))
        self.assertIn(b"OK", self.talk(p, t, b"s2 SELECT INBOX"))
        self.assertIn(b'* 4 FETCH (INTERNALDATE "05-Mar-2019 08:30:00 +0000")',
                      self.talk(p, t, b"f2 FETCH 4 INTERNALDATE"))
        self.assertIn(b"* SEARCH 4\r\n", self.talk(p, t, b"q1 SEARCH BEFORE 6-Mar-2019"))
        out = self.talk(p, t, b'a2 APPEND INBOX "32-Foo-2019 09:30:00 +0100" {3}', b"abc")
        self.assertIn(b"a2 BAD", out)
        self.assertIn(b"not a date-time", out)

    def test_crlf_line_ends_whatever_the_file_has(self):
        from allworx.protocols.mail.imapmessage import _crlf
        self.assertEqual(_crlf(b"a\nb\n\nc\n"), b"a\r\nb\r\n\r\nc\r\n")
        self.assertEqual(_crlf(b"a\r\nb\nc\r\n"), b"a\r\nb\r\nc\r\n")
        self.assertEqual(_crlf(b"a\rb\r\n"), b"a\rb\r\n")
        self.assertEqual(_crlf(b""), b"")

    def test_fetch_of_a_file_written_with_crlf(self):
        path = os.path.join(self.store.maildir("alice"), "cur", "1.M1.other,W=22:2,")
        with open(path, "wb") as f:
            f.write(b"Subject: crlf\r\n\r\nx\ry\r\n")
        self.store.forget("alice")
        p, t = self.select()
        out = self.talk(p, t, b"f1 FETCH 1:* BODY.PEEK[]")
        self.assertIn(b"BODY[] {22}\r\nSubject: crlf\r\n\r\nx\ry\r\n)", out)

    def test_search(self):
        p, t = self.select()
        self.talk(p, t, b"s1 STORE 2 +FLAGS (\\Seen)")
        self.assertIn(b"* SEARCH 1 3", self.talk(p, t, b"q1 SEARCH UNSEEN"))
        self.assertIn(b"* SEARCH 2", self.talk(p, t, b"q2 UID SEARCH SEEN"))


class ChangeTests(ImapCase):

    def test_idle_hears_a_delivery_at_once(self):
        p, t = self.select()
        self.assertIn(b"+ idling", self.talk(p, t, b"i1 IDLE"))
        t.clear()
        self.deliver(b"Subject: new\r\n\r\nnew\r\n")
        self.assertEqual(t.value(), b"* 4 EXISTS\r\n")
        self.assertIn(b"i1 OK", self.talk(p, t, b"DONE"))

    def test_two_sessions_see_each_others_changes(self):
        p1, t1 = self.select()
        p2, t2 = self.select()
        self.talk(p1, t1, b"s1 STORE 1 +FLAGS (\\Flagged \\Deleted)", b"e1 EXPUNGE")
        self.talk(p1, t1, b"s2 STORE 1 +FLAGS (\\Seen)")
        out = self.talk(p2, t2, b"f1 FETCH 1 (FLAGS)")
        self.assertNotIn(b"EXPUNGE", out)            # not during FETCH
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS (\\Seen))", out)
        out = self.talk(p2, t2, b"n1 NOOP")
        self.assertIn(b"* 1 EXPUNGE", out)
        msg = b"Subject: x\r\n\r\nx\r\n"
        self.talk(p2, t2, b"a1 APPEND INBOX {%d}" % len(msg))
        self.talk(p2, t2, msg)
        self.assertIn(b"* 3 EXISTS", self.talk(p1, t1, b"n2 NOOP"))

    def test_pop3_and_phone_deletions_show(self):
        p, t = self.select()
        self.talk(p, t, b"i1 IDLE")
        t.clear()
        uid = self.store.list_messages("alice")[1].uid
        self.store.delete_message("alice", uid)
        self.assertEqual(t.value(), b"* 2 EXPUNGE\r\n")
        self.store.mark_seen("alice", self.store.list_messages("alice")[0].uid)
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Seen))", t.value())

    def test_voicemail_seen_over_imap_drops_message_waiting(self):
        self.deliver(VM)
        self.assertEqual(self.events[-1], MailboxChanged("alice", 1, 0))
        p, t = self.select()
        out = self.talk(p, t, b"s1 STORE 4 +FLAGS (\\Seen)")
        self.assertIn(b"s1 OK", out)
        self.assertEqual(self.events[-1], MailboxChanged("alice", 0, 1))
        self.talk(p, t, b"s2 STORE 4 +FLAGS (\\Deleted)", b"e1 EXPUNGE")
        self.assertEqual(self.events[-1], MailboxChanged("alice", 0, 0))
        self.assertEqual(self.store.voicemail_counts("alice"), (0, 0))

    def test_a_change_costs_each_view_the_change_not_the_mailbox(self):
        for n in range(300):
            self.deliver(b"Subject: bulk %d\r\n\r\nx\r\n" % n)
        looked = []

        class Counting(dict):
            def get(self, key, default=None):
                looked.append(key)
                return dict.get(self, key, default)
        sessions = [self.select() for _ in range(3)]
        for p, t in sessions:
            p.view.known = Counting(p.view.known)
            self.talk(p, t, b"i1 IDLE")
            t.clear()
        self.deliver(b"Subject: new\r\n\r\nnew\r\n")
        uid = self.store.list_messages("alice")[5].uid
        self.store.mark_seen("alice", uid)
        for p, t in sessions:
            self.assertEqual(t.value(), b"* 304 EXISTS\r\n* 6 FETCH (UID 6 FLAGS (\\Seen))\r\n")
        self.assertLessEqual(len(looked), 3, "each view looked at %d messages" % len(looked))

    def test_views_told_long_ago_still_hear_everything(self):
        import allworx.protocols.mail.imapstore as imapstore
        self.patch(imapstore, "CHANGE_LOG", 4)
        for n in range(6):
            self.deliver(b"Subject: more %d\r\n\r\nx\r\n" % n)
        p1, t1 = self.select()
        p2, t2 = self.select()
        self.talk(p1, t1, b"s1 STORE 1:8 +FLAGS (\\Flagged)", b"s2 STORE 2 +FLAGS (\\Deleted)",
                  b"e1 EXPUNGE")
        folder = p2.view.folder
        self.assertLess(p2.view.told, folder.log_start)     # the log moved on without it
        out = self.talk(p2, t2, b"f1 FETCH 1 (FLAGS)")
        self.assertNotIn(b"EXPUNGE", out)
        self.assertEqual(out.count(b"FLAGS (\\Flagged)"), 8, out)
        out = self.talk(p2, t2, b"n1 NOOP")
        self.assertIn(b"* 2 EXPUNGE", out)
        self.talk(p1, t1, b"s3 STORE 1 -FLAGS (\\Flagged)")
        out = self.talk(p2, t2, b"n2 NOOP")
        self.assertTrue(out.startswith(b"* 1 FETCH (UID 1 FLAGS ())\r\nn2 OK "), out)

    def test_the_change_log_and_a_full_look_agree(self):
        rng = random.Random(17)
        for trial in range(10):
            (pa, _), (pb, _) = self.select(), self.select()
            for step in range(40):
                msgs = self.store.list_messages("alice")
                op = rng.randrange(5) if msgs else 0
                if op == 0:
                    self.deliver(b"Subject: r\r\n\r\nx\r\n")
                elif op == 1:
                    self.store.mark_seen("alice", rng.choice(msgs).uid)
                elif op == 2:
                    self.store.delete_message("alice", rng.choice(msgs).uid)
                elif op == 3:
                    self.store.set_flags("alice", rng.choice(msgs).uid, rng.choice(["", "F", "FS", "R"]))
                expunges = rng.random() < 0.5
                pb.view.told = -1       # older than any log: b looks at every message
                self.assertEqual(pa.view.changes(expunges), pb.view.changes(expunges), (trial, step))
                self.assertEqual(pa.view.seq, pb.view.seq)
            pa.connectionLost(None)
            pb.connectionLost(None)

    def test_uidlist_written_before_exists(self):
        p, t = self.select()
        self.deliver(b"Subject: new\r\n\r\nnew\r\n")
        with open(os.path.join(self.store.maildir("alice"), UIDLIST)) as f:
            lines = f.read().splitlines()
        # The new UID appended (the first line's UIDNEXT is only a floor now).
        name = self.store.list_messages("alice")[-1].uid
        self.assertEqual(lines[-1], "4 " + name)
        self.assertEqual(len(lines), 5)
        again = self.fresh_inbox()
        self.assertEqual((again.uidnext, again.uids[name]), (5, 4))

    def fresh_inbox(self):
        from allworx.protocols.mail.imapstore import Folder, InboxStorage
        return Folder("INBOX", InboxStorage(self.store, "alice"), self.clock.seconds() + 1000)

    def test_uidlist_appended_then_compacted(self):
        import allworx.protocols.mail.imapstore as imapstore
        self.patch(imapstore, "COMPACT_AFTER", 3)
        path = os.path.join(self.store.maildir("alice"), UIDLIST)
        p, t = self.select()
        validity = p.view.folder.uidvalidity
        inode = os.stat(path).st_ino
        for n in range(5):
            self.deliver(b"Subject: n%d\r\n\r\nx\r\n" % n)
        self.assertEqual(os.stat(path).st_ino, inode)       # appended, not replaced
        with open(path) as f:
            self.assertEqual(len(f.read().splitlines()), 9)
        # Expunge the highest four: their lines stay until they outnumber the rest.
        for info in self.store.list_messages("alice")[-4:]:
            self.store.delete_message("alice", info.uid)
        self.assertEqual(os.stat(path).st_ino, inode)
        again = self.fresh_inbox()
        self.assertEqual((again.uidvalidity, again.uidnext), (validity, 9))   # never back
        self.assertEqual(sorted(again.uids.values()), [1, 2, 3, 4])
        self.store.delete_message("alice", self.store.list_messages("alice")[-1].uid)
        self.assertNotEqual(os.stat(path).st_ino, inode)    # compacted
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "V %d 9" % validity)
        self.assertEqual([line.split()[0] for line in lines[1:]], ["1", "2", "3"])
        self.deliver(b"Subject: after\r\n\r\nx\r\n")
        self.talk(p, t, b"n1 NOOP")
        self.assertIn(b"* 4 FETCH (UID 9)", self.talk(p, t, b"f1 UID FETCH 9 (UID)"))

    def test_torn_uidlist_line_dropped(self):
        p, t = self.select()
        path = os.path.join(self.store.maildir("alice"), UIDLIST)
        p.connectionLost(None)
        with open(path, "a") as f:
            f.write("4 17000")          # a crash in the middle of an append
        self.deliver(b"Subject: after\r\n\r\nx\r\n")
        again = self.fresh_inbox()
        name = self.store.list_messages("alice")[-1].uid
        self.assertEqual(again.uids[name], 4)
        with open(path) as f:
            text = f.read()
        self.assertTrue(text.endswith("4 %s\n" % name), text)
        self.assertEqual(len(text.splitlines()), 5)
        self.assertEqual(self.fresh_inbox().uids[name], 4)


class IdleFolderTests(ImapCase):
    """
    A SELECT of a folder left a moment ago takes it back loaded (no uidlist
    read, no Maildir listing, no per-message copy for the view), unless
    something changed it on disk meanwhile. Counted, not timed.
    """

    def count_loads(self):
        import allworx.protocols.mail.imapstore as imapstore
        loads = []
        real = imapstore.Folder._load

        def counting(folder, now):
            loads.append(folder.name)
            return real(folder, now)
        self.patch(imapstore.Folder, "_load", counting)
        return loads

    def leave(self, p, t):
        self.talk(p, t, b"z1 LOGOUT")
        p.connectionLost(None)

    def test_select_again_takes_the_folder_back(self):
        p, t = self.select()
        self.leave(p, t)
        loads = self.count_loads()
        listed = []
        real = self.store.flags
        self.patch(self.store, "flags", lambda user: listed.append(user) or real(user))
        p, t = self.select()
        p2, t2 = self.select()
        self.assertEqual((loads, listed), ([], []))
        self.assertIs(p.view.seq, p2.view.seq)          # one snapshot, shared
        out = self.talk(p, t, b"s2 STORE 1 +FLAGS (\\Seen)")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Seen))", out)
        self.assertIsNot(p.view.known, p2.view.known)   # copied on its own change
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS (\\Seen))", self.talk(p2, t2, b"n1 NOOP"))

    def test_deliveries_while_idle_are_seen(self):
        p, t = self.select()
        self.leave(p, t)
        self.deliver(b"Subject: new\r\n\r\nnew\r\n")
        self.store.delete_message("alice", self.store.list_messages("alice")[0].uid)
        loads = self.count_loads()
        p, t = self.login()
        out = self.talk(p, t, b"s1 SELECT INBOX")
        self.assertEqual(loads, [])
        self.assertIn(b"* 3 EXISTS", out)
        self.assertIn(b"* OK [UIDNEXT 5]", out)
        self.assertIn(b"* 3 FETCH (UID 4)", self.talk(p, t, b"f1 FETCH 3 UID"))

    def test_a_uidlist_changed_on_disk_is_read_again(self):
        p, t = self.select()
        validity = p.view.folder.uidvalidity
        self.leave(p, t)
        path = os.path.join(self.store.maildir("alice"), UIDLIST)
        with open(path) as f:
            lines = f.read().splitlines()
        with open(path, "w") as f:
            f.write("V %d 40\n" % (validity + 1) + "".join(
                "%d %s\n" % (10 + i, line.split()[1]) for i, line in enumerate(lines[1:])))
        loads = self.count_loads()
        p, t = self.login()
        out = self.talk(p, t, b"s1 SELECT INBOX")
        self.assertEqual(loads, ["INBOX"])
        self.assertIn(b"* OK [UIDVALIDITY %d]" % (validity + 1), out)
        self.assertIn(b"* OK [UIDNEXT 40]", out)

    def test_a_subfolder_changed_on_disk_is_listed_again(self):
        p, t = self.select(b"Sent")
        self.assertIn(b"* 0 EXISTS", t.value())
        self.leave(p, t)
        sent = os.path.join(self.store.maildir("alice"), ".Sent")
        with open(os.path.join(sent, "new", "1700000000.M1.elsewhere"), "wb") as f:
            f.write(b"Subject: by another program\n\nx\n")
        p, t = self.login()
        self.assertIn(b"* 1 EXISTS", self.talk(p, t, b"s1 SELECT Sent"))

    def test_status_counts_unseen_once_per_change(self):
        p, t = self.login()
        out = self.talk(p, t, b"s1 STATUS INBOX (UNSEEN)")
        self.assertIn(b"(UNSEEN 3)", out)
        folder = self.factory.mailboxes.folder("alice", "INBOX")
        walks = []

        class Counting(dict):
            def values(self):
                walks.append(1)
                return dict.values(self)
        folder.flags = Counting(folder.flags)
        self.assertIn(b"(UNSEEN 3)", self.talk(p, t, b"s2 STATUS INBOX (UNSEEN)"))
        self.assertEqual(walks, [])
        self.store.mark_seen("alice", self.store.list_messages("alice")[0].uid)
        self.assertIn(b"(UNSEEN 2)", self.talk(p, t, b"s3 STATUS INBOX (UNSEEN)"))

    def test_idle_folders_are_bounded(self):
        import allworx.protocols.mail.imapstore as imapstore
        self.patch(imapstore, "IDLE_FOLDERS", 2)
        for name in (b"Sent", b"Drafts", b"Trash"):
            p, t = self.select(name)
            self.leave(p, t)
        self.assertEqual(list(self.factory.mailboxes.idle), [("alice", "Drafts"), ("alice", "Trash")])
        self.patch(imapstore, "IDLE_MESSAGES", 2)
        p, t = self.select()
        self.leave(p, t)        # 3 messages: more than may stay
        self.assertEqual(list(self.factory.mailboxes.idle), [])


class BadInputTests(ImapCase):

    def test_unknown_and_wrong_state(self):
        p, t = self.connect()
        out = self.talk(p, t, b"x1 FROB", b"x2 SELECT INBOX", b"x3 FETCH 1 FLAGS", b"x4", b"")
        self.assertIn(b"x1 BAD", out)
        self.assertIn(b"x2 BAD", out)
        self.assertIn(b"x3 BAD", out)
        self.assertIn(b"x4 BAD", out)
        self.assertFalse(t.disconnecting)

    def test_huge_literals(self):
        p, t = self.login()
        out = self.talk(p, t, b"a1 APPEND INBOX {99999999999}")
        self.assertIn(b"a1 NO [TOOBIG]", out)
        self.assertNotIn(b"+ ", out)
        out = self.talk(p, t, b"a2 LOGIN {999999}")
        self.assertIn(b"a2 BAD", out)
        out = self.talk(p, t, b"a3 SELECT {70000}")
        self.assertIn(b"a3 BAD", out)
        self.assertIn(b"a4 OK", self.talk(p, t, b"a4 NOOP"))

    def test_deep_nesting_and_long_lines(self):
        p, t = self.select()
        out = self.talk(p, t, b"n1 SEARCH " + b"(" * 500 + b"ALL" + b")" * 500)
        self.assertIn(b"n1 BAD", out)
        out = self.talk(p, t, b"n2 NOOP " + b"x" * 70000)
        self.assertIn(b"* BYE line too long", out)
        self.assertTrue(t.disconnecting)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.one_of(
        st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.sampled_from([b"FETCH", b"UID", b"STORE", b"SEARCH", b"LIST", b"(", b")", b"[", b"]",
                         b"{3}", b'"', b"*", b"1:*", b"BODY[", b"FLAGS", b"\\Seen", b"+FLAGS",
                         b"MOVE", b"COPY", b"APPEND", b"SELECT", b"INBOX", b"IDLE", b"EXPUNGE",
                         b"STATUS", b"<0.5>", b"HEADER.FIELDS"])), max_size=8))
    def test_parser_never_crashes(self, words):
        p, t = self.select()
        line = b"h1 " + b" ".join(words)
        self.talk(p, t, line)
        out = self.talk(p, t, b"DONE", b"}", b"z9 NOOP")
        # Whatever came before, the session still answers (or was closed cleanly).
        self.assertTrue(b"z9 " in out or t.disconnecting or b"+ " in out, (line, out))
        self.assertEqual(self.flushLoggedErrors(), [])
        p.connectionLost(None)
