# -*- test-case-name: allworx.tests.dhcp.test_service -*-
"""
The LAN's DHCP server (SPEC 4, guide 5) as a Twisted service: the "dhcp"
child of the server.

The socket is 0.0.0.0:67 bound to `[lan] interface` (SO_BINDTODEVICE), so
only the LAN is served, with SO_BROADCAST for replies to 255.255.255.255.
A client that has no address yet and did not ask for broadcast gets its
reply as a raw Ethernet frame to its hardware address (AF_PACKET): unlike
writing an ARP entry with `ip neigh` before a sendto, that leaves no state in
the kernel and costs one syscall. Decisions are `DhcpResponder`'s; leases
are journaled (`LeaseJournal`) and each ACK waits for its fsync. A second
socket on port 68 watches for other servers' OFFER/ACK on the LAN (helped
by a periodic probe DISCOVER) and warns: one DHCP server per LAN.

Relayed requests are answered only when the relay itself sits on the LAN
(giaddr inside the LAN subnet; the reply goes to it on port 67): the pool is
the LAN's, so a relay elsewhere could only be misconfigured or hostile.
"""

import os
import random

import attr
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from allworx.interfaces import ILeaseTable, IRogueServers
from allworx.office import LeaseEvent
from allworx.protocols.dhcp import codec as c
from allworx.protocols.dhcp import metrics
from allworx.guards import ClientRateLimit
from allworx.protocols.dhcp.pool import HISTORY_MAX, LeasePool, PoolSettings
from allworx.protocols.dhcp.responder import (
    BROADCAST, CLIENT_PORT, PROBE_MAC, SERVER_PORT, DhcpResponder)
from allworx.protocols.dhcp.sockets import RawSender, open_device_udp
from allworx.protocols.dhcp.journal import JournalError, LeaseJournal
from allworx.servicebase import OfficeService, why_not
from zope.interface import implementer

log = Logger()

PROBE_INTERVAL = 300         # seconds between rogue-server probes
EXHAUSTED_LOG_EVERY = 60     # seconds between "pool exhausted" log lines
BURST_FACTOR = 3             # a client's burst: this many seconds of its `[dhcp] client_rate`
# Config sections whose change reconfigures the server.
WATCHED = ("dhcp", "lan", "host", "security", "dns", "ntp", "system")

RECEIVED, SENT, DROPPED, EVENTS = (metrics.COUNTS[k] for k in (
    "received", "sent", "dropped", "events"))


# ---------------------------------------------------------------- protocols

class DhcpServerProtocol(protocol.DatagramProtocol):
    """Port 67: hands each datagram to the server."""

    noisy = False

    def __init__(self, server):
        self.server = server

    def datagramReceived(self, data, addr):
        self.server.datagram_received(data, addr)


@attr.s(slots=True)
class RogueDhcpServer:
    """Another DHCP server seen answering on the LAN."""

    server = attr.ib()
    first_seen = attr.ib()
    last_seen = attr.ib()
    replies = attr.ib(default=1)

    @property
    def message(self):
        return ("another DHCP server, %s, is answering on the LAN (%d replies seen); "
                "there should be only one DHCP server per LAN" % (self.server, self.replies))

    def __str__(self):
        return self.message


class RogueWatchProtocol(protocol.DatagramProtocol):
    """Port 68 on the LAN: other servers' OFFER/ACK, and our probe DISCOVERs."""

    noisy = False

    def __init__(self, server):
        self.server = server

    def datagramReceived(self, data, addr):
        self.server.client_port_datagram(data, addr)


class LogBudget:
    """
    One log line per event while they are few; under a flood (a benchmark,
    a storm of clients, a hostile host) at most `per_second` lines a second
    and then one line counting the rest, so the log neither drowns nor slows
    the server.
    """

    def __init__(self, clock, what, per_second=20):
        self.clock = clock
        self.what = what
        self.per_second = per_second
        self._window = None
        self._spent = 0
        self._skipped = 0

    def spend(self):
        """True if one more line may be written now."""
        now = int(self.clock.seconds())
        if now != self._window:
            if self._skipped:
                log.info("dhcp: {count} more {what} not logged one by one",
                         count=self._skipped, what=self.what)
            self._window, self._spent, self._skipped = now, 0, 0
        if self._spent < self.per_second:
            self._spent += 1
            return True
        self._skipped += 1
        return False


