# -*- test-case-name: allworx.tests.core.test_counting -*-
"""
Prometheus counters counted in a plain dict.

A prometheus_client `Counter` takes a lock and makes a call chain per
`inc`; on a path that runs tens of thousands of times a second (every SIP
message) that is a measurable share of the work. `LabelledCounter` keeps
the counts of one labelled counter in a `collections.Counter` (the hot path
is `counter.counts[label] += 1`, or `inc`) and turns them into a metric
family only when `/metrics` is scraped. Single-threaded use only: the
reactor's thread counts, the scrape reads.
"""

import collections

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily


class LabelledCounter:
    """A counter `NAME_total` with one label, registered with `registry`."""

    def __init__(self, name, documentation, label, registry=REGISTRY):
        if name.endswith("_total"):
            name = name[:-len("_total")]
        self.name, self.documentation, self.label = name, documentation, label
        self.counts = collections.Counter()
        if registry is not None:
            registry.register(self)

    def inc(self, value, amount=1):
        """Add `amount` to the count of label value `value`."""
        self.counts[value] += amount

    def value(self, value):
        return self.counts.get(value, 0)

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        yield family
