# -*- test-case-name: allworx.tests.dns.test_views -*-
"""
The zone's two views (SPEC 5, "views by who asks"): what the inside (the
LAN, the tunnel, other sites' networks: `office.is_lan_peer`) and the
outside (the WAN) are told, both made from the one zone `ZoneKeeper` builds.

Inside, every name; a built-in name that holds both of the server's
addresses (`smtp`, `pop`, `imap`, `mail`, `autoconfig`, `autodiscover`,
the server's own name) answers its LAN address only. Outside, with
`[dns] wan_view = public` (the default), only public names: the built-ins
that hold the WAN address (with that address alone), the apex's NS and MX,
every TXT record (SPF, DKIM, DMARC, `[record] txt`), `[host]` and
`[record]` addresses that are public, and the SRV, MX and CNAME records
whose target is public or outside the zone; never a DHCP name, a private
address or a PTR of the LAN's reverse zone. A name that exists only inside
does not exist outside (NXDOMAIN: its existence is not revealed); the SOA
and NS are answered in both. With `wan_view = all` the outside sees every
name too, and the built-ins with both addresses answer the WAN one.

`ViewKeeper` is the `ZoneKeeper` that keeps the views beside the zone: the
zone (every row, as the admin pages list it) is rebuilt and amended as
before, and the views follow it. The DNS server picks a view per query by
the side of the peer it already knows: no work per query.
"""

import ipaddress

import attr

from allworx.config import BUILTIN_NAMES
from allworx.protocols.dns.zone import BUILTIN_SIDES, OfficeZone, ZoneKeeper

