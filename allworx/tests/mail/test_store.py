"""Tests for allworx.protocols.mail.store and allworx.protocols.mail.durable: Maildirs, UIDs, voicemail counts."""

import os

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.interfaces import IMailStore
from allworx.protocols.mail import durable
from allworx.protocols.mail import store as store_module
from allworx.protocols.mail.relay import Outcome
from allworx.protocols.mail.store import MailStore, NoRecipients, is_voicemail, pop3_octets, to_lf
from allworx.office import MailboxChanged
from allworx.tests.mailtesting import FakeRelay, make_store

MSG = b"From: Someone <x@internet.example>\r\nSubject: Hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nhi\r\n"
VM = b"From: Voicemail <vm@example.com>\r\nX-Allworx-Voicemail: yes\r\nSubject: Voicemail\r\n\r\naudio\r\n"


class StoreTests(unittest.TestCase):

    def setUp(self):
        self.relay = FakeRelay(lambda d, r: Outcome("sent", "2.0.0", "250 ok"))
        self.office, self.store, self.queue, self.clock = make_store(self, relay=self.relay)
        self.events = []
        self.office.subscribe(MailboxChanged, self.events.append)

    def deliver(self, recipients, message=MSG, sender="x@internet.example"):
        results = []
        self.store.deliver(recipients, message, sender).addBoth(results.append)
        return results[0]

    def test_interface(self):
        verifyObject(IMailStore, self.store)

    def test_deliver_writes_maildir_with_lf(self):
        result = self.deliver(["alice"])
        self.assertEqual(result.users, ("alice",))
        [name] = os.listdir(os.path.join(self.store.maildir("alice"), "new"))
        self.assertTrue(name.startswith(result.id + ",W=%d" % len(MSG)), name)
        path = os.path.join(self.store.maildir("alice"), "new", name)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), to_lf(MSG))
        self.assertEqual(os.listdir(os.path.join(self.store.maildir("alice"), "tmp")), [])

    def test_list_read_and_info(self):
        self.deliver(["alice@example.com"])
        [info] = self.store.list_messages("alice")
        self.assertEqual(info.subject, "Hello")
        self.assertEqual(info.sender, "Someone <x@internet.example>")
        self.assertEqual(info.size, len(MSG))     # CRLF octets, as POP3 counts
        self.assertFalse(info.seen)
        self.assertFalse(info.voicemail)
        self.assertEqual(self.store.read_message("alice", info.uid), to_lf(MSG))

    def test_aliases_and_queue(self):
        result = self.deliver(["sales@example.com", "bob"])   # bob = bob bob@elsewhere.example
        self.assertEqual(sorted(result.users), ["alice", "bob"])
        self.assertEqual(result.external, ("bob@elsewhere.example",))
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.queue.entries()[0]["recipients"], ["bob@elsewhere.example"])

    def test_unknown_only_fails(self):
        f = self.deliver(["ghost"])
        self.assertIsInstance(f.value, NoRecipients)

    def test_size_from_name_or_file(self):
        self.deliver(["alice"])
        [info] = self.store.list_messages("alice")
        fresh = MailStore(self.office, self.store.writer, self.clock)
        self.assertEqual(fresh.sizes("alice"), [(info.uid, len(MSG))])
        # A message dropped in by hand (no size in its name) is counted.
        with open(os.path.join(self.store.maildir("alice"), "new", "1.hand"), "wb") as f:
            f.write(b"a\nb\n")
        fresh = MailStore(self.office, self.store.writer, self.clock)
        self.assertEqual(fresh.sizes("alice"), [(info.uid, len(MSG)), ("1.hand", 6)])

    def test_uids_stable_across_instances(self):
        self.deliver(["alice"])
        self.deliver(["alice"], MSG.replace(b"Hello", b"Second"))
        first = [m.uid for m in self.store.list_messages("alice")]
        again = MailStore(self.office, self.store.writer, self.clock)
        self.assertEqual([m.uid for m in again.list_messages("alice")], first)
        self.assertEqual([m.subject for m in again.list_messages("alice")], ["Hello", "Second"])

    def test_mark_seen_and_delete(self):
        self.deliver(["alice"])
        [info] = self.store.list_messages("alice")
        self.store.mark_seen("alice", info.uid)
        self.assertTrue(self.store.list_messages("alice")[0].seen)
        self.assertEqual(os.listdir(os.path.join(self.store.maildir("alice"), "cur")),
                         [info.uid + ":2,S"])
        fresh = MailStore(self.office, self.store.writer, self.clock)
        self.assertTrue(fresh.list_messages("alice")[0].seen)
        self.store.delete_message("alice", info.uid)
        self.assertEqual(self.store.list_messages("alice"), [])
        self.assertRaises(KeyError, self.store.read_message, "alice", info.uid)
        self.assertRaises(KeyError, self.store.delete_message, "alice", info.uid)

    def test_voicemail_counts_and_events(self):
        self.deliver(["alice"])                   # not voicemail: no event
        self.assertEqual(self.events, [])
        self.deliver(["alice"], VM, sender="")
        self.assertEqual(self.events, [MailboxChanged("alice", 1, 0)])
        vm = [m for m in self.store.list_messages("alice") if m.voicemail][0]
        self.store.mark_seen("alice", vm.uid)
        self.assertEqual(self.events[-1], MailboxChanged("alice", 0, 1))
        self.store.delete_message("alice", vm.uid)
        self.assertEqual(self.events[-1], MailboxChanged("alice", 0, 0))

    def test_voicemail_follows_alias_push_copy(self):
        """Voicemail for bob is kept locally and pushed out (guide 9.2)."""
        result = self.deliver(["bob"], VM, sender="")
        self.assertEqual(result.users, ("bob",))
        self.assertEqual(result.external, ("bob@elsewhere.example",))
        self.assertEqual(self.events, [MailboxChanged("bob", 1, 0)])

    def test_helpers(self):
        self.assertEqual(to_lf(b"a\r\nb\rc\nd"), b"a\nb\nc\nd")
        self.assertEqual(pop3_octets(b"a\nb\n"), 6)
        self.assertTrue(is_voicemail(b"Subject: x\nX-Allworx-Voicemail:  yes\n\nbody"))
        self.assertFalse(is_voicemail(b"Subject: x\n\nX-Allworx-Voicemail: yes\n"))


