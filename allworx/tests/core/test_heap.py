"""Tests for allworx.heap: the collector settled once the server is up."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from allworx import heap, tap


class FakeCollector:
    def __init__(self, threshold=(700, 10, 10)):
        self.threshold = threshold
        self.frozen = 0

    def freeze(self):
        self.frozen += 1

    def get_threshold(self):
        return self.threshold

    def set_threshold(self, *t):
        self.threshold = t


class SettleHeapTests(unittest.TestCase):

    def test_once_a_process(self):
        gc = FakeCollector()
        self.assertTrue(heap.settle_heap(gc))
        self.assertEqual((gc.frozen, gc.threshold), (1, (heap.GC_YOUNG, 10, 10)))
        self.assertFalse(heap.settle_heap(gc))
        self.assertEqual(gc.frozen, 1)

    def test_a_higher_or_disabled_threshold_is_kept(self):
        for threshold in ((50000, 10, 10), (0, 10, 10)):
            gc = FakeCollector(threshold)
            heap.settle_heap(gc)
            self.assertEqual(gc.threshold, threshold)

    def test_the_plugin_settles_it_when_the_reactor_runs(self):
        ran = []

        class Reactor(Clock):
            def callWhenRunning(self, f, *a):
                ran.append((f, a))
        tap.settle_when_running(Reactor())
        self.assertEqual(ran, [(heap.settle_heap, ())])
