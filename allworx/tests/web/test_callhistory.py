"""
The call history on the web: `GET /api/v1/calls` (JSON, CSV, filters, a bad
parameter named in a 400), the CSV export's columns and escaping, and the
table on the Phones page with its filters and paging.
"""

import csv
import io
import json
import os
import re

from twisted.internet import defer, task
from twisted.trial import unittest

from allworx.interfaces import CALL_FIELDS
from allworx.protocols.sip.history import CallEntry, CallHistory
from allworx.protocols.web import callhistory
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import BASIC

T0 = 1_700_000_000     # 2023-11-14T22:13:20Z


def call(n, **kw):
    values = dict(start=T0 + 60 * n, end=T0 + 60 * n + 30, direction="internal", from_="101",
                  to="102", outcome="answered", answered_by="102", duration_s=25)
    values.update(kw)
    return CallEntry(**values)


def history_for(testcase, entries):
    """A real CallHistory in the test's temp dir holding `entries`."""
    h = CallHistory(os.path.join(testcase.mktemp(), "calls.jsonl"), task.Clock(),
                    defer_to_thread=lambda f, *a: defer.maybeDeferred(f, *a),
                    fsync=lambda fd: None)
    testcase.addCleanup(h.close)
    for e in entries:
        h.record(e)
    return h


SAMPLE = [
    call(1, direction="inbound", from_="+15557770001", from_name="Alice Smith", trunk="itsp",
         to="+15551230000", answered_by="101", duration_s=75),
    call(2, direction="outbound", from_="101", from_name="Ann Admin", to="+15557770002",
         trunk="itsp", outcome="busy", answered_by=None, duration_s=0),
    call(3, outcome="missed", answered_by=None, duration_s=0),
    call(4, direction="inbound", from_="+15557770002", from_name="=HYPERLINK(\"x\")",
         to="+15551230000", trunk="itsp", outcome="voicemail", answered_by=None, duration_s=0),
]


class QueryTests(unittest.TestCase):

    def test_defaults(self):
        q = callhistory.parse_query({})
        self.assertEqual(q.page_args(), {"limit": 50, "offset": 0, "direction": None,
                                         "outcome": None, "search": None, "since": None,
                                         "until": None})
        self.assertEqual(q.format, "json")

    def test_values(self):
        q = callhistory.parse_query({"limit": "10", "offset": "20", "direction": "inbound",
                                     "outcome": "missed", "q": " alice ", "since": "2023-11-14",
                                     "until": "2023-11-14T23:00:00Z", "unknown": "ignored",
                                     "direction_": "x"})
        self.assertEqual((q.limit, q.offset, q.direction, q.outcome, q.search),
                         (10, 20, "inbound", "missed", "alice"))
        self.assertEqual((q.since, q.until), (1699920000, 1700002800))

    def test_empty_values_are_absent(self):
        self.assertEqual(callhistory.parse_query({"direction": "", "outcome": " ", "q": ""}),
                         callhistory.CallQuery())

    def test_csv_without_limit_is_every_call(self):
        self.assertIsNone(callhistory.parse_query({"format": "csv"}).limit)
        self.assertEqual(callhistory.parse_query({"format": "csv", "limit": "5000"}).limit, 5000)

    def test_bad_parameters_are_named(self):
        for args, name in (({"limit": "ten"}, "limit"), ({"limit": "0"}, "limit"),
                           ({"limit": "1001"}, "limit"), ({"offset": "-1"}, "offset"),
                           ({"direction": "up"}, "direction"), ({"outcome": "lost"}, "outcome"),
                           ({"since": "yesterday"}, "since"), ({"until": "2023-13-01"}, "until"),
                           ({"format": "xml"}, "format")):
            with self.assertRaises(callhistory.BadParameter) as e:
                callhistory.parse_query(args)
            self.assertEqual(e.exception.name, name, args)


