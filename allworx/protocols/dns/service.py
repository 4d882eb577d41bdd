# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The office's DNS server (SPEC 5, guide 6 and 10): the "dns" child.

`DnsService` keeps the office zone current (configuration, WAN address,
DHCP clients' names), the resolvers in line with `[dns]`, and listens on
`[dns] port` over UDP and TCP while `[dns] enabled`. The pieces: `dnszone`
(the zone), `dnsfast` (precomputed wire answers), `dnscache`,
`dnsupstream` (the forwarders), `dnschain` (the resolver chain's links),
`dnsserver` (the protocols and their controller), `dnsmetrics`.
"""

import socket

from twisted.application import service
from twisted.logger import Logger

from allworx.servicebase import ListeningService
from allworx.office import ConfigChanged, LeaseEvent, WanAddressChanged
from allworx.protocols.dns.chain import CountedCache, CountedForwarder
from allworx.protocols.dns.fast import FastAnswers
from allworx.protocols.dns.metrics import COLLECTOR
from allworx.protocols.dns.server import DnsDatagramProtocol, OfficeDnsFactory
from allworx.protocols.dns.zone import DhcpNames, ZoneKeeper

log = Logger()

REBUILD_INTERVAL = 0.5   # seconds between zone rebuilds for lease events at most


class DnsService(ListeningService):
    """
    The "dns" child: keeps the zone current (configuration, WAN address, DHCP
    names), the resolvers in line with `[dns]`, and listens on `[dns] port`
    over UDP and TCP while `[dns] enabled`.
    """

    def __init__(self, office, reactor=None, forwarder_port=53, timeout=2.0):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "dns", office)
        self.reactor = reactor
        self.forwarder_port = forwarder_port
        self.timeout = timeout
        self.keeper = ZoneKeeper(reactor)
        self.names = DhcpNames()
        self.fast = FastAnswers(reactor)
        self.cache = CountedCache(reactor, self.fast)
        self.factory = None
        self._subscriptions = []
        self._expiry = None
        self._pending = None
        self._built_at = float("-inf")
        COLLECTOR.fast, COLLECTOR.cache = self.fast, self.cache

    # -- building

    def _forwarders(self, config):
        if not config.dns.use_forwarders:
            return None
        servers = [(str(ip), self.forwarder_port) for ip in (config.dns.primary,
                                                             config.dns.secondary) if ip]
        if not servers:
            return None
        return CountedForwarder(servers, self.reactor, self.timeout,
                                  on_answer=self.cache.store)

    def _build_factory(self):
        self.factory = OfficeDnsFactory(self.office, self.keeper, self.cache, self.fast,
                                        self._forwarders(self.office.config), self.reactor)

    def rebuild_zone(self):
        """Make the zone from the current facts; publish it if it changed."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self._built_at = self.reactor.seconds()
        self.names.expire(self._built_at)
        if self.keeper.rebuild(self.office.config, self.office.wan_ip, self.names.current()):
            zone = self.keeper.zone
            self.fast.zone = {}
            self.office.runtime.zone = zone
            log.info("dns: zone {domain} serial {serial}: {count} records",
                     domain=zone.domain, serial=zone.serial, count=len(zone.entries))
        self._schedule_expiry()

    def request_rebuild(self):
        """
        Rebuild soon: at once if the last rebuild is `REBUILD_INTERVAL` old,
        else at the end of that interval, so a burst of lease events (the
        office switching on in the morning) costs a few rebuilds, not one each.
        """
        if self._pending is not None:
            return
        wait = self._built_at + REBUILD_INTERVAL - self.reactor.seconds()
        if wait <= 0:
            self.rebuild_zone()
        else:
            self._pending = self.reactor.callLater(wait, self.rebuild_zone)

    def _schedule_expiry(self):
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        due = self.names.next_expiry()
        if due is not None and due != float("inf"):
            delay = max(0.0, due - self.reactor.seconds())
            self._expiry = self.reactor.callLater(delay, self.rebuild_zone)

    # -- listening

    def _listeners(self):
        port = self.office.config.dns.port
        udp = DnsDatagramProtocol(self.factory)

        def listen_udp():
            p = self.reactor.listenUDP(port, udp, maxPacketSize=4096)
            sock = getattr(p, "socket", None)
            if sock is not None:
                # Room for bursts: a full buffer loses queries.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            return p
        return [("udp %d" % port, port, listen_udp),
                ("tcp %d" % port, port, lambda: self.reactor.listenTCP(port, self.factory))]

    def startService(self):
        if not self._subscriptions:
            self._subscriptions = [
                self.office.subscribe(ConfigChanged, self._config_changed),
                self.office.subscribe(LeaseEvent, self._lease_event),
                self.office.subscribe(WanAddressChanged, lambda e: self.request_rebuild()),
            ]
            leases = self.office.runtime.leases
            if leases is not None:
                self.names.load(leases.active_leases())
        self.rebuild_zone()
        self._build_factory()
        if not self.office.config.dns.enabled:
            service.Service.startService(self)
            self.ports, self.failed = [], []
            self.office.set_status("dns", "disabled", "DNS server disabled in [dns]")
            return
        self.listeners = self._listeners()
        ListeningService.startService(self)

    def stopService(self):
        for unsubscribe in self._subscriptions:
            unsubscribe()
        self._subscriptions = []
        for call in (self._expiry, self._pending):
            if call is not None and call.active():
                call.cancel()
        self._expiry = self._pending = None
        return ListeningService.stopService(self)

    # -- events

    def _lease_event(self, event):
        if self.names.apply(event):
            self.request_rebuild()

    def _config_changed(self, event):
        new, old = event.new, event.old
        if event.touches("system", "lan", "wan", "host", "record"):
            self.rebuild_zone()
        if event.touches("lan") and self.factory is not None:
            self.factory._sides.clear()   # which peers are on the LAN may have changed
        if not event.touches("dns"):
            return
        if (old.dns.primary, old.dns.secondary, old.dns.use_forwarders) != (
                new.dns.primary, new.dns.secondary, new.dns.use_forwarders):
            self.cache.clear()
            log.info("dns: forwarders now {servers}", servers=", ".join(
                str(ip) for ip in (new.dns.primary, new.dns.secondary) if ip)
                if new.dns.use_forwarders else "none (stand-alone)")
        if (old.dns.enabled, old.dns.port) == (new.dns.enabled, new.dns.port):
            self._rewire()
            return
        d = ListeningService.stopService(self)
        d.addCallback(lambda _: self._restart())

    def _rewire(self):
        """New resolvers behind the ports already listening."""
        old = self.factory
        self._build_factory()
        for port in self.ports:
            proto = getattr(port, "protocol", None)
            if isinstance(proto, DnsDatagramProtocol):
                proto.factory = self.factory
            elif getattr(port, "factory", None) is old:
                port.factory = self.factory

    def _restart(self):
        self.running = False
        self.startService()


def make_service(office):
    """The "dns" child of the allworx server."""
    return DnsService(office)
