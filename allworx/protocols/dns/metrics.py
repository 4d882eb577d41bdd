# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The DNS server's Prometheus metrics: `allworx_dns_queries_total{kind}` with
kind zone, cache, forwarded, refused, nxdomain, formerr or servfail, and the
cache's size.

The hot path only adds to plain counters (the fast path keeps its own three);
a `DnsCollector`, given the running service's fast path and cache, turns
them into metric families when `/metrics` is scraped. The service registers
its collector in prometheus_client's default registry while it runs.
"""

import collections

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

KINDS = ("zone", "cache", "forwarded", "refused", "nxdomain", "formerr", "servfail")

# Plain in-process counters; the collector reads them when /metrics is scraped.
COUNTS = collections.Counter()


class DnsCollector:
    """Exports `allworx_dns_queries_total{kind}` and the size of `cache`."""

    def __init__(self, fast, cache):
        self.fast = fast
        self.cache = cache

    def describe(self):
        # Names only, so registering does not count anything.
        yield CounterMetricFamily("allworx_dns_queries", "", labels=["kind"])
        yield GaugeMetricFamily("allworx_dns_cache_entries", "")

    def collect(self):
        counts = collections.Counter(COUNTS)
        counts["zone"] += self.fast.zone_hits
        counts["cache"] += self.fast.cache_hits
        counts["nxdomain"] += self.fast.nx_hits
        family = CounterMetricFamily("allworx_dns_queries", "DNS queries, by how they were "
                                     "answered", labels=["kind"])
        for kind in KINDS:
            family.add_metric([kind], counts[kind])
        yield family
        yield GaugeMetricFamily("allworx_dns_cache_entries", "Answers in the DNS cache",
                                value=len(self.cache))
