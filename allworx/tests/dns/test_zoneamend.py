"""
Tests for `OfficeZone.amended` (allworx.protocols.dns.zone) and the indexes
it shares with the zone it was made from (allworx.protocols.dns.versions):
a zone answers the same whether amended or built from its rows, the zone it
was made from answers as before, and an amendment's work is what it touches.
"""

import ipaddress
import random
import tracemalloc

from twisted.internet.task import Clock
from twisted.names import dns
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.office import LeaseEvent
from allworx.protocols.dns import versions
from allworx.protocols.dns import zone as dnszone
from allworx.protocols.dns.zone import ZoneEntry
from allworx.tests.dns.test_zone import CONF, WAN, zone_for

D = "example.com"
QTYPES = (dns.A, dns.PTR, dns.CNAME, dns.MX, dns.TXT, dns.NS, dns.SOA, dns.SRV, dns.ALL_RECORDS)


def candidates():
    """Rows a zone may gain and lose: names at depths, CNAMEs and MX inside, PTRs."""
    out = []
    for label in ("pc1", "pc2", "a.dept", "b.dept", "x.y.deep", "intranet-old", "www"):
        name = "%s.%s" % (label, D)
        out.append(ZoneEntry(name, "A", "192.168.2.%d" % (len(out) + 40), 60, "dhcp"))
        out.append(ZoneEntry(name, "A", "192.168.2.%d" % (len(out) + 40), 300, "record"))
    out += [ZoneEntry("alias.%s" % D, "CNAME", "pc1.%s" % D, 300, "record"),
            ZoneEntry("alias2.%s" % D, "CNAME", "a.dept.%s" % D, 300, "record"),
            ZoneEntry("mx.dept.%s" % D, "MX", "10 b.dept.%s" % D, 300, "record"),
            ZoneEntry(D, "MX", "30 pc2.%s" % D, 300, "record"),
            ZoneEntry("note.%s" % D, "TXT", '"hello"', 300, "record")]
    out += [ZoneEntry(dnszone.reverse_name("192.168.2.%d" % n), "PTR", "pc%d.%s" % (n % 3, D), 60,
                      "dhcp") for n in (40, 41, 77, 150)]
    return out


def questions(zone, extra):
    """Every name either zone may hold (and a few it never does), with their ancestors."""
    names = set(extra) | {"nothing.%s" % D, "nope.2.168.192.in-addr.arpa", "elsewhere.net"}
    for e in zone.entries:
        names.add(e.name)
    out = set()
    for name in names:
        while name.count(".") >= 1:
            out.add(name)
            name = name.partition(".")[2]
    return sorted(out)


def snapshot(zone, names):
    """All a zone says: every answer to every question, its rows, its names."""
    return ([(n, t, zone.answer(n, t)) for n in names for t in QTYPES],
            zone.entries, zone.rows(), zone.as_text(), zone.names(),
            {n: sorted(zone.types_at(n)) for n in names})


def scratch(zone):
    """A zone built from `zone`'s rows, as a rebuild makes it."""
    return dnszone.OfficeZone(zone.domain, zone.reverse, zone.serial,
                              tuple(sorted(set(zone.entries), key=dnszone._entry_order)),
                              zone.server, zone.rname, zone._owners)


class Counted:
    """Counts the calls of an attribute of `owner` (a class) while the test runs."""

    def __init__(self, case, owner, name):
        self.calls = 0
        real = getattr(owner, name)

        def counted(*args, **kw):
            self.calls += 1
            return real(*args, **kw)

        raw = owner.__dict__[name]     # as the class holds it (a staticmethod stays one)
        setattr(owner, name, staticmethod(counted) if isinstance(raw, staticmethod) else counted)
        case.addCleanup(setattr, owner, name, raw)


