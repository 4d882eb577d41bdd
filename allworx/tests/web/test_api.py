# -*- test-case-name: allworx.tests.web.test_api -*-
"""
The JSON API (SPEC 10) in memory against a real Office on a temporary
tap.conf: authentication, each resource, 400 naming the field, nothing
half-applied, the OpenAPI document.
"""

import base64
import json

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.passwords import parse_sip_digest, sip_digest, verify_password
from allworx.tests.web.test_pages import FakeLeases, FakeLog, FakeQueue, FakeRegistrar, Lease
from allworx.tests.webhelpers import BASIC, JSON, AdminClient
from allworx.protocols.web import api
class ApiCase(unittest.TestCase):
    def setUp(self):
        self.c = AdminClient(self)

    def call(self, method, url, body=None, headers=None, auth=True):
        h = dict(JSON) if body is not None or method in ("POST", "PUT", "PATCH") else {}
        if auth:
            h.update(BASIC)
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        r = self.c.request(method, "/api/v1" + url, data=data, headers=h)
        r.json = json.loads(r.text) if r.text.strip() and r.headers.getRawHeaders(
            "content-type", [""])[0].startswith("application/json") else None
        return r


class AuthTests(ApiCase):
    def test_no_credentials_401(self):
        r = self.call("GET", "/settings/dhcp", auth=False)
        self.assertEqual(r.code, 401)
        self.assertIn("Basic", r.headers.getRawHeaders("www-authenticate")[0])
        self.assertEqual(r.json["error"], "unauthorized")

    def test_wrong_password_401(self):
        bad = {b"Authorization": [b"Basic " + base64.b64encode(b"admin:wrong")]}
        self.assertEqual(self.call("GET", "/users", headers=bad, auth=False).code, 401)

    def test_not_basic_401(self):
        bad = {b"Authorization": [b"Bearer abc"]}
        self.assertEqual(self.call("GET", "/users", headers=bad, auth=False).code, 401)

    def test_lock_out_applies_to_the_api(self):
        bad = {b"Authorization": [b"Basic " + base64.b64encode(b"admin:wrong")]}
        for _ in range(5):
            self.call("GET", "/users", headers=bad, auth=False)
        r = self.call("GET", "/users")
        self.assertEqual(r.code, 429)
        self.assertTrue(r.headers.getRawHeaders("retry-after"))

    def test_page_session_reads_but_needs_csrf_to_change(self):
        self.c.login()
        self.assertEqual(self.call("GET", "/users", auth=False).code, 200)
        r = self.call("PATCH", "/settings/dhcp", {"range": "1-50"}, auth=False)
        self.assertEqual(r.code, 403)
        # The session's token, as a script on the page would send it.
        session = list(self.c.ctx.sessions._sessions.values())[0]
        r = self.call("PATCH", "/settings/dhcp", {"range": "1-50"}, auth=False,
                      headers={b"X-CSRF-Token": [session.csrf.encode()]})
        self.assertEqual(r.code, 200, r.text)

    def test_changes_need_json(self):
        r = self.c.request("PATCH", "/api/v1/settings/dhcp", data=b"range=1-50",
                           headers={**BASIC, b"Content-Type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(r.code, 415)
        self.assertEqual(self.c.office.config.dhcp.range, (1, 100))

    def test_openapi_is_public(self):
        r = self.call("GET", "/openapi.json", auth=False)
        self.assertEqual(r.code, 200)
        doc = r.json
        self.assertEqual(doc["openapi"], "3.0.3")
        for path in ("/api/v1/settings/{section}", "/api/v1/users", "/api/v1/users/{name}",
                     "/api/v1/aliases", "/api/v1/hosts", "/api/v1/records", "/api/v1/forwards",
                     "/api/v1/dhcp/leases", "/api/v1/connections", "/api/v1/mail/queue",
                     "/api/v1/sip/registrations", "/api/v1/lockouts", "/api/v1/lockouts/unlock"):
            self.assertIn(path, doc["paths"])
        self.assertIn("range", doc["components"]["schemas"]["Settings_dhcp"]["properties"])
        self.assertNotIn("sip_digest", doc["components"]["schemas"]["User"]["properties"])


class LockoutTests(ApiCase):
    """GET /api/v1/lockouts and POST /api/v1/lockouts/unlock."""

    def test_list_and_unlock(self):
        throttle = self.c.ctx.throttle
        self.assertEqual(self.call("GET", "/lockouts").json, {"lockouts": []})
        for _ in range(5):
            throttle.failed("192.168.2.50", "alice")
            throttle.failed("192.168.2.51", "alice")
        r = self.call("GET", "/lockouts")
        self.assertEqual(r.code, 200)
        self.assertEqual([(l["user"], l["source"], l["failures"]) for l in r.json["lockouts"]],
                         [("alice", "192.168.2.50", 5), ("alice", "192.168.2.51", 5)])
        self.assertRegex(r.json["lockouts"][0]["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        r = self.call("POST", "/lockouts/unlock", {"user": "alice", "source": "192.168.2.50"})
        self.assertEqual((r.code, [l["source"] for l in r.json["unlocked"]]), (200, ["192.168.2.50"]))
        r = self.call("POST", "/lockouts/unlock", {"user": "101"})     # alice's extension
        self.assertEqual([l["source"] for l in r.json["unlocked"]], ["192.168.2.51"])
        self.assertEqual(self.call("GET", "/lockouts").json, {"lockouts": []})

    def test_bad_unlocks_400(self):
        for body, field in (({}, "user"), ({"source": "not-an-address"}, "source"),
                            ({"user": 5}, "user"), ({"user": " "}, "user")):
            r = self.call("POST", "/lockouts/unlock", body)
            self.assertEqual((r.code, r.json["field"]), (400, field), body)

    def test_needs_login(self):
        self.assertEqual(self.call("GET", "/lockouts", auth=False).code, 401)
        self.assertEqual(self.call("POST", "/lockouts/unlock", {"user": "alice"}, auth=False).code, 401)


class SettingsTests(ApiCase):
    def test_get(self):
        r = self.call("GET", "/settings/dhcp")
        self.assertEqual(r.json, {"enabled": True, "range": "1-100", "lease_time": "86400",
                                  "client_rate": 10})

    def test_admin_hash_never_shown(self):
        self.assertNotIn("admin_password", self.call("GET", "/settings/web").json)

    def test_patch_applies_and_is_on_disk(self):
        r = self.call("PATCH", "/settings/dhcp", {"range": "10-60", "enabled": True})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.json["range"], "10-60")
        self.assertIn("range = 10-60", self.c.tap_conf())

    def test_bad_value_400_names_field_and_changes_nothing(self):
        before = self.c.tap_conf()
        r = self.call("PUT", "/settings/dhcp", {"lease_time": "2d", "range": "1-300"})
        self.assertEqual(r.code, 400)
        self.assertEqual(r.json["field"], "range")
        self.assertIn("300", r.json["reason"])
        self.assertEqual(self.c.tap_conf(), before)
        self.assertEqual(self.c.office.config.dhcp.lease_time, 86400)

    def test_unknown_key(self):
        r = self.call("PATCH", "/settings/dns", {"primry": "1.2.3.4"})
        self.assertEqual((r.code, r.json["field"]), (400, "primry"))
        self.assertIn("unknown key", r.json["reason"])

    def test_unknown_section(self):
        self.assertEqual(self.call("GET", "/settings/nothing").code, 404)

    def test_not_json(self):
        r = self.c.request("PATCH", "/api/v1/settings/dhcp", data=b"{nope",
                           headers={**BASIC, **JSON})
        self.assertEqual(r.code, 400)
        self.assertEqual(json.loads(r.text)["field"], "body")

    def test_admin_password_is_hashed(self):
        r = self.call("PATCH", "/settings/web", {"admin_password": "another-secret"})
        self.assertEqual(r.code, 200)
        # The old [web] admin_password moved to [user admin], whose password it set.
        self.assertIsNone(self.c.office.config.web.admin_password)
        self.assertTrue(verify_password(self.c.office.config.users["admin"].password,
                                        "another-secret"))
        self.assertNotIn("another-secret", self.c.tap_conf())

    def test_a_combination_checked_whole(self):
        r = self.call("PATCH", "/settings/wan", {"mode": "disabled"})
        self.assertEqual(r.code, 400)
        self.assertEqual(r.json["field"], "mode")
        self.assertEqual(r.json["errors"][0]["section"], "security")


class UserTests(ApiCase):
    def test_list_and_get(self):
        users = self.call("GET", "/users").json
        self.assertEqual([u["name"] for u in users], ["alice", "bob"])
        alice = self.call("GET", "/users/alice").json
        self.assertEqual(alice["extension"], "101")
        self.assertEqual(alice["mail"], "alice@example.com")
        self.assertNotIn("password", alice)
        self.assertNotIn("sip_digest", alice)

    def test_create_with_plain_password(self):
        r = self.call("POST", "/users", {"name": "dave", "full_name": "Dave Dunn",
                                         "password": "dave-pw", "extension": 104})
        self.assertEqual(r.code, 201, r.text)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/api/v1/users/dave"])
        dave = self.c.office.config.users["dave"]
        self.assertTrue(verify_password(dave.password, "dave-pw"))
        self.assertEqual(dict(dave.sip_digest), parse_sip_digest(sip_digest("104", "example.com", "dave-pw")))
        self.assertNotIn("dave-pw", self.c.tap_conf())

    def test_create_existing_409(self):
        r = self.call("POST", "/users", {"name": "alice", "password": "x"})
        self.assertEqual((r.code, r.json["field"]), (409, "name"))

    def test_create_without_password(self):
        r = self.call("POST", "/users", {"name": "dave"})
        self.assertEqual((r.code, r.json["field"]), (400, "password"))
        self.assertNotIn("dave", self.c.office.config.users)

    def test_bad_field(self):
        r = self.call("POST", "/users", {"name": "dave", "password": "x", "voicemail_pin": "12"})
        self.assertEqual((r.code, r.json["field"]), (400, "voicemail_pin"))
        self.assertNotIn("dave", self.c.office.config.users)

    def test_bad_name(self):
        r = self.call("POST", "/users", {"name": "Not Valid", "password": "x"})
        self.assertEqual((r.code, r.json["field"]), (400, "name"))

    def test_sip_digest_not_writable(self):
        r = self.call("PATCH", "/users/alice", {"sip_digest": "md5:00"})
        self.assertEqual((r.code, r.json["field"]), (400, "sip_digest"))

    def test_patch_and_delete(self):
        r = self.call("PATCH", "/users/bob", {"full_name": "Robert Baker"})
        self.assertEqual(r.json["full_name"], "Robert Baker")
        self.assertEqual(self.call("DELETE", "/users/bob").code, 400)  # alias sales needs bob
        self.call("DELETE", "/aliases/sales")
        self.assertEqual(self.call("DELETE", "/users/bob").code, 204)
        self.assertEqual(self.call("GET", "/users/bob").code, 404)

    def test_extension_change_warns(self):
        r = self.call("PATCH", "/users/alice", {"extension": "111"})
        self.assertEqual(r.code, 200)
        self.assertIn("set the password again", r.json["warnings"][0])

    def test_put_replaces_but_keeps_the_password(self):
        old = self.c.office.config.users["alice"].password
        r = self.call("PUT", "/users/alice", {"full_name": "A", "extension": "101"})
        self.assertEqual(r.code, 200)
        alice = self.c.office.config.users["alice"]
        self.assertEqual((alice.full_name, alice.voicemail_pin, alice.password), ("A", None, old))

    def test_fetch_accounts_masked(self):
        self.call("PATCH", "/users/alice", {"pop3_fetch": ["pop3://al:pw@pop.isp.example"]})
        got = self.call("GET", "/users/alice").json
        self.assertEqual(got["pop3_fetch"], "pop3://al:********@pop.isp.example")
        self.assertEqual(got["pop3_fetch_status"], {"pop3://al@pop.isp.example:110": None})
        # Echoing the masked value back keeps the password.
        self.call("PUT", "/users/alice", got)
        self.assertEqual(self.c.office.config.users["alice"].pop3_fetch[0].password, "pw")


class RecordTests(ApiCase):
    def test_each_collection(self):
        cases = [
            ("aliases", {"name": "info", "to": ["alice", "bob"]}, "to", "alice bob"),
            ("hosts", {"name": "printer", "mac": "02:00:00:00:00:50", "address": "192.168.2.150"},
             "address", "192.168.2.150"),
            ("records", {"name": "mail2", "a": "192.168.2.9"}, "a", "192.168.2.9"),
            ("forwards", {"name": "cam", "wan_port": 8081, "to": "192.168.2.50:80"}, "to",
             "192.168.2.50:80"),
        ]
        for plural, body, key, text in cases:
            r = self.call("POST", "/" + plural, body)
            self.assertEqual(r.code, 201, (plural, r.text))
            self.assertEqual(r.json[key], text)
            self.assertIn(body["name"], [x["name"] for x in self.call("GET", "/" + plural).json])
            self.assertEqual(self.call("DELETE", "/%s/%s" % (plural, body["name"])).code, 204)

    def test_400_names_the_field(self):
        r = self.call("POST", "/hosts", {"name": "printer", "mac": "02:00:00:00:00:50",
                                         "address": "10.0.0.5"})
        self.assertEqual((r.code, r.json["field"]), (400, "address"))
        self.assertIn("not in the LAN subnet", r.json["reason"])

    def test_unknown_collection_and_name(self):
        self.assertEqual(self.call("GET", "/widgets").code, 404)
        self.assertEqual(self.call("GET", "/hosts/nothing").code, 404)
        self.assertEqual(self.call("PATCH", "/hosts/nothing", {"mac": "02:00:00:00:00:01"}).code, 404)

    def test_put_creates(self):
        r = self.call("PUT", "/aliases/team", {"to": "alice"})
        self.assertEqual(r.code, 200)
        self.assertIn("team", self.c.office.config.aliases)


class RuntimeTests(ApiCase):
    def test_not_running_503(self):
        for url in ("/dhcp/leases", "/connections", "/mail/queue", "/sip/registrations"):
            r = self.call("GET", url)
            self.assertEqual(r.code, 503, url)
            self.assertIn("not running", r.json["reason"])

    def test_running(self):
        runtime = self.c.ctx.views
        runtime.leases = FakeLeases([Lease("02:00:00:00:00:01", "192.168.2.10", "pc1", 99)])
        runtime.connections = FakeLog([{"action": "drop", "reason": "WAN to LAN"}], {"drop": 1})
        runtime.registrations = runtime.calls = FakeRegistrar()
        queue = runtime.mail_queue = FakeQueue()
        self.assertEqual(self.call("GET", "/dhcp/leases").json[0]["hostname"], "pc1")
        self.assertEqual(self.call("GET", "/connections").json["counts"], {"drop": 1})
        self.assertEqual(self.call("GET", "/sip/registrations").json[0]["extension"], "101")
        self.assertEqual(self.call("GET", "/sip/calls").json[0]["state"], "ringing")
        self.assertEqual(self.call("GET", "/mail/queue").json[0]["id"], "q1")
        self.assertEqual(self.call("POST", "/mail/queue/q1/retry").code, 200)
        self.assertEqual(queue.retried, ["q1"])
        self.assertEqual(self.call("DELETE", "/mail/queue/q1").code, 204)
        self.assertEqual(queue.items, [])

    def test_status(self):
        self.c.office.set_status("dns", "up", "listening")
        s = self.call("GET", "/status").json
        self.assertEqual(s["wan_address"], "203.0.113.2/24")
        self.assertEqual(s["services"]["dns"]["state"], "up")


class BackupTests(ApiCase):
    def test_backup_and_restore(self):
        # The configuration alone (GET /backup is the whole office: test_backup).
        r = self.call("GET", "/backup/tap.conf")
        self.assertEqual(r.text, self.c.office.document_text())
        text = r.text + "\n[alias team]\nto = alice\n"
        r = self.call("PUT", "/backup", {"text": text})
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(self.c.tap_conf(), text)

    def test_bad_restore(self):
        before = self.c.tap_conf()
        r = self.call("PUT", "/backup", {"text": before + "\n[alias team]\nto = zed\n"})
        self.assertEqual((r.code, r.json["field"]), (400, "to"))
        self.assertEqual(self.c.tap_conf(), before)


class PureTests(unittest.TestCase):
    def test_as_text(self):
        self.assertEqual(api.as_text("enabled", True), "yes")
        self.assertEqual(api.as_text("port", 53), "53")
        self.assertEqual(api.as_text("to", ["a", "b"]), "a b")
        self.assertEqual(api.as_text("mx", ["10 a.example", "20 b.example"]), "10 a.example, 20 b.example")
        self.assertEqual(api.as_text("x", None), "")
        self.assertRaises(api.ApiError, api.as_text, "x", {"a": 1})

    @settings(max_examples=200, deadline=None)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3)))
    def test_as_text_never_crashes_otherwise(self, value):
        try:
            self.assertIsInstance(api.as_text("k", value), str)
        except api.ApiError as e:
            self.assertEqual(e.code, 400)


