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

Which rows a change gives is `zone_entries`' rule alone (so a client's name
never takes a static or built-in one, and an address off the LAN gives none).
A changed name or a moved lease of a named dynamic client (a `[host]` with a
MAC and no address) touches its A row and the PTRs of its old and new
addresses; who holds such a PTR depends on every name and host at that
address. So `zone_entries` is asked, before and after, about the names and
hosts at the addresses the change touches, and the rows that differ are the
change. One address is one lease (`DhcpNames`), which sends one name: when
no such host's lease moved, the names there are the changed ones; when one
did, a name that stayed may be there too (another lease took the address
and sends it), and the names are looked through for it.
"""

import struct

from twisted.names.dns import IN

from allworx.protocols.dns.chain import COMMON_TYPES
from allworx.protocols.dns.fast import question_key
from allworx.protocols.dns.dhcpnames import DhcpNames, DhcpView
from allworx.protocols.dns.zone import SOA, zone_entries


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
        self._served = DhcpView({}, {})   # the names as the served zone holds them
        self._served_at = {}               # address -> the labels `_served` has there
        self._served_macs = {}             # address -> the MACs `_served.by_mac` has there
        self._hosts = None     # (config, MACs of its named dynamic clients)
        self._targets = None   # names that CNAME, MX or NS rows point at
        self._config_index = None   # a _ConfigIndex of the config last seen

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
        self._served = DhcpView(names, dict(getattr(names, "by_mac", {})))
        self._served_at, self._served_macs = {}, {}
        for label, address in self._served.items():
            self._served_at.setdefault(address, set()).add(label)
        for mac, address in self._served.by_mac.items():
            self._served_macs.setdefault(address, set()).add(mac)
        self.table.take_changes()   # all in `names` already
        self._hosts = self._targets = None

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
        before = self.keeper.zone
        if before is None:
            return False
        table, old = self.table, self._served
        changed_labels, changed_macs = table.take_changes()
        hosts = self._dynamic_hosts(config)
        labels = {label for label in changed_labels if old.get(label) != table.holder(label)}
        moved = [mac for mac in changed_macs
                 if mac in hosts and old.by_mac.get(mac) != table.address_of(mac)]
        touched = {old.get(label) for label in labels} | {table.holder(label) for label in labels}
        touched.update(old.by_mac.get(mac) for mac in moved)
        touched.update(table.address_of(mac) for mac in moved)
        touched.discard(None)
        if moved:
            for address in touched:
                labels.update(self._served_at.get(address, ()))
                labels.add(table.label_at(address))
            labels.discard(None)
        # The two views as far as the change goes: the names and the named
        # dynamic clients at the addresses it touches, before and after
        # (found by address: the office's other clients are not looked at).
        was_view = DhcpView({label: old[label] for label in labels if label in old},
                            {mac: address for address in touched
                             for mac in self._served_macs.get(address, ()) if mac in hosts})
        now_view = DhcpView({label: table.holder(label) for label in labels
                             if table.holder(label) is not None},
                            {mac: address for address in touched
                             for mac in (table.mac_at(address),) if mac in hosts})
        self._serve(changed_labels, changed_macs)
        if not touched:
            return False
        was = self._rows(config, wan_ip, was_view, labels, touched)
        now = self._rows(config, wan_ip, now_view, labels, touched)
        gone, added = was - now, now - was
        if not self.keeper.amend(gone, added):
            return False
        self._forget(before, gone | added)
        return True

    def _serve(self, labels, macs):
        """`_served` (and its index by address) as the table is now, for these labels and MACs."""
        served, at = self._served, self._served_at
        for label in labels:
            was, now = served.get(label), self.table.holder(label)
            if was == now:
                continue
            if was is not None:
                at[was].discard(label)
                if not at[was]:
                    del at[was]
                del served[label]
            if now is not None:
                served[label] = now
                at.setdefault(now, set()).add(label)
        for mac in macs:
            was, now = served.by_mac.get(mac), self.table.address_of(mac)
            if was == now:
                continue
            if was is not None:
                self._served_macs[was].discard(mac)
                if not self._served_macs[was]:
                    del self._served_macs[was]
                del served.by_mac[mac]
            if now is not None:
                served.by_mac[mac] = now
                self._served_macs.setdefault(now, set()).add(mac)

    def _rows(self, config, wan_ip, view, labels, touched):
        """
        The rows of the names `labels` and of the named dynamic clients
        (`view.by_mac`: those at the `touched` addresses) in `view` (with
        those static rows that may bear on them: the same before and after,
        so they drop out of the difference).
        """
        names = {label: view[label] for label in labels if label in view}
        leases = dict(view.by_mac)
        return set(zone_entries(self._part(config, labels, touched, leases), wan_ip,
                                DhcpView(names, leases)))

    def _part(self, config, labels, touched, leases):
        """
        `config` with only the `[host]`s and `[record]`s that bear on these
        labels and addresses: those of the same name (a client's name never
        takes theirs), the hosts fixed at a touched address (whose PTR comes
        first or not by name order) and the named dynamic clients with a
        lease in `leases`. What `zone_entries` makes of the rest is the same
        before and after the change, so asking about it is wasted work.
        """
        index = self._index(config)
        hosts, records = {}, {}
        for label in labels:
            for key in index.host_names.get(label, ()):
                hosts[key] = config.hosts[key]
            for key in index.record_names.get(label, ()):
                records[key] = config.records[key]
        for address in touched:
            for key in index.host_addresses.get(int(address), ()):
                hosts[key] = config.hosts[key]
        for mac in leases:
            for key in index.host_macs.get(mac, ()):
                hosts[key] = config.hosts[key]
        return _ConfigPart(config, hosts, records)

    def _index(self, config):
        if self._config_index is None or self._config_index.config is not config:
            self._config_index = _ConfigIndex(config)
        return self._config_index

    def _dynamic_hosts(self, config):
        """The MACs of `config`'s named dynamic clients."""
        if self._hosts is None or self._hosts[0] is not config:
            self._hosts = (config, frozenset(h.mac for h in config.hosts.values()
                                             if h.address is None and h.mac))
        return self._hosts[1]

    def _forget(self, before, rows):
        """Drop the fast path's answers that the changed rows make wrong."""
        zone = self.keeper.zone
        # Both views' tables: the outside one holds such names with wan_view = all.
        tables = (self.fast.zone, self.fast.outside)
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
        # NXDOMAIN answers: a name may now exist, and their SOA's serial moved on.
        self.fast.drop_negatives()
        if names & self._targets:
            for table in tables:
                table.clear()   # answers that follow a CNAME or carry glue may hold them
            return
        keys = [question_key(origin, SOA) for origin in (zone.domain, zone.reverse)]
        for name in names:
            wire = question_key(name, 0)[:-4]   # the name; type and class follow
            for qtype in set(COMMON_TYPES).union(before.types_at(name), zone.types_at(name)):
                keys.append(wire + struct.pack("!HH", qtype, IN))
        for table in tables:
            for key in keys:   # the names, and the SOAs: the serial moved on
                table.pop(key, None)


def _targets(rows):
    """The names CNAME, MX and NS rows point at."""
    out = set()
    for e in rows:
        if e.rtype in ("CNAME", "NS"):
            out.add(e.value.lower().rstrip("."))
        elif e.rtype == "MX":
            out.add(e.value.split()[-1].lower().rstrip("."))
    return out


class _ConfigIndex:
    """A config's `[host]`s and `[record]`s by name, address and MAC (their keys)."""

    def __init__(self, config):
        self.config = config
        self.host_names, self.host_addresses, self.host_macs = {}, {}, {}
        self.record_names = {}
        for key, h in config.hosts.items():
            self.host_names.setdefault(h.name, []).append(key)
            if h.address is not None:
                self.host_addresses.setdefault(int(h.address), []).append(key)
            elif h.mac:
                self.host_macs.setdefault(h.mac, []).append(key)
        for key, r in config.records.items():
            self.record_names.setdefault(r.name, []).append(key)


class _ConfigPart:
    """A config seen through a part of its `[host]`s and `[record]`s; the rest as it is."""

    def __init__(self, config, hosts, records):
        self._config = config
        self.hosts = hosts
        self.records = records

    def __getattr__(self, name):
        return getattr(self._config, name)
