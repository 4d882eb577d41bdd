"""
`GET /api/v1/stats` and `GET /api/v1/stats/{name}?range=` (SPEC 20) over
in-memory HTTP with a real Office and a real StatsStore on the client's
clock: the series listed, the points with RFC 3339 times at their steps,
400 for another range, 404 for another name, 401, 503 without a history,
the index and the OpenAPI document.
"""

import re

from allworx.protocols.web import statsapi  # noqa: F401 (the routes)
from allworx.protocols.web.openapi import openapi_document
from allworx.statssampler import SERIES
from allworx.statsstore import StatsStore
from allworx.tests.web.test_api import ApiCase
from allworx.tests.webhelpers import BASIC, AdminClient

T0 = 1796601600     # 2026-12-07T00:00:00Z


class StatsApiTests(ApiCase):

    def setUp(self):
        self.c = AdminClient(self)
        self.c.clock.advance(T0 + 5)
        self.store = StatsStore(self.mktemp(), SERIES, self.c.clock)
        self.c.ctx.views.stats = self.store
        for i in range(3):
            self.store.add("dns.queries", T0 + 5 + 10 * i, 2 * i)
            self.store.add("dns.cache_hit_ratio", T0 + 5 + 10 * i, 0.5)
        self.c.clock.advance(20)

    def test_series(self):
        r = self.call("GET", "/stats")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, {"series": [
            {"name": name, "unit": unit, "path": "/api/v1/stats/" + name}
            for name, unit in SERIES]})
        self.assertEqual([s["name"] for s in r.json["series"]], [
            "wan.rx_bps", "wan.tx_bps", "lan.rx_bps", "lan.tx_bps", "firewall.new_flows",
            "firewall.drops", "dns.queries", "dns.cache_hit_ratio", "dhcp.leases", "mail.in",
            "mail.out", "mail.queue", "sip.calls", "sip.registered"])

    def test_points_of_the_hour_by_default(self):
        r = self.call("GET", "/stats/dns.queries")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, {"name": "dns.queries", "unit": "queries/s", "step_s": 10,
                                  "points": [["2026-12-07T00:00:00Z", 0.0],
                                             ["2026-12-07T00:00:10Z", 2.0],
                                             ["2026-12-07T00:00:20Z", 4.0]]})
        self.assertEqual(self.call("GET", "/stats/dns.queries?range=hour").json, r.json)
        # Every path the list gives answers.
        for series in self.call("GET", "/stats").json["series"]:
            self.assertEqual(self.c.get(series["path"], headers=BASIC).code, 200)

    def test_day_and_week(self):
        day = self.call("GET", "/stats/dns.queries?range=day").json
        self.assertEqual((day["step_s"], day["points"]), (300, [["2026-12-07T00:00:00Z", 2.0]]))
        week = self.call("GET", "/stats/dns.cache_hit_ratio?range=week").json
        self.assertEqual((week["unit"], week["step_s"], week["points"]),
                         ("ratio", 1800, [["2026-12-07T00:00:00Z", 0.5]]))
        empty = self.call("GET", "/stats/sip.calls?range=week").json
        self.assertEqual(empty, {"name": "sip.calls", "unit": "calls", "step_s": 1800,
                                 "points": []})

    def test_unknown_range_400(self):
        r = self.call("GET", "/stats/dns.queries?range=month")
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual(r.json["errors"], [{"section": "stats", "key": "range",
                                             "message": "range is one of hour, day, week"}])
        self.assertEqual(r.json["field"], "range")
        self.assertEqual(self.call("GET", "/stats/dns.queries?range=").code, 400)

    def test_unknown_name_404(self):
        r = self.call("GET", "/stats/dns.nothing?range=day")
        self.assertEqual(r.code, 404, r.text)
        self.assertIn("dns.nothing", r.json["reason"])

    def test_needs_login(self):
        self.assertEqual(self.call("GET", "/stats", auth=False).code, 401)
        self.assertEqual(self.call("GET", "/stats/dns.queries", auth=False).code, 401)

    def test_no_history_kept_503(self):
        self.c.ctx.views.stats = None
        self.assertEqual(self.call("GET", "/stats").code, 503)
        self.assertEqual(self.call("GET", "/stats/dns.queries").code, 503)

    def test_listed_and_described(self):
        resources = self.call("GET", "/").json["resources"]
        self.assertIn("/api/v1/stats", resources)
        self.assertIn("/api/v1/stats/{name}", resources)
        doc = self.call("GET", "/openapi.json", auth=False).json
        self.assertEqual(doc, openapi_document())
        one = doc["paths"]["/api/v1/stats/{name}"]
        self.assertEqual(set(one["get"]["responses"]), {"200", "400", "401", "404", "503"})
        [query] = [p for p in one["parameters"] if p["in"] == "query"]
        self.assertEqual(query["schema"]["enum"], ["hour", "day", "week"])
        answer = one["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        self.assertEqual(set(answer["required"]), set(self.call("GET", "/stats/mail.in").json))
        listing = doc["paths"]["/api/v1/stats"]["get"]["responses"]["200"]["content"]
        item = listing["application/json"]["schema"]["properties"]["series"]["items"]
        self.assertEqual(set(item["required"]), set(self.call("GET", "/stats").json["series"][0]))

    def test_every_route_is_documented_with_its_methods(self):
        from allworx.protocols.web import api
        paths = openapi_document()["paths"]
        for rule in api.OfficeApi.app.url_map.iter_rules():
            if not rule.rule.startswith("/v1/stats"):
                continue
            path = "/api" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            self.assertIn(path, paths)
            for method in set(rule.methods) - {"HEAD", "OPTIONS"}:
                self.assertIn(method.lower(), paths[path], path)
