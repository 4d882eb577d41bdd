"""
The Junk folder trains the spam filter (SPEC 18): IMAP COPY, MOVE and
APPEND into Junk give the user's trainers the message as spam; a message
moved or copied out of Junk into a folder other than Trash, as ham.
"""

from allworx.tests.mail import test_imap


class JunkTrainingTests(test_imap.ImapCase):

    def setUp(self):
        test_imap.ImapCase.setUp(self)
        self.trained = []
        self.factory.mailboxes.trainers.append(
            lambda user, data, is_spam: self.trained.append((user, data, is_spam)))

    def test_move_and_copy_into_junk_train_spam(self):
        p, t = self.select()
        self.assertIn(b"m1 OK", self.talk(p, t, b"m1 MOVE 1 Junk"))
        self.assertIn(b"c1 OK", self.talk(p, t, b"c1 UID COPY 2:3 Junk"))
        self.assertEqual([(u, s) for u, _, s in self.trained], [("alice", True)] * 3)
        self.assertEqual(sorted(d.split(b"Subject: ")[1][:2] for _, d, _ in self.trained),
                         [b"m0", b"m1", b"m2"])

    def test_append_into_junk_trains_spam_and_elsewhere_nothing(self):
        p, t = self.login()
        msg = b"Subject: buy now\r\n\r\ncheap\r\n"
        for tag, box in ((b"a1", b"Junk"), (b"a2", b"Drafts")):
            self.assertIn(b"+ ", self.talk(p, t, tag + b" APPEND %s {%d}" % (box, len(msg))))
            self.assertIn(tag + b" OK", self.talk(p, t, msg))
        self.assertEqual(self.trained, [("alice", msg, True)])

    def test_out_of_junk_trains_ham_but_not_into_trash(self):
        p, t = self.select()
        self.talk(p, t, b"m1 MOVE 1:3 Junk")
        self.trained[:] = []
        self.assertIn(b"s2 OK", self.talk(p, t, b"s2 SELECT Junk"))
        out = self.talk(p, t, b"m2 MOVE 1 INBOX", b"m3 MOVE 1 Trash", b"c4 COPY 1 Sent",
                        b"c5 COPY 1 Junk")
        for tag in (b"m2", b"m3", b"c4", b"c5"):
            self.assertIn(tag + b" OK", out)
        self.assertEqual([(u, s) for u, _, s in self.trained], [("alice", False)] * 2)

    def test_other_moves_train_nothing_and_a_failing_trainer_harms_nothing(self):
        def broken(user, data, is_spam):
            raise RuntimeError("boom")
        self.factory.mailboxes.trainers.insert(0, broken)
        p, t = self.select()
        out = self.talk(p, t, b"m1 MOVE 1 Trash", b"c1 COPY 1 Sent")
        self.assertIn(b"m1 OK", out)
        self.assertIn(b"c1 OK", out)
        self.assertEqual(self.trained, [])
        self.assertIn(b"m2 OK", self.talk(p, t, b"m2 MOVE 1 Junk"))
        self.assertEqual(len(self.trained), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