class CsvTests(unittest.TestCase):

    def test_formula_starts_escaped(self):
        for text, out in (("=1+2", "'=1+2"), ("+15551230000", "'+15551230000"), ("-5", "'-5"),
                          ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
                          ("101", "101"), ("Ann = admin", "Ann = admin"), ("", ""), (None, ""),
                          (42, "42")):
            self.assertEqual(callhistory.csv_cell(text), out, text)

    def test_header_order_and_rows(self):
        data = callhistory.csv_bytes([SAMPLE[3], SAMPLE[1]])
        self.assertIn(b"\r\n", data)
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        self.assertEqual(rows[0], ["id", "start", "end", "direction", "from", "from_name", "to",
                                   "answered_by", "trunk", "duration_s", "outcome"])
        self.assertEqual(tuple(rows[0]), CALL_FIELDS)
        self.assertEqual(rows[1], ["", "2023-11-14T22:17:20Z", "2023-11-14T22:17:50Z", "inbound",
                                   "'+15557770002", "'=HYPERLINK(\"x\")", "'+15551230000", "",
                                   "itsp", "0", "voicemail"])
        self.assertEqual(rows[2][4:7], ["101", "Ann Admin", "'+15557770002"])
        self.assertEqual(len(rows), 3)

    def test_duration_text(self):
        self.assertEqual([callhistory.duration_text(s) for s in (0, 42, 725, 3723)],
                         ["0:00", "0:42", "12:05", "1:02:03"])


class ApiTests(ApiCase):

    def setUp(self):
        ApiCase.setUp(self)
        self.c.ctx.views.call_history = history_for(self, SAMPLE)

    def test_json_newest_first(self):
        r = self.call("GET", "/calls")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual((r.json["total"], r.json["limit"], r.json["offset"]), (4, 50, 0))
        self.assertEqual([c["id"] for c in r.json["calls"]], ["4", "3", "2", "1"])
        first = r.json["calls"][-1]
        self.assertEqual(tuple(first), tuple(sorted(CALL_FIELDS)))   # the API sorts keys
        self.assertEqual(first["from"], "+15557770001")
        self.assertEqual(first["start"], "2023-11-14T22:14:20Z")
        self.assertEqual((first["trunk"], first["duration_s"]), ("itsp", 75))
        self.assertIsNone(r.json["calls"][0]["answered_by"])

    def test_filters_and_paging(self):
        def ids(query):
            r = self.call("GET", "/calls?" + query)
            self.assertEqual(r.code, 200, r.text)
            return [c["id"] for c in r.json["calls"]], r.json["total"]
        self.assertEqual(ids("direction=inbound"), (["4", "1"], 2))
        self.assertEqual(ids("outcome=busy"), (["2"], 1))
        self.assertEqual(ids("q=alice"), (["1"], 1))
        self.assertEqual(ids("q=%2B1555777"), (["4", "2", "1"], 3))
        self.assertEqual(ids("limit=2&offset=1"), (["3", "2"], 4))
        self.assertEqual(ids("since=2023-11-14T22:15:00Z"), (["4", "3", "2"], 3))
        self.assertEqual(ids("direction="), (["4", "3", "2", "1"], 4))

    def test_csv(self):
        r = self.c.request("GET", "/api/v1/calls?format=csv&direction=inbound",
                           headers=BASIC)
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        self.assertIn("attachment", r.headers.getRawHeaders("content-disposition")[0])
        rows = list(csv.reader(io.StringIO(r.text)))
        self.assertEqual(tuple(rows[0]), CALL_FIELDS)
        self.assertEqual([row[0] for row in rows[1:]], ["4", "1"])
        self.assertEqual(rows[1][5], "'=HYPERLINK(\"x\")")

    def test_bad_parameter_400_names_it(self):
        for query, field in (("limit=abc", "limit"), ("offset=-3", "offset"),
                             ("direction=sideways", "direction"), ("outcome=lost", "outcome"),
                             ("format=xml", "format"), ("since=soon", "since")):
            r = self.call("GET", "/calls?" + query)
            self.assertEqual((r.code, r.json["field"]), (400, field), query)
            self.assertIn(field, r.json["reason"])

    def test_needs_login(self):
        self.assertEqual(self.call("GET", "/calls", auth=False).code, 401)
        self.assertEqual(self.call("GET", "/calls?format=csv", auth=False).code, 401)

    def test_not_running(self):
        self.c.ctx.views.call_history = None
        r = self.call("GET", "/calls")
        self.assertEqual((r.code, r.json["error"]), (503, "not running"))

    def test_listed_and_described(self):
        self.assertIn("/api/v1/calls", self.call("GET", "/").json["resources"])
        doc = self.call("GET", "/openapi.json", auth=False).json
        op = doc["paths"]["/api/v1/calls"]["get"]
        self.assertEqual({p["name"] for p in op["parameters"]},
                         {"limit", "offset", "direction", "outcome", "q", "since", "until",
                          "format"})
        self.assertIn("text/csv", op["responses"]["200"]["content"])
        schema = doc["components"]["schemas"]["Call"]
        self.assertEqual(schema["required"], list(CALL_FIELDS))
        self.assertEqual(set(schema["properties"]), set(CALL_FIELDS))
        json.dumps(doc)


