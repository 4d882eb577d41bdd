# -*- test-case-name: allworx.tests.core.test_stats -*-
"""
What feeds the dashboard's history: every 10 s, on the reactor, one walk of
prometheus_client's registry (the same counters `/metrics` shows) and a read
of each interface's byte counters in sysfs, turned into the SPEC 20 series
and added to the `StatsStore`.

Where each series comes from:

    wan.rx_bps wan.tx_bps lan.rx_bps lan.tx_bps
                        /sys/class/net/IFACE/statistics/{rx,tx}_bytes of [wan]
                        and [lan] interface, as bits/s
    firewall.new_flows  allworx_firewall_flows_total (every verdict), /s
    firewall.drops      allworx_firewall_flows_total{verdict=drop|reject} plus
                        allworx_firewall_queue_drops_total, /s
    dns.queries         allworx_dns_queries_total (every kind), /s
    dns.cache_hit_ratio of the queries for names outside the office
                        (kind cache or forwarded) in the step, the share the
                        cache answered (0..1; no point when there were none)
    dhcp.leases         allworx_dhcp_leases{state=bound}
    mail.in             allworx_mail_accepted_total (SMTP, every port), /min
    mail.out            allworx_mail_delivered_total{destination=remote}, /min
    mail.queue          allworx_mail_queue_length
    sip.calls           allworx_sip_active_calls
    sip.registered      allworx_sip_bindings

Rates come from the change since the last sample over the time between the
two. A counter that went down was reset (a service or an interface came
back): what it shows now is what it counted since. A counter or gauge not
in the registry (its service is not running) gives no point.
"""

from prometheus_client import REGISTRY
from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from allworx.statsstore import StatsStore

log = Logger()

STEP = 10           # seconds between samples (the hour ring's step)
SAVE_EVERY = 60     # seconds between saves of the store

SERIES = (
    ("wan.rx_bps", "bit/s"), ("wan.tx_bps", "bit/s"),
    ("lan.rx_bps", "bit/s"), ("lan.tx_bps", "bit/s"),
    ("firewall.new_flows", "flows/s"), ("firewall.drops", "flows/s"),
    ("dns.queries", "queries/s"), ("dns.cache_hit_ratio", "ratio"),
    ("dhcp.leases", "leases"),
    ("mail.in", "messages/min"), ("mail.out", "messages/min"), ("mail.queue", "messages"),
    ("sip.calls", "calls"), ("sip.registered", "registrations"),
)

# The families read from the registry (the name a family has, without _total).
FAMILIES = frozenset((
    "allworx_firewall_flows", "allworx_firewall_queue_drops", "allworx_dns_queries",
    "allworx_dhcp_leases", "allworx_mail_accepted", "allworx_mail_delivered",
    "allworx_mail_queue_length", "allworx_sip_active_calls", "allworx_sip_bindings"))


class Reading:
    """One walk of a registry: the samples of FAMILIES, and which families were there."""

    def __init__(self, registry):
        self.families = set()
        self.samples = []
        for family in registry.collect():
            if family.name in FAMILIES:
                self.families.add(family.name)
                self.samples.extend((s.name, s.labels, s.value) for s in family.samples)

    def total(self, family, sample, **match):
        """
        The sum of `sample` over the label sets matching `match` (a label's
        value, or a tuple of them); None when `family` is not registered.
        """
        if family not in self.families:
            return None
        total = 0.0
        for name, labels, value in self.samples:
            if name != sample:
                continue
            if all(labels.get(k) in (v if isinstance(v, tuple) else (v,))
                   for k, v in match.items()):
                total += value
        return total