class AmendedTests(unittest.TestCase):

    def setUp(self):
        self.base = zone_for()
        self.extra = [e.name for e in candidates()]

    def test_amended_answers_as_a_zone_built_from_its_rows(self):
        """Random sequences of additions and removals: the same answers, rows and names."""
        rng = random.Random(22)
        pool = candidates() + list(self.base.entries)
        for _ in range(40):
            zone, serial = self.base, self.base.serial
            for _ in range(rng.randint(1, 12)):
                held = set(zone.entries)
                gone = rng.sample(sorted(held & set(pool), key=dnszone._entry_order),
                                  rng.randint(0, 3))
                added = rng.sample(pool, rng.randint(0, 3))
                serial += 1
                zone = zone.amended(gone, added, serial)
                self.assertEqual(set(zone.entries), (held - set(gone)) | set(added))
            names = questions(zone, self.extra)
            self.assertEqual(snapshot(zone, names), snapshot(scratch(zone), names))

    def test_the_zone_amended_from_is_untouched(self):
        """Each zone of a line keeps answering as it did, asked in any order."""
        rng = random.Random(5)
        pool = candidates()
        line = [self.base]
        names = questions(self.base, self.extra)
        before = [snapshot(self.base, names)]
        for n in range(30):
            zone = line[-1]
            held = [e for e in pool if e in set(zone.entries)]
            zone = zone.amended(rng.sample(held, min(len(held), rng.randint(0, 2))),
                                rng.sample(pool, rng.randint(1, 3)), zone.serial + 1)
            line.append(zone)
            before.append(snapshot(scratch(zone), names))
        order = list(range(len(line)))
        rng.shuffle(order)
        for i in order:
            self.assertEqual(snapshot(line[i], names), before[i])
        # An older zone amended again (a branch) leaves the rest as they were.
        branch = line[3].amended((), [pool[0], pool[5]], 99)
        self.assertEqual(snapshot(branch, names), snapshot(scratch(branch), names))
        for i in order:
            self.assertEqual(snapshot(line[i], names), before[i])

    def test_an_old_zone_answers_without_a_copy_of_its_own(self):
        """One name of the zone before is read through the newer one."""
        added = ZoneEntry("pc9.%s" % D, "A", "192.168.2.99", 60, "dhcp")
        new = self.base.amended((), [added], self.base.serial + 1)
        copies = Counted(self, versions.MapVersion, "_detach")
        self.assertEqual(self.base.types_at("pc9.%s" % D), [])
        self.assertEqual(new.types_at("pc9.%s" % D), [dns.A])
        self.assertEqual(self.base.types_at("files.%s" % D), [dns.A])
        self.assertEqual(copies.calls, 0)
        self.assertEqual(self.base.answer("pc9.%s" % D, dns.A).rcode, dns.ENAME)
        self.assertEqual(copies.calls, 1)

    def test_nothing_changed_gives_the_same_zone(self):
        present = self.base.entries[0]
        absent = ZoneEntry("pc9.%s" % D, "A", "192.168.2.99", 60, "dhcp")
        self.assertIs(self.base.amended([absent], [present], 7), self.base)

    def test_a_removed_row_takes_its_empty_non_terminals(self):
        deep = ZoneEntry("x.y.deep.%s" % D, "A", "192.168.2.9", 60, "dhcp")
        zone = self.base.amended((), [deep], 2)
        self.assertEqual(zone.answer("y.deep.%s" % D, dns.A).rcode, dns.OK)
        zone = zone.amended([deep], (), 3)
        for name in ("x.y.deep", "y.deep", "deep"):
            self.assertEqual(zone.answer("%s.%s" % (name, D), dns.A).rcode, dns.ENAME, name)
        # A name with a record under it stays.
        self.assertEqual(zone.answer("dept.%s" % D, dns.A).rcode, dns.OK)


class AmendCostTests(unittest.TestCase):
    """An amendment's work is what it touches, whatever the size of the zone."""

    def work(self, rows):
        """
        Index writes, records made, whole copies and the peak of memory taken
        of a lease's amendment and its undoing, ten times, in a zone of `rows` more.
        """
        zone = zone_for()
        filler = [ZoneEntry("pc%05d.%s" % (n, D), "A", str(ipaddress.IPv4Address(0x0a000000 + n)),
                            60, "dhcp") for n in range(rows)]
        zone = zone.amended((), filler, zone.serial + 1)
        zone = zone.amended((), [ZoneEntry("warm.%s" % D, "A", "10.9.9.9")], zone.serial + 1)
        writes = Counted(self, versions.MapVersion, "put")
        made = Counted(self, dnszone.OfficeZone, "_rr")
        copies = Counted(self, versions.MapVersion, "_detach")
        lease = [ZoneEntry("new.%s" % D, "A", "192.168.2.77", 60, "dhcp"),
                 ZoneEntry(dnszone.reverse_name("192.168.2.77"), "PTR", "new.%s" % D, 60, "dhcp")]
        tracemalloc.start()
        try:
            for _ in range(10):
                zone = zone.amended((), lease, zone.serial + 1)
                zone = zone.amended(lease, (), zone.serial + 1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(zone.answer("pc00001.%s" % D, dns.A).rcode, dns.OK)
        return writes.calls, made.calls, copies.calls, peak

    def test_work_does_not_grow_with_the_zone(self):
        small, large = self.work(50), self.work(5000)
        self.assertEqual(small[:3], large[:3])
        self.assertEqual(small[2], 0)   # no copy of the indexes
        # A copy of the 5,000 names' index alone would take hundreds of kB.
        self.assertLess(large[3], small[3] + 32 * 1024, (small, large))

    def test_a_lease_event_copies_nothing(self):
        """Through the keeper and its views, as the DNS service amends them."""
        from allworx.protocols.dns.leasenames import LeaseNames
        from allworx.protocols.dns.views import ViewKeeper

        class Fast:
            zone, outside = {}, {}

            def drop_negatives(self):
                pass

        config = parse_config(CONF)
        clock = Clock()
        keeper = ViewKeeper(clock)
        names = LeaseNames(keeper, Fast())
        keeper.rebuild(config, WAN, names.current(0))
        names.built(names.current(0))

        def grant(n):
            event = LeaseEvent("granted", "02:00:00:00:01:%02x" % n,
                               ipaddress.IPv4Address("192.168.2.%d" % (100 + n)), "pc%d" % n, 600)
            self.assertTrue(names.apply(event, config, WAN))

        grant(0)
        copies = Counted(self, versions.MapVersion, "_detach")
        for n in range(1, 20):
            grant(n)
        self.assertEqual(copies.calls, 0)
        self.assertEqual(keeper.inside.answer("pc19.%s" % D, dns.A).answers[0].payload.dottedQuad(),
                         "192.168.2.119")
