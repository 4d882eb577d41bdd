# -*- test-case-name: allworx.tests.network.test_service -*-
"""
The "network" service: puts the Network Settings (guide 2, 3; SPEC 2) on the
interfaces and keeps them there.

- The LAN address on `[lan] interface`; in lan-only mode the default route
  via `[lan] gateway` (the WAN is not used at all in that mode).
- `[wan] mode = static`: the WAN address and the default route via
  `[wan] gateway`. `dhcp`: a `WanDhcpClient` on the WAN interface; its lease
  supplies the address, netmask and router, nothing else.
- IPv4 forwarding on or off as the security mode needs, and strict
  reverse-path filtering on both interfaces (other services decide a peer's
  side from its source address and rely on it).

Kernel link events keep it current: an interface that appears is set up at
once, and when the WAN's carrier comes back (cable or modem) the DHCP client
confirms its lease. Moving the WAN off DHCP releases the lease to the ISP.

`plan_network` turns a config (and the current DHCP lease) into the list of
changes wanted; a `NetworkLedger` makes the kernel match it and remembers
what it changed, so a config change moves only what differs and stopping the
service restores the rest. A missing interface is reported (status "down:
interface lan0 does not exist") and retried; the rest still applies.
"""

import os

import attr
from twisted.logger import Logger

from allworx.atomicfile import JsonStateFile
from allworx.routing.network.links import (
    Address, DefaultRoute, LinkUp, Netlink, NetworkLedger, NetworkSettingError, Sysctl,
    Sysctls)
from allworx.routing.network.linkevents import LinkMonitor
from allworx.routing.network.shaping import WanShaper, plan_shaping
from allworx.routing.network.wanhealth import GatewayProbe, WanStatus
from allworx.routing.wanclient.client import WanDhcpClient
from allworx.servicebase import OfficeService

log = Logger()

FORWARDING = "net/ipv4/ip_forward"
RP_FILTER_ALL = "net/ipv4/conf/all/rp_filter"
RETRY_SECONDS = 10.0
LEASE_FILE = "wan-dhcp-lease.json"
APPLIED_FILE = "network-applied.json"


def rp_filter_path(ifname):
    return "net/ipv4/conf/%s/rp_filter" % ifname


@attr.s(frozen=True, slots=True)
class NetworkPlan:
    """What the kernel should look like for a config, and where the WAN stands."""

    changes = attr.ib()          # tuple of LinkUp / Address / DefaultRoute / Sysctl
    wan_use = attr.ib()          # "static" | "dhcp" | "unused"
    wan_interface = attr.ib(default=None)
    wan_address = attr.ib(default=None)
    wan_gateway = attr.ib(default=None)


def plan_network(config, lease=None, rp_all_loose=False):
    """
    The changes `config` asks for. `lease` is the WAN DHCP lease in force (or
    None); `rp_all_loose` says `conf.all.rp_filter` was 2 before us, which
    would make every interface loose (the kernel takes the larger value), so
    it is lowered to 0 and the per-interface 1 decides.
    """
    lan = config.lan
    changes = [LinkUp(lan.interface), Address(lan.interface, lan.address),
               Sysctl(rp_filter_path(lan.interface), "1", lan.interface)]
    wan = config.wan
    if config.security.mode == "lan-only" or wan.mode == "disabled":
        use, wan_address, wan_gateway = "unused", None, None
        if lan.gateway is not None:
            changes.append(DefaultRoute(lan.gateway, lan.interface))
    else:
        use = wan.mode
        changes += [LinkUp(wan.interface),
                    Sysctl(rp_filter_path(wan.interface), "1", wan.interface)]
        if wan.mode == "static":
            wan_address, wan_gateway = wan.address, wan.gateway
        elif lease is not None:
            wan_address, wan_gateway = lease.address, lease.router
        else:
            wan_address, wan_gateway = None, None
        if wan_address is not None:
            changes.append(Address(wan.interface, wan_address))
        if wan_gateway is not None:
            changes.append(DefaultRoute(wan_gateway, wan.interface,
                                        onlink=wan_address is not None
                                        and wan_gateway not in wan_address.network))
    # Forwarding is a whole-namespace switch: only touched where the LAN
    # interface exists (checked by the ledger through `interface`), so a
    # config that names no interface of this machine changes nothing here.
    changes.append(Sysctl(FORWARDING, "1" if config.forwarding else "0", lan.interface))
    if rp_all_loose:
        changes.append(Sysctl(RP_FILTER_ALL, "0", lan.interface))
    return NetworkPlan(tuple(changes), use, wan.interface if use != "unused" else None,
                       wan_address, wan_gateway)


