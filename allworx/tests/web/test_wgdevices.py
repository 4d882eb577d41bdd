# -*- test-case-name: allworx.tests.web.test_wgdevices -*-
"""
Remote devices' WireGuard client configs (SPEC 16) through the API and
the Users page, with a real Office on a temporary tap.conf: the config
text exactly, the QR code (a PNG segno makes of the same text), a
server-made private key shown once (across two answers, across a restart:
the note is a file), a new key shown once again and given to the tunnel,
a device with its own key, devices added and removed with every error at
once, 401 without credentials.
"""

import base64
import ipaddress
import os

from twisted.trial import unittest

from allworx.config import parse_config
from allworx.protocols.web import sitesapi  # noqa: F401 (the routes)
from allworx.protocols.web import wgdevices
from allworx.tests.core.test_config_vpn import KEY2
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.web.test_vpnsites import TEXT, FakeVpn
from allworx.tests.webhelpers import AdminClient
from allworx.vpnkeys import ensure_server_key, public_key, read_device_key

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def expected(private, server, endpoint="203.0.113.1:51820", address="192.168.99.11"):
    return ("[Interface]\n"
            "Address = %s/32\n"
            "DNS = 192.168.99.1\n"
            "PrivateKey = %s\n"
            "\n"
            "[Peer]\n"
            "PublicKey = %s\n"
            "Endpoint = %s\n"
            "AllowedIPs = 192.168.2.0/24, 192.168.99.0/24, 192.168.3.0/24, 10.4.0.0/16, "
            "10.5.0.0/16\n"
            "PersistentKeepalive = 25\n" % (address, private, server, endpoint))


class DeviceCase(ApiCase):
    def setUp(self):
        self.c = AdminClient(self, TEXT)
        self.c.office.wan_address = "203.0.113.1"
        self.data = self.c.office.config.system.data_dir
        self.server = public_key(ensure_server_key(self.data)[0])
        self.vpn = FakeVpn()
        self.c.ctx.views.vpn = self.vpn

    def conf(self, name="alice-phone", client=None):
        r = (client or self).call("GET", "/devices/%s/wireguard.conf" % name)
        return r.code, r.text


