# -*- test-case-name: allworx.tests.web.test_vpnsites -*-
"""
The Sites page, `GET /api/v1/sites` and the tunnel's metrics (SPEC 16) over
in-memory HTTP with a real Office on a temporary tap.conf and a fake
IVpnPeers: peers matched to sites by public key, RFC 3339 times or null,
false before the first probe, the live table, the server's public key,
the `[vpn]` keys saved (every error at once, values as written), 401, the
index and the OpenAPI document.
"""

import re

from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from allworx.interfaces import IVpnPeers
from allworx.protocols.web import sitesapi  # noqa: F401 (the routes)
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.core.test_config_vpn import KEY1, KEY2, KEY3, VPN
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import CHEAP, AdminClient
from allworx.vpnkeys import ensure_server_key, public_key

T0 = 1796601600     # 2026-12-07T00:00:00Z

SITES = VPN + """
[site north]
public_key = {k3}
address = 192.168.99.3
networks = 10.4.0.0/16 10.5.0.0/16
""".format(k3=KEY3)

TEXT = CHEAP + "\n" + SITES


@implementer(IVpnPeers)
class FakeVpn:
    """What the vpn service tells the page: the engine's peers and the probes."""

    def __init__(self, peers=(), status=None):
        self.public_key = "c2VydmVyLXB1YmxpYy1rZXktZm9yLXRoZS10ZXN0cy0="
        self.found = list(peers)
        self.status = {} if status is None else status
        self.keys = 0

    def peers(self):
        return defer.succeed([dict(p) for p in self.found])

    def site_status(self):
        return dict(self.status)

    def keys_changed(self):
        self.keys += 1
        return defer.succeed(None)


BRANCH_PEER = {"public_key": KEY1, "endpoint": "198.51.100.2:51820", "last_handshake": T0 - 90,
               "rx_bytes": 123456, "tx_bytes": 7890}
LAPTOP_PEER = {"public_key": KEY2, "endpoint": "203.0.113.9:40001", "last_handshake": T0 - 30,
               "rx_bytes": 2000, "tx_bytes": 3000}


def fake_vpn():
    return FakeVpn([BRANCH_PEER, LAPTOP_PEER, {"public_key": "unknown", "endpoint": None,
                                               "last_handshake": None, "rx_bytes": 0,
                                               "tx_bytes": 0}],
                   {"branch": {"server_answers": True, "checked_at": T0 - 10},
                    "north": {"server_answers": None, "checked_at": None}})