class PhonesPageTests(LoggedIn):

    def test_not_running(self):
        self.assertIn("Call history not running", self.c.get("/phones").text)

    def test_table_newest_first(self):
        self.c.ctx.views.call_history = history_for(self, SAMPLE)
        text = self.c.get("/phones").text
        self.assertIn('id="history"', text)
        rows = re.findall(r"<tr><td>(2023-11-14 22:1\d)</td><td>(\w+)</td>", text)
        self.assertEqual(rows, [("2023-11-14 22:17", "inbound"), ("2023-11-14 22:16", "internal"),
                                ("2023-11-14 22:15", "outbound"), ("2023-11-14 22:14", "inbound")])
        self.assertIn("Alice Smith", text)
        self.assertIn("1:15", text)
        self.assertIn("=HYPERLINK(&#34;x&#34;)", text)          # escaped as HTML
        self.assertIn("Calls 1-4 of 4", text)
        self.assertIn('href="/api/v1/calls?format=csv"', text)
        self.assertNotIn("Older", text)

    def test_filters(self):
        self.c.ctx.views.call_history = history_for(self, SAMPLE)
        text = self.c.get("/phones?direction=inbound&q=alice").text
        self.assertIn("Alice Smith", text)
        self.assertNotIn("Ann Admin", text)
        self.assertIn("Calls 1-1 of 1", text)
        self.assertIn("<option selected>inbound</option>", text)
        self.assertIn('name="q" value="alice"', text)
        self.assertIn("format=csv", text)
        self.assertIn("direction=inbound&amp;q=alice", text)
        self.assertIn("No call matches.", self.c.get("/phones?outcome=failed").text)

    def test_bad_filter_is_shown_not_fatal(self):
        self.c.ctx.views.call_history = history_for(self, SAMPLE)
        r = self.c.get("/phones?direction=sideways")
        self.assertEqual(r.code, 200)
        self.assertIn("The filter direction was ignored", r.text)
        self.assertIn("Calls 1-4 of 4", r.text)

    def test_paging(self):
        self.c.ctx.views.call_history = history_for(
            self, [call(n, from_="1%02d" % n) for n in range(60)])
        text = self.c.get("/phones?outcome=answered").text
        self.assertIn("Calls 1-25 of 60", text)
        self.assertIn('href="/phones?outcome=answered&amp;offset=25#history">Older', text)
        self.assertNotIn(">Newer<", text)
        text = self.c.get("/phones?outcome=answered&offset=50").text
        self.assertIn("Calls 51-60 of 60", text)
        self.assertIn('href="/phones?outcome=answered&amp;offset=25#history">Newer', text)
        self.assertNotIn(">Older<", text)
        self.assertIn("<code>109</code>", text)
        self.assertNotIn("<code>110</code>", text)

    def test_a_failing_history_does_not_take_the_page_down(self):
        class Broken:
            def page(self, **kw):
                raise RuntimeError("disk on fire")
        self.c.ctx.views.call_history = Broken()
        r = self.c.get("/phones")
        self.assertEqual(r.code, 200)
        self.assertIn("No calls yet", r.text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