class DurableWriterTests(unittest.TestCase):

    def test_batches_while_busy(self):
        """Writes that arrive during a batch go together in the next one (one batch at a time by default)."""
        calls = []
        pending = []

        def fake_thread(f, groups):
            calls.append(len(groups))
            d = defer.Deferred()
            pending.append((d, f, groups))
            return d
        writer = durable.DurableWriter(fake_thread)
        base = self.mktemp()
        os.makedirs(base)
        files = [[durable.PendingFile(os.path.join(base, "t%d" % i), os.path.join(base, "f%d" % i), b"x")]
                 for i in range(5)]
        results = [writer.write(f) for f in files]
        self.assertEqual(calls, [1])
        d, f, groups = pending.pop(0)
        d.callback(f(groups))
        self.assertEqual(calls, [1, 4])
        d, f, groups = pending.pop(0)
        d.callback(f(groups))
        fired = []
        for r in results:
            r.addCallback(fired.append)
        self.assertEqual(fired, [None] * 5)
        self.assertEqual(sorted(os.listdir(base)), ["f0", "f1", "f2", "f3", "f4"])

    def test_parallel_batches(self):
        pending = []
        writer = durable.DurableWriter(lambda f, groups: pending.append(groups) or defer.Deferred(),
                                       parallel=2)
        for i in range(5):
            writer.write([durable.PendingFile("t%d" % i, "f%d" % i, b"x")])
        self.assertEqual([len(g) for g in pending], [1, 1])

    def test_failed_group_leaves_nothing(self):
        base = self.mktemp()
        os.makedirs(base)
        good = durable.PendingFile(os.path.join(base, "t1"), os.path.join(base, "f1"), b"a")
        bad = durable.PendingFile(os.path.join(base, "missing", "t2"), os.path.join(base, "f2"), b"b")
        results = durable.write_files([[good, bad], [durable.PendingFile(
            os.path.join(base, "t3"), os.path.join(base, "f3"), b"c")]])
        self.assertIsInstance(results[0], OSError)
        self.assertIsNone(results[1])
        self.assertEqual(os.listdir(base), ["f3"])

    def test_batch_in_phases(self):
        """
        Every file's data is fsynced before any name appears, and each
        directory is fsynced once, after the last rename: two journal commits
        a batch, not one a file.
        """
        base = self.mktemp()
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(base, sub))
        events = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd):
            events.append(("fsync", os.path.isdir("/proc/self/fd/%d" % fd)))
            return real_fsync(fd)

        def rename(a, b):
            events.append(("rename", os.path.basename(b)))
            return real_rename(a, b)
        self.patch(durable.os, "fsync", fsync)
        self.patch(durable.os, "rename", rename)
        groups = [[durable.PendingFile(os.path.join(base, "tmp", "m%d" % i),
                                       os.path.join(base, "new", "m%d" % i), b"m%d" % i)]
                  for i in range(3)]
        self.assertEqual(durable.write_files(groups), [None, None, None])
        self.assertEqual(events, [("fsync", False)] * 3 + [("rename", "m0"), ("rename", "m1"),
                                                         ("rename", "m2"), ("fsync", True)])
        self.assertEqual(sorted(os.listdir(os.path.join(base, "new"))), ["m0", "m1", "m2"])
        self.assertEqual(os.listdir(os.path.join(base, "tmp")), [])
        for i in range(3):
            path = os.path.join(base, "new", "m%d" % i)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), b"m%d" % i)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_failed_fsync_leaves_nothing_of_its_group(self):
        base = self.mktemp()
        os.makedirs(base)
        real_fsync = os.fsync
        calls = []

        def fsync(fd):
            calls.append(fd)
            if len(calls) == 2:
                raise OSError(5, "Input/output error")
            return real_fsync(fd)
        self.patch(durable.os, "fsync", fsync)
        results = durable.write_files([
            [durable.PendingFile(os.path.join(base, "t1"), os.path.join(base, "f1"), b"a")],
            [durable.PendingFile(os.path.join(base, "t2"), os.path.join(base, "f2"), b"b"),
             durable.PendingFile(os.path.join(base, "t3"), os.path.join(base, "f3"), b"c")]])
        self.assertIsNone(results[0])
        self.assertIsInstance(results[1], OSError)
        self.assertEqual(os.listdir(base), ["f1"])

    def test_failed_rename_leaves_nothing_of_its_group(self):
        base = self.mktemp()
        os.makedirs(base)
        results = durable.write_files([
            [durable.PendingFile(os.path.join(base, "t1"), os.path.join(base, "f1"), b"a"),
             durable.PendingFile(os.path.join(base, "t2"), os.path.join(base, "gone", "f2"), b"b")],
            [durable.PendingFile(os.path.join(base, "t3"), os.path.join(base, "f3"), b"c")]])
        self.assertIsInstance(results[0], OSError)
        self.assertIsNone(results[1])
        self.assertEqual(os.listdir(base), ["f3"])


