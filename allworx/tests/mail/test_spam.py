"""
Tests for the content filter (allworx.protocols.mail.spam): the verdicts
from rules, authentication results and Bayes against the configured
thresholds (read live), attachments and viruses refused, rspamd's verdict
used and its absence falling back, clamd down accepted and logged.
"""

import random

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.python import failure
from twisted.trial import unittest

from allworx.protocols.mail import contentrules
from allworx.protocols.mail.bayes import BayesFilter
from allworx.protocols.mail.clamd import ClamdError
from allworx.protocols.mail.rspamd import RspamdError
from allworx.protocols.mail.spam import ContentFilter, bayes_rule
from allworx.protocols.mail.verdicts import ContentVerdict, MessageFacts
from allworx.tests.mail.test_bayes import HAM_WORDS, SPAM_WORDS, sample
from allworx.tests.mailtesting import make_office, sync_thread

GOOD = (b"From: Alice <alice@example.org>\r\nTo: bob@corp.example\r\nSubject: Lunch\r\n"
        b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
        b"Shall we meet at noon?\r\n")
EXE = (b"From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
       b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n"
       b'Content-Disposition: attachment; filename="update.exe"\r\n\r\nxx\r\n--b--\r\n')


def facts(users=("alice",), spf="pass", dkim=(("example.org", "s", "pass"),), dmarc="pass"):
    return MessageFacts("198.51.100.7", "mx.example.org", "alice@example.org",
                        tuple(u + "@corp.example" for u in users), tuple(users), spf, dkim, dmarc, "")


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], failure.Failure):
        out[0].raiseException()
    return out[0]


class FakeClamd:
    def __init__(self, outcome):
        self.outcome = outcome
        self.scanned = []

    def __call__(self, reactor, path):
        self.path = path
        return self

    def scan(self, data):
        self.scanned.append(data)
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome)


class FakeRspamd(FakeClamd):
    def __call__(self, reactor, host, port):
        self.address = (host, port)
        return self

    def check(self, data, facts):
        return self.scan(data)


class FilterCase(unittest.TestCase):

    def setUp(self):
        self.office = make_office(self)
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.clamd = FakeClamd(None)
        self.rspamd = FakeRspamd(None)
        self.filter = ContentFilter(self.office, self.clock, defer_to_thread=sync_thread,
                                    rspamd_client=self.rspamd, clamd_client=self.clamd)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def check(self, raw, f=None):
        return result(self.filter.check(raw, f if f is not None else facts()))

    def log_text(self):
        return " ".join(str(e.get("why", "")) + e.get("log_format", "") for e in self.logged)


