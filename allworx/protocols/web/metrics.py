# -*- test-case-name: allworx.tests.web.test_service -*-
"""
Prometheus metrics for `/metrics` on the admin port: the web service's own
counters, and gauges read from the office at scrape time (services up, users,
DHCP leases by state, SIP registrations and calls, the mail queue, flows by
verdict), next to whatever the other services registered in the default
registry.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.web import resource, server

WEB_REQUESTS = Counter(
    "allworx_web_requests_total", "HTTP requests answered, by site and status class",
    ["site", "status"])
WEB_REFUSED = Counter(
    "allworx_web_refused_connections_total",
    "Connections to a LAN-only port refused because the peer is not on the LAN", ["port"])
WEB_LOGINS = Counter(
    "allworx_web_logins_total", "Admin logins by result (success, failure, locked)", ["result"])
WEB_CHANGES = Counter(
    "allworx_web_config_changes_total", "Configuration changes through the pages and API",
    ["source", "result"])


def field(record, name, default=None):
    """A field of a service's record: lease tables give dicts, the others attrs objects."""
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


class OfficeCollector:
    """Gauges computed from the office's live state on each scrape."""

    def __init__(self, office, views):
        self.office = office
        self.views = views

    def collect(self):
        office, views = self.office, self.views
        config = office.config
        up = GaugeMetricFamily("allworx_office_service_up",
                               "1 when a service is up (or degraded), by service", labels=["service"])
        for name, status in sorted(office.status.items()):
            up.add_metric([name], 1 if status.state in ("up", "degraded") else 0)
        yield up
        counts = GaugeMetricFamily("allworx_office_records", "Entries of tap.conf, by kind",
                                   labels=["kind"])
        for kind, items in (("user", config.users), ("alias", config.aliases),
                            ("host", config.hosts), ("record", config.records),
                            ("forward", config.forwards)):
            counts.add_metric([kind], len(items))
        yield counts
        if views.leases is not None:
            leases = GaugeMetricFamily("allworx_office_dhcp_leases", "DHCP leases by state",
                                       labels=["state"])
            by_state = {}
            for lease in views.leases.active_leases():
                state = str(field(lease, "state", "active"))
                by_state[state] = by_state.get(state, 0) + 1
            for state, n in sorted(by_state.items()):
                leases.add_metric([state], n)
            yield leases
        if views.registrations is not None:
            yield GaugeMetricFamily("allworx_office_sip_registrations", "SIP registrations",
                                    value=len(views.registrations.bindings()))
        if views.calls is not None:
            yield GaugeMetricFamily("allworx_office_sip_calls", "SIP calls in progress",
                                    value=len(views.calls.active_calls()))
        if views.mail_queue is not None:
            yield GaugeMetricFamily("allworx_office_mail_queue", "Messages in the outbound queue",
                                    value=len(views.mail_queue.entries()))
        if views.connections is not None:
            flows = CounterMetricFamily("allworx_office_flows", "New flows decided by the firewall",
                                        labels=["verdict"])
            for verdict, n in sorted(views.connections.counts.items()):
                flows.add_metric([str(verdict)], n)
            yield flows


class _DefaultRegistry:
    """Everything the services registered in prometheus_client's default registry."""

    def collect(self):
        return REGISTRY.collect()


def office_registry(office, views):
    """A registry for `/metrics`: the default one plus the office's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DefaultRegistry())
    registry.register(OfficeCollector(office, views))
    return registry


class MetricsPage(resource.Resource):
    """
    `/metrics` in the Prometheus text format, rendered in the reactor thread.
    (prometheus_client.twisted.MetricsResource runs the exposition in a
    thread pool, where reading the office's live state would race the
    reactor; a scrape is cheap enough to do here.)
    """

    isLeaf = True

    def __init__(self, registry, prepare=None):
        resource.Resource.__init__(self)
        self.registry = registry
        self.prepare = prepare      # read what a collector shows first: a Deferred

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        if self.prepare is None:
            return generate_latest(self.registry)

        def answer(_):
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(generate_latest(self.registry))
                request.finish()
        self.prepare().addBoth(answer)
        return server.NOT_DONE_YET
