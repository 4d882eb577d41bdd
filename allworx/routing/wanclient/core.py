# -*- test-case-name: allworx.tests.wanclient.test_client -*-
"""
The WAN DHCP client's data and actions, with no sockets and no states of its
own: `DhcpClientCore` sends through a wire, times with an injected clock and
reports to its listener; the automat machine in `allworx.routing.wanclient.client`
decides which of its actions run when.
"""

import random

from automat import NoTransition
from prometheus_client import Counter
from twisted.logger import Logger

from allworx.protocols.dhcp.codec import (
    ACK, BOOTREPLY, DECLINE, DISCOVER, NAK, OFFER, RELEASE, REQUEST, ZERO, MalformedPacket)
from allworx.routing.wanclient.packets import DhcpMessage, client_message, lease_from_ack, mac_bytes

log = Logger()

SENT = Counter("allworx_network_wan_dhcp_sent_total",
               "DHCP messages the WAN client sent", ["type"])
RECEIVED = Counter("allworx_network_wan_dhcp_received_total",
                   "DHCP replies to the WAN client (its own exchange)", ["type"])
LOST = Counter("allworx_network_wan_dhcp_leases_lost_total",
               "WAN leases lost (expired or refused)")

FIRST_RETRY = 4.0          # RFC 2131 4.1: 4 s, doubling, up to 64 s, +-1 s
MAX_RETRY = 64.0
REQUEST_ATTEMPTS = 4       # REQUESTING: transmissions before starting over
REBOOT_ATTEMPTS = 3        # INIT-REBOOT: before falling back (about 28 s)
SELECT_WINDOW = 0.0        # after the first offer, wait this long for others (as
                           # dhclient's select-timeout 0: a WAN has one server)
NAK_DELAY = 1.0            # pause before DISCOVER after a NAK (no tight loops)
PROBE_SPACING = 0.5        # CHECKING: a second ARP probe after this long,
PROBE_WAIT = 1.0           # and the address is taken as free after this long
DECLINE_WAIT = 10.0        # RFC 2131 3.1: at least 10 s before DISCOVER after a DECLINE