def summarize_problems(problems):
    """
    One sentence per problem, except that every missing permission becomes
    one sentence naming what could not be done.
    """
    prefix, suffix = "no permission to ", " (needs root or CAP_NET_ADMIN)"
    denied = [p[len(prefix):-len(suffix)] for p in problems
              if p.startswith(prefix) and p.endswith(suffix)]
    others = [p for p in problems if not (p.startswith(prefix) and p.endswith(suffix))]
    if len(denied) > 1:
        others.insert(0, "no permission to change the network (needs root or "
                         "CAP_NET_ADMIN): could not %s" % ", ".join(denied))
    elif denied:
        others.insert(0, prefix + denied[0] + suffix)
    return others


def _default_netlink():
    from pyroute2 import IPRoute
    return Netlink(IPRoute())


class NetworkService(OfficeService):
    """
    Applies the office's network settings, runs the WAN DHCP client when
    asked to, follows config changes live and restores on stop.
    """

    def __init__(self, office, netlink_factory=_default_netlink, sysctls=None,
                 dhcp_client_factory=WanDhcpClient, reactor=None,
                 link_monitor_factory=LinkMonitor, state_file_factory=JsonStateFile):
        OfficeService.__init__(self, "network", office)
        self._netlink_factory = netlink_factory
        self._sysctls = sysctls or Sysctls()
        self._dhcp_client_factory = dhcp_client_factory
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.ledger = None
        self.shaper = None        # the WAN's shaping tree ([wan] upload_kbit)
        self.dhcp = None          # the running WanDhcpClient, if any
        self.lease = None         # its lease in force
        self.problems = []
        self._dhcp_problem = None
        self._retry = None
        self._plan = None
        self._applying = False
        self._again = False
        self._link_monitor_factory = link_monitor_factory
        self._links = None
        self._carrier = {}
        self._state_file_factory = state_file_factory
        self._applied_file = None
        self._saved_snapshot = None
        # The lease and the gateway's health, for the dashboard (IWanStatus).
        self.wan = WanStatus(lambda: self.lease, GatewayProbe(self.reactor))

    # -------------------------------------------------------- service

    def startService(self):
        OfficeService.startService(self)
        try:
            netlink = self._netlink_factory()
        except (OSError, NetworkSettingError) as e:
            self.office.set_status("network", "down", "cannot open netlink: %s" % (e,))
            return
        self.ledger = NetworkLedger(netlink, self._sysctls)
        self.shaper = WanShaper(netlink)
        self._take_over()
        self._watch_links()
        self.apply()
        self.wan.probe.start()

    def stopService(self):
        OfficeService.stopService(self)
        self.wan.probe.stop()
        self._cancel_retry()
        if self._links is not None:
            self._links.stop()
            self._links = None
        self._stop_dhcp(reapply=False)
        if self.ledger is None:
            return
        self.shaper.remove()
        removed, problems = self.ledger.restore()
        for text in removed:
            log.info("network: {change}", change=text)
        for problem in problems:
            log.warn("network: could not restore: {problem}", problem=problem)
        self._record_applied()
        self.ledger.netlink.close()
        self.ledger = None
        self.office.set_status("network", "down", "stopped; settings restored")

    def config_changed(self, event):
        if self.ledger is None:
            return   # no netlink: nothing was applied, nothing to follow
        if event.touches("lan", "wan", "security", "vpn"):
            old, new = event.old, event.new
            if (old.wan.interface, old.wan.mode) != (new.wan.interface, new.wan.mode) or (
                    old.security.mode != new.security.mode):
                # Another interface or mode: the old lease means nothing
                # there; the ISP's server gets its address back.
                self._stop_dhcp(reapply=False, release=True)
            self.apply()

    # -------------------------------------------------------- after a crash

    def _take_over(self):
        """
        Adopt what a previous run recorded as its changes and left in place
        (killed before it could restore), so this run's stop undoes them too,
        and puts back the sysctl values from before that run.
        """
        path = os.path.join(self.office.config.system.data_dir, APPLIED_FILE)
        self._applied_file = self._state_file_factory(path, "the network changes in force")
        saved = self._applied_file.load()
        if not saved:
            return
        adopted = self.ledger.adopt(saved)
        if adopted:
            log.info("network: taking over {count} change(s) a previous run left in place: "
                     "{changes}", count=len(adopted),
                     changes="; ".join(c.describe() for c in adopted))
        self._saved_snapshot = saved

    def _record_applied(self):
        """Keep the ledger on disk whenever it changes (cleared once all is restored)."""
        if self._applied_file is None:
            return
        snapshot = self.ledger.snapshot()
        if snapshot == self._saved_snapshot:
            return
        self._saved_snapshot = snapshot
        if snapshot["ours"]:
            self._applied_file.save(snapshot)
        else:
            self._applied_file.clear()

    # -------------------------------------------------------- link events

    def _watch_links(self):
        config = self.office.config
        for ifname in (config.lan.interface, config.wan.interface):
            if ifname and self.ledger.netlink.exists(ifname):
                self._carrier[ifname] = self.ledger.netlink.has_carrier(ifname)
        try:
            self._links = self._link_monitor_factory(self.reactor, self._link_event)
            self._links.start()
        except OSError as e:
            self._links = None
            log.warn("network: no link events ({why}); a missing interface is "
                     "retried every {seconds:.0f}s", why=str(e), seconds=RETRY_SECONDS)

    def _link_event(self, event):
        """An interface came, went, or its carrier changed."""
        config = self.office.config
        if event.ifname not in (config.lan.interface, config.wan.interface):
            return
        had = self._carrier.get(event.ifname)
        self._carrier[event.ifname] = event.carrier and not event.gone
        if event.gone or had is None or had != self._carrier[event.ifname]:
            log.info("network: {ifname} {what}", ifname=event.ifname,
                     what="is gone" if event.gone else
                     "link up" if event.carrier else "link down (no carrier)")
        if self.problems and not event.gone:
            self.apply()    # an interface we were waiting for may be here now
        if (self.dhcp is not None and event.ifname == self.dhcp.ifname
                and had is False and event.carrier):
            self.dhcp.link_returned()

    # -------------------------------------------------------- applying

    def apply(self):
        """Make the interfaces match the config and the lease; report the outcome."""
        if self.ledger is None:
            return
        if self._applying:
            # Called back from inside (the DHCP client reporting at start):
            # run once more when the current pass is done.
            self._again = True
            return
        self._applying = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._apply_once()
        finally:
            self._applying = False

    def _apply_once(self):
        self._cancel_retry()
        config = self.office.config
        plan = self._make_plan(config)
        applied, removed, problems = self.ledger.converge(plan.changes)
        shaping = self.shaper.shape(plan_shaping(config, plan.wan_interface))
        problems = problems + [shaping] if shaping else problems
        for text in removed:
            log.info("network: {change}", change=text)
        for change in applied:
            log.info("network: {change} applied", change=change.describe())
        self._plan = plan
        self.problems = problems
        self._record_applied()
        self._manage_dhcp(config, plan)
        if problems:
            self._retry = self.reactor.callLater(RETRY_SECONDS, self._retry_now)
        self._report_wan(plan)
        self._report_status(plan)

    def _make_plan(self, config):
        try:
            loose = self.ledger.original_sysctl(RP_FILTER_ALL) == "2"
        except OSError:
            loose = False
        lease = self.lease if config.wan.mode == "dhcp" else None
        return plan_network(config, lease, rp_all_loose=loose)

    def _retry_now(self):
        self._retry = None
        self.apply()

    def _cancel_retry(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _in_force(self, change):
        return self.ledger is not None and change in self.ledger.in_force

    def _report_wan(self, plan):
        self.wan.probe.gateway_is(plan.wan_gateway if plan.wan_use != "unused" else None)
        if plan.wan_use == "unused":
            if self.office.wan_address is not None:
                self.office.set_wan_address(None, "disabled")
            return
        address = plan.wan_address
        if address is not None and not self._in_force(Address(plan.wan_interface, address)):
            address = None
        if plan.wan_use == "static":
            self.office.set_wan_address(address, "static", plan.wan_gateway)
        elif address is not None:
            self.office.set_wan_address(address, "dhcp", plan.wan_gateway)
        elif self.office.wan_address is not None and self.office.wan_source != "dhcp":
            # Just switched to DHCP: the static address is gone, no lease yet.
            # (A lease that is lost is reported by dhcp_lost, as "lost".)
            self.office.set_wan_address(None, "dhcp")

    def _report_status(self, plan):
        config = self.office.config
        parts = []
        if self._in_force(Address(config.lan.interface, config.lan.address)):
            parts.append("%s %s" % (config.lan.interface, config.lan.address))
        if plan.wan_use == "unused":
            parts.append("WAN unused")
        elif plan.wan_address is not None and self._in_force(
                Address(plan.wan_interface, plan.wan_address)):
            parts.append("%s %s (%s)" % (plan.wan_interface, plan.wan_address, plan.wan_use))
        elif plan.wan_use == "dhcp" and self.dhcp is not None:
            parts.append("%s dhcp %s" % (plan.wan_interface, self.dhcp.state))
        gateways = [c for c in plan.changes if isinstance(c, DefaultRoute) and self._in_force(c)]
        for route in gateways:
            parts.append("default via %s" % route.gateway)
        forwarding = Sysctl(FORWARDING, "1" if config.forwarding else "0", config.lan.interface)
        if self._in_force(forwarding):
            parts.append("forwarding %s" % ("on" if config.forwarding else "off"))
        if self.shaper is not None and self.shaper.applied is not None:
            parts.append(self.shaper.applied.describe())
        problems = summarize_problems(self.problems)
        if self._dhcp_problem:
            problems.append(self._dhcp_problem)
        if not problems:
            self.office.set_status("network", "up", "; ".join(parts))
        elif any(config.lan.interface in p for p in problems) or not parts:
            self.office.set_status("network", "down", "; ".join(problems))
        else:
            self.office.set_status("network", "degraded", "; ".join(problems + parts))

    # -------------------------------------------------------- the WAN DHCP client

    def _manage_dhcp(self, config, plan):
        wanted = plan.wan_use == "dhcp" and self.ledger.netlink.exists(plan.wan_interface)
        if not wanted:
            self._stop_dhcp()
            return
        if self.dhcp is not None:
            return
        self._dhcp_problem = None
        try:
            mac = self.ledger.netlink.mac(plan.wan_interface)
            self.dhcp = self._dhcp_client_factory(
                ifname=plan.wan_interface, mac=mac, listener=self, reactor=self.reactor,
                lease_path=os.path.join(config.system.data_dir, LEASE_FILE),
                hostname=config.system.hostname, avoid=(config.lan_network,))
            self.dhcp.start()
        except (OSError, NetworkSettingError) as e:
            self.dhcp = None
            self._dhcp_problem = "%s dhcp: %s" % (plan.wan_interface, e)
            log.error("wan: {problem}", problem=self._dhcp_problem)

    def _stop_dhcp(self, reapply=True, release=False):
        client, self.dhcp = self.dhcp, None
        if client is not None:
            client.stop(release=release)
        self._dhcp_problem = None
        if self.lease is not None:
            self.lease = None
            if reapply:
                self.apply()

    # Listener interface of WanDhcpClient.

    def dhcp_state_changed(self, state):
        """The client moved to `state` (SELECTING, BOUND, ...)."""
        if self._plan is not None and self.ledger is not None and self.running:
            self._report_status(self._plan)

    def dhcp_bound(self, lease, renewed=False):
        """The client holds `lease` (new, or renewed/rebound with new times)."""
        changed = self.lease is None or (lease.address, lease.router) != (
            self.lease.address, self.lease.router)
        self.lease = lease
        if changed:
            self.apply()

    def dhcp_lost(self, reason):
        """The lease is gone (expired, NAK): remove the address and route it gave."""
        if self.lease is None:
            return
        self.lease = None
        log.warn("wan: lease lost ({reason}); address and route removed", reason=reason)
        self.apply()
        self.office.set_wan_address(None, "lost")
