# -*- test-case-name: allworx.tests.web.test_apijson -*-
"""
The API as printed (SPEC 10, issue 19): JSON types (booleans, numbers, the
admin's own words for durations and sizes, RFC 3339 UTC times), the API
reads back what it stored, several mistakes in one request all reported
with nothing applied, every route served in the OpenAPI document and the
index (with its methods), unknown paths 404 in the errors format.
"""

import re

from allworx.config import RECORD_PLURALS
from allworx.protocols.web.api import OfficeApi
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_asprinted import WORDS
from allworx.tests.web.test_pages import FakeLeases, FakeLog, FakeQueue, FakeRegistrar, Lease
from allworx.tests.webhelpers import AdminClient

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class WordsCase(ApiCase):
    def setUp(self):
        self.c = AdminClient(self, WORDS)


class TypesTests(WordsCase):

    def test_settings_types_and_words(self):
        dhcp = self.call("GET", "/settings/dhcp").json
        self.assertEqual(dhcp, {"enabled": True, "range": "10-60", "lease_time": "1d",
                                "client_rate": 10})
        mail = self.call("GET", "/settings/mail").json
        self.assertEqual((mail["max_message_size"], mail["fetch_interval"], mail["smtp_port"],
                          mail["relay_from_wan"], mail["spam_threshold"]),
                         ("25M", "5m", 25, False, 5))
        web = self.call("GET", "/settings/web").json
        self.assertEqual(web["admin_port"], 8080)
        self.assertEqual(self.call("GET", "/settings/system").json["backup_every"], "1w")
        self.assertEqual(self.call("GET", "/settings/system").json["backup_keep"], 7)
        every = self.call("GET", "/settings").json
        self.assertEqual(every["dhcp"], dhcp)

    def test_what_is_stored_reads_back(self):
        r = self.call("PATCH", "/settings/dhcp", {"lease_time": "12h"})
        self.assertEqual((r.code, r.json["lease_time"]), (200, "12h"), r.text)
        self.assertEqual(self.call("GET", "/settings/dhcp").json["lease_time"], "12h")
        self.assertIn("lease_time = 12h\n", self.c.tap_conf())
        r = self.call("PATCH", "/settings/mail", {"max_message_size": "50M", "smtp_port": 2525,
                                                  "greylist": True})
        self.assertEqual((r.json["max_message_size"], r.json["smtp_port"], r.json["greylist"]),
                         ("50M", 2525, True), r.text)
        text = self.c.tap_conf()
        self.assertIn("max_message_size = 50M\n", text)
        self.assertIn("# a day, as the admin wrote it\n", text)
        self.assertIn("range=10-60\n", text)          # the keys left alone keep their words

    def test_records_types_and_words(self):
        forward = self.call("GET", "/forwards/camera").json
        self.assertEqual(forward, {"name": "camera", "proto": "tcp", "wan_port": 8443,
                                   "to": "192.168.2.42:443"})
        trunk = self.call("GET", "/trunks/main").json
        self.assertEqual((trunk["expires"], trunk["register"], trunk["channels"]), ("1d", True, 4))
        self.assertNotIn("secret", trunk)
        self.assertEqual(self.call("GET", "/groups/team").json["ring_timeout"], "30s")
        self.assertEqual(self.call("GET", "/aliases/team").json["to"], "alice   bob")
        carol = self.call("GET", "/users/carol").json
        self.assertEqual((carol["outside"], carol["dnd"]), (True, False))
        r = self.call("PATCH", "/trunks/main", {"channels": 6})
        self.assertEqual((r.code, r.json["channels"], r.json["expires"]), (200, 6, "1d"), r.text)
        self.assertIn("# the provider's longest\nexpires = 1d\n", self.c.tap_conf())

    def test_an_unchanged_record_put_back_changes_nothing(self):
        before = self.c.tap_conf()
        for plural, name in (("forwards", "camera"), ("hosts", "printer"), ("records", "files"),
                             ("aliases", "team"), ("groups", "team"), ("trunks", "main"),
                             ("attendants", "frontdesk"), ("users", "carol")):
            got = self.call("GET", "/%s/%s" % (plural, name)).json
            for method in ("PUT", "PATCH"):
                r = self.call(method, "/%s/%s" % (plural, name), got)
                self.assertEqual(r.code, 200, (plural, r.text))
                self.assertEqual(self.c.tap_conf(), before, (method, plural))
        for section in ("dhcp", "mail", "system", "sip"):
            got = self.call("GET", "/settings/%s" % section).json
            r = self.call("PATCH", "/settings/%s" % section, got)
            self.assertEqual(r.code, 200, r.text)
            self.assertEqual(self.c.tap_conf(), before, section)

    def test_runtime_times_are_rfc3339(self):
        views = self.c.ctx.views
        views.leases = FakeLeases([Lease("02:00:00:00:00:01", "192.168.2.10", "pc1", 1714573920)])
        views.connections = FakeLog([{"time": 1714573920.5, "action": "drop"}], {"drop": 1})
        views.registrations = views.calls = FakeRegistrar()
        views.mail_queue = FakeQueue()
        self.assertEqual(self.call("GET", "/dhcp/leases").json[0]["expires"], "2024-05-01T14:32:00Z")
        self.assertEqual(self.call("GET", "/connections").json["entries"][0]["time"],
                         "2024-05-01T14:32:00Z")
        self.assertRegex(self.call("GET", "/sip/registrations").json[0]["expires"], RFC3339)
        self.assertRegex(self.call("GET", "/mail/queue").json[0]["next_attempt"], RFC3339)
        self.assertEqual(self.call("GET", "/connections").json["counts"], {"drop": 1})


