"""allworx.counting: a labelled Prometheus counter counted in a plain dict."""

from prometheus_client import CollectorRegistry, generate_latest
from twisted.trial import unittest

from allworx.counting import LabelledCounter


class LabelledCounterTests(unittest.TestCase):

    def test_counts_reach_the_registry_at_scrape_time(self):
        registry = CollectorRegistry()
        counter = LabelledCounter("allworx_test_things_total", "Things, by kind", "kind", registry)
        counter.inc("a")
        counter.counts["b"] += 1
        counter.inc("a", 2)
        self.assertEqual(registry.get_sample_value("allworx_test_things_total", {"kind": "a"}), 3)
        self.assertEqual(registry.get_sample_value("allworx_test_things_total", {"kind": "b"}), 1)
        self.assertIsNone(registry.get_sample_value("allworx_test_things_total", {"kind": "c"}))
        self.assertEqual(counter.value("a"), 3)
        self.assertEqual(counter.value("c"), 0)
        text = generate_latest(registry).decode()
        self.assertIn("# TYPE allworx_test_things_total counter", text)
        self.assertIn('allworx_test_things_total{kind="a"} 3.0', text)

    def test_the_name_is_taken_once(self):
        registry = CollectorRegistry()
        LabelledCounter("allworx_test_once", "Once", "kind", registry)
        self.assertRaises(ValueError, LabelledCounter, "allworx_test_once_total", "Again", "kind", registry)
