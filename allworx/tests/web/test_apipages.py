# -*- test-case-name: allworx.tests.web.test_apipages -*-
"""
The API's lists come a page at a time (issue 22): `limit` and `offset` as
`/api/v1/calls` takes them, a bounded page by default, X-Total-Count and a
Link rel="next" header, 400 naming a bad parameter, the OpenAPI document
saying so; only the page's records are rendered.
"""

from twisted.trial import unittest

from allworx.protocols.web import apipages
from allworx.protocols.web.api import OfficeApi
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import FakeLeases, Lease
from allworx.tests.webhelpers import CHEAP, AdminClient

ALIASES = 250


def link_of(r):
    return (r.headers.getRawHeaders("link") or [None])[0]


def total_of(r):
    return int(r.headers.getRawHeaders("x-total-count")[0])


class RecordPages(ApiCase):
    def setUp(self):
        extra = "".join("\n[alias list%03d]\nto = alice\n" % n for n in range(ALIASES))
        self.c = AdminClient(self, text=CHEAP + extra)

    def test_default_page_is_bounded(self):
        r = self.call("GET", "/aliases")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(len(r.json), apipages.DEFAULT_LIMIT)
        self.assertEqual(total_of(r), ALIASES + 1)          # and [alias sales]
        self.assertEqual(r.json[0]["name"], "list000")
        self.assertEqual(link_of(r), '</api/v1/aliases?limit=100&offset=100>; rel="next"')

    def test_following_next_walks_every_record_once(self):
        seen, url = [], "/aliases?limit=60"
        while url is not None:
            r = self.call("GET", url)
            self.assertEqual(r.code, 200, r.text)
            seen += [a["name"] for a in r.json]
            link = link_of(r)
            url = link[len("</api/v1"):link.index(">")] if link else None
        self.assertEqual(seen, sorted(self.c.office.config.aliases))

    def test_last_page_has_no_next(self):
        r = self.call("GET", "/aliases?limit=100&offset=200")
        self.assertEqual([a["name"] for a in r.json][-1], "sales")
        self.assertEqual(len(r.json), 51)
        self.assertIsNone(link_of(r))
        self.assertEqual(self.call("GET", "/aliases?offset=900").json, [])

    def test_only_the_page_is_rendered(self):
        rendered = []
        original = OfficeApi.record_json

        def counting(api, kind, name):
            rendered.append(name)
            return original(api, kind, name)
        self.patch(OfficeApi, "record_json", counting)
        self.call("GET", "/aliases?limit=5&offset=10")
        self.assertEqual(rendered, ["list010", "list011", "list012", "list013", "list014"])

    def test_bad_parameters_400_naming_them(self):
        for query, name, words in (("limit=0", "limit", "from 1 to 1000"),
                                   ("limit=1001", "limit", "from 1 to 1000"),
                                   ("limit=ten", "limit", "not a whole number"),
                                   ("offset=-1", "offset", "at least 0")):
            r = self.call("GET", "/aliases?" + query)
            self.assertEqual(r.code, 400, query)
            self.assertEqual(r.json["errors"][0]["key"], name, query)
            self.assertIn(words, r.json["reason"], query)


class RuntimePages(ApiCase):
    def test_leases_paged_with_the_other_parameters_kept(self):
        leases = [Lease("02:00:00:00:%02x:%02x" % (n // 256, n % 256), "192.168.2.%d" % (n % 250 + 1),
                        "pc%d" % n, 99) for n in range(150)]
        self.c.ctx.views.leases = FakeLeases(leases)
        r = self.call("GET", "/dhcp/leases")
        self.assertEqual((len(r.json), total_of(r)), (100, 150))
        r = self.call("GET", "/dhcp/leases?limit=40&offset=120&x=1")
        self.assertEqual([l["hostname"] for l in r.json], ["pc%d" % n for n in range(120, 150)])
        self.assertIsNone(link_of(r))
        r = self.call("GET", "/dhcp/leases?x=1&limit=40")
        self.assertEqual(link_of(r), '</api/v1/dhcp/leases?x=1&limit=40&offset=40>; rel="next"')

    def test_small_lists_unchanged(self):
        self.c.ctx.views.leases = FakeLeases([Lease("02:00:00:00:00:01", "192.168.2.10", "pc1", 99)])
        r = self.call("GET", "/dhcp/leases")
        self.assertEqual(([l["hostname"] for l in r.json], total_of(r), link_of(r)), (["pc1"], 1, None))


class Described(unittest.TestCase):
    def test_openapi_documents_the_paging(self):
        paths = openapi_document()["paths"]
        for path in ("/api/v1/users", "/api/v1/hosts", "/api/v1/aliases", "/api/v1/dhcp/leases",
                     "/api/v1/mail/queue", "/api/v1/sip/registrations", "/api/v1/sip/calls",
                     "/api/v1/phones"):
            get = paths[path]["get"]
            names = {p["name"]: p["schema"] for p in get["parameters"]}
            self.assertEqual(names["limit"]["default"], apipages.DEFAULT_LIMIT, path)
            self.assertEqual(names["limit"]["maximum"], apipages.MAX_LIMIT, path)
            self.assertEqual(names["offset"]["minimum"], 0, path)
            self.assertEqual(set(get["responses"]["200"]["headers"]), {"X-Total-Count", "Link"}, path)


class CountedLeases(FakeLeases):
    """A lease table that gives its count and a page; counts the whole lists made."""

    wholes = 0

    def active_leases(self):
        self.wholes += 1
        return FakeLeases.active_leases(self)

    def lease_count(self):
        return len(self.leases)

    def leases_page(self, offset, limit):
        return list(self.leases[offset:offset + limit])


class LeasePagesAlone(ApiCase):
    def test_the_lease_list_makes_the_page_only(self):
        table = CountedLeases([Lease("02:00:00:00:%02x:%02x" % (n // 256, n % 256),
                                     "192.168.2.%d" % (n % 250 + 1), "pc%d" % n, 99)
                               for n in range(150)])
        self.c.ctx.views.leases = table
        r = self.call("GET", "/dhcp/leases?limit=10&offset=135")
        self.assertEqual(([l["hostname"] for l in r.json], total_of(r)),
                         (["pc%d" % n for n in range(135, 145)], 150))
        self.assertEqual(link_of(r), '</api/v1/dhcp/leases?limit=10&offset=145>; rel="next"')
        r = self.call("GET", "/dhcp/leases?offset=149")
        self.assertEqual([l["hostname"] for l in r.json], ["pc149"])
        r = self.call("GET", "/dhcp/leases?offset=400")
        self.assertEqual((r.json, total_of(r)), ([], 150))
        r = self.call("GET", "/dhcp/leases?limit=0")
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual(table.wholes, 0)
