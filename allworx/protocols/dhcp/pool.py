# -*- test-case-name: allworx.tests.dhcp.test_pool -*-
"""
Which address a LAN client gets: the pool, the `[host]` reservations, the
leases and their expiry, DECLINE quarantine, one lease per MAC, and a rate
limit per client. Pure: no sockets, no files; time comes from an injected
clock (anything with `seconds()`, such as the reactor or `task.Clock`).

Choice of address for a client, in order: its reservation (unless another
client still holds that address); the address it holds now; the address it
asks for, if free; the address it had before, if nobody took it since; else
a never-used address of the pool, then the one freed longest ago, so that
returning clients find their old address as often as possible.
"""

import heapq
import ipaddress
from collections import OrderedDict

import attr

OFFER_HOLD = 60                # seconds an offered address waits for its REQUEST
DECLINE_QUARANTINE = 600       # seconds a DECLINEd address stays out of the pool
OFFER_STEAL_AFTER = 5          # seconds after which an unanswered offer may go to another client

BOUND, OFFERED = "bound", "offered"
HISTORY_MAX = 1 << 18          # past clients remembered at most, however large the pool


def _address(value):
    return value if isinstance(value, ipaddress.IPv4Address) else ipaddress.IPv4Address(value)


@attr.s(frozen=True, slots=True)
class PoolSettings:
    """What the pool needs from the config: the range, exclusions, reservations, times."""

    first = attr.ib(converter=_address)
    last = attr.ib(converter=_address)
    server_ip = attr.ib(converter=_address)
    reservations = attr.ib(default=(), converter=lambda v: tuple(sorted(
        (mac, _address(ip)) for mac, ip in (v.items() if isinstance(v, dict) else v))))
    lease_time = attr.ib(default=86400)
    offer_hold = attr.ib(default=OFFER_HOLD)
    offer_steal_after = attr.ib(default=OFFER_STEAL_AFTER)
    decline_quarantine = attr.ib(default=DECLINE_QUARANTINE)

    @last.validator
    def _check(self, attribute, value):
        if value < self.first:
            raise ValueError("pool range %s-%s is backwards" % (self.first, value))

    @classmethod
    def from_config(cls, config):
        """The settings for a Config."""
        first, last = config.pool
        return cls(first=first, last=last,
                   server_ip=config.lan_ip,
                   reservations={h.mac: h.address for h in config.hosts.values()
                                 if h.address is not None},
                   lease_time=config.dhcp.lease_time)

    @property
    def size(self):
        """Dynamic addresses: the range minus the server's own and reserved ones."""
        first, last = int(self.first), int(self.last)
        taken = {int(a) for _, a in self.reservations} | {int(self.server_ip)}
        return last - first + 1 - sum(1 for a in taken if first <= a <= last)


@attr.s(frozen=True, slots=True)
class Lease:
    """One address held by one client: offered (briefly) or bound until `expires`."""

    mac = attr.ib()
    address = attr.ib()
    expires = attr.ib()
    state = attr.ib(default=BOUND)
    hostname = attr.ib(default=None)
    # The client's vendor class (option 60) as text, or None: what a phone
    # says it is (SPEC 19: the model is guessed from it).
    vendor_class = attr.ib(default=None)

    def as_dict(self):
        """The lease as plain data for pages and the API."""
        return {"mac": self.mac, "address": str(self.address), "hostname": self.hostname,
                "expires": self.expires, "state": self.state,
                "vendor_class": self.vendor_class}


@attr.s(frozen=True, slots=True)
class Binding:
    """The outcome of a successful REQUEST: the lease and whether it is new or renewed."""

    lease = attr.ib()
    kind = attr.ib()   # "granted" | "renewed"


