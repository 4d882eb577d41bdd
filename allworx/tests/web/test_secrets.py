"""
Issue 21 through the admin pages and the API: a value that would add lines
to tap.conf answers 400 naming the key and leaves the file byte-for-byte as
it was (item 1); voicemail PINs are set, stored hashed and shown only as
"set" / "not set" (item 8).
"""

import json
import re

from hypothesis import given, settings, strategies as st

from allworx.passwords import is_hashed, verify_pin
from allworx.tests.confs import PIN_HASH
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import BASIC, JSON

INJECTED = "\n[record injected]\na = 1.2.3.4"


def raw(client):
    with open(client.office.path, "rb") as f:
        return f.read()


class ApiInjectionTests(ApiCase):

    def refused(self, method, url, body, field):
        before = raw(self.c)
        r = self.call(method, url, body)
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual(r.json["field"], field, r.text)
        self.assertEqual(raw(self.c), before)
        self.assertNotIn("injected", self.c.office.config.records)
        return r.json["reason"]

    def test_patch_with_a_new_section(self):
        reason = self.refused("PATCH", "/users/bob", {"full_name": "Bob" + INJECTED}, "full_name")
        self.assertEqual(reason, "a line break (U+000A) is not allowed in a value")

    def test_each_way_in(self):
        self.assertEqual(self.call("POST", "/records", {"name": "www2", "txt": "hello"}).code, 201)
        for method, url, body, field in (
                ("PATCH", "/settings/lan", {"interface": "lan0" + INJECTED}, "interface"),
                ("PUT", "/settings/mail", {"smarthost": "smtp.isp.example\r" + INJECTED}, "smarthost"),
                ("PATCH", "/records/www2", {"txt": "v=spf1 -all\r\n[record injected]"}, "txt"),
                ("POST", "/records", {"name": "x", "txt": "a\u2028[record injected]\u2028a = 1.2.3.4"}, "txt"),
                ("POST", "/users", {"name": "dave", "password": "pw", "full_name": "D" + INJECTED},
                 "full_name"),
                ("PATCH", "/users/bob", {"email_forward": "b@x.example\0"}, "email_forward"),
                ("PATCH", "/users/bob", {"full_name": "Bob # admin = yes"}, "full_name"),
                ("PATCH", "/users/alice", {"voicemail_pin": "1234" + INJECTED}, "voicemail_pin")):
            reason = self.refused(method, url, body, field)
            self.assertIn("is not allowed in a value", reason, (url, body))

    def test_a_name_with_a_line_break(self):
        before = raw(self.c)
        for method, url, body in (("POST", "/aliases", {"name": "info\n[record injected]", "to": "alice"}),
                                  ("PUT", "/aliases/info%0A", {"to": "alice"}),
                                  ("PUT", "/aliases/info%0D%0A%5Brecord%20x%5D", {"to": "alice"})):
            r = self.call(method, url, body)
            self.assertEqual(r.code, 400, r.text)
            self.assertEqual(r.json["field"], "name", r.text)
            self.assertEqual(raw(self.c), before)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(["\n", "\r", "\0", "\x1b", "\u2028", "[", "]", "=",
                                               " #", ";", "\t"]), st.text(max_size=6)),
                    max_size=6).map("".join))
    def test_refused_or_stored_exactly(self, value):
        before = raw(self.c)
        r = self.c.request("PATCH", "/api/v1/users/bob", data=json.dumps({"full_name": value}).encode(),
                           headers={**BASIC, **JSON})
        self.assertIn(r.code, (200, 400), r.text)
        if r.code == 400:
            self.assertEqual(json.loads(r.text)["field"], "full_name")
            self.assertEqual(raw(self.c), before)
        else:
            self.assertEqual(json.loads(r.text)["full_name"], value.strip())
            self.assertNotIn("injected", self.c.office.config.records)


class PageInjectionTests(LoggedIn):

    def test_user_form(self):
        before = raw(self.c)
        r = self.submit("/users/bob", "save_user", name="bob", password="",
                        full_name="Bob\r\n[record injected]\r\na = 1.2.3.4", extension="102",
                        voicemail_pin="", email_forward="", pop3_fetch="")
        self.assertEqual(r.code, 400)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save_user-full_name"')
        self.assertIn("a line break (U+000D) is not allowed in a value", r.text)
        self.assertEqual(raw(self.c), before)

    def test_settings_form_of_several_sections(self):
        before = raw(self.c)
        r = self.submit("/network", "save", **{
            "system.hostname": "server", "system.domain": "example.com", "system.admin_email": "",
            "lan.interface": "lan0" + INJECTED, "lan.address": "192.168.2.254/24", "lan.gateway": "",
            "wan.mode": "static", "wan.interface": "wan0", "wan.address": "203.0.113.9/24",
            "wan.gateway": "203.0.113.1"})
        self.assertEqual(r.code, 400)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save-lan.interface"')
        self.assertEqual(raw(self.c), before)
        self.assertEqual(self.c.office.config.system.hostname, "allworx")


