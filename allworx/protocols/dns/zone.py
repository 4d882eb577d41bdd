# -*- test-case-name: allworx.tests.dns.test_zone -*-
"""
The office zone (guide 10): `[system] domain` and the LAN's reverse zone,
built from the configuration, the WAN address and the DHCP clients' names.

`zone_entries` turns those facts into plain rows (name, type, value); an
`OfficeZone` indexes the rows and answers questions about them the way an
authoritative server does (answer, NODATA, NXDOMAIN, CNAME inside the zone,
glue in the additional section). `ZoneKeeper` rebuilds the zone when a fact
changes and moves the SOA serial on whenever the rows differ. `DhcpNames`
(`dhcpnames`) keeps the names DHCP clients sent while their leases live.

Nothing here touches a socket or a clock of its own: times come in as
arguments, so tests drive everything directly.
"""

import bisect
import re

import attr
from twisted.names import dns
from zope.interface import implementer

from allworx.config import BUILTIN_NAMES
from allworx.protocols.dns.dhcpnames import (  # noqa: F401 (the zone's names for them)
    DhcpName, DhcpNames, DhcpView, dhcp_label)
from allworx.interfaces import IZoneSource
from allworx.protocols.dns.versions import GONE, MapVersion

# TTLs of the zone. Short, because addresses here move (DHCP, a WAN lease).
TTL = 300
DHCP_TTL = 60
NEGATIVE_TTL = 60  # SOA minimum: how long resolvers keep a "no such name"

# Built-in names (guide 10): which of the server's addresses each one holds.
BUILTIN_SIDES = {
    "www": ("wan",), "wan": ("wan",),
    "corp": ("lan",), "admin": ("lan",), "lan": ("lan",),
    "smtp": ("lan", "wan"), "pop": ("lan", "wan"),
    # Mail clients' automatic set-up (SPEC 17, guide 8.3).
    "imap": ("lan", "wan"), "mail": ("lan", "wan"),
    "autoconfig": ("lan", "wan"), "autodiscover": ("lan", "wan"),
}
assert set(BUILTIN_SIDES) == set(BUILTIN_NAMES)

A, NS, CNAME, SOA, PTR, MX, TXT, SRV, ANY = (dns.A, dns.NS, dns.CNAME, dns.SOA, dns.PTR,
                                             dns.MX, dns.TXT, dns.SRV, dns.ALL_RECORDS)
TYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", MX: "MX", TXT: "TXT",
              SRV: "SRV"}


@attr.s(frozen=True, slots=True)
class ZoneEntry:
    """One record of the zone as the admin pages list it: owner, type, value, TTL."""

    name = attr.ib()    # fully qualified, lower case, no trailing dot
    rtype = attr.ib()   # "A", "MX", ...
    value = attr.ib()   # text as in a zone file ("10 allworx.example.com", "192.168.2.254")
    ttl = attr.ib(default=TTL)
    source = attr.ib(default="built-in", eq=False, order=False)  # built-in | host | record | dhcp


# ---------------------------------------------------------------- the rows