class LeasePool:
    """
    The leases of one LAN pool. Every method takes its time from `clock`;
    `reap()` returns the bound leases that expired since the last call.

    Addresses are IPv4Address at the edges and integers inside: hashing and
    comparing IPv4Address objects is slow, and this is the server's hot path.
    """

    def __init__(self, settings, clock):
        self.clock = clock
        self._by_ip = {}        # address (int) -> Lease (offered or bound)
        self._by_mac = {}       # mac -> Lease: at most one per client
        self._history = OrderedDict()   # mac -> address (int) it had before, oldest first
        self._expiry = []       # heap of (expires, address int)
        self._quarantine = {}   # address (int) -> until
        self._recycled = OrderedDict()  # freed dynamic addresses (ints), oldest first
        # Never-used addresses are the ones from `_next` to the end of the
        # range: a cursor, not a list, so a pool as large as the LAN (a /16
        # has 65,534 hosts) costs nothing until its addresses are lent.
        self._next = None
        self._layout = None     # what the cursor's skipping depended on
        # The bound leases by address, made again only after a change
        # (`_changes` moves on with every one): pages of the lease list and
        # its count then cost what the page holds, not what the pool does.
        self._changes = 0
        self._bound = None      # (changes, bound leases by address, soonest expiry)
        self.last_refusal = None
        self.settings = None
        self.reconfigure(settings)

    # ------------------------------------------------------------ config

    def reconfigure(self, settings):
        """Take new settings; existing leases stay until renewal decides on them."""
        self.settings = settings
        first, last = int(settings.first), int(settings.last)
        # Enough memory of past clients to give each its old address back,
        # bounded whatever the pool's size (made-up MACs cannot grow it).
        self._history_cap = max(1024, min(4 * (last - first + 1), HISTORY_MAX))
        self._reserved_for = {m: int(a) for m, a in settings.reservations}  # mac -> address
        self._reserved = {int(a): m for m, a in settings.reservations}      # address -> mac
        self._first_i, self._last_i, self._server_i = first, last, int(settings.server_ip)
        self._recycled = OrderedDict((n, None) for n in self._recycled if self._in_pool(n))
        # The cursor skipped addresses that were reserved, the server's or
        # outside the range; when any of that changes, it starts over (what
        # is lent or recycled is skipped again on the way).
        layout = (first, last, self._server_i, frozenset(self._reserved))
        if layout != self._layout:
            self._layout, self._next = layout, first

    def _in_pool(self, n):
        """True for a dynamic address (an int): in the range, not the server's, not reserved."""
        return (self._first_i <= n <= self._last_i and n != self._server_i
                and n not in self._reserved)

    # ------------------------------------------------------------ queries

    def lease_of(self, mac):
        """The client's current (unexpired) lease or offer, or None."""
        lease = self._by_mac.get(mac)
        if lease is not None and lease.expires > self.clock.seconds():
            return lease
        return None

    def holder(self, address):
        """The unexpired lease on `address`, or None."""
        lease = self._by_ip.get(int(address))
        if lease is not None and lease.expires > self.clock.seconds():
            return lease
        return None

    def active_leases(self):
        """Bound, unexpired leases, by address."""
        return list(self._active())

    def active_count(self):
        """How many leases `active_leases` holds."""
        return len(self._active())

    def active_page(self, offset, limit):
        """`active_leases()[offset:offset + limit]`, without the rest."""
        return list(self._active()[offset:offset + limit])

    def _active(self):
        now = self.clock.seconds()
        if self._bound is None or self._bound[0] != self._changes:
            leases = tuple(l for _, l in sorted(self._by_ip.items()) if l.state == BOUND)
            self._bound = (self._changes, leases, min((l.expires for l in leases),
                                                      default=float("inf")))
        _, leases, soonest = self._bound
        if soonest > now:
            return leases       # none has run out (the reaper frees those that do)
        return tuple(l for l in leases if l.expires > now)

    def counts(self):
        """{'size', 'bound', 'offered', 'quarantined'} for metrics and pages."""
        now = self.clock.seconds()
        live = [l for l in self._by_ip.values() if l.expires > now]
        return {"size": self.settings.size,
                "bound": sum(1 for l in live if l.state == BOUND),
                "offered": sum(1 for l in live if l.state == OFFERED),
                "quarantined": sum(1 for t in self._quarantine.values() if t > now)}

    def _available_to(self, mac, n, now):
        """May `mac` have address `n` now? (A reason string when not, else None.)"""
        holder = self._by_ip.get(n)
        if holder is not None and holder.mac != mac and holder.expires > now:
            return "held by %s" % holder.mac
        owner = self._reserved.get(n)
        if owner is not None:
            return None if owner == mac else "reserved for %s" % owner
        if n == self._server_i:
            return "the server's own address"
        if not self._first_i <= n <= self._last_i:
            return "outside the pool"
        if self._quarantine.get(n, 0) > now:
            return "declined recently"
        return None

    # ------------------------------------------------------------ changes

    def offer(self, mac, requested=None, hostname=None, vendor_class=None):
        """
        The lease to offer `mac` (a DISCOVER), held for `offer_hold` seconds,
        or None when the pool is exhausted.
        """
        now = self.clock.seconds()
        current = self._by_mac.get(mac)
        reserved = self._reserved_for.get(mac)
        if current is not None:
            n = int(current.address)
            if reserved is not None and n != reserved and \
                    self._available_to(mac, reserved, now) is None:
                pass   # a reservation made since: move the client to it
            elif current.expires > now and self._available_to(mac, n, now) is None:
                if current.state == BOUND:
                    return current
                return self._put(Lease(mac, current.address, now + self.settings.offer_hold,
                                       OFFERED, hostname or current.hostname,
                                       vendor_class or current.vendor_class), n)
        n = self._choose(mac, reserved, None if requested is None else int(requested), now)
        if n is None:
            return None
        return self._put(Lease(mac, ipaddress.IPv4Address(n), now + self.settings.offer_hold,
                               OFFERED, hostname, vendor_class), n)

    def _choose(self, mac, reserved, requested, now):
        if reserved is not None and self._available_to(mac, reserved, now) is None:
            return reserved
        for candidate in (requested, self._history.get(mac)):
            if candidate is not None and self._available_to(mac, candidate, now) is None:
                return candidate
        n, last, recycled = self._next, self._last_i, self._recycled
        while n <= last:
            candidate, n = n, n + 1
            if candidate in recycled:
                continue  # known to a past client: handed out last
            if self._in_pool(candidate) and self._available_to(mac, candidate, now) is None:
                self._next = n
                return candidate
        self._next = n
        for n in list(self._recycled):
            if self._available_to(mac, n, now) is None:
                return n
            if not self._in_pool(n):
                del self._recycled[n]
        return self._steal_offer(mac, now)

    def _steal_offer(self, mac, now):
        """
        With nothing free, take back the oldest offer nobody REQUESTed within
        `offer_steal_after` seconds: a flood of DISCOVERs from made-up MACs
        cannot hold the pool (real clients answer an offer in milliseconds).
        """
        cutoff = now + self.settings.offer_hold - self.settings.offer_steal_after
        oldest = None
        for n, lease in self._by_ip.items():
            if (lease.state == OFFERED and lease.mac != mac and lease.expires <= cutoff
                    and self._in_pool(n) and (oldest is None or lease.expires < oldest[1].expires)):
                oldest = (n, lease)
        if oldest is None:
            return None
        self._free(oldest[1], remember=False)
        return oldest[0]

    def request(self, mac, address, hostname=None, vendor_class=None):
        """
        Bind `address` to `mac` (a REQUEST): a Binding, or None when the client
        may not have it (the server answers NAK); `last_refusal` says why.
        """
        now = self.clock.seconds()
        n = int(address)
        why = self._available_to(mac, n, now)
        if why is None:
            reserved = self._reserved_for.get(mac)
            if reserved is not None and reserved != n and \
                    self._available_to(mac, reserved, now) is None:
                why = "reserved address %s is free for it" % ipaddress.IPv4Address(reserved)
        if why is not None:
            self.last_refusal = why
            return None
        current = self._by_mac.get(mac)
        renewed = (current is not None and current.address == address and current.state == BOUND
                   and current.expires > now)
        lease = Lease(mac, address, now + self.settings.lease_time, BOUND,
                      hostname or (current.hostname if current is not None else None),
                      vendor_class or (current.vendor_class if current is not None else None))
        self._put(lease, n)
        return Binding(lease, "renewed" if renewed else "granted")

    def release(self, mac, address):
        """The client gives its address back: the freed lease, or None if it held none."""
        lease = self._by_ip.get(int(address))
        if lease is None or lease.mac != mac or lease.expires <= self.clock.seconds():
            return None
        self._free(lease)
        return lease

    def decline(self, mac, address):
        """
        The client found `address` in use: it leaves the pool for
        `decline_quarantine` seconds. Returns the dropped lease, or None.
        """
        n = int(address)
        lease = self._by_ip.get(n)
        if lease is None or lease.mac != mac:
            return None
        now = self.clock.seconds()
        self._free(lease, remember=False)
        self._recycled.pop(n, None)
        self._quarantine[n] = until = now + self.settings.decline_quarantine
        heapq.heappush(self._expiry, (until, n))
        return lease

    def restore(self, lease):
        """Put back a lease read from the journal (skipped if expired or conflicting)."""
        now = self.clock.seconds()
        n = int(lease.address)
        if lease.expires <= now:
            self._history[lease.mac] = n
            self._recycled.pop(n, None)
            if self._in_pool(n):
                self._recycled[n] = None
            return False
        holder = self._by_ip.get(n)
        if holder is not None and holder.mac != lease.mac and holder.expires > now:
            return False
        self._put(lease, n)
        return True

    def forget(self, address):
        """Drop the lease on `address` without an event (the client chose another server)."""
        lease = self._by_ip.get(int(address))
        if lease is not None:
            self._free(lease)

    def reap(self):
        """Free what is due: expired offers silently; returns the bound leases that expired."""
        expiry = self._expiry
        if not expiry:
            return []
        now = self.clock.seconds()
        expired = []
        while expiry and expiry[0][0] <= now:
            when, n = heapq.heappop(expiry)
            until = self._quarantine.get(n)
            if until is not None and until <= now:
                del self._quarantine[n]
                if self._in_pool(n) and n not in self._by_ip:
                    self._recycled[n] = None
            lease = self._by_ip.get(n)
            if lease is not None and lease.expires == when:
                self._free(lease)
                if lease.state == BOUND:
                    expired.append(lease)
        return expired

    def next_due(self):
        """When `reap` next has something to do (POSIX time), or None."""
        return self._expiry[0][0] if self._expiry else None

    # ------------------------------------------------------------ internals

    def _put(self, lease, n):
        old = self._by_mac.get(lease.mac)
        if old is not None and old.address != lease.address:
            self._free(old)
        other = self._by_ip.get(n)
        if other is not None and other.mac != lease.mac:
            self._by_mac.pop(other.mac, None)
            self._history[other.mac] = n
        self._by_ip[n] = lease
        self._by_mac[lease.mac] = lease
        self._changes += 1
        self._recycled.pop(n, None)
        heapq.heappush(self._expiry, (lease.expires, n))
        return lease

    def _free(self, lease, remember=True):
        n = int(lease.address)
        if self._by_ip.get(n) is lease:
            del self._by_ip[n]
            self._changes += 1
        if self._by_mac.get(lease.mac) is lease:
            del self._by_mac[lease.mac]
        if remember:
            self._history[lease.mac] = n
            self._history.move_to_end(lease.mac)
            while len(self._history) > self._history_cap:
                self._history.popitem(last=False)
            if self._in_pool(n):
                self._recycled[n] = None
                self._recycled.move_to_end(n)
