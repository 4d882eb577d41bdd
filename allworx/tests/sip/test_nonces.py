"""
The nonce book's cost per request (issue 21, item 9): a REGISTER flood once
made every REGISTER scan the whole book. The book here is watched through a
counting table: no call may touch more than a few entries, whether 1,000 or
100,000 nonces are alive, and the bound on live nonces holds without a scan.
"""

import collections

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.sip.credentials import NONCE_LIFETIME, NonceBook

# Entries one make + check + use may touch: a lookup, an insert, and the
# expired or evicted entries it drops at the front (each entry once).
PER_CALL = 8


class CountingTable(collections.OrderedDict):
    """An OrderedDict that counts every entry it hands out, stores, drops or iterates over."""

    touched = 0

    def _touch(self, n=1):
        type(self).touched += n

    def __getitem__(self, key):
        self._touch()
        return collections.OrderedDict.__getitem__(self, key)

    def __setitem__(self, key, value):
        self._touch()
        collections.OrderedDict.__setitem__(self, key, value)

    def __delitem__(self, key):
        self._touch()
        collections.OrderedDict.__delitem__(self, key)

    def __contains__(self, key):
        self._touch()
        return collections.OrderedDict.__contains__(self, key)

    def get(self, key, default=None):
        self._touch()
        return collections.OrderedDict.get(self, key, default)

    def pop(self, key, *default):
        self._touch()
        return collections.OrderedDict.pop(self, key, *default)

    def popitem(self, last=True):
        self._touch()
        return collections.OrderedDict.popitem(self, last)

    def __iter__(self):
        for key in collections.OrderedDict.__iter__(self):
            self._touch()
            yield key

    def keys(self):
        return list(iter(self))

    def items(self):
        return [(k, collections.OrderedDict.__getitem__(self, k)) for k in self]

    def values(self):
        return [v for _, v in self.items()]


def counting_book(clock, max_live=None):
    book = NonceBook(clock)
    if max_live is not None:
        book.max_live = max_live
    table = type("Table", (CountingTable,), {"touched": 0})()
    book.counts = table
    return book, table


def one_round(book, table):
    """One phone's authentication: a nonce made, checked and used. The entries it touched."""
    before = type(table).touched
    nonce = book.make()
    assert book.check(nonce, 1) == "ok"
    assert book.use(nonce, 1)
    return type(table).touched - before


class NonceBookCostTests(unittest.TestCase):

    def fill(self, book, table, n, clock, step=0.0):
        """
        Use `n` fresh nonces; with the clock standing still each round stays
        within the bound (the test stops at the first that does not). The
        touches of every round.
        """
        costs = []
        for i in range(n):
            cost = one_round(book, table)
            if not step:
                self.assertLessEqual(cost, PER_CALL, "round %d with %d nonces alive touched %d "
                                     "entries" % (i, len(book.counts), cost))
            costs.append(cost)
            if step:
                clock.advance(step)
        return costs

    def test_cost_is_flat_from_1000_to_100000_live_nonces(self):
        clock = task.Clock()
        clock.advance(1e6)
        book, table = counting_book(clock, max_live=200000)
        at_1000 = self.fill(book, table, 1000, clock)
        self.assertEqual(len(book.counts), 1000)
        self.fill(book, table, 98000, clock)
        at_100000 = self.fill(book, table, 1000, clock)
        self.assertEqual(len(book.counts), 100000)
        self.assertEqual(max(at_1000), max(at_100000))
        self.assertAlmostEqual(sum(at_1000[1:]) / 999.0, sum(at_100000) / 1000.0, delta=0.01)

    def test_expiry_is_paid_once_per_entry(self):
        clock = task.Clock()
        clock.advance(1e6)
        book, table = counting_book(clock)
        # 12,000 nonces used over 600 s: those older than the lifetime leave
        # from the front as new ones come (a second's worth at a time: the
        # nonces carry whole seconds), never by a scan of the book.
        costs = self.fill(book, table, 12000, clock, step=0.05)
        self.assertLessEqual(sum(costs), PER_CALL * len(costs))
        self.assertLessEqual(max(costs), PER_CALL + 3 * 21)
        self.assertLessEqual(len(book.counts), NONCE_LIFETIME / 0.05 + 21)
        # A quiet spell: the first request after it drops everything (once).
        clock.advance(NONCE_LIFETIME + 1)
        before = type(table).touched
        rounds = 1000
        for _ in range(rounds):
            one_round(book, table)
        self.assertLessEqual(type(table).touched - before, PER_CALL * rounds + 3 * 6021)
        self.assertEqual(len(book.counts), rounds)

    def test_bound_evicts_the_oldest_without_a_scan_and_refuses_their_replay(self):
        clock = task.Clock()
        clock.advance(1e6)
        book, table = counting_book(clock, max_live=1000)
        first = book.make()
        self.assertTrue(book.use(first, 1))
        clock.advance(1)
        self.fill(book, table, 5000, clock)
        self.assertEqual(len(book.counts), 1000)
        # The evicted nonce was still young, but its counts are forgotten:
        # it is stale from now on, never accepted again as if new.
        self.assertEqual(book.check(first, 2), "stale")
        self.assertFalse(book.use(first, 1))
        # Nonces made after the evicted ones still work.
        self.assertLessEqual(one_round(book, table), PER_CALL)

    def test_replays_are_still_refused(self):
        clock = task.Clock()
        book = NonceBook(clock)
        nonce = book.make()
        self.assertTrue(book.use(nonce, 1))
        self.assertFalse(book.use(nonce, 1))
        self.assertTrue(book.use(nonce, 2))
        self.assertFalse(book.use(nonce, 2))


class IssuedMemoTests(unittest.TestCase):
    """Nonces made lately are read without their MAC: the same answers as through it."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.book = NonceBook(self.clock, secret=b"s" * 32)

    def fresh(self):
        """A book with the same secret that made nothing (every nonce read through its MAC)."""
        other = NonceBook(self.clock, secret=b"s" * 32)
        other.serials = self.book.serials
        return other

    def test_memo_and_mac_agree(self):
        nonces = [self.book.make() for _ in range(5)]
        self.assertEqual(len(self.book.issued), 5)
        forged = [nonces[0][:-1] + ("0" if nonces[0][-1] != "0" else "1"), "1.2.abc", nonces[1] + "x"]
        for nonce in nonces + forged:
            self.assertEqual(self.book.check(nonce, 1), self.fresh().check(nonce, 1), nonce)
        self.assertEqual(self.book.issued, {})          # answered: gone from the memo
        self.clock.advance(NONCE_LIFETIME + 1)
        late = self.book.make()
        self.assertEqual(self.book.check(late, 1), "ok")
        self.assertEqual(self.book.check(nonces[2], 1), "stale")

    def test_a_new_secret_drops_what_the_old_made(self):
        nonce = self.book.make()
        self.book.secret = b"t" * 32
        self.assertEqual(self.book.check(nonce, 1), "bad")
        self.assertEqual(self.book.check(self.book.make(), 1), "ok")

    def test_the_memo_is_bounded(self):
        from allworx.protocols.sip import credentials
        for _ in range(credentials.ISSUED_MEMO + 10):
            last = self.book.make()
        self.assertLessEqual(len(self.book.issued), credentials.ISSUED_MEMO)
        self.assertEqual(self.book.check(last, 1), "ok")