class FuzzTests(unittest.TestCase):
    """Whatever a script sends, the answer is a clear 4xx or a success, never a crash."""

    def setUp(self):
        self.c = AdminClient(self)

    values = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.text(max_size=30),
                       st.lists(st.text(max_size=10), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                   st.integers(), max_size=2))
    keys = st.sampled_from(["range", "enabled", "lease_time", "primary", "use_forwarders", "mode",
                            "dmz_open", "address", "port", "nonsense", "name", "password",
                            "extension", "to", "mac"])

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(["dhcp", "dns", "security", "wan", "lan", "mail", "ldap"]),
           st.dictionaries(keys, values, max_size=4))
    def test_settings_bodies(self, section, body):
        before = self.c.tap_conf()
        r = self.c.request("PATCH", "/api/v1/settings/" + section, data=json.dumps(body).encode(),
                           headers={**BASIC, **JSON})
        self.assertIn(r.code, (200, 400), r.text)
        if r.code == 400:
            self.assertIn("field", json.loads(r.text))
            self.assertEqual(self.c.tap_conf(), before)

    @settings(max_examples=40, deadline=None)
    @given(st.sampled_from(["aliases", "hosts", "records", "forwards"]),
           st.dictionaries(keys, values, max_size=4))
    def test_record_bodies(self, plural, body):
        r = self.c.request("POST", "/api/v1/" + plural, data=json.dumps(body).encode(),
                           headers={**BASIC, **JSON})
        self.assertIn(r.code, (201, 400, 409), r.text)

    @settings(max_examples=40, deadline=None)
    @given(st.binary(max_size=200))
    def test_raw_bodies(self, data):
        r = self.c.request("PUT", "/api/v1/settings/dhcp", data=data, headers={**BASIC, **JSON})
        self.assertIn(r.code, (200, 400), r.text)


class IndexTests(ApiCase):

    def test_the_index_lists_every_path_of_the_openapi_document(self):
        """SPEC 10: GET /api/v1/ answers {"paths": [...]}, every path of the OpenAPI document."""
        body = self.call("GET", "/").json
        doc = self.call("GET", "/openapi.json", auth=False).json
        self.assertEqual(body["paths"], sorted(doc["paths"]))
        self.assertIn("/api/v1/mail/security", body["paths"])