class SitesApiTests(ApiCase):
    def setUp(self):
        self.c = AdminClient(self, TEXT)
        self.c.clock.advance(T0)
        self.vpn = fake_vpn()
        verifyObject(IVpnPeers, self.vpn)
        self.c.ctx.views.vpn = self.vpn

    def test_sites(self):
        r = self.call("GET", "/sites")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, [
            {"name": "branch", "endpoint": "198.51.100.2:51820", "address": "192.168.99.2",
             "networks": ["192.168.3.0/24"], "last_handshake": "2026-12-06T23:58:30Z",
             "rx_bytes": 123456, "tx_bytes": 7890, "server_answers": True,
             "checked_at": "2026-12-06T23:59:50Z"},
            {"name": "north", "endpoint": None, "address": "192.168.99.3",
             "networks": ["10.4.0.0/16", "10.5.0.0/16"], "last_handshake": None,
             "rx_bytes": 0, "tx_bytes": 0, "server_answers": False, "checked_at": None}])

    def test_sites_before_the_engine_knows_a_peer(self):
        self.vpn.found = []
        self.vpn.status = {"branch": {"server_answers": False, "checked_at": T0}}
        [branch, north] = self.call("GET", "/sites").json
        # The configured endpoint when the engine has none; nothing said twice.
        self.assertEqual((branch["endpoint"], branch["last_handshake"], branch["rx_bytes"],
                          branch["server_answers"], branch["checked_at"]),
                         ("198.51.100.2:51820", None, 0, False, "2026-12-07T00:00:00Z"))

    def test_sites_without_the_vpn_service(self):
        self.c.ctx.views.vpn = None
        r = self.call("GET", "/sites")
        self.assertEqual(r.code, 200)
        self.assertEqual([(s["name"], s["server_answers"], s["checked_at"]) for s in r.json],
                         [("branch", False, None), ("north", False, None)])

    def test_a_site_record_is_still_a_record(self):
        r = self.call("GET", "/sites/branch")
        self.assertEqual((r.code, r.json["public_key"], r.json["extensions"]),
                         (200, KEY1, "200-299"))
        r = self.call("POST", "/sites", {"name": "south", "public_key": "x"})
        self.assertEqual((r.code, r.json["field"]), (400, "public_key"), r.text)

    def test_needs_login(self):
        self.assertEqual(self.call("GET", "/sites", auth=False).code, 401)

    def test_listed_and_described(self):
        resources = self.call("GET", "/").json["resources"]
        for path in ("/api/v1/sites", "/api/v1/devices", "/api/v1/devices/{name}/wireguard.conf",
                     "/api/v1/devices/{name}/wireguard.png", "/api/v1/devices/{name}/key"):
            self.assertIn(path, resources)
        doc = self.call("GET", "/openapi.json", auth=False).json
        self.assertEqual(doc, openapi_document())
        schema = doc["components"]["schemas"]["SiteStatus"]
        self.assertEqual(set(schema["properties"]), set(self.call("GET", "/sites").json[0]))
        self.assertEqual(set(schema["required"]), set(schema["properties"]))
        self.assertIn("post", doc["paths"]["/api/v1/sites"])
        self.assertIn("image/png", doc["paths"]["/api/v1/devices/{name}/wireguard.png"]["get"][
            "responses"]["200"]["content"])
        self.assertIn("post", doc["paths"]["/api/v1/devices/{name}/key"])
        for path in ("/api/v1/devices", "/api/v1/devices/{name}"):
            self.assertIn(path, doc["paths"])

    def test_every_route_is_documented_with_its_methods(self):
        from allworx.protocols.web import api
        paths = openapi_document()["paths"]
        for rule in api.OfficeApi.app.url_map.iter_rules():
            if rule.rule in ("/v1/", "/v1/openapi.json", "/v1/settings"):
                continue
            path = "/api" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            if "{plural}" in path:
                continue
            path = path.replace("{queue_id}", "{id}")
            self.assertIn(path, paths)
            for method in set(rule.methods) - {"HEAD", "OPTIONS"}:
                self.assertIn(method.lower(), paths[path], path)