class ConfigTests(DeviceCase):
    def test_shown_once(self):
        code, text = self.conf()
        self.assertEqual(code, 200, text)
        key = read_device_key(self.data, "alice-phone")
        self.assertEqual(text, expected(key, self.server))
        code, text = self.conf()
        self.assertEqual((code, text), (200, expected("(shown once)", self.server)))

    def test_headers(self):
        r = self.call("GET", "/devices/alice-phone/wireguard.conf")
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertEqual(r.headers.getRawHeaders("cache-control"), ["no-store"])

    def test_shown_once_across_a_restart(self):
        self.conf()
        # A new server process: a new Office and web on the same files.
        path = self.c.office.path
        from allworx.config import load_config
        from allworx.office import Office
        again = Office(load_config(path), data_dir=self.data)
        again.wan_address = "203.0.113.1"
        self.c.office = again
        self.c.ctx.office = again
        self.assertEqual(self.conf()[1], expected("(shown once)", self.server))

    def test_png_is_the_qr_of_the_same_text_and_counts_as_the_showing(self):
        r = self.call("GET", "/devices/alice-phone/wireguard.png")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders("content-type"), ["image/png"])
        body = r.body
        self.assertTrue(body.startswith(PNG_MAGIC))
        key = read_device_key(self.data, "alice-phone")
        self.assertEqual(body, wgdevices.qr_png(expected(key, self.server)))
        self.assertEqual(self.conf()[1], expected("(shown once)", self.server))
        r = self.call("GET", "/devices/alice-phone/wireguard.png")
        self.assertEqual(r.body, wgdevices.qr_png(expected("(shown once)", self.server)))

    def test_new_key_is_shown_once_again_and_given_to_the_tunnel(self):
        self.conf()
        old = read_device_key(self.data, "alice-phone")
        r = self.call("POST", "/devices/alice-phone/key")
        self.assertEqual(r.code, 200, r.text)
        new = read_device_key(self.data, "alice-phone")
        self.assertNotEqual(new, old)
        self.assertEqual(r.json, {"public_key": public_key(new)})
        self.assertEqual(self.vpn.keys, 1)
        self.assertEqual(self.conf()[1], expected(new, self.server))
        self.assertEqual(self.conf()[1], expected("(shown once)", self.server))

    def test_own_key(self):
        text = self.conf("alice-laptop")[1]
        self.assertEqual(text, expected(
            "(this device's own private key: the one whose public key is %s)" % KEY2,
            self.server, address="192.168.99.10"))
        self.assertEqual(self.conf("alice-laptop")[1], text)
        r = self.call("POST", "/devices/alice-laptop/key")
        self.assertEqual((r.code, r.json["error"]), (409, "own key"))
        self.assertEqual(self.vpn.keys, 0)

    def test_endpoint_from_the_config(self):
        self.call("PATCH", "/settings/vpn", {"endpoint": "vpn.example.com"})
        self.assertIn("Endpoint = vpn.example.com:51820\n", self.conf()[1])
        self.call("PATCH", "/settings/vpn", {"endpoint": "vpn.example.com:4500"})
        self.assertIn("Endpoint = vpn.example.com:4500\n", self.conf()[1])

    def test_no_endpoint_known_keeps_the_key_unshown(self):
        self.c.office.wan_address = None
        r = self.call("GET", "/devices/alice-phone/wireguard.conf")
        self.assertEqual(r.code, 503)
        self.assertIn("[vpn] endpoint", r.json["reason"])
        self.c.office.wan_address = "203.0.113.1"
        text = self.conf()[1]
        self.assertEqual(text, expected(read_device_key(self.data, "alice-phone"), self.server))

    def test_no_server_key_yet(self):
        os.unlink(os.path.join(self.data, "vpn", "private.key"))
        r = self.call("GET", "/devices/alice-phone/wireguard.conf")
        self.assertEqual(r.code, 503)
        self.assertIn("no WireGuard key yet", r.json["reason"])

    def test_unknown_device_404(self):
        self.assertEqual(self.conf("nobody")[0], 404)
        self.assertEqual(self.call("GET", "/devices/nobody/wireguard.png").code, 404)
        self.assertEqual(self.call("POST", "/devices/nobody/key").code, 404)

    def test_needs_login(self):
        for method, path in (("GET", "/devices/alice-phone/wireguard.conf"),
                             ("GET", "/devices/alice-phone/wireguard.png"),
                             ("POST", "/devices/alice-phone/key"), ("GET", "/devices")):
            self.assertEqual(self.call(method, path, auth=False).code, 401, path)
        self.assertIsNone(read_device_key(self.data, "alice-phone"))


class DeviceRecordTests(DeviceCase):
    def test_list(self):
        r = self.call("GET", "/devices")
        self.assertEqual(r.json, [
            {"name": "alice-laptop", "user": "alice", "address": "192.168.99.10",
             "public_key": KEY2},
            {"name": "alice-phone", "user": "alice", "address": "192.168.99.11",
             "public_key": ""}])

    def test_add_and_remove(self):
        r = self.call("PUT", "/devices/bob-phone", {"user": "bob", "address": "192.168.99.12"})
        self.assertEqual(r.code, 200, r.text)
        self.assertIn("[device bob-phone]", self.c.tap_conf())
        key_text = self.conf("bob-phone")[1]
        self.assertIn("Address = 192.168.99.12/32\n", key_text)
        self.assertNotIn("(shown once)", key_text)
        self.assertEqual(self.call("DELETE", "/devices/bob-phone").code, 204)
        self.assertNotIn("[device bob-phone]", self.c.tap_conf())
        self.assertEqual(self.conf("bob-phone")[0], 404)

    def test_every_error_at_once(self):
        before = self.c.tap_conf()
        r = self.call("POST", "/devices", {"name": "bad", "user": "nobody",
                                           "address": "10.9.9.9", "public_key": "nope"})
        self.assertEqual(r.code, 400, r.text)
        fields = {e["key"] for e in r.json["errors"]}
        self.assertLessEqual({"public_key"}, fields, r.json)
        r = self.call("POST", "/devices", {"name": "bad", "user": "nobody",
                                           "address": "10.9.9.9"})
        self.assertEqual(r.code, 400, r.text)
        self.assertEqual({e["key"] for e in r.json["errors"]}, {"user", "address"}, r.json)
        self.assertEqual(self.c.tap_conf(), before)