class EveryErrorTests(WordsCase):
    """Several mistakes in one request: all reported, in SPEC 10's shape; nothing applied."""

    def assertErrors(self, r, expected):
        self.assertEqual(r.code, 400, r.text)
        got = {(e["section"], e["key"]) for e in r.json["errors"]}
        self.assertTrue(set(expected) <= got, (expected, r.json))
        for e in r.json["errors"]:
            self.assertTrue(e["message"], e)

    def test_settings(self):
        before = self.c.tap_conf()
        r = self.call("PATCH", "/settings/dhcp", {"range": "x", "lease_time": "soon",
                                                  "enabled": "perhaps"})
        self.assertErrors(r, [("dhcp", "range"), ("dhcp", "lease_time"), ("dhcp", "enabled")])
        r = self.call("PATCH", "/settings/dhcp", {"nonsense": "1", "lease_time": "soon",
                                                  "range": {"a": 1}})
        self.assertErrors(r, [("dhcp", "nonsense"), ("dhcp", "lease_time"), ("dhcp", "range")])
        self.assertEqual(self.c.tap_conf(), before)

    def test_records(self):
        before = self.c.tap_conf()
        r = self.call("POST", "/forwards", {"name": "web", "proto": "sctp", "wan_port": 0,
                                            "to": "not an address", "colour": "red"})
        self.assertErrors(r, [("forward web", "proto"), ("forward web", "wan_port"),
                              ("forward web", "colour")])
        r = self.call("PATCH", "/users/carol", {"extension": "x", "email_forward": "nope",
                                                "voicemail_pin": "12", "sip_digest": "x"})
        self.assertErrors(r, [("user carol", "extension"), ("user carol", "email_forward"),
                              ("user carol", "voicemail_pin"), ("user carol", "sip_digest")])
        self.assertEqual(self.c.tap_conf(), before)


class PathsTests(ApiCase):
    """Every route the API serves is in the OpenAPI document and the index, with its methods."""

    def served(self):
        out = {}
        for rule in OfficeApi.app.url_map.iter_rules():
            path = "/api" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            methods = {m.lower() for m in rule.methods} - {"head", "options"}
            if "{plural}" in path:
                for plural in RECORD_PLURALS.values():
                    p = path.replace("{plural}", plural).replace("{name}", "{name}")
                    out.setdefault(p, set()).update(methods)
            else:
                out.setdefault(path, set()).update(methods)
        return out

    def test_every_route_in_the_document_and_the_index(self):
        doc = openapi_document()
        documented = {p: {m for m in item if m in ("get", "put", "post", "patch", "delete")}
                      for p, item in doc["paths"].items()}
        normal = {re.sub(r"\{\w+\}", "{}", p): m for p, m in documented.items()}
        for path, methods in self.served().items():
            key = re.sub(r"\{\w+\}", "{}", path)
            if path in ("/api/v1/", "/api/v1/openapi.json"):
                continue
            self.assertIn(key, normal, "%s is served but not in the OpenAPI document" % path)
            self.assertEqual(methods - normal[key], set(),
                             "%s: methods served but not documented" % path)
        index = self.call("GET", "/").json["paths"]
        self.assertEqual(index, sorted(doc["paths"]))

    def test_every_documented_path_is_served(self):
        served = {re.sub(r"\{\w+\}", "{}", p) for p in self.served()}
        for path in openapi_document()["paths"]:
            self.assertIn(re.sub(r"\{\w+\}", "{}", path), served, path)

    def test_unknown_paths_404_in_the_errors_format(self):
        for url in ("/nope", "/settings/dhcp/extra", "/users/alice/extra/more", "/dhcp/leases/x"):
            r = self.call("GET", url)
            self.assertEqual(r.code, 404, url)
            self.assertTrue(r.json["errors"][0]["message"], r.json)
        r = self.c.request("GET", "/api/nope")
        self.assertEqual(r.code, 404)
        self.assertIn('"errors"', r.text)
