# -*- test-case-name: allworx.tests.dns.test_leasenames -*-
"""
The DHCP clients' names in the served zone, from the moment the lease event
arrives (SPEC 5: "while their lease lives").

The DHCP server sends its ACK and emits the `LeaseEvent` in one call, so the
first query that can follow the ACK is read after the event. A change of
names here is therefore applied before `apply` returns: the rows the changed
names give are taken out of the served zone and the new ones put in
(`ZoneKeeper.amend`, which also moves the SOA serial on), and the fast
path's precomputed answers that held them are dropped. That costs about
what the change touches. Making every row again and refreshing all
precomputed answers is the expensive part; `DnsService` gathers it
(`rebuild_zone`).

Which rows a name gives is `zone_entries`' rule alone: the rows it makes for
the changed names on top of the static zone (so a client's name never takes
a static or built-in one, and an address off the LAN gives none).
"""

import struct

from twisted.names.dns import IN

from allworx.protocols.dns.chain import COMMON_TYPES
from allworx.protocols.dns.fast import question_key
from allworx.protocols.dns.zone import SOA, DhcpNames, zone_entries


class LeaseNames:
    """
    The DHCP names (`DhcpNames`) and the zone that serves them: `apply` and
    `expire` change the zone held by `keeper` at once; `current` gives the
    names for a full rebuild and `built` says it was made.
    """

    def __init__(self, keeper, fast):
        self.keeper = keeper
        self.fast = fast
        self.table = DhcpNames()
        self._served = {}      # the names as the served zone holds them
        self._static = None    # (config, wan_ip, rows of the zone without DHCP names)
        self._targets = None   # names that CNAME, MX or NS rows point at

    def load(self, records):
        """Start again from the DHCP lease table's records."""
        self.table = DhcpNames()
        self.table.load(records)

    def current(self, now):
        """The names for a full rebuild at `now` (leases over by then scrubbed)."""
        self.table.expire(now)
        return self.table.current()

    def built(self, names):
        """The zone was rebuilt in full with `names`."""
        self._served = dict(names)
        self._static = self._targets = None

    def next_expiry(self):
        """When the next name's lease ends, or None."""
        return self.table.next_expiry()

    def apply(self, event, config, wan_ip):
        """Take a LeaseEvent into the zone now; True when the zone changed."""
        return self.table.apply(event) and self._follow(config, wan_ip)

    def expire(self, now, config, wan_ip):
        """Scrub the names whose lease ended by `now`; True when the zone changed."""
        return self.table.expire(now) and self._follow(config, wan_ip)

    # -- the change

    def _follow(self, config, wan_ip):
        old, new = self._served, self.table.current()
        changed = {label for label in old.keys() | new.keys() if old.get(label) != new.get(label)}
        before = self.keeper.zone
        if not changed or before is None:
            return False
        self._served = new
        static = self._static_rows(config, wan_ip)
        gone = self._rows(config, wan_ip, old, changed) - static
        added = self._rows(config, wan_ip, new, changed) - static
        if not self.keeper.amend(gone, added):
            return False
        self._forget(before, gone | added)
        return True

    @staticmethod
    def _rows(config, wan_ip, names, labels):
        mine = {label: names[label] for label in labels if label in names}
        return set(zone_entries(config, wan_ip, mine)) if mine else set()

    def _static_rows(self, config, wan_ip):
        if self._static is None or self._static[0] is not config or self._static[1] != wan_ip:
            self._static = (config, wan_ip, frozenset(zone_entries(config, wan_ip, {})))
        return self._static[2]

    def _forget(self, before, rows):
        """Drop the fast path's answers that the changed rows make wrong."""
        zone, table = self.keeper.zone, self.fast.zone
        if self._targets is None:
            self._targets = _targets(before.entries)
        self._targets |= _targets(rows)
        names = set()
        for e in rows:
            # The name and the empty non-terminals above it (up to the apex).
            name, origin = e.name, zone.origin_of(e.name)
            while name and name != origin:
                names.add(name)
                name = name.partition(".")[2]
        if names & self._targets:
            table.clear()   # answers that follow a CNAME or carry glue may hold them
            return
        for name in names:
            wire = question_key(name, 0)[:-4]   # the name; type and class follow
            for qtype in set(COMMON_TYPES).union(before.types_at(name), zone.types_at(name)):
                table.pop(wire + struct.pack("!HH", qtype, IN), None)
        for origin in (zone.domain, zone.reverse):
            table.pop(question_key(origin, SOA), None)   # the serial moved on


def _targets(rows):
    """The names CNAME, MX and NS rows point at."""
    out = set()
    for e in rows:
        if e.rtype in ("CNAME", "NS"):
            out.add(e.value.lower().rstrip("."))
        elif e.rtype == "MX":
            out.add(e.value.split()[-1].lower().rstrip("."))
    return out
