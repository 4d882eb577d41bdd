"""Tests for the per-user Bayes filter (allworx.protocols.mail.bayes)."""

import json
import math
import os
import random

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.mail import bayes
from allworx.protocols.mail.bayes import BayesData, BayesFilter, chi2q, tokens
from allworx.tests.mailtesting import sync_thread

SPAM_WORDS = "viagra cheap pills winner lottery prize claim urgent bitcoin casino offer".split()
HAM_WORDS = "meeting agenda lunch project report invoice schedule budget review minutes".split()
COMMON = "the and you for this with have from your please".split()


def sample(words, rng, n=12):
    return " ".join(rng.choice(words + COMMON) for _ in range(n))


def trained(rng, n=10):
    data = BayesData()
    for _ in range(n):
        data.train(tokens(sample(SPAM_WORDS, rng, 3), "x@spam.example", [sample(SPAM_WORDS, rng)]), True, 1)
        data.train(tokens(sample(HAM_WORDS, rng, 3), "boss@corp.example", [sample(HAM_WORDS, rng)]), False, 1)
    return data


class MathTests(unittest.TestCase):

    def test_chi2q(self):
        self.assertAlmostEqual(chi2q(0.0, 2), 1.0)
        self.assertAlmostEqual(chi2q(2.0, 2), math.exp(-1))
        # v=4: e^-m (1 + m)
        self.assertAlmostEqual(chi2q(6.0, 4), math.exp(-3) * 4)
        self.assertEqual(chi2q(5000.0, 30), 0.0)

    def test_robinson_f(self):
        data = BayesData(nspam=10, nham=10, words={"w": (3, 0, 0), "n": (0, 0, 0)})
        # p = 1, n = 3: (0.5 + 3) / 4
        self.assertAlmostEqual(data.spamminess("w"), 3.5 / 4)
        self.assertIsNone(data.spamminess("n"))
        self.assertIsNone(data.spamminess("unknown"))

    def test_tokens(self):
        toks = tokens("Win a PRIZE", "Bob <bob@spam.example>", ["Visit http://win.example/now, dear friend"])
        for t in ("subject:win", "subject:prize", "from:bob", "fromdomain:spam.example",
                  "url:win.example", "visit", "dear", "friend"):
            self.assertIn(t, toks)
        many = tokens("", "", [" ".join("w%d" % i for i in range(10000))])
        self.assertLessEqual(len(many), bayes.MAX_TOKENS_PER_MESSAGE)


class ClassifyTests(unittest.TestCase):

    def test_silent_until_trained_enough(self):
        data = BayesData()
        rng = random.Random(1)
        for _ in range(bayes.MIN_TRAINED):
            data.train(tokens("", "", [sample(SPAM_WORDS, rng)]), True, 1)
        self.assertIsNone(data.probability({"viagra"}))
        for _ in range(bayes.MIN_TRAINED - 1):
            data.train(tokens("", "", [sample(HAM_WORDS, rng)]), False, 1)
        self.assertIsNone(data.probability({"viagra"}))
        data.train(tokens("", "", [sample(HAM_WORDS, rng)]), False, 1)
        self.assertIsNotNone(data.probability({"viagra"}))

    def test_spam_and_ham_told_apart(self):
        rng = random.Random(7)
        data = trained(rng)
        for _ in range(20):
            spam = tokens(sample(SPAM_WORDS, rng, 3), "y@spam.example", [sample(SPAM_WORDS, rng)])
            ham = tokens(sample(HAM_WORDS, rng, 3), "boss@corp.example", [sample(HAM_WORDS, rng)])
            self.assertGreater(data.probability(spam), 0.9)
            self.assertLess(data.probability(ham), 0.1)
        self.assertEqual(data.probability({"neverseen"}), 0.5)

    def test_pruned_when_too_big(self):
        self.patch(bayes, "MAX_TOKENS", 100)
        self.patch(bayes, "PRUNE_TO", 50)
        data = BayesData()
        data.train({"common"} | {"a%d" % i for i in range(60)}, True, 1)
        data.train({"common"} | {"b%d" % i for i in range(60)}, False, 2)
        self.assertEqual(len(data.words), 50)
        self.assertIn("common", data.words)
        # Among the tokens seen once, the recent (day 2) ones are kept.
        self.assertTrue(all(k == "common" or k.startswith("b") for k in data.words))


class StoreTests(unittest.TestCase):

    def setUp(self):
        self.dir = self.mktemp()
        self.clock = task.Clock()
        self.filter = BayesFilter(self.dir, self.clock, sync_thread)

    def test_training_is_written_later_in_one_batch_and_read_back(self):
        rng = random.Random(3)
        writes = []
        real = self.filter._write
        self.filter._write = lambda u, t: (writes.append(u), real(u, t))
        for _ in range(6):
            self.filter.train("alice", tokens("", "", [sample(SPAM_WORDS, rng)]), True)
            self.filter.train("alice", tokens("", "", [sample(HAM_WORDS, rng)]), False)
        path = os.path.join(self.dir, "alice", bayes.FILENAME)
        self.assertFalse(os.path.exists(path))
        self.clock.advance(bayes.SAVE_DELAY)
        self.assertEqual(writes, ["alice"])
        with open(path) as f:
            saved = json.load(f)
        self.assertEqual((saved["nspam"], saved["nham"]), (6, 6))
        self.assertEqual(oct(os.stat(path).st_mode & 0o777), "0o600")
        again = BayesFilter(self.dir, self.clock, sync_thread)
        results = []
        again.classify("alice", {"viagra", "cheap", "pills"}).addCallback(results.append)
        self.assertGreater(results[0], 0.9)

    def test_untrained_and_bad_users(self):
        results = []
        self.filter.classify("bob", {"x"}).addCallback(results.append)
        self.assertEqual(results, [None])
        failures = []
        self.filter.classify("../etc", {"x"}).addErrback(failures.append)
        self.assertTrue(failures[0].check(KeyError))

    def test_a_damaged_file_starts_afresh(self):
        os.makedirs(os.path.join(self.dir, "carol"))
        with open(os.path.join(self.dir, "carol", bayes.FILENAME), "w") as f:
            f.write("{not json")
        results = []
        self.filter.classify("carol", {"x"}).addCallback(results.append)
        self.assertEqual(results, [None])

    def test_flush_writes_at_once(self):
        self.filter.train("dave", {"a"}, True)
        done = []
        self.filter.flush().addCallback(done.append)
        self.assertEqual(done, [None])
        self.assertTrue(os.path.exists(os.path.join(self.dir, "dave", bayes.FILENAME)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