# ---------------------------------------------------------------- the table

@implementer(ILeaseTable)
class LeaseTable:
    """The leases as other services and the admin pages see them."""

    def __init__(self, server):
        self._server = server

    def active_leases(self):
        """Bound leases as dicts: mac, address, hostname, expires (POSIX), state, vendor_class."""
        return [l.as_dict() for l in self._server.pool.active_leases()]

    def lease_count(self):
        """How many records `active_leases` gives."""
        return self._server.pool.active_count()

    def leases_page(self, offset, limit):
        """`active_leases()[offset:offset + limit]`, made without the others."""
        return [l.as_dict() for l in self._server.pool.active_page(offset, limit)]


# ---------------------------------------------------------------- the server

@implementer(IRogueServers)
class DhcpServer:
    """
    One running DHCP server: pool, responder, journal and ports. Built and
    torn down by `DhcpService`; `datagram_received` is the hot path.
    """

    def __init__(self, office, reactor, journal):
        self.office = office
        self.reactor = reactor
        self.journal = journal
        config = office.config
        self.pool = LeasePool(PoolSettings.from_config(config), reactor)
        self.responder = DhcpResponder(config, self.pool)
        self.limit = None
        self._set_rate(config.dhcp.client_rate)
        self.log_budget = LogBudget(reactor, "lease(s) granted")
        self.noise_budget = LogBudget(reactor, "unanswered or refused message(s)")
        self.port = None
        self.watch_port = None
        self.raw = None
        self._reaper = None
        self._probe = None
        self._last_exhausted = None
        self.rogues = {}

    # ------------------------------------------------------------ life

    def restore(self):
        """Put the journal's leases back in the pool."""
        restored = 0
        for lease in self.journal.load(self.reactor.seconds()):
            restored += self.pool.restore(lease)
        return restored

    def reconfigure(self, config):
        """Take a new configuration: pool, options, addresses."""
        self.pool.reconfigure(PoolSettings.from_config(config))
        self.responder.reconfigure(config)
        self._set_rate(config.dhcp.client_rate)
        if self.raw is not None:
            self.raw.server_ip = str(config.lan_ip)
        self._schedule_reap()

    def _set_rate(self, rate):
        """
        `[dhcp] client_rate`: packets a second per client MAC, bursts of
        BURST_FACTOR times that; 0 lifts the limit. Applied live: clients
        keep their buckets, which a lower burst trims on their next packet.
        """
        if not rate:
            self.limit = None
            return
        burst = rate * BURST_FACTOR
        # Room for every client of the pool, bounded against made-up MACs.
        clients = max(4096, min(4 * self.pool.settings.size, HISTORY_MAX))
        if self.limit is None:
            self.limit = ClientRateLimit(self.reactor, float(rate), burst, max_clients=clients)
        else:
            self.limit.rate, self.limit.burst = float(rate), burst
            self.limit.max_clients = clients

    def listen(self, open_udp, open_raw):
        """Open the ports; raises OSError/CannotListenError when it cannot."""
        interface = self.office.config.lan.interface
        self.port = open_udp(self.reactor, DhcpServerProtocol(self), interface, SERVER_PORT)
        try:
            self.raw = open_raw(interface, self.office.config.lan_ip)
        except OSError as e:
            log.warn("dhcp: no raw socket on {interface} ({why}): replies to clients "
                     "without an address will be broadcast", interface=interface, why=e)
        try:
            self.watch_port = open_udp(self.reactor, RogueWatchProtocol(self), interface,
                                       CLIENT_PORT)
        except OSError as e:
            log.warn("dhcp: cannot watch port 68 on {interface} for other DHCP servers: {why}",
                     interface=interface, why=e)
        else:
            self._probe = self.reactor.callLater(3, self.probe)
        self._schedule_reap()

    def stop(self):
        """Close the ports and cancel the timers; a Deferred."""
        for call in (self._reaper, self._probe):
            if call is not None and call.active():
                call.cancel()
        self._reaper = self._probe = None
        ports = [p for p in (self.port, self.watch_port) if p is not None]
        self.port = self.watch_port = None
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    # ------------------------------------------------------------ packets

    def datagram_received(self, data, addr):
        """One datagram on port 67: decode, decide, journal if needed, answer."""
        try:
            request = c.decode(data)
        except c.MalformedPacket as e:
            DROPPED["malformed"] += 1
            if self.noise_budget.spend():
                log.debug("dhcp: malformed packet from {peer}: {why}", peer=addr[0], why=e)
            return
        kind = c.MESSAGE_NAMES.get(request.message_type, "BOOTP")
        RECEIVED[kind] += 1
        limit = self.limit
        if limit is not None and not limit.allow(request.mac):
            DROPPED["rate_limited"] += 1
            if self.noise_budget.spend():
                log.info("dhcp: {mac} is over its rate limit ([dhcp] client_rate = {rate} "
                         "packets/s): ignored", mac=request.mac, rate=round(limit.rate))
            return
        self._reap()
        outcome = self.responder.handle(request)
        if outcome.event in ("released", "declined"):
            self._lease_ended(outcome)
        if outcome.reply is None:
            if outcome.note == "pool exhausted":
                self._exhausted(request.mac)
            elif outcome.note and self.noise_budget.spend():
                log.debug("dhcp: no reply to {kind} from {mac}: {why}", kind=kind,
                          mac=request.mac, why=outcome.note)
            return
        if outcome.note and self.noise_budget.spend():
            log.info("dhcp: {kind} from {mac}: {why}", kind=kind, mac=request.mac,
                     why=outcome.note)
        if outcome.durable:
            self.journal.bound_then(outcome.lease, self._durable, self._journal_failed,
                                    outcome, request)
        else:
            self.send(outcome, request)

    def _durable(self, outcome, request):
        self.send(outcome, request)
        lease = outcome.lease
        EVENTS[outcome.event] += 1
        if outcome.event == "granted" and self.log_budget.spend():
            log.info("dhcp: {address} granted to {mac} ({hostname}) for {seconds} s",
                     address=str(lease.address), mac=lease.mac,
                     hostname=lease.hostname or "no name",
                     seconds=round(lease.expires - self.reactor.seconds()))
        self.office.emit(LeaseEvent(outcome.event, lease.mac, lease.address, lease.hostname,
                                    lease.expires))

    def _journal_failed(self, error, outcome, request):
        DROPPED["journal_error"] += 1
        if self.noise_budget.spend():
            log.error("dhcp: no ACK for {mac}, its lease is not on disk: {why}",
                      mac=outcome.lease.mac, why=error)

    def send(self, outcome, request):
        """Put an outcome's reply on the wire: raw frame, unicast or broadcast."""
        reply = outcome.reply
        try:
            wire = c.encode(reply, request.get(c.MAX_MESSAGE_SIZE) or c.DEFAULT_MAX_SIZE)
        except ValueError as e:      # the options do not fit the size the client takes
            DROPPED["too_large"] += 1
            if self.noise_budget.spend():
                log.warn("dhcp: no {kind} to {mac}: {why}", kind=c.MESSAGE_NAMES[reply.message_type],
                         mac=request.mac, why=e)
            return
        SENT[c.MESSAGE_NAMES[reply.message_type]] += 1
        ip, port = outcome.destination
        if outcome.hw_dest is not None and self.raw is not None:
            try:
                self.raw.send(wire, outcome.hw_dest, ip, port)
                return
            except OSError as e:
                log.debug("dhcp: raw send to {mac} failed ({why}), broadcasting",
                          mac=outcome.hw_dest, why=e)
        if outcome.hw_dest is not None:
            ip = str(BROADCAST)
        if self.port is not None:
            # Straight to the socket when there is one: Twisted's write
            # re-validates the address text on every call (the hot path).
            sock = getattr(self.port, "socket", None)
            try:
                if sock is not None:
                    sock.sendto(wire, (ip, port))
                else:
                    self.port.write(wire, (ip, port))
            except OSError as e:
                DROPPED["send_failed"] += 1
                log.debug("dhcp: sending to {ip} failed: {why}", ip=ip, why=e)

    def _lease_ended(self, outcome):
        lease = outcome.lease
        EVENTS[outcome.event] += 1
        self.journal.freed(lease).addErrback(lambda f: log.failure(
            "dhcp: journaling the end of a lease failed", f))
        if outcome.event == "declined":
            log.warn("dhcp: {mac} declined {address}: another device uses it; "
                     "kept out of the pool for a while", mac=lease.mac, address=str(lease.address))
        else:
            log.info("dhcp: {mac} released {address}", mac=lease.mac, address=str(lease.address))
        self.office.emit(LeaseEvent(outcome.event, lease.mac, lease.address, lease.hostname,
                                    lease.expires))

    def _exhausted(self, mac):
        DROPPED["pool_exhausted"] += 1
        now = self.reactor.seconds()
        if self._last_exhausted is None or now - self._last_exhausted >= EXHAUSTED_LOG_EVERY:
            self._last_exhausted = now
            s = self.pool.settings
            log.warn("dhcp: pool {first}-{last} exhausted: no address for {mac} "
                     "({size} addresses, all leased or offered)", first=str(s.first),
                     last=str(s.last), mac=mac, size=s.size)

    # ------------------------------------------------------------ expiry

    def _reap(self):
        for lease in self.pool.reap():
            EVENTS["expired"] += 1
            log.info("dhcp: lease of {address} to {mac} expired", address=str(lease.address),
                     mac=lease.mac)
            self.office.emit(LeaseEvent("expired", lease.mac, lease.address, lease.hostname,
                                        lease.expires))

    def _schedule_reap(self):
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()
        due = self.pool.next_due()
        delay = 60.0 if due is None else min(60.0, max(0.0, due - self.reactor.seconds()))
        self._reaper = self.reactor.callLater(delay + 0.01, self._reap_timer)

    def _reap_timer(self):
        self._reaper = None
        self._reap()
        self._schedule_reap()

    # ------------------------------------------------------------ other servers

    def probe(self):
        """Broadcast a DISCOVER from PROBE_MAC so other servers on the LAN show themselves."""
        self._probe = self.reactor.callLater(PROBE_INTERVAL, self.probe)
        self.forget_quiet_rogues()
        packet = c.DhcpPacket(op=c.BOOTREQUEST, xid=random.getrandbits(32),
                              chaddr=c.mac_to_chaddr(PROBE_MAC), flags=c.FLAG_BROADCAST)
        packet.set(c.MESSAGE_TYPE, c.DISCOVER)
        packet.set(c.PARAMETER_REQUEST_LIST, [c.SUBNET_MASK, c.ROUTER])
        if self.watch_port is not None:
            try:
                self.watch_port.write(c.encode(packet), (str(BROADCAST), SERVER_PORT))
            except OSError as e:
                log.debug("dhcp: probe not sent: {why}", why=e)

    def client_port_datagram(self, data, addr):
        """A packet to port 68 on the LAN: another server's reply?"""
        try:
            packet = c.decode(data)
        except c.MalformedPacket:
            return
        if packet.op != c.BOOTREPLY or packet.message_type not in (c.OFFER, c.ACK):
            return
        server = packet.get(c.SERVER_ID) or addr[0]
        if str(server) == str(self.responder.server_ip):
            return
        self.rogue_seen(str(server))

    def rogue_seen(self, server):
        """Another server answered on the LAN: warn once, then count."""
        metrics.ROGUE_REPLIES[server] += 1
        now = self.reactor.seconds()
        seen = self.rogues.get(server)
        if seen is None:
            seen = self.rogues[server] = RogueDhcpServer(server, now, now)
            log.warn("dhcp: {message}", message=seen.message, server=server)
            self.office.set_status("dhcp", "degraded",
                                   "another DHCP server (%s) answers on the LAN" % server)
        else:
            seen.replies += 1
            seen.last_seen = now

    def warnings(self):
        """The other DHCP servers heard on the LAN lately (IRogueServers)."""
        return list(self.rogues.values())

    def forget_quiet_rogues(self):
        """Drop the warning for servers not heard through two probes; back to "up" when none is left."""
        if not self.rogues:
            return
        now = self.reactor.seconds()
        for server, seen in list(self.rogues.items()):
            if now - seen.last_seen > 2 * PROBE_INTERVAL + 10:
                del self.rogues[server]
                log.info("dhcp: the other DHCP server {server} has not answered since {when}",
                         server=server, when=seen.last_seen)
        if not self.rogues and self.port is not None:
            self.office.set_status("dhcp", "up", self.serving())

    def serving(self):
        """The status sentence of a running server."""
        settings = self.pool.settings
        return "serving %s-%s on %s (port 67)" % (settings.first, settings.last,
                                                  self.office.config.lan.interface)