class ApiPinTests(ApiCase):

    def alice_pin(self):
        return self.c.office.config.users["alice"].voicemail_pin

    def test_shown_only_as_set_or_not(self):
        users = {u["name"]: u for u in self.call("GET", "/users").json}
        self.assertEqual((users["alice"]["voicemail_pin"], users["bob"]["voicemail_pin"]),
                         ("set", "not set"))
        for url in ("/users", "/users/alice"):
            self.assertNotIn(PIN_HASH, self.call("GET", url).text)

    def test_set_hashed_kept_and_removed(self):
        r = self.call("PATCH", "/users/bob", {"voicemail_pin": 4321})
        self.assertEqual((r.code, r.json["voicemail_pin"]), (200, "set"))
        stored = self.c.office.config.users["bob"].voicemail_pin
        self.assertTrue(is_hashed(stored))
        self.assertTrue(verify_pin(stored, "4321"))
        self.assertNotIn("4321", self.c.tap_conf())
        # A client echoing what it read keeps the PIN.
        before = self.alice_pin()
        got = self.call("GET", "/users/alice").json
        self.assertEqual(self.call("PUT", "/users/alice", dict(got, full_name="Alice A")).code, 200)
        self.assertEqual(self.alice_pin(), before)
        self.assertEqual(self.call("PATCH", "/users/alice", {"voicemail_pin": "not set"}).code, 200)
        self.assertEqual(self.alice_pin(), before)
        # Empty removes it.
        r = self.call("PATCH", "/users/alice", {"voicemail_pin": ""})
        self.assertEqual(r.json["voicemail_pin"], "not set")
        self.assertIsNone(self.alice_pin())

    def test_bad_pin_refused_before_hashing(self):
        before = raw(self.c)
        for pin in ("12", "12345678901", "12ab", "\u0661\u0662\u0663\u0664"):
            r = self.call("PATCH", "/users/alice", {"voicemail_pin": pin})
            self.assertEqual((r.code, r.json["field"]), (400, "voicemail_pin"), pin)
            # A mistyped PIN is not repeated in the answer (nor in the log line of it).
            self.assertNotIn(json.dumps(pin)[1:-1], r.text, pin)
        self.assertEqual(raw(self.c), before)

    def test_described(self):
        props = self.call("GET", "/openapi.json", auth=False).json["components"]["schemas"]["User"]["properties"]
        self.assertIn("'set' or 'not set'", props["voicemail_pin"]["description"])


class PagePinTests(LoggedIn):

    def test_never_shown(self):
        for url in ("/users", "/users/alice"):
            page = self.c.get(url).text
            self.assertNotIn(PIN_HASH, page)
            self.assertNotIn("1234", page)
        self.assertRegex(self.c.get("/users/alice").text, r"Voicemail PIN: <strong>set</strong>")
        self.assertRegex(self.c.get("/users/bob").text, r"Voicemail PIN: <strong>not set</strong>")
        self.assertRegex(self.c.get("/users").text, r"<td>102</td><td>not set</td>")
        field = re.search(r'<input id="save_user-voicemail_pin"[^>]*>', self.c.get("/users/alice").text).group()
        self.assertIn('type="password"', field)
        self.assertIn('value=""', field)

    def save(self, **fields):
        form = dict(name="alice", full_name="Alice Archer", password="", extension="101",
                    voicemail_pin="", email_forward="", pop3_fetch="")
        form.update(fields)
        r = self.submit("/users/alice", "save_user", **form)
        self.assertEqual(r.code, 303, r.text)
        return self.c.office.config.users["alice"].voicemail_pin

    def test_empty_keeps_new_sets_box_removes(self):
        self.assertEqual(self.save(), PIN_HASH)
        stored = self.save(voicemail_pin="24680")
        self.assertTrue(is_hashed(stored))
        self.assertTrue(verify_pin(stored, "24680"))
        self.assertNotIn("24680", self.c.tap_conf())
        self.assertIsNone(self.save(clear_voicemail_pin="yes"))

    def test_new_user_with_a_pin(self):
        r = self.submit("/users", "add_user", name="dave", password="dave-pw", extension="104",
                        voicemail_pin="4567", full_name="", email_forward="", pop3_fetch="")
        self.assertEqual(r.code, 303)
        self.assertTrue(verify_pin(self.c.office.config.users["dave"].voicemail_pin, "4567"))
        self.assertNotIn("4567", self.c.tap_conf())