# Never public, whatever the office's own networks are: RFC 1918, loopback,
# link-local, the carrier-grade NAT range (RFC 6598) and "this network".
PRIVATE_NETWORKS = tuple(ipaddress.IPv4Network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10", "0.0.0.0/8"))

# Record types whose value names another host (the last word of the value).
_POINTERS = ("CNAME", "MX", "SRV", "NS")


@attr.s(frozen=True, slots=True)
class ViewRules:
    """
    What decides the views besides the zone's rows: `wan_view`, the
    server's two addresses, the names of the built-ins, and the networks
    that are private here (RFC 1918 and the like, the LAN, the tunnel's
    subnet, the sites' networks).
    """

    wan_view = attr.ib()
    lan = attr.ib()           # the LAN address, text
    wan = attr.ib()           # the WAN address, text, or None
    both = attr.ib()          # fully qualified built-in names that hold both addresses
    wan_names = attr.ib()     # fully qualified built-in names that hold the WAN address
    private = attr.ib()       # tuple of IPv4Network

    @classmethod
    def of(cls, config, wan_ip):
        """The rules for `config` and the WAN address `wan_ip` (or None)."""
        domain = config.system.domain
        sides = {label: BUILTIN_SIDES.get(label, ("lan", "wan"))
                 for label in (config.system.hostname,) + BUILTIN_NAMES}
        private = list(PRIVATE_NETWORKS) + [config.lan_network]
        vpn = getattr(config, "vpn", None)
        if vpn is not None and vpn.address is not None:
            private.append(vpn.address.network)
        for site in getattr(config, "sites", {}).values():
            private.extend(site.networks)
        dns = config.dns
        return cls(
            wan_view=getattr(dns, "wan_view", "public"),
            lan=str(config.lan_ip),
            wan=str(wan_ip) if wan_ip is not None else None,
            both=frozenset("%s.%s" % (label, domain) for label, s in sides.items()
                           if s == ("lan", "wan")),
            wan_names=frozenset("%s.%s" % (label, domain) for label, s in sides.items()
                                if "wan" in s),
            private=tuple(private))

    def is_public(self, address):
        """Whether an address (text) may be shown to the WAN."""
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        return not any(ip in net for net in self.private)

    # -- the views

    def inside(self, zone):
        """The inside view of `zone`: the built-ins with both addresses lose the WAN one."""
        return zone.amended(self._builtin_side(zone.entries, self.wan), (), zone.serial)

    def outside(self, zone):
        """The outside view of `zone`."""
        if self.wan_view == "all":
            return zone.amended(self._builtin_side(zone.entries, self.lan), (), zone.serial)
        rows = self.public_rows(zone)
        return OfficeZone(zone.domain, zone.reverse, zone.serial, rows, zone.server, zone.rname,
                          self.wan_names)

    def _builtin_side(self, entries, address):
        """The A rows of the two-address built-ins that hold `address`."""
        if address is None:
            return ()
        return [e for e in entries if e.rtype == "A" and e.source == "built-in"
                and e.name in self.both and e.value == address]

    def public_rows(self, zone):
        """The rows of `zone` the WAN may see under `wan_view = public`, in zone order."""
        keep = [self._plainly_public(e) for e in zone.entries]
        names = set(self.wan_names).union(
            e.name for e, kept in zip(zone.entries, keep) if kept)
        pointers = [i for i, e in enumerate(zone.entries)
                    if not keep[i] and e.rtype in _POINTERS and e.rtype != "NS"]
        # A pointer is public when its target is: outside the zone, "." (no
        # service), or a name the WAN sees (which a CNAME may just have made).
        while pointers:
            public = [i for i in pointers if self._target_public(zone, zone.entries[i], names)]
            if not public:
                break
            for i in public:
                keep[i] = True
                names.add(zone.entries[i].name)
            pointers = [i for i in pointers if not keep[i]]
        return tuple(e for e, kept in zip(zone.entries, keep) if kept)

    @staticmethod
    def _target_public(zone, e, names):
        target = e.value.split()[-1].lower().rstrip(".")
        return not target or zone.origin_of(target) is None or target in names

    def _plainly_public(self, e):
        """The rows that are public on their own (not by where they point)."""
        if e.rtype == "TXT":
            return True
        if e.rtype == "NS":
            return e.source == "built-in"   # the apexes' NS: the server
        if e.rtype == "MX" and e.source == "built-in":
            return True
        if e.rtype != "A" or e.source == "dhcp":
            return False
        if e.source == "built-in":
            return e.name in self.wan_names and e.value == self.wan
        return self.is_public(e.value)


class ViewKeeper(ZoneKeeper):
    """
    A `ZoneKeeper` that also keeps `inside` and `outside`, the zone's two
    views (`OfficeZone`s), current with the zone and with the rules
    (`ViewRules`): a change of the rules alone moves the serial on too.
    """

    def __init__(self, clock):
        ZoneKeeper.__init__(self, clock)
        self.inside = None
        self.outside = None
        self.rules = None

    def view(self, lan):
        """The view for a peer on the LAN side (`lan`) or the WAN."""
        return self.inside if lan else self.outside

    def rebuild(self, config, wan_ip=None, dhcp=None, *facts, **more):
        changed = ZoneKeeper.rebuild(self, config, wan_ip, dhcp, *facts, **more)
        rules = ViewRules.of(config, wan_ip)
        if not changed and rules == self.rules:
            return False
        if not changed:
            # Only who sees what moved: a new serial all the same, for caches.
            z = self.zone
            self.zone = OfficeZone(z.domain, z.reverse, self._next_serial(), z.entries,
                                   z.server, z.rname, z._owners)
        self.rules = rules
        self.inside = rules.inside(self.zone)
        self.outside = rules.outside(self.zone)
        return True

    def amend(self, gone, added):
        if not ZoneKeeper.amend(self, gone, added):
            return False
        # A lease's rows (DHCP names, named dynamic clients, PTRs) are never
        # a built-in's nor public: the inside takes them as they are, the
        # outside only when it sees every name.
        serial = self.zone.serial
        self.inside = self.inside.amended(gone, added, serial)
        if self.rules.wan_view == "all":
            self.outside = self.outside.amended(gone, added, serial)
        return True