class DhcpService(OfficeService):
    """
    The "dhcp" child: starts, stops and reconfigures the `DhcpServer`. Its
    `leases` (ILeaseTable) and `rogues` (IRogueServers) are what the rest of
    the server is given.
    """

    def __init__(self, office, reactor=None, open_udp=open_device_udp, open_raw=RawSender,
                 journal_thread=None):
        if reactor is None:
            from twisted.internet import reactor
        OfficeService.__init__(self, "dhcp", office)
        self.reactor = reactor
        self.open_udp = open_udp
        self.open_raw = open_raw
        self.journal = LeaseJournal(self.journal_path(office.config), reactor,
                                    journal_thread)
        self.journal.on_commit = _observe_commit
        self.server = DhcpServer(office, reactor, self.journal)
        self.leases = LeaseTable(self.server)
        self.rogues = self.server
        self._loaded = False

    @staticmethod
    def journal_path(config):
        """Where the lease journal lives under `data_dir`."""
        return os.path.join(config.system.data_dir, "dhcp", "leases.journal")

    def startService(self):
        OfficeService.startService(self)
        metrics.COLLECTOR.pool = self.server.pool
        try:
            restored = self.server.restore()
            self._loaded = True
        except JournalError as e:
            self.office.set_status("dhcp", "down", str(e))
            return
        log.info("dhcp: {count} lease(s) restored from the journal", count=restored)
        # The restored leases are news to whoever follows leases (the
        # firewall's host forwards, DNS names); a follower that starts later
        # reads them from `leases`: no start order matters.
        for lease in self.server.pool.active_leases():
            self.office.emit(LeaseEvent("renewed", lease.mac, lease.address, lease.hostname,
                                        lease.expires))
        self._start()

    def _start(self):
        config = self.office.config
        if not config.dhcp.enabled:
            self.office.set_status("dhcp", "disabled", "DHCP server disabled in [dhcp]")
            return
        try:
            self.server.listen(self.open_udp, self.open_raw)
        except (OSError, error.CannotListenError) as e:
            self.server.stop()
            self.office.set_status("dhcp", "down", "port 67 on %s: %s" % (
                config.lan.interface, why_not(e, SERVER_PORT)))
            return
        self.office.set_status("dhcp", "up", self.server.serving())

    def config_changed(self, event):
        if not event.touches(*WATCHED) or not self._loaded:
            return
        old, new = event.old, event.new
        self.server.reconfigure(new)
        if (old.dhcp.enabled != new.dhcp.enabled or old.lan != new.lan
                or self.server.port is None):
            d = self.server.stop()
            d.addCallback(lambda _: self._start())
        elif not self.server.rogues:
            self.office.set_status("dhcp", "up", self.server.serving())

    def stopService(self):
        OfficeService.stopService(self)
        if metrics.COLLECTOR.pool is self.server.pool:
            metrics.COLLECTOR.pool = None
        d = self.server.stop()
        d.addCallback(lambda _: self.journal.close())
        return d


def _observe_commit(seconds, records):
    metrics.COMMIT.observe(seconds)
    metrics.BATCH.observe(records)