def read_sysfs(interface, counter):
    """An interface's counter (`rx_bytes`, `tx_bytes`) from sysfs, or None."""
    if not interface or "/" in interface or interface in (".", ".."):
        return None
    try:
        with open("/sys/class/net/%s/statistics/%s" % (interface, counter)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def sides(config):
    """{"wan": interface or None, "lan": interface or None} from the config."""
    wan = config.wan.interface if config.wan.mode != "disabled" else ""
    return {"wan": wan or None, "lan": config.lan.interface or None}


class Sampler:
    """
    Turns readings into the series' values, remembering each counter's last
    value and when it was read.
    """

    def __init__(self, store, get_config, registry=REGISTRY, read_counter=read_sysfs):
        self.store = store
        self.get_config = get_config
        self.registry = registry
        self.read_counter = read_counter
        self.last = {}      # key -> (time, value)

    def delta(self, key, value, now):
        """(increase, seconds) since the last reading of `key`, or None."""
        before = self.last.pop(key, None)
        if value is None:
            return None
        self.last[key] = (now, value)
        if before is None or now <= before[0]:
            return None
        increase = value - before[1]
        if increase < 0:    # reset: what it counted since is what it shows
            increase = value
        return increase, now - before[0]

    def rate(self, key, value, now, per=1.0):
        found = self.delta(key, value, now)
        return None if found is None else found[0] * per / found[1]

    def values(self, now):
        """{series name: value or None} at `now`."""
        r = Reading(self.registry)
        out = {}
        for side, interface in sides(self.get_config()).items():
            for way in ("rx", "tx"):
                key = "%s.%s_bps" % (side, way)
                count = self.read_counter(interface, way + "_bytes") if interface else None
                out[key] = self.rate((key, interface), count, now, per=8.0)
        flows = "allworx_firewall_flows", "allworx_firewall_flows_total"
        out["firewall.new_flows"] = self.rate("flows", r.total(*flows), now)
        dropped = r.total(*flows, verdict=("drop", "reject"))
        queue = r.total("allworx_firewall_queue_drops", "allworx_firewall_queue_drops_total")
        out["firewall.drops"] = self.rate(
            "drops", None if dropped is None else dropped + (queue or 0.0), now)
        dns = "allworx_dns_queries", "allworx_dns_queries_total"
        out["dns.queries"] = self.rate("dns", r.total(*dns), now)
        hits = self.delta("dns.cache", r.total(*dns, kind="cache"), now)
        misses = self.delta("dns.forwarded", r.total(*dns, kind="forwarded"), now)
        out["dns.cache_hit_ratio"] = (hits[0] / (hits[0] + misses[0])
                                      if hits and misses and hits[0] + misses[0] > 0 else None)
        out["dhcp.leases"] = r.total("allworx_dhcp_leases", "allworx_dhcp_leases", state="bound")
        out["mail.in"] = self.rate("mail.in", r.total(
            "allworx_mail_accepted", "allworx_mail_accepted_total"), now, per=60.0)
        out["mail.out"] = self.rate("mail.out", r.total(
            "allworx_mail_delivered", "allworx_mail_delivered_total", destination="remote"),
            now, per=60.0)
        out["mail.queue"] = r.total("allworx_mail_queue_length", "allworx_mail_queue_length")
        out["sip.calls"] = r.total("allworx_sip_active_calls", "allworx_sip_active_calls")
        out["sip.registered"] = r.total("allworx_sip_bindings", "allworx_sip_bindings")
        return out

    def sample(self, now):
        """Add one sample of every series taken at `now`."""
        for name, value in self.values(now).items():
            self.store.add(name, now, value)


class StatsService(service.Service):
    """
    Samples every STEP seconds (half-way into each step, so that reactor
    jitter never puts two samples in one slot), saves the store every
    SAVE_EVERY seconds and at stop, and loads it at start.
    """

    name = "stats"

    def __init__(self, path, get_config, clock, registry=REGISTRY, read_counter=read_sysfs,
                 store=None):
        self.clock = clock
        self.store = store if store is not None else StatsStore(path, SERIES, clock)
        self.sampler = Sampler(self.store, get_config, registry, read_counter)
        self._first = self._sampling = self._saving = None

    def startService(self):
        service.Service.startService(self)
        self.store.load()
        now = self.clock.seconds()
        delay = (STEP / 2.0 - now % STEP) % STEP
        self._first = self.clock.callLater(delay, self._begin)
        self._saving = task.LoopingCall(self.store.save)
        self._saving.clock = self.clock
        self._saving.start(SAVE_EVERY, now=False)

    def _begin(self):
        self._first = None
        self._sampling = task.LoopingCall(self.sample)
        self._sampling.clock = self.clock
        self._sampling.start(STEP, now=True)

    def sample(self):
        try:
            self.sampler.sample(self.clock.seconds())
        except Exception:
            log.failure("statistics sample failed")

    def stopService(self):
        service.Service.stopService(self)
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        for loop in (self._sampling, self._saving):
            if loop is not None and loop.running:
                loop.stop()
        self._sampling = self._saving = None
        return self.store.save_now()
