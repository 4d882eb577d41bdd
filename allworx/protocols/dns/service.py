# -*- test-case-name: allworx.tests.dns.test_service -*-
"""
The office's DNS server (SPEC 5, guide 6 and 10): the "dns" child.

`DnsService` keeps the office zone current (configuration, WAN address,
DHCP clients' names), the resolvers in line with `[dns]`, and listens on
`[dns] port` over UDP and TCP while `[dns] enabled`. It is given the DHCP
lease table (`interfaces.ILeaseTable`): the names in it at start, the
`LeaseEvent`s after. The pieces: `zone` (the zone), `views` (what the LAN
side and the WAN see of it), `leasenames` (DHCP names into it at once),
`fast` (precomputed wire answers), `cache`, `upstream` (the forwarders),
`sites` (other sites' names, asked of their servers), `chain` (the resolver
chain's links), `server` (the protocols and their controller), `metrics`.
The mail's TXT records (DKIM keys, SPF, DMARC) come from `allworx.dkimkeys`:
the keys the mail service keeps under data_dir/dkim, read again on
`DkimKeysChanged`.
"""

import socket

from prometheus_client import REGISTRY
from twisted.logger import Logger

from allworx.dkimkeys import DkimKeys, mail_dns_records
from allworx.office import DkimKeysChanged, LeaseEvent, WanAddressChanged
from allworx.protocols.dns.chain import CountedCache, CountedForwarder
from allworx.protocols.dns.fast import FastAnswers
from allworx.protocols.dns.leasenames import LeaseNames
from allworx.protocols.dns.metrics import DnsCollector
from allworx.protocols.dns.server import DnsDatagramProtocol, OfficeDnsFactory, listen_dns_udp
from allworx.protocols.dns.sites import SITE_PORT, SiteForwarder
from allworx.protocols.dns.views import ViewKeeper
from allworx.servicebase import ListeningService

log = Logger()

REBUILD_INTERVAL = 0.5   # seconds: lease changes in this time share one full zone rebuild


