# -*- test-case-name: allworx.tests.dhcp.test_service -*-
"""
The DHCP server's Prometheus metrics (`allworx_dhcp_*`).

The hot path only adds to plain in-process counters; a collector turns them
into metric families when `/metrics` is scraped, so a reply costs a dict
increment rather than a locked prometheus_client counter per label.
"""

import collections

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# name -> label -> count
COUNTS = {kind: collections.Counter() for kind in ("received", "sent", "dropped", "events")}
ROGUE_REPLIES = collections.Counter()

COMMIT = Histogram("allworx_dhcp_journal_commit_seconds",
                   "Time to write and fsync one batch of leases to the journal",
                   buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .5, 1))
BATCH = Histogram("allworx_dhcp_journal_batch_records", "Lease records per journal fsync",
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))

_FAMILIES = (
    ("received", "allworx_dhcp_received", "DHCP messages received, by type", "type"),
    ("sent", "allworx_dhcp_sent", "DHCP replies sent, by type", "type"),
    ("dropped", "allworx_dhcp_dropped", "DHCP messages not answered, by reason", "reason"),
    ("events", "allworx_dhcp_lease_events", "Lease events, by kind", "kind"),
)


class DhcpCollector:
    """Exports the counters and the current pool's state at scrape time."""

    def __init__(self):
        self.pool = None

    def collect(self):
        for key, name, doc, label in _FAMILIES:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in sorted(COUNTS[key].items()):
                family.add_metric([value], count)
            yield family
        family = CounterMetricFamily("allworx_dhcp_rogue_replies",
                                     "OFFER/ACK seen from other DHCP servers on the LAN",
                                     labels=["server"])
        for server, count in sorted(ROGUE_REPLIES.items()):
            family.add_metric([server], count)
        yield family
        if self.pool is not None:
            counts = self.pool.counts()
            leases = GaugeMetricFamily("allworx_dhcp_leases", "Leases by state", labels=["state"])
            for state in ("bound", "offered", "quarantined"):
                leases.add_metric([state], counts[state])
            yield leases
            yield GaugeMetricFamily("allworx_dhcp_pool_size", "Addresses in the dynamic pool",
                                    value=counts["size"])


COLLECTOR = DhcpCollector()
REGISTRY.register(COLLECTOR)