class UsersPageTests(LoggedIn):
    text = TEXT

    def setUp(self):
        LoggedIn.setUp(self)
        self.c.office.wan_address = "203.0.113.1"
        self.data = self.c.office.config.system.data_dir
        self.server = public_key(ensure_server_key(self.data)[0])
        self.vpn = FakeVpn()
        self.c.ctx.views.vpn = self.vpn

    def test_users_list_their_devices(self):
        text = self.c.get("/users").text
        self.assertIn('<a href="/users/alice/device/alice-laptop">alice-laptop</a>', text)
        self.assertIn('<a href="/users/alice/device/alice-phone">alice-phone</a>', text)

    def test_user_page_lists_devices_with_links(self):
        text = self.c.get("/users/alice").text
        self.assertIn("Remote devices", text)
        self.assertIn('<a href="/users/alice/device/alice-phone">config and QR code</a>', text)
        self.assertIn('<a href="/api/v1/devices/alice-phone/wireguard.conf">.conf</a>', text)
        self.assertIn('<a href="/api/v1/devices/alice-phone/wireguard.png">QR</a>', text)
        self.assertIn("server-made; the private key not shown yet", text)
        self.assertIn("its own key", text)
        # Listing makes no key.
        self.assertIsNone(read_device_key(self.data, "alice-phone"))

    def test_device_page_shows_the_key_once_in_text_and_qr(self):
        text = self.c.get("/users/alice/device/alice-phone").text
        key = read_device_key(self.data, "alice-phone")
        conf = expected(key, self.server)
        self.assertIn('<pre class="conf">%s</pre>' % conf, text)
        qr = base64.b64encode(wgdevices.qr_png(conf)).decode()
        self.assertIn('src="data:image/png;base64,%s"' % qr, text)
        again = self.c.get("/users/alice/device/alice-phone").text
        self.assertIn("PrivateKey = (shown once)", again)
        self.assertNotIn(key, again)
        self.assertIn("server-made; the private key was shown", self.c.get("/users/alice").text)

    def test_new_key_from_the_page(self):
        self.c.get("/users/alice/device/alice-phone")
        old = read_device_key(self.data, "alice-phone")
        r = self.submit("/users/alice/device/alice-phone", "new_key", name="alice-phone")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/users/alice/device/alice-phone"])
        new = read_device_key(self.data, "alice-phone")
        self.assertNotEqual(old, new)
        self.assertEqual(self.vpn.keys, 1)
        self.assertIn("PrivateKey = %s" % new, self.c.get("/users/alice/device/alice-phone").text)

    def test_another_users_device_is_not_found(self):
        self.assertEqual(self.c.get("/users/bob/device/alice-phone").code, 404)

    def test_add_and_delete_a_device(self):
        r = self.submit("/users/bob", "add_device", name="bob-laptop", address="192.168.99.20",
                        public_key="")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/users/bob/device/bob-laptop"])
        self.assertEqual(self.c.office.config.devices["bob-laptop"].user, "bob")
        self.assertIn("Address = 192.168.99.20/32", self.c.get("/users/bob/device/bob-laptop").text)
        r = self.submit("/users/bob", "delete_device", name="bob-laptop")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/users/bob"])
        self.assertNotIn("bob-laptop", self.c.office.config.devices)

    def test_add_device_every_error_at_once(self):
        before = self.c.tap_conf()
        r = self.submit("/users/bob", "add_device", name="Bad Name!", address="10.9.9.9",
                        public_key="nope")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("Nothing was changed.", r.text)
        self.assertIn('value="10.9.9.9"', r.text)
        self.assertIn('value="nope"', r.text)
        self.assertGreaterEqual(r.text.count('class="error-text"'), 2, r.text)
        r = self.submit("/users/bob", "add_device", name="bob-pc", address="10.9.9.9",
                        public_key="")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("tunnel subnet", r.text)
        self.assertEqual(self.c.tap_conf(), before)


class EndpointTests(unittest.TestCase):

    def test_the_wan_address_is_dialled_without_its_prefix(self):
        """The office holds its WAN address as an interface (address/prefix); the endpoint is the address."""
        config = parse_config(TEXT)
        self.assertEqual(wgdevices.endpoint_text(config, ipaddress.IPv4Interface("203.0.113.2/24")),
                         "203.0.113.2:%d" % config.vpn.port)