class ThresholdTests(FilterCase):

    def test_clean_message_accepted_with_status(self):
        v = self.check(GOOD)
        self.assertIsInstance(v, ContentVerdict)
        self.assertEqual((v.action, v.score, v.reply), ("accept", -0.5, None))
        self.assertEqual(v.status_header, "No, score=-0.5 required=5.0 tests=DMARC_PASS")

    def test_auth_failures_and_rules_go_to_junk_then_reject_as_configured(self):
        raw = GOOD.replace(b"Lunch", b"YOU WON THE BIG PRIZE!!!")      # caps 1 + exclaim 1
        bad = facts(spf="fail", dkim=(), dmarc="fail")                  # 3 + 2
        v = self.check(raw, bad)
        self.assertEqual((v.action, v.score), ("junk", 7.0))
        self.assertTrue(v.status_header.startswith("Yes, score=7.0 required=5.0 tests=SPF_FAIL,"),
                        v.status_header)
        self.assertEqual({r[0] for r in v.rules}, {"SPF_FAIL", "DMARC_FAIL", "SUBJ_ALL_CAPS",
                                                   "SUBJ_EXCLAIM"})
        # The thresholds are read at each check.
        self.office.update_settings("mail", {"spam_threshold": "8", "spam_reject": "9"})
        self.assertEqual(self.check(raw, bad).action, "accept")
        self.office.update_settings("mail", {"spam_threshold": "3", "spam_reject": "6.5"})
        v = self.check(raw, bad)
        self.assertEqual(v.action, "reject")
        self.assertEqual(v.reply[:2], (550, "5.7.1"))
        self.assertIn("7.0", v.reply[2])

    def test_gtube_is_rejected(self):
        v = self.check(GOOD.replace(b"noon?", contentrules.GTUBE.encode()))
        self.assertEqual(v.action, "reject")

    def test_a_fault_in_the_filter_accepts_and_logs(self):
        self.patch(contentrules, "TEXT_LIMIT", None)     # any use of it breaks
        v = self.check(GOOD)
        self.assertEqual(v.action, "accept")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class BayesTermTests(FilterCase):

    def train(self, user, n=6, seed=5):
        rng = random.Random(seed)
        for _ in range(n):
            for words, spam in ((SPAM_WORDS, True), (HAM_WORDS, False)):
                raw = b"From: x@y.example\r\nSubject: %s\r\n\r\n%s\r\n" % (
                    sample(words, rng, 3).encode(), sample(words, rng, 30).encode())
                self.filter.train(user, raw, spam)

    def test_bayes_rule_bands(self):
        self.assertEqual(bayes_rule(0.995)[:2], ("BAYES_99", 4.5))
        self.assertEqual(bayes_rule(0.95)[:2], ("BAYES_90", 2.5))
        self.assertIsNone(bayes_rule(0.5))
        self.assertEqual(bayes_rule(0.05)[:2], ("BAYES_05", -1.5))
        self.assertEqual(bayes_rule(0.001)[:2], ("BAYES_00", -3.0))
        self.assertIsNone(bayes_rule(None))

    def test_trained_users_score_and_untrained_do_not(self):
        spammy = GOOD.replace(b"Lunch", b"cheap pills winner").replace(
            b"Shall we meet at noon?", b"claim your lottery prize casino offer bitcoin urgent")
        hammy = GOOD.replace(b"Lunch", b"meeting agenda").replace(
            b"Shall we meet at noon?", b"the project report and budget review minutes")
        self.assertEqual(self.check(spammy).score, -0.5)       # alice not trained yet
        self.train("alice")
        v = self.check(spammy)
        self.assertIn("BAYES_99", [r[0] for r in v.rules])
        self.assertEqual(v.score, 4.0)
        self.assertIn("BAYES_00", [r[0] for r in self.check(hammy).rules])
        # bob is not trained: alice's opinion alone counts; carol trained the other way round.
        self.assertIn("BAYES_99", [r[0] for r in self.check(spammy, facts(users=("alice", "bob"))).rules])
        rng = random.Random(9)
        for _ in range(6):
            for words, spam in ((SPAM_WORDS, False), (HAM_WORDS, True)):
                self.filter.train("carol", b"Subject: x\r\n\r\n" + sample(words, rng, 30).encode(), spam)
        v = self.check(spammy, facts(users=("alice", "carol")))
        self.assertFalse([r for r in v.rules if r[0].startswith("BAYES")], v.rules)

    def test_training_is_saved_on_stop(self):
        self.train("alice")
        self.assertEqual(result(self.filter.stop()), None)
        again = BayesFilter(self.filter.bayes.mail_dir, self.clock, sync_thread)
        data = result(again.data("alice"))
        self.assertEqual((data.nspam, data.nham), (6, 6))


class RefusalTests(FilterCase):

    def test_attachment_refused_whatever_the_score(self):
        v = self.check(EXE)
        self.assertEqual(v.action, "reject")
        self.assertEqual(v.reply[:2], (552, "5.7.1"))
        self.assertIn("update.exe", v.reply[2])
        self.assertEqual(self.clamd.scanned, [])

    def test_virus_found_refused(self):
        self.office.update_settings("mail", {"clamd": "/run/clamav/clamd.ctl"})
        self.clamd.outcome = "Eicar-Test-Signature"
        v = self.check(GOOD)
        self.assertEqual(self.clamd.path, "/run/clamav/clamd.ctl")
        self.assertEqual(self.clamd.scanned, [GOOD])
        self.assertEqual(v.reply, (552, "5.7.1", "virus found: Eicar-Test-Signature"))

    def test_clamd_down_accepts_and_says_so(self):
        self.office.update_settings("mail", {"clamd": "/run/clamav/clamd.ctl"})
        self.clamd.outcome = ClamdError("cannot reach clamd")
        v = self.check(GOOD)
        self.assertEqual(v.action, "accept")
        self.assertIn("NOT scanned", self.log_text())
        self.assertIn("cannot reach clamd", self.log_text())


class RspamdUseTests(FilterCase):

    def test_rspamd_verdict_replaces_the_score(self):
        self.office.update_settings("mail", {"rspamd": "127.0.0.1:11333"})
        self.rspamd.outcome = ContentVerdict("junk", 9.0, (("X", 9.0, ""),), None, "Yes, score=9.0")
        self.assertEqual(self.check(GOOD).action, "junk")
        self.assertEqual(self.rspamd.address, ("127.0.0.1", 11333))

    def test_rspamd_down_falls_back_to_the_built_in_score(self):
        self.office.update_settings("mail", {"rspamd": "127.0.0.1:11333"})
        self.rspamd.outcome = RspamdError("connection refused")
        v = self.check(GOOD)
        self.assertEqual((v.action, v.score), ("accept", -0.5))
        self.assertIn("connection refused", self.log_text())
        self.assertIn("built-in", self.log_text())

    def test_attachments_are_refused_before_rspamd_is_asked(self):
        self.office.update_settings("mail", {"rspamd": "127.0.0.1:11333"})
        self.assertEqual(self.check(EXE).reply[0], 552)
        self.assertEqual(self.rspamd.scanned, [])
