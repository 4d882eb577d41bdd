# -*- test-case-name: allworx.tests.dns.test_zone -*-
"""
The names DHCP clients sent, while their leases live (SPEC 5), as the office
zone takes them: `DhcpNames` follows the `LeaseEvent`s and says what changed
since it was last asked (`take_changes`), with indexes by address, by name
and by expiry, so that one event costs what it touches, not the office.
"""

import heapq
import ipaddress
import itertools
import re

import attr

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def dhcp_label(hostname):
    """
    The zone label for a host name a DHCP client sent, or None when it cannot
    be one: lower case, the first label of a dotted name, `_` and spaces as `-`.
    """
    if not hostname:
        return None
    if isinstance(hostname, bytes):
        hostname = hostname.decode("ascii", "replace")
    label = hostname.strip().split(".")[0].lower().replace("_", "-").replace(" ", "-")
    return label if _LABEL.match(label) else None


@attr.s(frozen=True, slots=True)
class DhcpName:
    """
    A name a DHCP client holds while its lease lives (None: it sent none
    usable); `claim` orders the claims on one name, the highest being the newest.
    """

    label = attr.ib()
    address = attr.ib()
    mac = attr.ib()
    expires = attr.ib()
    claim = attr.ib(default=0)


class DhcpView(dict):
    """
    label -> address of the names DHCP clients sent, and `by_mac`: MAC ->
    address of every live lease, named or not, which names the `[host]`s that
    have a MAC and no fixed address.
    """

    def __init__(self, names, by_mac):
        dict.__init__(self, names)
        self.by_mac = by_mac


class DhcpNames:
    """
    The DHCP clients' names, from `LeaseEvent`s: granted/renewed add or move a
    name, released/expired/declined remove it, and `expire(now)` scrubs names
    whose lease ended even if no event said so. Leases without a usable name
    are kept too, by MAC, for the named dynamic clients (`DhcpView.by_mac`).

    When two live leases carry one name, the newer claim holds it: the lease
    that took the name last (a new lease, or a client that now sends another
    name). A renewal that repeats the name, even at another address, keeps
    its claim's age, so two devices sending one name do not swap it (and its
    A and PTR) at every renewal. When the holder's lease ends, the name goes
    to the newest claim left. The other claims' addresses have no PTR.
    `apply` says True exactly when that outcome (`current()`) may change.
    One address is one lease: a client's claim on an address ends when
    another client is given it.
    """

    def __init__(self):
        self._by_mac = {}       # MAC -> DhcpName
        self._at = {}           # address -> MAC
        self._claims_of = {}    # label -> {MAC: claim}
        self._due = []          # heap of (expires, MAC), entries of past states left in
        self._claims = itertools.count(1)
        self._labels, self._macs = set(), set()   # changed since `take_changes`

    def apply(self, event):
        """Take a LeaseEvent into account; True when the names changed."""
        kind, mac = event.kind, event.mac
        old = self._by_mac.get(mac)
        if kind in ("granted", "renewed"):
            label = dhcp_label(event.hostname)
            claim = old.claim if old is not None and old.label == label else next(self._claims)
            new = DhcpName(label, ipaddress.IPv4Address(event.address), mac,
                           event.expires if event.expires is not None else float("inf"), claim)
            changed = old is None or (old.label, old.address) != (new.label, new.address)
            # Another client's claim on this address is over.
            other = self._at.get(new.address)
            if other is not None and other != mac:
                self._remove(other)
                changed = True
            self._put(new)
            return changed
        if kind in ("released", "expired", "declined"):
            if old is not None and old.address != ipaddress.IPv4Address(event.address):
                return False  # a late event for an address the client no longer has
            return self._remove(mac)
        return False

    def expire(self, now):
        """Remove names whose lease ended by `now`; True when any did."""
        gone = False
        while self._due and self._due[0][0] <= now:
            expires, mac = heapq.heappop(self._due)
            n = self._by_mac.get(mac)
            if n is not None and n.expires == expires:
                gone = self._remove(mac) or gone
        return gone

    def next_expiry(self):
        """When the next name falls due, or None."""
        while self._due:
            expires, mac = self._due[0]
            n = self._by_mac.get(mac)
            if n is not None and n.expires == expires:
                return expires
            heapq.heappop(self._due)
        return None

    def current(self):
        """A `DhcpView`: label -> address; the newest claim wins a name two clients claim."""
        out = {}
        for n in sorted(self._by_mac.values(), key=lambda n: n.claim):
            if n.label is not None:
                out[n.label] = n.address
        return DhcpView(out, {mac: n.address for mac, n in self._by_mac.items()})

    # -- what changed, without the whole view

    def take_changes(self):
        """(labels, MACs) whose entry in `current()` may have changed since the last call."""
        changes = self._labels, self._macs
        self._labels, self._macs = set(), set()
        return changes

    def holder(self, label):
        """The address `label` has in `current()`, or None."""
        claims = self._claims_of.get(label)
        if not claims:
            return None
        return self._by_mac[max(claims, key=claims.get)].address

    def address_of(self, mac):
        """The address of `mac`'s lease (`current().by_mac`), or None."""
        n = self._by_mac.get(mac)
        return n.address if n is not None else None

    def mac_at(self, address):
        """The MAC whose lease has `address` (one address is one lease), or None."""
        return self._at.get(address)

    def label_at(self, address):
        """The label `current()` has at `address`, or None (one address is one lease)."""
        mac = self._at.get(address)
        label = self._by_mac[mac].label if mac is not None else None
        return label if label is not None and self.holder(label) == address else None

    def load(self, leases):
        """
        Seed from the DHCP lease table's records (dicts or objects). The table
        does not say when a name was claimed: the lease that ends last stands
        for the newest claim (and keeps an address two records hold, as a
        grant would: one address is one lease).
        """
        seeded = []
        for lease in leases:
            get = lease.get if isinstance(lease, dict) else lambda k: getattr(lease, k, None)
            address = get("address")
            if address is not None:
                if not isinstance(address, ipaddress.IPv4Address):
                    address = ipaddress.IPv4Address(str(address))
                seeded.append((get("expires") or float("inf"), dhcp_label(get("hostname")),
                               address, get("mac")))
        seeded.sort(key=lambda n: n[0])         # stable: records ending together keep their order
        for expires, label, address, mac in seeded:
            other = self._at.get(address)
            if other is not None and other != mac:
                self._remove(other)
            self._put(DhcpName(label, address, mac, expires, next(self._claims)))

    # -- the indexes

    def _put(self, n):
        old = self._by_mac.get(n.mac)
        if old is not None:
            self._unindex(old)
        self._by_mac[n.mac] = n
        self._at[n.address] = n.mac
        if n.label is not None:
            self._claims_of.setdefault(n.label, {})[n.mac] = n.claim
            self._labels.add(n.label)
        self._macs.add(n.mac)
        heapq.heappush(self._due, (n.expires, n.mac))
        if len(self._due) > 2 * len(self._by_mac) + 64:   # the past states' entries
            self._due = [(m.expires, m.mac) for m in self._by_mac.values()]
            heapq.heapify(self._due)

    def _remove(self, mac):
        n = self._by_mac.pop(mac, None)
        if n is None:
            return False
        self._unindex(n)
        return True

    def _unindex(self, n):
        if self._at.get(n.address) == n.mac:
            del self._at[n.address]
        if n.label is not None:
            claims = self._claims_of[n.label]
            claims.pop(n.mac, None)
            if not claims:
                del self._claims_of[n.label]
            self._labels.add(n.label)
        self._macs.add(n.mac)
