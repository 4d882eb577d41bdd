# -*- test-case-name: allworx.tests.web.test_logs -*-
"""
The server's log events on the web (SPEC 20) over in-memory HTTP with a real
EventRing: `GET /api/v1/logs` (shape, newest first, filters, the `next`
cursor, search, bad parameters named, 401 and 503, the OpenAPI document) and
the Logs page (filters, search, paging, the live tail's script and data).
"""

import os
import re

from twisted.logger import LogLevel

from allworx.eventlog import EventRing
from allworx.protocols.web import admin, logview
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn

T0 = 1796601600     # 2026-12-07T00:00:00Z


def filled_ring(count=30):
    """n % 3 == 0: dns errors; others dhcp, odd ones debug; one second apart from T0."""
    ring = EventRing()
    for n in range(count):
        if n % 3 == 0:
            namespace, level = "allworx.protocols.dns.server", LogLevel.error
        else:
            namespace = "allworx.protocols.dhcp.service"
            level = LogLevel.debug if n % 2 else LogLevel.info
        ring({"log_namespace": namespace, "log_level": level, "log_time": T0 + n + 0.25,
              "log_format": "event {n} for {mac}", "n": n, "mac": "52:54:00:00:00:%02d" % n,
              "password": "never-shown"})
    return ring


class ApiTests(ApiCase):

    def setUp(self):
        ApiCase.setUp(self)
        self.ring = self.c.ctx.views.logs = filled_ring()

    def numbers(self, answer):
        return [e["fields"]["n"] for e in answer["events"]]

    def test_shape_newest_first(self):
        r = self.call("GET", "/logs?limit=2")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(sorted(r.json), ["events", "next"])
        first = r.json["events"][0]
        self.assertEqual(first["time"], "2026-12-07T00:00:29.250Z")
        self.assertEqual(first["service"], "dhcp")
        self.assertEqual(first["level"], "debug")
        self.assertEqual(first["message"], "event 29 for 52:54:00:00:00:29")
        self.assertEqual(first["fields"], {"n": 29, "mac": "52:54:00:00:00:29"})
        self.assertEqual(self.numbers(r.json), [29, 28])
        self.assertIsNotNone(r.json["next"])
        self.assertNotIn("never-shown", r.text)

    def test_filters_and_older_pages(self):
        r = self.call("GET", "/logs?service=dns&limit=4")
        self.assertEqual(self.numbers(r.json), [27, 24, 21, 18])
        seen = self.numbers(r.json)
        while r.json["next"] is not None:
            r = self.call("GET", "/logs?service=dns&limit=4&before=%s" % r.json["next"])
            seen += self.numbers(r.json)
        self.assertEqual(seen, list(range(27, -1, -3)))
        # The level is the least shown.
        r = self.call("GET", "/logs?level=warn&limit=100")
        self.assertEqual({e["service"] for e in r.json["events"]}, {"dns"})
        r = self.call("GET", "/logs?level=info&limit=100")
        self.assertNotIn("debug", {e["level"] for e in r.json["events"]})
        self.assertEqual(len(r.json["events"]), 20)
        # since: RFC 3339 or epoch seconds.
        r = self.call("GET", "/logs?since=2026-12-07T00:00:27Z")
        self.assertEqual(self.numbers(r.json), [29, 28, 27])
        r = self.call("GET", "/logs?since=%d" % (T0 + 28))
        self.assertEqual(self.numbers(r.json), [29, 28])
        self.assertIsNone(r.json["next"])

    def test_search(self):
        r = self.call("GET", "/logs?q=00:00:1&limit=3")
        self.assertEqual(self.numbers(r.json), [19, 18, 17])
        r = self.call("GET", "/logs?q=00:00:1&limit=3&before=%s" % r.json["next"])
        self.assertEqual(self.numbers(r.json), [16, 15, 14])
        r = self.call("GET", "/logs?q=EVENT 2&service=dns")
        self.assertEqual(self.numbers(r.json), [27, 24, 21])
        self.assertIsNone(r.json["next"])

    def test_search_across_many_events(self):
        ring = self.c.ctx.views.logs = EventRing()
        for n in range(2000):
            ring({"log_namespace": "allworx.protocols.web.admin", "log_level": LogLevel.info,
                  "log_format": "hit {n}" if n % 700 == 0 else "miss {n}", "n": n})
        r = self.call("GET", "/logs?q=hit&limit=2")
        self.assertEqual(self.numbers(r.json), [1400, 700])
        r = self.call("GET", "/logs?q=hit&limit=2&before=%s" % r.json["next"])
        self.assertEqual(self.numbers(r.json), [0])
        self.assertIsNone(r.json["next"])

    def test_bad_parameters_named(self):
        for query, key in (("service=dnsx", "service"), ("level=loud", "level"),
                           ("limit=0", "limit"), ("limit=5000", "limit"), ("limit=x", "limit"),
                           ("since=yesterday", "since"), ("before=-1", "before")):
            r = self.call("GET", "/logs?" + query)
            self.assertEqual(r.code, 400, query)
            self.assertEqual(r.json["errors"][0]["key"], key, query)
            self.assertEqual(r.json["errors"][0]["section"], "logs", query)
            self.assertTrue(r.json["errors"][0]["message"], query)

    def test_login_needed(self):
        self.assertEqual(self.call("GET", "/logs", auth=False).code, 401)

    def test_not_kept(self):
        self.c.ctx.views.logs = None
        r = self.call("GET", "/logs")
        self.assertEqual(r.code, 503)

    def test_documented(self):
        doc = openapi_document()
        get = doc["paths"]["/api/v1/logs"]["get"]
        self.assertEqual({p["name"] for p in get["parameters"]},
                         {"service", "level", "since", "limit", "before", "q"})
        schema = get["responses"]["200"]["content"]["application/json"]["schema"]
        self.assertEqual(set(schema["properties"]), {"events", "next"})
        self.assertEqual(set(schema["properties"]["events"]["items"]["required"]),
                         {"time", "service", "level", "message", "fields"})