class DnsService(ListeningService):
    """
    The "dns" child: keeps the zone current (configuration, WAN address, DHCP
    names from `leases` and lease events), the resolvers in line with `[dns]`,
    and listens on `[dns] port` over UDP and TCP while `[dns] enabled`.

    A lease event changes the served zone before it returns (the DHCP server
    emits it as it sends the ACK); the full rebuild that follows, and the
    refresh of the fast path's answers, are gathered: at most one each
    `REBUILD_INTERVAL`.
    """

    def __init__(self, office, leases=None, reactor=None, forwarder_port=53, timeout=2.0,
                 site_port=SITE_PORT):
        if reactor is None:
            from twisted.internet import reactor
        ListeningService.__init__(self, "dns", office)
        self.leases = leases
        self.reactor = reactor
        self.forwarder_port = forwarder_port
        self.timeout = timeout
        self.keeper = ViewKeeper(reactor)
        self.fast = FastAnswers(reactor)
        self.cache = CountedCache(reactor, self.fast)
        self.sites = SiteForwarder(office, self.cache, reactor, port=site_port)
        self.names = LeaseNames(self.keeper, self.fast)
        self.collector = DnsCollector(self.fast, self.cache)
        self.factory = None
        self._expiry = None
        self._pending = None
        self._refresh = None      # the gathered refresh of the fast path's zone answers
        self._fresh = None        # the serial the fast path's zone answers are of
        self._registered = False
        self._dkim = None
        self.follow(LeaseEvent, self._lease_event)
        self.follow(WanAddressChanged, lambda event: self.rebuild_zone())
        self.follow(DkimKeysChanged, self._dkim_keys_changed)

    @property
    def zone(self):
        """The zone as served (an `OfficeZone`); None before the first start."""
        return self.keeper.zone

    # -- the zone

    def rebuild_zone(self):
        """Make every row of the zone again from the current facts; publish it."""
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        names = self.names.current(self.reactor.seconds())
        config = self.office.config
        self.keeper.rebuild(config, self.office.wan_ip, names, self.mail_records(config))
        self.names.built(names)
        zone = self.keeper.zone
        if zone.serial != self._fresh:
            # Every precomputed zone answer is made again as it is asked.
            self.fast.clear_zone()
            self._fresh = zone.serial
            log.info("dns: zone {domain} serial {serial}: {count} records",
                     domain=zone.domain, serial=zone.serial, count=len(zone.entries))
        self._schedule_expiry()

    def mail_records(self, config):
        """The mail's TXT records: the DKIM keys on disk now, SPF and DMARC."""
        data_dir = config.system.data_dir
        if self._dkim is None or self._dkim.data_dir != data_dir:
            self._dkim = DkimKeys(data_dir)
        try:
            return mail_dns_records(config, self._dkim)
        except OSError as e:
            log.error("dns: the DKIM keys cannot be read: {error}", error=str(e))
            return mail_dns_records(config, None)

    def _dkim_keys_changed(self, event):
        if self._dkim is not None:
            self._dkim.refresh()
        self.rebuild_zone()

    def request_rebuild(self):
        """A full rebuild `REBUILD_INTERVAL` from now, one for all changes till then."""
        if self._pending is None:
            self._pending = self.reactor.callLater(REBUILD_INTERVAL, self.rebuild_zone)

    def _names_changed(self):
        """
        `LeaseNames` amended the served zone and both views exactly (a
        lease's rows are never public: the WAN's view under wan_view = public
        never changes with them) and dropped the precomputed answers the rows
        changed; no full rebuild follows, which would cost the whole office
        for each lease. The other precomputed answers that carry the SOA
        (NODATA) still hold the old serial: they are made again as asked
        from `REBUILD_INTERVAL` on, one refresh for all changes till then.
        """
        if self._refresh is None:
            self._refresh = self.reactor.callLater(REBUILD_INTERVAL, self._refresh_answers)

    def _refresh_answers(self):
        self._refresh = None
        zone = self.keeper.zone
        if zone is not None and zone.serial != self._fresh:
            self.fast.clear_zone()
            self._fresh = zone.serial

    def _lease_event(self, event):
        if self.names.apply(event, self.office.config, self.office.wan_ip):
            self._names_changed()
        self._schedule_expiry()

    def _expire(self):
        self._expiry = None
        if self.names.expire(self.reactor.seconds(), self.office.config, self.office.wan_ip):
            self._names_changed()
        self._schedule_expiry()

    def _schedule_expiry(self):
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        due = self.names.next_expiry()
        if due is not None and due != float("inf"):
            delay = max(0.0, due - self.reactor.seconds())
            self._expiry = self.reactor.callLater(delay, self._expire)

    # -- the resolvers

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
                                        self._forwarders(self.office.config), self.reactor,
                                        self.sites)

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

    # -- the service base's hooks

    def bound_settings(self, config):
        return (config.dns.enabled, config.dns.port)

    def disabled_reason(self, config):
        return None if config.dns.enabled else "DNS server disabled in [dns]"

    def build_listeners(self, config):
        port = config.dns.port
        udp = DnsDatagramProtocol(self.factory)

        def listen_udp():
            p = listen_dns_udp(self.reactor, port, udp)
            sock = getattr(p, "socket", None)
            if sock is not None:
                # Room for bursts: a full buffer loses queries.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            return p
        return [("udp %d" % port, port, listen_udp),
                ("tcp %d" % port, port, lambda: self.reactor.listenTCP(port, self.factory))]

    def config_changed(self, event):
        """Zone, peers' sides and resolvers follow; the base rebinds for a new port."""
        # The mail sections' ports are in the zone's SRV records; `[dns]
        # wan_view`, the tunnel and the sites' networks decide the views.
        if event.touches("system", "lan", "wan", "host", "record", "mail", "pop3", "imap",
                         "dns", "vpn", "site"):
            self.rebuild_zone()
        if event.touches("lan", "vpn", "site"):
            self.factory.lan_changed()
        if event.touches("vpn", "site", "system"):
            # Names may now be another site's, or no longer: ask afresh (the
            # sites' link comes before the zone's answers, kept or not).
            self.cache.clear()
            self.fast.clear_zone()
        if not event.touches("dns"):
            return
        old, new = event.old.dns, event.new.dns
        if (old.primary, old.secondary, old.use_forwarders) != (
                new.primary, new.secondary, new.use_forwarders):
            self.cache.clear()
            log.info("dns: forwarders now {servers}", servers=", ".join(
                str(ip) for ip in (new.primary, new.secondary) if ip)
                if new.use_forwarders else "none (stand-alone)")
        self._rewire()

    # -- life cycle

    def startService(self):
        if self.leases is not None:
            self.names.load(self.leases.active_leases())
        self.rebuild_zone()
        self._build_factory()
        if not self._registered:
            REGISTRY.register(self.collector)
            self._registered = True
        ListeningService.startService(self)

    def stopService(self):
        for call in (self._expiry, self._pending, self._refresh):
            if call is not None and call.active():
                call.cancel()
        self._expiry = self._pending = self._refresh = None
        if self._registered:
            REGISTRY.unregister(self.collector)
            self._registered = False
        return ListeningService.stopService(self)