def reverse_zone(network):
    """The in-addr.arpa zone that holds the LAN's PTR names (whole octets)."""
    octets = max(1, network.prefixlen // 8)
    parts = str(network.network_address).split(".")[:octets]
    return ".".join(reversed(parts)) + ".in-addr.arpa"


def reverse_name(address):
    """The PTR owner name of an IPv4 address."""
    return ".".join(reversed(str(address).split("."))) + ".in-addr.arpa"


def _txt_value(text):
    """TXT text in zone-file form: quoted strings of at most 255 bytes (a DKIM key needs several)."""
    chunks, size = [""], 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > 255:
            chunks.append("")
            size = 0
        chunks[-1] += ch
        size += n
    return " ".join('"%s"' % c.replace("\\", "\\\\").replace('"', '\\"') for c in chunks)


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _txt_strings(value):
    """The character-strings (bytes) of a TXT value in zone-file form."""
    out = []
    for m in _QUOTED.finditer(value):
        text = re.sub(r"\\(.)", r"\1", m.group(1), flags=re.S).encode("utf-8")
        out.extend(text[i:i + 255] for i in range(0, len(text), 255))
    return out or [b""]


def mail_services(config):
    """
    The mail services a client may look up by SRV (RFC 6186, RFC 8314), as
    (owner label, port, target label), priority 0 and weight 1 in the zone.
    A service that is off (its section disabled, or port 0) has port 0 and
    no target: RFC 6186's "decidedly not available" (target ".").
    """
    mail, pop3 = config.mail, config.pop3
    imap = getattr(config, "imap", None)   # [imap] is new in SPEC 17
    imap_on = getattr(imap, "enabled", True)
    offered = (
        ("_submission._tcp", mail.enabled, mail.submission_port, "smtp"),
        ("_submissions._tcp", mail.enabled, getattr(mail, "submissions_port", 465), "smtp"),
        ("_imap._tcp", imap_on, getattr(imap, "port", 143), "imap"),
        ("_imaps._tcp", imap_on, getattr(imap, "imaps_port", 993), "imap"),
        ("_pop3._tcp", pop3.enabled, pop3.port, "pop"),
        ("_pop3s._tcp", pop3.enabled, pop3.pop3s_port, "pop"),
    )
    return [(label, port, target) if on and port else (label, 0, None)
            for label, on, port, target in offered]


def zone_entries(config, wan_ip=None, dhcp=None, mail_records=()):
    """
    Every record of the office zone and the LAN's reverse zone, as sorted
    `ZoneEntry` rows (the SOA excluded: it carries the serial). `dhcp` maps a
    label to an address; a label the configuration already uses is ignored.
    A `[host]` without a fixed address has the address of its MAC's lease in
    `dhcp.by_mac` (a `DhcpView`), if it holds one. `mail_records` are the
    mail's TXT records (`allworx.dkimkeys.mail_dns_records`: DKIM, SPF,
    DMARC); those a `[record]` replaced (source "record") come from it.
    """
    domain = config.system.domain
    host = config.system.hostname
    server = "%s.%s" % (host, domain)
    lan = str(config.lan_ip)
    wan = str(wan_ip) if wan_ip is not None else None
    rows = []

    def fq(label):
        return domain if label == "@" else "%s.%s" % (label, domain)

    def add(label, rtype, value, source="built-in", ttl=TTL):
        rows.append(ZoneEntry(fq(label), rtype, value, ttl, source))

    addresses = {"lan": lan, "wan": wan}
    add("@", "NS", server)
    add("@", "MX", "10 %s" % server)
    for label in (host,) + BUILTIN_NAMES:
        sides = BUILTIN_SIDES.get(label, ("lan", "wan"))
        for side in sides:
            if addresses[side] is not None:
                add(label, "A", addresses[side])
    static = {host, *BUILTIN_NAMES}
    # A [record] of the same name takes the place of a generated SRV.
    for label, port, target in mail_services(config):
        if label not in config.records:
            add(label, "SRV", "0 1 %d %s" % (port, fq(target) if target else "."))
    for r in mail_records:     # those a [record] replaced come with the records below
        if getattr(r, "source", "built-in") != "record":
            add(r.label, r.rtype, _txt_value(r.value) if r.rtype == "TXT" else r.value)
    ptr = {lan: server}
    dynamic = {}  # address -> source of its PTR, for those that move with a lease
    leases = getattr(dhcp, "by_mac", {})
    for h in sorted(config.hosts.values(), key=lambda h: h.name):
        static.add(h.name)
        if h.address is not None:
            add(h.name, "A", str(h.address), "host")
            ptr.setdefault(str(h.address), fq(h.name))
        elif leases.get(h.mac) is not None and leases[h.mac] in config.lan_network:
            address = str(leases[h.mac])
            add(h.name, "A", address, "host", DHCP_TTL)
            if address not in ptr:
                ptr[address] = fq(h.name)
                dynamic[address] = "host"
    for r in sorted(config.records.values(), key=lambda r: r.name):
        static.add(r.name)
        for a in r.a:
            add(r.name, "A", str(a), "record")
        for pref, target in r.mx:
            add(r.name, "MX", "%d %s" % (pref, target), "record")
        if r.cname:
            add(r.name, "CNAME", r.cname, "record")
        if r.txt:
            add(r.name, "TXT", _txt_value(r.txt), "record")
    for label, address in sorted((dhcp or {}).items()):
        if label in static or address not in config.lan_network:
            continue
        add(label, "A", str(address), "dhcp", DHCP_TTL)
        if str(address) not in ptr:
            ptr[str(address)] = fq(label)
            dynamic[str(address)] = "dhcp"
    reverse = reverse_zone(config.lan_network)
    rows.append(ZoneEntry(reverse, "NS", server))
    for address, name in ptr.items():
        if address in dynamic:
            rows.append(ZoneEntry(reverse_name(address), "PTR", name, DHCP_TTL, dynamic[address]))
        else:
            rows.append(ZoneEntry(reverse_name(address), "PTR", name))
    return tuple(sorted(set(rows), key=_entry_order))


def _entry_order(e):
    return (e.name, e.rtype, e.value, e.ttl)


def _find(rows, e):
    """Where row `e` is in the sorted `rows`, or None."""
    i = bisect.bisect_left(rows, _entry_order(e), key=_entry_order)
    return i if i < len(rows) and rows[i] == e else None


def soa_rname(config):
    """The SOA's mailbox: admin_email as a name, or hostmaster.DOMAIN."""
    email = config.system.admin_email
    if email:
        local, _, host = email.partition("@")
        if "." not in local:
            return "%s.%s" % (local.lower(), host.lower())
    return "hostmaster.%s" % config.system.domain


# ---------------------------------------------------------------- answers

@attr.s(frozen=True, slots=True)
class ZoneAnswer:
    """What the zone says to one question: rcode and three lists of RRHeader."""

    rcode = attr.ib()
    answers = attr.ib(default=())
    authority = attr.ib(default=())
    additional = attr.ib(default=())


def _payload(rtype, value, ttl):
    # Names go in as bytes: twisted.names would run str names through IDNA.
    if rtype == "A":
        return dns.Record_A(value, ttl)
    if rtype == "NS":
        return dns.Record_NS(value.encode("ascii"), ttl)
    if rtype == "CNAME":
        return dns.Record_CNAME(value.encode("ascii"), ttl)
    if rtype == "PTR":
        return dns.Record_PTR(value.encode("ascii"), ttl)
    if rtype == "MX":
        pref, target = value.split()
        return dns.Record_MX(int(pref), target.encode("ascii"), ttl)
    if rtype == "TXT":
        return dns.Record_TXT(*_txt_strings(value), ttl=ttl)
    if rtype == "SRV":
        priority, weight, port, target = value.split()
        return dns.Record_SRV(int(priority), int(weight), int(port),
                              target.rstrip(".").encode("ascii"), ttl)
    raise ValueError("no such record type in the zone: %r" % rtype)


class OfficeZone:
    """
    The zone as served: the rows indexed by name and type, with the answer to
    any question inside the domain or the LAN's reverse zone.

    Its indexes (`versions.MapVersion`) are shared with the zones `amended`
    makes from it: an amendment costs the names it touches, and this zone
    answers as it did (it may still be answering) at the price of reading
    through the newer ones, or of a copy of its own once asked for all.
    """

    def __init__(self, domain, reverse, serial, entries, server, rname, owners=()):
        self.domain = domain
        self.reverse = reverse
        self.serial = serial
        self.server = server
        self.rname = rname
        self._entries = entries
        # Every name that exists: owners of records, empty non-terminals, and
        # the built-in names even while they hold no address (no WAN yet).
        self._owners = frozenset(owners)
        self._soa = {}
        self._make_soa()
        rows, names = {}, set(owners) | {domain, reverse}
        for e in entries:
            rows.setdefault(e.name, []).append((_entry_order(e), e, self._rr(e)))
            origin, name = self.origin_of(e.name), e.name
            while origin is not None and name != origin and name not in names:
                names.add(name)
                name = name.partition(".")[2]
        rows = {name: tuple(at) for name, at in rows.items()}
        rrsets = {name: self._rrsets_of(name, at) for name, at in rows.items()}
        for origin in (domain, reverse):
            rrsets.setdefault(origin, self._rrsets_of(origin, ()))
        # name -> how many names right under it exist (a name goes with its
        # last record only when none does).
        below = dict.fromkeys(names, 0)
        for name in names:
            parent = name.partition(".")[2]
            if parent in below:
                below[parent] += 1
        self._v = MapVersion((rrsets, rows, below))

    # -- the indexes: RRSETS name -> {type: (RRHeader, ...)}; ROWS name ->
    # ((order, ZoneEntry, RRHeader), ...) in zone order; NAMES name -> names under it

    def _make_soa(self):
        for origin in (self.domain, self.reverse):
            soa = dns.Record_SOA(mname=self.server.encode("ascii"),
                                 rname=self.rname.encode("ascii"), serial=self.serial,
                                 refresh=3600, retry=600, expire=86400, minimum=NEGATIVE_TTL,
                                 ttl=TTL)
            self._soa[origin] = dns.RRHeader(origin.encode("ascii"), SOA, dns.IN, TTL, soa,
                                             auth=True)

    def _rrsets_of(self, name, at):
        out = {SOA: [self._soa[name]]} if name in self._soa else {}
        for _, _, rr in at:
            out.setdefault(rr.type, []).append(rr)
        return {rtype: tuple(rrs) for rtype, rrs in out.items()}

    @staticmethod
    def _rr(e):
        return dns.RRHeader(e.name.encode("ascii"), getattr(dns, e.rtype), dns.IN, e.ttl,
                            _payload(e.rtype, e.value, e.ttl), auth=True)

    @property
    def entries(self):
        """The rows (`ZoneEntry`), in zone order."""
        if self._entries is None:
            rows = self._v.maps()[_ROWS]
            self._entries = tuple(e for name in sorted(rows) for _, e, _ in rows[name])
        return self._entries

    def origin_of(self, name):
        """The apex of the zone (domain or reverse) that `name` falls in, or None."""
        for origin in (self.domain, self.reverse):
            if name == origin or name.endswith("." + origin):
                return origin
        return None

    def names(self):
        """Every name that exists in the zone (with records or not)."""
        return sorted(self._v.maps()[_NAMES])

    def types_at(self, name):
        """The record types `name` holds."""
        return list(self._v.get(_RRSETS, name, ()))

    def answer(self, name, qtype):
        """The `ZoneAnswer` for (name, qtype), or None when the name is not ours."""
        name = name.lower().rstrip(".")
        origin = self.origin_of(name)
        if origin is None:
            return None
        maps = self._v.maps()
        rrsets_at, names = maps[_RRSETS], maps[_NAMES]
        soa = self._soa[origin]
        if name not in names:
            return ZoneAnswer(dns.ENAME, authority=(soa,))
        answers = []
        seen = set()
        current = name
        # CNAMEs inside the zone are followed (a few hops, loop-safe).
        while qtype not in (CNAME, ANY) and current not in seen and len(seen) < 8:
            seen.add(current)
            cname = rrsets_at.get(current, {}).get(CNAME)
            if not cname:
                break
            answers.extend(cname)
            current = cname[0].payload.name.name.decode("ascii").lower()
            if self.origin_of(current) is None:
                return ZoneAnswer(dns.OK, tuple(answers))
            if current not in names:
                return ZoneAnswer(dns.ENAME, tuple(answers), (self._soa[self.origin_of(current)],))
        rrsets = rrsets_at.get(current, {})
        if qtype == ANY:
            found = [rr for rtype in sorted(rrsets) for rr in rrsets[rtype]]
        else:
            found = list(rrsets.get(qtype, ()))
        answers.extend(found)
        if not found:
            return ZoneAnswer(dns.OK, tuple(answers), (soa,))
        additional = []
        for rr in found:
            if rr.type in (MX, NS, SRV):
                target = (rr.payload.target if rr.type == SRV else rr.payload.name).name
                additional.extend(rrsets_at.get(target.decode("ascii").lower(), {}).get(A, ()))
        return ZoneAnswer(dns.OK, tuple(answers), (), tuple(additional))

    def rows(self):
        """(name, type, value, ttl) for the admin pages, SOA first."""
        out = []
        for origin in (self.domain, self.reverse):
            s = self._soa[origin].payload
            out.append((origin, "SOA", "%s %s %d %d %d %d %d" % (
                s.mname.name.decode(), s.rname.name.decode(), s.serial, s.refresh,
                s.retry, s.expire, s.minimum), TTL))
        out.extend((e.name, e.rtype, e.value, e.ttl) for e in self.entries)
        return out

    def as_text(self):
        """The zone in zone-file form, as the DNS service serves it."""
        return "\n".join("%s.\t%d\tIN\t%s\t%s" % (n, ttl, t, v) for n, t, v, ttl in self.rows())

    def amended(self, gone, added, serial):
        """
        This zone with the rows `gone` taken out and `added` put in, under
        `serial`; itself when neither changes a row. Costs what the change
        touches: the new zone takes this one's indexes and changes the names
        the rows are at (this zone answers as it did: it may still be answering).
        """
        rows = self._v.maps()[_ROWS]

        def held(e):
            return any(x[1] == e for x in rows.get(e.name, ()))

        gone = [e for e in set(gone) if held(e)]
        taken = set(gone)
        added = [e for e in set(added) if e in taken or not held(e)]
        if not gone and not added:
            return self
        zone = OfficeZone.__new__(OfficeZone)
        zone.__dict__.update(self.__dict__)
        zone.serial, zone._entries, zone._soa = serial, None, {}
        zone._make_soa()
        zone._v = self._v.successor()
        for origin in (self.domain, self.reverse):
            zone._v.put(_RRSETS, origin, zone._rrsets_of(origin, rows.get(origin, ())))
        for e in gone:
            zone._unindex(e)
        for e in added:
            zone._index(e)
        zone._v.seal()
        return zone

    def _index(self, e):
        v = self._v
        rows, names = v.maps()[_ROWS], v.maps()[_NAMES]
        at = rows.get(e.name, ())
        item = (_entry_order(e), e, self._rr(e))
        i = bisect.bisect_right(at, item[0], key=_first)
        at = at[:i] + (item,) + at[i:]
        v.put(_ROWS, e.name, at)
        v.put(_RRSETS, e.name, self._rrsets_of(e.name, at))
        origin, name, new = self.origin_of(e.name), e.name, []
        while origin is not None and name != origin and name not in names:
            new.append(name)
            name = name.partition(".")[2]
        for name in reversed(new):   # from the top: each one's parent is there
            v.put(_NAMES, name, sum(1 for o in self._owners if o.partition(".")[2] == name))
            parent = name.partition(".")[2]
            if parent in names:
                v.put(_NAMES, parent, names[parent] + 1)

    def _unindex(self, e):
        v = self._v
        rrsets, rows, names = v.maps()
        at = rows[e.name]
        i = next(i for i, x in enumerate(at) if x[1] == e)
        at = at[:i] + at[i + 1:]
        v.put(_ROWS, e.name, at or GONE)
        v.put(_RRSETS, e.name, self._rrsets_of(e.name, at) or GONE)
        # The name, and the empty non-terminals above it, go with their last record.
        origin, name = self.origin_of(e.name), e.name
        while (origin is not None and name != origin and name not in rrsets
               and name not in self._owners and not names.get(name)):
            parent = name.partition(".")[2]
            if name in names:
                v.put(_NAMES, name, GONE)
                if parent in names:
                    v.put(_NAMES, parent, names[parent] - 1)
            name = parent


_RRSETS, _ROWS, _NAMES = range(3)


def _first(item):
    return item[0]


@implementer(IZoneSource)
class ZoneKeeper:
    """
    Keeps the current `OfficeZone`: `rebuild` makes a new one from the facts,
    with a serial that moves on (to the clock's seconds, or one more than the
    last) whenever the rows change, so secondaries and caches see it.
    """

    def __init__(self, clock):
        self.clock = clock
        self.zone = None

    def rebuild(self, config, wan_ip=None, dhcp=None, mail_records=()):
        """Make the zone for these facts; True when it differs from the last one."""
        entries = zone_entries(config, wan_ip, dhcp, mail_records)
        domain = config.system.domain
        reverse = reverse_zone(config.lan_network)
        server = "%s.%s" % (config.system.hostname, domain)
        rname = soa_rname(config)
        old = self.zone
        if old is not None and (old.entries, old.domain, old.reverse, old.server, old.rname) == (
                entries, domain, reverse, server, rname):
            return False
        serial = self._next_serial()
        owners = {"%s.%s" % (label, domain) for label in (config.system.hostname,) + BUILTIN_NAMES}
        self.zone = OfficeZone(domain, reverse, serial, entries, server, rname, owners)
        return True

    def amend(self, gone, added):
        """Take the rows `gone` out of the zone and put `added` in; True when it changed."""
        old = self.zone
        if old is not None:
            self.zone = old.amended(gone, added, self._next_serial())
        return self.zone is not old

    def _next_serial(self):
        serial = int(self.clock.seconds()) & 0xFFFFFFFF
        old = self.zone
        if old is not None and not _serial_newer(serial, old.serial):
            serial = (old.serial + 1) & 0xFFFFFFFF
        return serial


def _serial_newer(a, b):
    """RFC 1982 serial arithmetic: is `a` after `b`?"""
    return a != b and ((a - b) & 0xFFFFFFFF) < 0x80000000