class QueryTests(ApiCase):

    def test_empty_values_are_absent(self):
        self.assertEqual(logview.parse_query({"service": "", "level": " ", "q": ""}),
                         logview.LogQuery())

    def test_server_is_a_service(self):
        self.assertEqual(logview.parse_query({"service": "Server"}).service, "server")


class PageTests(LoggedIn):

    def setUp(self):
        LoggedIn.setUp(self)
        self.ring = self.c.ctx.views.logs = filled_ring(250)

    def rows(self, text):
        return re.findall(r'<tr data-id="(\d+)" class="level-(\w+)"><td>[^<]*</td>'
                          r'<td class="service">(\w+)</td>', text)

    def test_newest_page_tails(self):
        r = self.c.get("/logs")
        self.assertEqual(r.code, 200)
        rows = self.rows(r.text)
        self.assertEqual(len(rows), logview.PAGE_SIZE)
        self.assertEqual(rows[0], ("250", "error", "dns"))
        self.assertIn('data-tail="yes"', r.text)
        self.assertIn('data-newest-id="250"', r.text)
        self.assertIn('data-newest-time="%.3f"' % (T0 + 249.25), r.text)
        self.assertIn('<script src="/static/logs.js" defer></script>', r.text)
        self.assertNotRegex(r.text, r"<script>")      # the CSP forbids inline scripts
        self.assertNotIn("never-shown", r.text)
        self.assertIn('href="/logs?before=151"', r.text)
        self.assertIn('<a href="/logs"', self.c.get("/status").text)

    def test_filters_search_and_paging(self):
        self.c.ctx.views.logs = filled_ring(1000)
        r = self.c.get("/logs?service=dhcp&level=info&q=FOR+52")
        rows = self.rows(r.text)
        self.assertEqual(len(rows), logview.PAGE_SIZE)
        self.assertEqual({(level, service) for _, level, service in rows}, {("info", "dhcp")})
        self.assertIn('<option selected>dhcp</option>', r.text)
        self.assertIn('value="FOR 52"', r.text)
        self.assertIn('data-service="dhcp"', r.text)
        older = re.search(r'href="(/logs\?[^"]*before=\d+[^"]*)"', r.text)
        self.assertIsNotNone(older, r.text)
        r = self.c.get(older.group(1).replace("&amp;", "&"))
        more = self.rows(r.text)
        self.assertTrue(more)
        self.assertLess(int(more[0][0]), int(rows[-1][0]))
        self.assertNotIn('data-tail="yes"', r.text)     # an older page stays put
        self.assertIn("Newest</a>", r.text)

    def test_bad_filter_shown(self):
        r = self.c.get("/logs?level=loud")
        self.assertEqual(r.code, 200)
        self.assertIn("The filter level was ignored", r.text)
        self.assertEqual(len(self.rows(r.text)), logview.PAGE_SIZE)

    def test_not_kept(self):
        self.c.ctx.views.logs = None
        r = self.c.get("/logs")
        self.assertEqual(r.code, 200)
        self.assertIn("not running", r.text)

    def test_script_among_the_static_files(self):
        with open(os.path.join(admin.STATIC_DIR, "logs.js")) as f:
            script = f.read()
        self.assertIn("/api/v1/logs?", script)
        self.assertIn("data-newest-id", script)
