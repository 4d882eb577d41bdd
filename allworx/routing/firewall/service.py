# -*- test-case-name: allworx.tests.firewall.test_service -*-
"""
The "firewall" child service: keeps the kernel ruleset and the flow hook in
step with the office.

On start it builds the `FlowPolicy` from the config and the office's facts
(the WAN address, the LAN hosts' DHCP addresses), binds the hook (firewall
modes) and applies the ruleset; on every change that matters (settings, a
forward, a host, the WAN address, a forward target's lease) it builds the
policy again and re-applies the ruleset when its text changed. On stop it
removes the ruleset and unbinds the hook. Decisions go to a bounded
`ConnectionLog`, the service's `connections` (IConnectionLog). Host-name
forwards follow the DHCP lease table it is given: read at start, then kept
current by `LeaseEvent`s.
"""

import collections
import ipaddress

from prometheus_client import Counter
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from allworx.interfaces import IConnectionLog
from allworx.office import LeaseEvent, WanAddressChanged
from allworx.routing.firewall.flowhook import QUEUE_STATS, FlowHook, parse_queue_stats
from allworx.routing.firewall.policy import ACTIONS, FlowPolicy, ip_text, proto_name
from allworx.routing.firewall.ruleset import IptablesRunner, RulesetError, compile_chains, describe
from allworx.servicebase import OfficeService

log = Logger()

FLOWS = Counter("allworx_firewall_flows_total",
                "New flows decided by the firewall's flow hook", ["verdict"])

QUEUE_DROPS = Counter("allworx_firewall_queue_drops_total",
                      "New flows the kernel dropped before the hook saw them", ["cause"])

LOG_SIZE = 2000
# How often the queue's drop counters are read.
QUEUE_CHECK_SECONDS = 10.0

# Config sections whose change can change the policy or the ruleset.
POLICY_SECTIONS = ("security", "lan", "wan", "forward", "host", "web", "ldap",
                   "ntp", "pop3", "mail", "dns", "sip", "vpn")


@implementer(IConnectionLog)
class ConnectionLog:
    """
    The newest `size` decisions (time, flow, verdict, reason) and the number
    of flows decided per verdict since start. Entries are kept as tuples and
    only turned into dicts when someone reads them.
    """

    def __init__(self, size=LOG_SIZE):
        self._ring = collections.deque(maxlen=size)
        self.counts = {action: 0 for action in ACTIONS}
        self._exported = dict(self.counts)
        self._metric = {action: FLOWS.labels(verdict=action) for action in ACTIONS}

    def add(self, when, flow, action, reason):
        """Record one decision (called for every new flow: kept cheap)."""
        self._ring.append((when, flow, action, reason))
        self.counts[action] += 1

    def sync_metrics(self):
        """Bring the prometheus counters up to `counts` (after each batch of packets)."""
        for action, count in self.counts.items():
            delta = count - self._exported[action]
            if delta:
                self._metric[action].inc(delta)
                self._exported[action] = count

    def recent(self, limit=200):
        """Newest first: dicts with time, proto, src, sport, dst, dport, side, action, reason."""
        out = []
        for when, flow, action, reason in reversed(self._ring):
            if len(out) >= limit:
                break
            out.append({
                "time": when, "proto": proto_name(flow.proto),
                "src": ip_text(flow.src), "sport": flow.sport,
                "dst": ip_text(flow.dst), "dport": flow.dport,
                "side": flow.side, "action": action, "reason": reason,
            })
        return out