class StoreIndexTests(unittest.TestCase):
    """
    A Maildir's index spares the next process a read of every message:
    counted (the message files opened), not timed.
    """

    def setUp(self):
        self.office, self.store, self.queue, self.clock = make_store(self)
        self.patch(store_module, "INDEX_SLACK", 2)
        for n in range(3):
            self.store.deliver(["alice"], MSG if n != 1 else VM, "x@internet.example")
        # One written by another program: no size in its name.
        path = os.path.join(self.store.maildir("alice"), "cur", "1.other:2,S")
        with open(path, "wb") as f:
            f.write(b"Subject: hand\n\nsix\n")
        index = os.path.join(self.store.maildir("alice"), store_module.INDEX)
        if os.path.exists(index):
            os.unlink(index)        # written by the scan the voicemail made: start without
        self.reads = []
        real = store_module._read_head
        self.patch(store_module, "_read_head", lambda p: self.reads.append(p) or real(p))

    def fresh(self):
        """The store of a process started again."""
        store = MailStore(self.office, self.store.writer, self.clock, self.queue)
        return store, (store.sizes("alice"), store.voicemail_counts("alice"))

    def test_the_next_process_reads_no_message_again(self):
        first, seen = self.fresh()
        self.assertEqual(len(self.reads), 4)
        self.assertTrue(os.path.exists(os.path.join(first.maildir("alice"), store_module.INDEX)))
        del self.reads[:]
        second, again = self.fresh()
        self.assertEqual(self.reads, [])
        self.assertEqual(again, seen)
        self.assertEqual(again[1], (1, 0))
        self.assertIn(("1.other", len(b"Subject: hand\r\n\r\nsix\r\n")), again[0])

    def test_only_messages_new_to_the_index_are_read(self):
        first, _ = self.fresh()
        self.store.deliver(["alice"], VM, "x@internet.example")
        del self.reads[:]
        second, (sizes, counts) = self.fresh()
        self.assertEqual(len(self.reads), 1)
        self.assertEqual((len(sizes), counts), (5, (2, 0)))

    def test_a_damaged_index_is_read_around(self):
        first, seen = self.fresh()
        path = os.path.join(first.maildir("alice"), store_module.INDEX)
        with open(path, "r+") as f:
            text = f.read()
            f.seek(0)
            f.write(text.replace(" v\n", " x x\n"))
        del self.reads[:]
        second, again = self.fresh()
        self.assertEqual(len(self.reads), 4)
        self.assertEqual(again, seen)
        with open(path) as f:
            self.assertEqual(f.read(), text)        # written again, right

    def test_a_message_gone_before_the_index_is_written_is_left_out(self):
        real = store_module._read_head
        gone = os.path.join(self.store.maildir("alice"), "cur", "1.other:2,S")

        def read_then_lose(path):
            head = real(path)
            if path == gone:
                os.unlink(path)         # deleted by another program meanwhile
            return head
        self.patch(store_module, "_read_head", read_then_lose)
        store = MailStore(self.office, self.store.writer, self.clock, self.queue)
        self.assertEqual(store.voicemail_counts("alice"), (1, 0))
        with open(os.path.join(store.maildir("alice"), store_module.INDEX)) as f:
            self.assertNotIn("1.other", f.read())
