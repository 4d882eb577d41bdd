# -*- test-case-name: allworx.tests.web.test_trunks -*-
"""
The trunks in the admin API and pages (SPEC 15): `GET /api/v1/sip/trunks`
(guarded like the registrations: login, 503 without the SIP service), its
OpenAPI entry and index line, and the trunk table on the Phones page, over a
real TrunkManager driven by the trunk tests' fake core and provider.
"""

from allworx.protocols.sip.trunk import TrunkManager
from allworx.tests.sip.test_trunk import FakeCore, Office, Provider, Trunk
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import FakeRegistrar


class TrunkViewTests(ApiCase):
    def setUp(self):
        ApiCase.setUp(self)
        clock = self.c.clock
        self.core = FakeCore(clock)
        dns = {"sip.internet.example": "198.51.100.20"}
        self.manager = TrunkManager(self.core, Office({
            "provider": Trunk(),
            "backup": Trunk(name="backup", registrar=("198.51.100.40", 5070), register=False,
                            channels=2),
            "broken": Trunk(name="broken", registrar=("198.51.100.41", None), secret="<wrong>")}),
            lambda host: dns[host])
        good, bad = Provider(), Provider(password="other")
        self.core.provider = lambda sent: (bad if sent.dest.host == "198.51.100.41" else good)(sent)

    def running(self):
        self.c.ctx.views.trunks = self.manager
        self.manager.start()
        self.c.clock.advance(0)
        self.manager.acquire("provider")

    def test_not_running_503_and_login_needed(self):
        r = self.call("GET", "/sip/trunks")
        self.assertEqual(r.code, 503)
        self.assertEqual(r.json["reason"], "SIP trunks not running")
        self.running()
        self.assertEqual(self.call("GET", "/sip/trunks", auth=False).code, 401)

    def test_list(self):
        self.running()
        r = self.call("GET", "/sip/trunks")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual([(t["name"], t["registrar"], t["state"], t["channels"], t["channels_in_use"])
                          for t in r.json],
                         [("provider", "sip.internet.example", "registered", 4, 1),
                          ("backup", "198.51.100.40:5070", "not_registering", 2, 0),
                          ("broken", "198.51.100.41", "auth_failed", 4, 0)])
        provider, backup, broken = r.json
        self.assertRegex(provider["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(provider["expires"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIsNone(provider["last_error"])
        self.assertIsNone(backup["expires"])
        self.assertIn("refused the credentials", broken["last_error"])
        self.assertEqual(sorted(provider), sorted([
            "name", "registrar", "state", "since", "expires", "last_error", "channels",
            "channels_in_use"]))

    def test_openapi_and_index(self):
        doc = self.call("GET", "/openapi.json", auth=False).json
        self.assertIn("/api/v1/sip/trunks", doc["paths"])
        props = doc["components"]["schemas"]["TrunkStatus"]["properties"]
        self.assertEqual(sorted(props), sorted([
            "name", "registrar", "state", "since", "expires", "last_error", "channels",
            "channels_in_use"]))
        self.assertIn("/api/v1/sip/trunks", self.call("GET", "/").json["resources"])

    def test_phones_page(self):
        self.c.login()
        self.c.ctx.views.registrations = self.c.ctx.views.calls = FakeRegistrar()
        text = self.c.get("/phones").text
        self.assertNotIn("<h2>Trunks</h2>", text)
        self.running()
        text = self.c.get("/phones").text
        self.assertIn("<h2>Trunks</h2>", text)
        self.assertIn("<td>provider</td><td>sip.internet.example</td><td>registered</td>", text)
        self.assertIn("<td>backup</td><td>198.51.100.40:5070</td><td>not registering</td>", text)
        self.assertIn("<td>broken</td><td>198.51.100.41</td><td>auth failed</td>", text)
        self.assertIn("the provider refused the credentials of office", text)
        self.assertIn("<td>1 of 4</td>", text)
        self.assertIn("in 1h", text)           # the registration's expiry

    def test_phones_page_without_trunks(self):
        self.c.login()
        self.c.ctx.views.registrations = self.c.ctx.views.calls = FakeRegistrar()
        self.c.ctx.views.trunks = TrunkManager(self.core, Office({}), lambda host: None)
        self.assertIn("No trunk is configured.", self.c.get("/phones").text)