class FirewallService(OfficeService):
    """
    Applies the office's security mode to the kernel and decides new flows.
    `leases` is the DHCP server's ILeaseTable (None without one).
    """

    def __init__(self, office, leases=None, reactor=None, runner=None, hook_factory=FlowHook):
        if reactor is None:
            from twisted.internet import reactor
        OfficeService.__init__(self, "firewall", office)
        self.leases = leases
        self.reactor = reactor
        self.runner = runner or IptablesRunner(reactor)
        self.hook_factory = hook_factory
        self.connections = ConnectionLog()
        self.hook = None
        self.policy = None
        self.applied = None          # the chains last in the kernel
        self.lease_addresses = {}    # MAC -> address of its live LAN lease
        self._macs, self._macs_of = {}, None     # MAC -> [host] name, and the config it is of
        self.follow(WanAddressChanged, lambda event: self.refresh("WAN address"))
        self.follow(LeaseEvent, self._lease_event)
        self._applying = None        # Deferred of the apply in progress
        self._again = False
        self.problem = None
        self.queue_stats_path = QUEUE_STATS
        self._queue_drops = None     # (queue full, socket full) last seen
        self._queue_check = task.LoopingCall(self.check_queue)
        self._queue_check.clock = reactor

    # ------------------------------------------------------------ lifecycle

    def startService(self):
        OfficeService.startService(self)
        if self.leases is not None:
            self.lease_addresses = {lease["mac"]: ipaddress.IPv4Address(str(lease["address"]))
                                    for lease in self.leases.active_leases()}
        self.policy = self._build_policy()
        self._sync_hook()
        self._queue_check.start(QUEUE_CHECK_SECONDS, now=False)
        if not self.reactor.running:
            # twistd starts services before the reactor runs: apply the first
            # ruleset now, so nothing is forwarded before the firewall stands.
            self._apply_first()
            return defer.succeed(None)
        return self.refresh("start")

    def _apply_first(self):
        try:
            chains = compile_chains(self.policy)
            self.runner.apply_blocking(chains)
        except RulesetError as e:
            log.error("firewall ruleset not applied at start: {error}", error=e)
            self._report(str(e))
            return
        self.applied = chains
        log.info("firewall ruleset applied (start): mode {mode}, {forwards} forwards",
                 mode=self.policy.mode, forwards=len(self.policy.forwards))
        log.debug("{rules}", rules=describe(chains))
        self._report(None)

    @defer.inlineCallbacks
    def stopService(self):
        OfficeService.stopService(self)
        if self._queue_check.running:
            self._queue_check.stop()
        if self._applying is not None:
            yield self._applying
        try:
            if self.applied is not None:
                yield self.runner.remove()
                log.info("firewall ruleset removed")
        except RulesetError as e:
            log.error("could not remove the firewall ruleset: {error}", error=e)
        self.applied = None
        if self.hook is not None:
            self.hook.stop()
            self.hook = None
        self.office.set_status(self.name, "down", "stopped")

    # ------------------------------------------------------------ events

    def config_changed(self, event):
        if event.touches(*POLICY_SECTIONS):
            self.refresh("configuration: " + ", ".join(sorted(event.sections)))

    def _lease_event(self, event):
        """
        A forward whose `to` names a `[host]` follows the lease of that host's
        MAC, and only that: the name a client sends steers nothing (SPEC 3).
        """
        if event.kind in ("granted", "renewed"):
            address = ipaddress.IPv4Address(str(event.address))
            if self.lease_addresses.get(event.mac) == address:
                return
            self.lease_addresses[event.mac] = address
            why = "now at %s" % address
        elif self.lease_addresses.get(event.mac) == ipaddress.IPv4Address(str(event.address)):
            del self.lease_addresses[event.mac]
            why = "lease %s" % event.kind
        else:
            return
        name = self._host_of_mac(event.mac)
        if name is not None:
            self.refresh("host %s %s" % (name, why))

    def _host_of_mac(self, mac):
        """
        The first [host] (by name) with this MAC, or None: from an index of the
        config in force, so that restoring 5,000 leases at start does not scan
        every [host] for each (issue 22).
        """
        config = self.office.config
        if self._macs_of is not config:
            index = {}
            for name, host in sorted(config.hosts.items()):
                index.setdefault(host.mac, name)
            self._macs, self._macs_of = index, config
        return self._macs.get(mac)

    @property
    def host_addresses(self):
        """[host] name -> the address its MAC's lease holds, for those that hold one."""
        leases = self.lease_addresses
        return {name: leases[host.mac] for name, host in self.office.config.hosts.items()
                if host.mac in leases}

    def check_queue(self):
        """Count and report the new flows the kernel dropped because the hook fell behind."""
        if self.hook is None:
            self._queue_drops = None
            return
        try:
            with open(self.queue_stats_path) as f:
                stats = parse_queue_stats(f.read(), self.hook.queue_num)
        except OSError:
            return
        if stats is None:
            return
        waiting, full, socket_full = stats
        last, self._queue_drops = self._queue_drops, (full, socket_full)
        if last is None:
            return
        new_full, new_socket = max(0, full - last[0]), max(0, socket_full - last[1])
        if new_full or new_socket:
            QUEUE_DROPS.labels(cause="queue_full").inc(new_full)
            QUEUE_DROPS.labels(cause="socket_full").inc(new_socket)
            log.warn("NFQUEUE {queue}: {count} new flows dropped before the hook saw them "
                     "({full} queue full, {socket} socket full; {waiting} waiting now)",
                     queue=self.hook.queue_num, count=new_full + new_socket, full=new_full,
                     socket=new_socket, waiting=waiting)

    # ------------------------------------------------------------ work

    def _build_policy(self):
        return FlowPolicy.build(self.office.config, self.office.wan_address,
                                self.host_addresses)

    def _sync_hook(self):
        """Bind the hook in the modes that inspect, unbind it in the others."""
        self.problem = None
        if self.policy.inspects and self.hook is None:
            hook = self.hook_factory(self.reactor, self.policy, self.connections.add,
                                     after_batch=self.connections.sync_metrics)
            try:
                hook.start()
            except OSError as e:
                self.problem = ("cannot bind the flow hook (needs root or CAP_NET_ADMIN): %s"
                                % (e,))
                log.error("{problem}", problem=self.problem)
                return
            self.hook = hook
        elif not self.policy.inspects and self.hook is not None:
            self.hook.stop()
            self.hook = None
        if self.hook is not None:
            self.hook.policy = self.policy

    def refresh(self, why):
        """Rebuild the policy and bring the kernel in line; a Deferred."""
        if not self.running:
            return defer.succeed(None)
        self.policy = self._build_policy()
        self._sync_hook()
        if self._applying is not None:
            self._again = True
            return self._applying
        d = self._apply_loop(why)
        if not d.called:
            # Still waiting on iptables: later changes join the loop.
            self._applying = d
        return d

    @defer.inlineCallbacks
    def _apply_loop(self, why):
        try:
            while True:
                self._again = False
                policy = self.policy
                try:
                    chains = compile_chains(policy)
                    if chains != self.applied:
                        yield self.runner.apply(chains)
                        self.applied = chains
                        log.info("firewall ruleset applied ({why}): mode {mode}, "
                                 "{forwards} forwards", why=why, mode=policy.mode,
                                 forwards=len(policy.forwards))
                        log.debug("{rules}", rules=describe(chains))
                    self._report(None)
                except RulesetError as e:
                    log.error("firewall ruleset not applied ({why}): {error}", why=why, error=e)
                    self._report(str(e))
                if not self._again or not self.running:
                    break
                why = "later changes"
        finally:
            self._applying = None

    def _report(self, ruleset_problem):
        problems = [p for p in (self.problem, ruleset_problem) if p]
        mode = self.policy.mode
        if ruleset_problem:
            self.office.set_status(self.name, "down", "; ".join(problems))
        elif problems:
            self.office.set_status(self.name, "degraded", "%s; %s" % (
                mode, "; ".join(problems)))
        else:
            detail = mode
            if self.hook is not None:
                detail += ", deciding new flows on NFQUEUE %d" % self.hook.queue_num
            self.office.set_status(self.name, "up", detail)
