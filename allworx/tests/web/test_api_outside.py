"""
The API's record collections for outside lines (SPEC 15): trunks, numbers,
groups and attendants are created, changed and deleted like the other
records, every error of a body comes back at once, and a trunk's secret is
set but never shown.
"""

import json

from allworx.protocols.web import forms
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase

TRUNK = {"name": "main", "registrar": "sip.provider.example", "username": "office",
         "secret": "top-s3cret word", "numbers": ["+15551230000", "+15551230001"]}


class OutsideLineRecordTests(ApiCase):

    def create_trunk(self):
        r = self.call("POST", "/trunks", TRUNK)
        self.assertEqual(r.code, 201, r.text)
        return r

    def test_trunk_secret_set_never_shown(self):
        r = self.create_trunk()
        self.assertNotIn("secret", r.json)
        self.assertNotIn("top-s3cret", r.text)
        self.assertEqual(r.json["numbers"], "+15551230000 +15551230001")
        self.assertEqual(r.json["transport"], "udp")
        self.assertIn("secret = top-s3cret word", self.c.tap_conf())
        for url in ("/trunks", "/trunks/main"):
            r = self.call("GET", url)
            self.assertEqual(r.code, 200)
            self.assertNotIn("top-s3cret", r.text)
        values = forms.current_record(self.c.office, "trunk", "main")
        self.assertNotIn("secret", values)

    def test_trunk_changes_keep_the_secret(self):
        self.create_trunk()
        r = self.call("PATCH", "/trunks/main", {"channels": 8, "secret": ""})
        self.assertEqual((r.code, r.json["channels"]), (200, 8), r.text)
        self.assertEqual(self.c.office.config.trunks["main"].secret, "top-s3cret word")
        body = dict(TRUNK, transport="tls")
        del body["secret"]
        r = self.call("PUT", "/trunks/main", body)
        self.assertEqual(r.code, 200, r.text)
        trunk = self.c.office.config.trunks["main"]
        self.assertEqual((trunk.transport, trunk.channels, trunk.secret), ("tls", 4, "top-s3cret word"))
        r = self.call("PUT", "/trunks/main", dict(TRUNK, secret="new one"))
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(self.c.office.config.trunks["main"].secret, "new one")

    def test_create_needs_a_secret(self):
        body = dict(TRUNK)
        del body["secret"]
        r = self.call("POST", "/trunks", body)
        self.assertEqual((r.code, r.json["field"]), (400, "secret"), r.text)
        self.assertIn("required", r.json["reason"])

    def test_numbers_groups_attendants(self):
        self.create_trunk()
        cases = [
            ("groups", {"name": "sales", "number": "500", "members": ["101", "102"],
                        "strategy": "hunt", "fallback": "voicemail 101"}, "members", "101 102"),
            ("attendants", {"name": "frontdesk", "number": 600, "key_1": "sales",
                            "hours": "mon-fri 08:30-17:30", "after_hours": "voicemail 101"},
             "hours", "mon-fri 08:30-17:30"),
            ("numbers", {"name": "+15551230000", "to": "frontdesk"}, "to", "frontdesk"),
        ]
        for plural, body, key, text in cases:
            r = self.call("POST", "/" + plural, body)
            self.assertEqual(r.code, 201, (plural, r.text))
            self.assertEqual(r.json[key], text)
            r = self.call("GET", "/%s/%s" % (plural, body["name"]))
            self.assertEqual((r.code, r.json[key]), (200, text), r.text)
        config = self.c.office.config
        self.assertEqual(config.resolve_target(config.numbers["+15551230000"].to).kind, "attendant")
        # Removing what others name is refused, naming who names it.
        r = self.call("DELETE", "/attendants/frontdesk")
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual(r.json["errors"][0]["section"], "number +15551230000")
        for plural, name in (("numbers", "+15551230000"), ("attendants", "frontdesk"),
                             ("groups", "sales"), ("trunks", "main")):
            self.assertEqual(self.call("DELETE", "/%s/%s" % (plural, name)).code, 204, plural)
        self.assertNotIn("[trunk main]", self.c.tap_conf())

    def test_every_error_at_once(self):
        before = self.c.tap_conf()
        r = self.call("POST", "/groups", {"name": "sales", "number": "5x", "strategy": "random",
                                          "ring_timeout": "0", "members": "101 105",
                                          "fallback": "two words"})
        self.assertEqual(r.code, 400, r.text)
        keys = {e["key"] for e in r.json["errors"]}
        self.assertEqual(keys, {"number", "strategy", "ring_timeout", "fallback"}, r.text)
        r = self.call("POST", "/groups", {"name": "sales", "number": "101", "members": "101 105",
                                          "fallback": "nobody"})
        self.assertEqual(r.code, 400, r.text)
        reasons = {e["key"]: e["reason"] for e in r.json["errors"]}
        self.assertIn("already the extension of user alice", reasons["number"])
        self.assertIn("no user has the extension 105", reasons["members"])
        self.assertIn("no [group nobody]", reasons["fallback"])
        self.assertEqual(self.c.tap_conf(), before)

    def test_bad_names(self):
        r = self.call("POST", "/numbers", {"name": "5551230000", "to": "101"})
        self.assertEqual((r.code, r.json["field"]), (400, "name"), r.text)
        self.assertIn("E.164", r.json["reason"])
        r = self.call("POST", "/groups", {"name": "9sales", "number": "500", "members": "101"})
        self.assertEqual((r.code, r.json["field"]), (400, "name"), r.text)

    def test_new_settings_and_user_keys(self):
        self.create_trunk()
        r = self.call("PATCH", "/settings/sip", {"outbound_prefix": "8", "country_code": "44",
                                                 "national_prefix": "none", "wan": True})
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual((r.json["national_prefix"], r.json["wan"]), ("none", True))
        self.assertEqual(self.c.office.config.sip.national_prefix, "")
        r = self.call("PATCH", "/users/bob", {"forward_noanswer": "85557770001", "dnd": True})
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual((r.json["forward_noanswer"], r.json["dnd"]), ("85557770001", True))
        r = self.call("PATCH", "/users/bob", {"forward_busy": "105"})
        self.assertEqual((r.code, r.json["field"]), (400, "forward_busy"), r.text)

    def test_listed_and_described(self):
        resources = self.call("GET", "/").json["resources"]
        for plural in ("trunks", "numbers", "groups", "attendants"):
            self.assertIn("/api/v1/" + plural, resources)
        doc = openapi_document()
        self.assertIn("/api/v1/trunks/{name}", doc["paths"])
        secret = doc["components"]["schemas"]["Trunk"]["properties"]["secret"]
        self.assertTrue(secret["writeOnly"])
        self.assertIn("key_9", doc["components"]["schemas"]["Attendant"]["properties"])
        json.dumps(doc)