class DhcpClientCore:
    """
    The client's data and actions, with no sockets: messages go out through
    `wire` (`broadcast(data, src)`, `unicast(data, dst)`), the outcome goes to
    `listener`, the lease to `store` (`save(lease)`), time comes from `clock`.
    """

    def __init__(self, mac, clock, wire, listener, store=None, hostname=None,
                 avoid=(), ifname="wan0", jitter=None, xids=None,
                 select_window=SELECT_WINDOW):
        self.mac = mac_bytes(mac) if isinstance(mac, str) else mac
        self.clock = clock
        self.wire = wire
        self.listener = listener
        self.store = store
        self.hostname = hostname
        self.avoid = tuple(avoid)
        self.ifname = ifname
        self.select_window = select_window
        self.jitter = jitter or (lambda: random.uniform(-1.0, 1.0))
        self._xids = xids or (lambda: random.SystemRandom().getrandbits(32))
        self.machine = None
        self.state = "STOPPED"
        self.lease = None           # the lease in force (BOUND .. REBINDING)
        self.preferred = None       # address to ask for again (last lease)
        self.preferred_lease = None  # the lease it came from, while still usable
        self.xid = None
        self.offers = []
        self.chosen = None          # (msg, lease) being requested
        self.checking = None        # a new lease while its address is ARP-checked
        self.attempt = 0
        self.started_at = None
        self.request_sent_at = None
        self.timers = {}

    # -------------------------------------------------------- helpers

    def now(self):
        return self.clock.seconds()

    def enter(self, state):
        """Record the state (for status and logs) and drop its predecessor's retries."""
        self.cancel("retransmit", "select", "discover", "probe", "probed")
        if state != self.state:
            self.state = state
            log.info("wan: {state}", state=state)
            self.listener.dhcp_state_changed(state)

    def schedule(self, name, delay, call, *args):
        self.cancel(name)
        self.timers[name] = self.clock.callLater(max(0.0, delay), self._fire, name, call, *args)

    def _fire(self, name, call, *args):
        self.timers.pop(name, None)
        call(*args)

    def cancel(self, *names):
        for name in names or list(self.timers):
            timer = self.timers.pop(name, None)
            if timer is not None and timer.active():
                timer.cancel()

    def backoff(self):
        """RFC 2131 4.1: 4 s for the first retry, doubling to 64 s, randomised by a second."""
        return min(FIRST_RETRY * 2 ** self.attempt, MAX_RETRY) + self.jitter()

    def secs(self):
        return int(self.now() - self.started_at) if self.started_at is not None else 0

    def new_exchange(self):
        self.xid = self._xids() & 0xFFFFFFFF
        self.attempt = 0
        self.started_at = self.now()

    # -------------------------------------------------------- messages

    def send_discover(self):
        msg = client_message(DISCOVER, self.xid, self.mac, secs=self.secs(),
                             hostname=self.hostname, requested=self.preferred)
        log.info("wan: DHCPDISCOVER on {ifname}{attempt}", ifname=self.ifname,
                 attempt=self._attempt_text())
        SENT.labels("DHCPDISCOVER").inc()
        self.wire.broadcast(msg.encode(), ZERO)

    def send_request(self, how):
        """A DHCPREQUEST as the state needs it (RFC 2131 table 4)."""
        self.request_sent_at = self.now()
        if how == "selecting":
            msg_lease = self.chosen[1]
            msg = client_message(REQUEST, self.xid, self.mac, secs=self.secs(),
                                 hostname=self.hostname, requested=msg_lease.address.ip,
                                 server=msg_lease.server)
            target, src = None, ZERO
            what = "for %s from %s" % (msg_lease.address.ip, msg_lease.server)
        elif how == "init-reboot":
            msg = client_message(REQUEST, self.xid, self.mac, secs=self.secs(),
                                 hostname=self.hostname, requested=self.preferred)
            target, src = None, ZERO
            what = "to keep %s" % self.preferred
        else:
            ip = self.lease.address.ip
            msg = client_message(REQUEST, self.xid, self.mac, ciaddr=ip, secs=self.secs(),
                                 hostname=self.hostname)
            if how == "renewing":
                target, src = self.lease.server, ip
                what = "to %s renewing %s" % (self.lease.server, ip)
            else:
                target, src = None, ip
                what = "rebinding %s" % ip
        log.info("wan: DHCPREQUEST {what}{attempt}", what=what, attempt=self._attempt_text())
        SENT.labels("DHCPREQUEST").inc()
        if target is None:
            self.wire.broadcast(msg.encode(), src)
        else:
            self.wire.unicast(msg.encode(), target)

    def conflict(self, mac):
        """The ARP probe heard another host on the address being checked."""
        if self.state == "CHECKING":
            self.machine.address_in_use(mac)

    def send_decline(self, lease):
        """DHCPDECLINE: the offered address is in use by another host."""
        msg = client_message(DECLINE, self._xids() & 0xFFFFFFFF, self.mac,
                             requested=lease.address.ip, server=lease.server)
        SENT.labels("DHCPDECLINE").inc()
        self.wire.broadcast(msg.encode(), ZERO)

    def send_release(self):
        """DHCPRELEASE, unicast to the server that granted the lease."""
        lease = self.lease
        msg = client_message(RELEASE, self._xids() & 0xFFFFFFFF, self.mac,
                             ciaddr=lease.address.ip, server=lease.server)
        log.info("wan: DHCPRELEASE of {address} to {server}",
                 address=str(lease.address.ip), server=str(lease.server))
        SENT.labels("DHCPRELEASE").inc()
        self.wire.unicast(msg.encode(), lease.server)

    def _attempt_text(self):
        return " (attempt %d)" % (self.attempt + 1) if self.attempt else ""

    # -------------------------------------------------------- replies

    def receive(self, data):
        """A UDP payload that came to port 68: feed it to the machine if it is ours."""
        try:
            msg = DhcpMessage.decode(data)
        except MalformedPacket as e:
            log.debug("wan: ignored a malformed DHCP packet: {why}", why=str(e))
            return
        if msg.op != BOOTREPLY or msg.xid != self.xid or msg.chaddr != self.mac:
            return
        kind = msg.message_type
        RECEIVED.labels(msg.kind or "unknown").inc()
        try:
            if kind == OFFER:
                try:
                    lease = lease_from_ack(msg, self.now(), self.avoid)
                except ValueError as e:
                    log.warn("wan: ignored DHCPOFFER of {address} from {server}: {why}",
                             address=str(msg.yiaddr), server=str(msg.server_id), why=str(e))
                    return
                self.machine.offer(msg, lease)
            elif kind == ACK:
                try:
                    lease = lease_from_ack(msg, self.request_sent_at or self.now(), self.avoid)
                except ValueError as e:
                    log.warn("wan: ignored DHCPACK from {server}: {why}",
                             server=str(msg.server_id), why=str(e))
                    return
                self.machine.ack(lease)
            elif kind == NAK:
                self.machine.nak(msg)
        except NoTransition:
            log.debug("wan: ignored {kind} in {state}", kind=msg.kind, state=self.state)

    def retry_due(self):
        """The retransmission timer: send again, or give up where the RFC says to."""
        if self.state == "REQUESTING" and self.attempt + 1 >= REQUEST_ATTEMPTS:
            log.warn("wan: no DHCPACK after {n} requests; starting over", n=REQUEST_ATTEMPTS)
            self.machine.give_up()
        elif self.state == "INIT-REBOOT" and self.attempt + 1 >= REBOOT_ATTEMPTS:
            saved = self.preferred_lease
            if saved is not None and saved.expires_at > self.now() + 1:
                log.info("wan: no answer to INIT-REBOOT; using the saved lease of "
                         "{address} until it runs out", address=str(saved.address))
                self.machine.keep_saved(saved)
            else:
                self.machine.give_up()
        else:
            self.attempt += 1
            self.machine.retransmit()

    # -------------------------------------------------------- lease timers

    def bound(self, lease):
        """Enter BOUND with `lease`: timers for T1, T2 and the end, and tell the listener."""
        renewed = self.lease is not None and self.lease.address == lease.address
        self.lease = lease
        self.preferred = lease.address.ip
        self.preferred_lease = lease
        self.chosen, self.offers = None, []
        self.enter("BOUND")
        now = self.now()
        self.schedule("t1", lease.renew_at - now, self.machine.renew)
        self.schedule("t2", lease.rebind_at - now, self.machine.rebind)
        self.schedule("expiry", lease.expires_at - now, self.machine.expire)
        log.info("wan: {verb} {lease}", verb="renewed" if renewed else "bound",
                 lease=lease.describe())
        if self.store is not None:
            self.store.save(lease)
        self.listener.dhcp_bound(lease, renewed)

    def lose(self, reason):
        """The lease is gone: cancel its timers and tell the listener."""
        self.cancel("t1", "t2", "expiry")
        if self.lease is not None:
            self.lease = None
            self.preferred_lease = None
            log.warn("wan: lease lost: {reason}", reason=reason)
            LOST.inc()
            self.listener.dhcp_lost(reason)

    def retry_interval(self, until):
        """
        RENEWING/REBINDING: wait half the time left until `until` (RFC 2131
        4.4.5). The RFC's 60 s floor is shrunk for short leases, so a two
        minute lease still gets several tries.
        """
        floor = min(60.0, self.lease.lease_time / 12.0)
        return max((until - self.now()) / 2.0, floor)