class SitesPageTests(LoggedIn):
    text = TEXT

    def setUp(self):
        self.c = AdminClient(self, self.text)
        self.c.clock.advance(T0)
        self.assertEqual(self.c.login().code, 303)
        self.vpn = fake_vpn()
        self.c.ctx.views.vpn = self.vpn

    def table(self, text, cls):
        body = text.split('<table class="list %s">' % cls, 1)[1].split("</table>", 1)[0]
        return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
                for row in body.split("<tbody>", 1)[1].split("<tr>")[1:]]

    def test_page(self):
        r = self.c.get("/sites")
        self.assertEqual(r.code, 200, r.text)
        self.assertIn('<main data-refresh="tunnel">', r.text)
        self.assertIn('<a href="/sites" aria-current="page">Sites</a>', r.text)
        self.assertIn('<code id="public-key">%s</code>' % self.vpn.public_key, r.text)
        self.assertEqual(self.table(r.text, "sites"), [
            "branch 198.51.100.2:51820 192.168.99.2 192.168.3.0/24 1m ago 123.5 kB 7.9 kB "
            "answers checked 10s ago",
            "north 192.168.99.3 10.4.0.0/16 10.5.0.0/16 never 0 B 0 B not checked yet"])
        self.assertEqual(self.table(r.text, "devices"), [
            "alice-laptop alice 192.168.99.10 203.0.113.9:40001 30s ago 2.0 kB 3.0 kB",
            "alice-phone alice 192.168.99.11 never 0 B 0 B"])

    def test_a_site_that_does_not_answer(self):
        self.vpn.status["branch"] = {"server_answers": False, "checked_at": T0 - 5}
        rows = self.table(self.c.get("/sites").text, "sites")
        self.assertTrue(rows[0].endswith("no answer checked 5s ago"), rows[0])

    def test_without_the_service_the_key_from_the_file(self):
        self.c.ctx.views.vpn = None
        r = self.c.get("/sites")
        self.assertIn("The tunnel service is not running.", r.text)
        self.assertIn("none yet", r.text)
        key, _ = ensure_server_key(self.c.office.config.system.data_dir)
        r = self.c.get("/sites")
        self.assertIn('<code id="public-key">%s</code>' % public_key(key), r.text)
        self.assertIn("not checked yet", r.text)

    def test_html_is_escaped(self):
        self.vpn.found[0] = dict(BRANCH_PEER, endpoint="<b>x</b>:1")
        r = self.c.get("/sites")
        self.assertIn("&lt;b&gt;x&lt;/b&gt;:1", r.text)
        self.assertNotIn("<b>x</b>", r.text)

    def test_sub_pages_are_not_found(self):
        self.assertEqual(self.c.get("/sites/nothing").code, 404)

    def test_save_settings(self):
        r = self.submit("/sites", "save", **{"vpn.enabled": "yes", "vpn.interface": "awg0",
                                            "vpn.port": "51821", "vpn.address": "192.168.99.1/24",
                                            "vpn.endpoint": "vpn.example.com"})
        self.assertEqual((r.code, r.headers.getRawHeaders("location")), (303, ["/sites"]))
        config = self.c.office.config.vpn
        self.assertEqual((config.port, config.endpoint), (51821, ("vpn.example.com", None)))
        self.assertIn("Tunnel settings saved.", self.c.get("/sites").text)

    def test_every_error_at_once_values_as_written(self):
        before = self.c.tap_conf()
        r = self.submit("/sites", "save", **{"vpn.enabled": "yes", "vpn.interface": "a" * 20,
                                            "vpn.port": "seventy", "vpn.address": "192.168.99.1/24",
                                            "vpn.endpoint": ""})
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("Nothing was changed.", r.text)
        self.assertIn('value="seventy"', r.text)
        self.assertIn('value="%s"' % ("a" * 20), r.text)
        self.assertEqual(r.text.count('class="error-text"'), 2, r.text)
        self.assertEqual(self.c.tap_conf(), before)


class MetricsTests(LoggedIn):
    text = TEXT

    def test_tunnel_metrics(self):
        c = AdminClient(self, TEXT)
        c.clock.advance(T0)
        c.ctx.views.vpn = fake_vpn()
        c.login()
        text = c.get("/metrics").text
        self.assertIn('allworx_vpn_peer_rx_bytes{peer="site branch"} 123456.0', text)
        self.assertIn('allworx_vpn_peer_tx_bytes{peer="site branch"} 7890.0', text)
        self.assertIn('allworx_vpn_peer_rx_bytes{peer="device alice-laptop"} 2000.0', text)
        last = re.search(r'allworx_vpn_peer_last_handshake_seconds\{peer="site branch"\} (\S+)',
                         text)
        self.assertEqual(float(last.group(1)), T0 - 90)
        self.assertIn('allworx_vpn_peer_handshake_age_seconds{peer="site branch"} 90.0', text)
        self.assertIn('allworx_vpn_peer_last_handshake_seconds{peer="unknown"} 0.0', text)
        self.assertNotIn('allworx_vpn_peer_handshake_age_seconds{peer="unknown"}', text)
        self.assertIn('allworx_vpn_site_server_answers{site="branch"} 1.0', text)
        self.assertIn('allworx_vpn_site_server_answers{site="north"} 0.0', text)

    def test_no_tunnel_metrics_without_the_service(self):
        c = AdminClient(self, TEXT)
        c.login()
        text = c.get("/metrics").text
        self.assertIn("allworx_office_service_up", text)
        self.assertNotIn("allworx_vpn_", text)
