# -*- test-case-name: allworx.tests.web.test_pages -*-
"""
The admin pages over in-memory HTTP with a real Office on a temporary
tap.conf: login and lock-out, sessions on task.Clock, CSRF, each page, saves
that apply, and bad values that change nothing.
"""

import re

import attr
from twisted.trial import unittest

from allworx.passwords import verify_password
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.webhelpers import CHEAP, AdminClient
from allworx.protocols.web import pages
class LoginTests(unittest.TestCase):
    """Login, the session cookie, logout, lock-out, expiry."""

    def setUp(self):
        self.c = AdminClient(self)

    def test_pages_need_login(self):
        r = self.c.get("/dhcp")
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/login?next=/dhcp"])

    def test_login_sets_a_safe_cookie_and_goes_on(self):
        r = self.c.login()
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/status"])
        cookie = r.headers.getRawHeaders("set-cookie")[0]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertNotIn("Secure", cookie)  # plain HTTP on the LAN
        self.assertEqual(self.c.get("/status").code, 200)

    def test_session_id_changes_at_login(self):
        self.c.get("/login")
        before = set(self.c.ctx.sessions._sessions)
        self.c.login()
        self.assertFalse(before & set(self.c.ctx.sessions._sessions))

    def test_wrong_password(self):
        r = self.c.login("nope")
        self.assertEqual(r.code, 401)
        self.assertIn("Wrong user name or password", r.text)
        self.assertEqual(self.c.get("/status").code, 303)

    def test_login_without_csrf_refused(self):
        self.c.get("/login")
        r = self.c.post("/login", {"username": "admin", "password": "admin-demo"})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.c.get("/status").code, 303)

    def test_lock_out_after_repeated_failures(self):
        for _ in range(5):
            self.assertEqual(self.c.login("bad").code, 401)
        r = self.c.login()  # the right password, but locked
        self.assertEqual(r.code, 429)
        self.assertIn("Too many failed logins", r.text)
        self.assertRegex(r.text, r"locked until \d\d:\d\d UTC")
        self.c.clock.advance(15 * 60 + 1)
        self.assertEqual(self.c.login().code, 303)

    def test_200_wrong_passwords_meet_the_delay_then_the_lock_out(self):
        codes, waits = [], []
        for _ in range(200):
            token = self.c.csrf("/login")
            r = self.c.post("/login", {"csrf": token, "username": "admin", "password": "bad"})
            codes.append(r.code)
            waits.append(self.c.waited)
        self.assertEqual(codes[:5], [401] * 5)
        self.assertEqual(waits[:5], [0, 0, 0.5, 1.0, 2.0])
        self.assertEqual((set(codes[5:]), set(waits[5:])), ({429}, {0}))

    def test_a_source_locked_by_guessing_refuses_another_admin_too(self):
        """SPEC 10: 20 failures from one source, whatever the users, lock the source."""
        for n in range(20):
            token = self.c.csrf("/login")
            self.c.post("/login", {"csrf": token, "username": "guess%d" % n, "password": "bad"})
        self.assertTrue(self.c.ctx.throttle.locked_for("127.0.0.1"))
        r = self.c.login()
        self.assertEqual(r.code, 429)
        self.assertIn("locked until", r.text)
        self.assertEqual(self.c.waited, 0)

    def test_session_expires_when_idle(self):
        self.c.login()
        self.c.clock.advance(29 * 60)
        self.assertEqual(self.c.get("/status").code, 200)
        self.c.clock.advance(31 * 60)
        self.assertEqual(self.c.get("/status").code, 303)

    def test_logout(self):
        self.c.login()
        token = self.c.csrf()
        r = self.c.post("/logout", {"csrf": token})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.c.get("/status").code, 303)

    def test_next_is_kept_on_this_site(self):
        token = self.c.csrf("/login")
        r = self.c.post("/login", {"csrf": token, "username": "admin", "password": "admin-demo",
                                   "next": "//evil.example/x"})
        self.assertEqual(r.headers.getRawHeaders("location"), ["/status"])

    def test_security_headers(self):
        r = self.c.get("/login")
        self.assertEqual(r.headers.getRawHeaders("x-frame-options"), ["DENY"])
        self.assertIn("frame-ancestors 'none'", r.headers.getRawHeaders("content-security-policy")[0])


class LoggedIn(unittest.TestCase):
    text = CHEAP

    def setUp(self):
        self.c = AdminClient(self, self.text)
        self.assertEqual(self.c.login().code, 303)

    def submit(self, url, action, **fields):
        token = self.c.csrf(url)
        data = dict(fields, csrf=token, action=action)
        return self.c.post(url, data)


class EveryPageTests(LoggedIn):
    """Each page renders, with runtime objects absent or present."""

    def test_each_page_renders_without_runtime(self):
        for page in pages.PAGES:
            r = self.c.get("/" + page.slug)
            self.assertEqual(r.code, 200, page.slug)
            self.assertIn("<h1>", r.text)
            for other in pages.PAGES:
                self.assertIn('href="/%s"' % other.slug, r.text)
        self.assertIn("DHCP server not running", self.c.get("/dhcp").text)
        self.assertIn("Mail queue not running", self.c.get("/mailqueue").text)
        self.assertIn("not running", self.c.get("/phones").text)
        self.assertIn("Firewall not running", self.c.get("/connections").text)

    def test_status_shows_wan_services_counts(self):
        self.c.office.set_status("dns", "up", "listening on udp/53")
        self.c.office.set_status("mail", "down", "permission denied (port 25 needs root)")
        text = self.c.get("/status").text
        self.assertIn("203.0.113.2/24", text)
        self.assertIn("static", text)
        self.assertIn("firewall-nat", text)
        self.assertIn("listening on udp/53", text)
        self.assertIn("port 25 needs root", text)
        self.assertRegex(text, r"Users</dt><dd>2<")

    def test_runtime_tables(self):
        runtime = self.c.ctx.views
        now = self.c.clock.seconds()
        runtime.leases = FakeLeases([Lease("02:00:00:00:00:01", "192.168.2.10", "pc1", now + 3600)])
        runtime.connections = FakeLog([{"time": 0, "proto": "tcp", "src": "192.168.2.10", "sport": 5,
                                        "dst": "198.51.100.10", "dport": 80, "action": "allow",
                                        "reason": "LAN to WAN"}], {"allow": 1})
        runtime.registrations = runtime.calls = FakeRegistrar()
        runtime.mail_queue = FakeQueue()
        runtime.zone = ZoneSource(FakeZone())
        self.assertIn("pc1", self.c.get("/dhcp").text)
        self.assertIn("in 1h", self.c.get("/dhcp").text)
        self.assertIn("LAN to WAN", self.c.get("/connections").text)
        self.assertIn("sip:101@192.168.2.20", self.c.get("/phones").text)
        self.assertIn("q1", self.c.get("/mailqueue").text)
        self.assertIn("www IN A 203.0.113.2", self.c.get("/dns").text)

    def test_zone_as_served_by_the_dns_service(self):
        self.c.ctx.views.zone = ZoneSource(FakeRowsZone())
        text = self.c.get("/dns").text
        self.assertIn("ns.example.com. admin.example.com. 1", text)
        self.assertIn("<td>www.example.com</td><td>300</td><td>A</td><td>203.0.113.2</td>"
                      "<td>built-in</td>", text)
        self.assertIn("<td>pc1.example.com</td><td>60</td><td>A</td><td>192.168.2.10</td>"
                      "<td>dhcp</td>", text)

    def test_reserve_a_lease(self):
        now = self.c.clock.seconds()
        self.c.ctx.views.leases = FakeLeases([Lease("02:00:00:00:00:07", "192.168.2.7",
                                                         "Laptop_7.local", now + 60)])
        text = self.c.get("/dhcp").text
        self.assertIn('name="name" value="laptop-7"', text)
        self.submit("/dhcp", "add_host", name="laptop-7", mac="02:00:00:00:00:07", address="192.168.2.7")
        self.assertEqual(str(self.c.office.config.hosts["laptop-7"].address), "192.168.2.7")
        self.assertNotIn('value="Reserve"', self.c.get("/dhcp").text)
        self.assertNotIn(">Reserve<", self.c.get("/dhcp").text)

    def test_name_a_dynamic_client(self):
        # A [host] with a MAC and no address: named, its address from the pool.
        self.submit("/dhcp", "add_host", name="cam", mac="02:00:00:00:00:51", address="")
        self.assertIsNone(self.c.office.config.hosts["cam"].address)
        self.assertIn("<tr><td>cam</td><td><code>02:00:00:00:00:51</code></td>"
                      "<td>from the pool</td>", self.c.get("/dhcp").text)

    def test_html_is_escaped(self):
        self.c.office.set_status("dns", "down", "<script>alert(1)</script>")
        text = self.c.get("/status").text
        self.assertNotIn("<script>alert", text)
        self.assertIn("&lt;script&gt;", text)

    def test_unknown_page(self):
        self.assertEqual(self.c.get("/nothing").code, 404)
        self.assertEqual(self.c.get("/users/nobody").code, 404)


class CsrfTests(LoggedIn):
    """Every form needs the session's token."""

    def test_missing_token_refused_and_nothing_changes(self):
        before = self.c.tap_conf()
        r = self.c.post("/dhcp", {"action": "save", "dhcp.range": "1-50", "dhcp.enabled": "yes",
                                  "dhcp.lease_time": "1d"})
        self.assertEqual(r.code, 403)
        self.assertIn("CSRF", r.text)
        self.assertEqual(self.c.tap_conf(), before)

    def test_wrong_token_refused(self):
        r = self.c.post("/users", {"action": "add_user", "csrf": "forged", "name": "eve",
                                   "password": "x"})
        self.assertEqual(r.code, 403)
        self.assertNotIn("eve", self.c.office.config.users)

    def test_every_form_carries_the_token(self):
        for page in pages.PAGES:
            text = self.c.get("/" + page.slug).text
            forms_ = re.findall(r"<form[^>]*method=\"post\".*?</form>", text, re.S)
            for form in forms_:
                self.assertIn('name="csrf"', form, page.slug)


class SettingsSaveTests(LoggedIn):
    """Saves apply live and reach tap.conf; bad values change nothing."""

    def test_dhcp_range_saved(self):
        r = self.submit("/dhcp", "save", **{"dhcp.enabled": "yes", "dhcp.range": "20-80",
                                            "dhcp.lease_time": "12h"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.c.office.config.dhcp.range, (20, 80))
        self.assertIn("range = 20-80", self.c.tap_conf())
        self.assertIn("Servers - DHCP saved.", self.c.get("/dhcp").text)

    def test_bad_value_marks_the_field_and_changes_nothing(self):
        before = self.c.tap_conf()
        config = self.c.office.config
        r = self.submit("/dhcp", "save", **{"dhcp.enabled": "yes", "dhcp.range": "1-300",
                                            "dhcp.lease_time": "12h"})
        self.assertEqual(r.code, 400)
        self.assertIn("Nothing was changed", r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save-dhcp.range"')
        self.assertIn("host number 300 is outside", r.text)
        self.assertIn('value="1-300"', r.text)  # what was typed is shown again
        self.assertEqual(self.c.tap_conf(), before)
        self.assertIs(self.c.office.config, config)

    def test_unticked_checkbox_means_no(self):
        self.submit("/dns", "save", **{"dns.enabled": "yes", "dns.primary": "203.0.113.1",
                                       "dns.secondary": ""})
        self.assertFalse(self.c.office.config.dns.use_forwarders)
        self.assertIn("use_forwarders = no", self.c.tap_conf())

    def test_network_page_changes_sections_together(self):
        r = self.submit("/network", "save", **{
            "system.hostname": "server", "system.domain": "example.com", "system.admin_email": "",
            "lan.interface": "lan0", "lan.address": "192.168.2.254/24", "lan.gateway": "",
            "wan.mode": "disabled", "wan.interface": "wan0", "wan.address": "", "wan.gateway": ""})
        # firewall-nat needs a WAN: refused whole.
        self.assertEqual(r.code, 400)
        self.assertIn("needs a WAN", r.text)
        self.assertEqual(self.c.office.config.wan.mode, "static")
        r = self.submit("/network", "save", **{
            "system.hostname": "server", "system.domain": "example.com", "system.admin_email": "",
            "lan.interface": "lan0", "lan.address": "192.168.2.254/24", "lan.gateway": "",
            "wan.mode": "static", "wan.interface": "wan0", "wan.address": "203.0.113.9/24",
            "wan.gateway": "203.0.113.1"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.c.office.config.system.hostname, "server")
        self.assertEqual(str(self.c.office.wan_address), "203.0.113.9/24")

    def test_security_mode_and_forwards(self):
        r = self.submit("/security", "add_forward", name="camera", proto="tcp", wan_port="8081",
                        to="192.168.2.50:80")
        self.assertEqual(r.code, 303)
        self.assertIn("camera", self.c.office.config.forwards)
        r = self.submit("/security", "add_forward", name="cam2", proto="tcp", wan_port="8081",
                        to="192.168.2.51")
        self.assertEqual(r.code, 400)
        self.assertIn("already forwarded", r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="add_forward-wan_port"')
        self.submit("/security", "delete_forward", name="camera")
        self.assertNotIn("camera", self.c.office.config.forwards)
        self.submit("/security", "save", **{"security.mode": "firewall-nat-dmz",
                                            "security.dmz_open": "25/tcp 80/tcp"})
        self.assertEqual(self.c.office.config.security.mode, "firewall-nat-dmz")

    def test_hosts_and_records(self):
        self.submit("/dhcp", "add_host", name="printer", mac="02:00:00:00:00:50",
                    address="192.168.2.150")
        self.assertIn("printer", self.c.office.config.hosts)
        r = self.submit("/dhcp", "add_host", name="bad", mac="zz", address="192.168.2.151")
        self.assertEqual(r.code, 400)
        self.assertIn("not a MAC address", r.text)
        self.submit("/dns", "add_record", name="intranet-old", cname="corp.example.com")
        self.assertIn("intranet-old", self.c.office.config.records)
        r = self.submit("/dns", "add_record", name="www", a="192.168.2.9")
        self.assertEqual(r.code, 400)
        self.assertIn("built-in name", r.text)
        self.assertIn("intranet-old", self.c.get("/dns").text)

    def test_edit_records(self):
        self.submit("/dhcp", "add_host", name="printer", mac="02:00:00:00:00:50",
                    address="192.168.2.150")
        page = self.c.get("/dhcp/edit/printer")
        self.assertEqual(page.code, 200)
        self.assertIn('value="02:00:00:00:00:50"', page.text)
        r = self.submit("/dhcp/edit/printer", "save_host", name="printer", mac="02:00:00:00:00:50",
                        address="192.168.2.300")
        self.assertEqual(r.code, 400)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save_host-address"')
        self.assertEqual(str(self.c.office.config.hosts["printer"].address), "192.168.2.150")
        r = self.submit("/dhcp/edit/printer", "save_host", name="printer", mac="02:00:00:00:00:51",
                        address="192.168.2.151")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/dhcp"])
        self.assertEqual(self.c.office.config.hosts["printer"].mac, "02:00:00:00:00:51")
        self.submit("/dns", "add_record", name="old", cname="corp.example.com")
        self.submit("/dns/edit/old", "save_record", name="old", a="192.168.2.9", cname="", mx="", txt="")
        self.assertEqual(self.c.office.config.records["old"].cname, None)
        self.submit("/security", "add_forward", name="cam", proto="tcp", wan_port="8081", to="192.168.2.50")
        self.submit("/security/edit/cam", "save_forward", name="cam", proto="udp", wan_port="8081",
                    to="192.168.2.50")
        self.assertEqual(self.c.office.config.forwards["cam"].proto, "udp")
        self.assertEqual(self.c.get("/dhcp/edit/nothing").code, 404)

    def test_aliases(self):
        self.submit("/aliases", "add_alias", name="info", to="alice bob")
        self.assertEqual(self.c.office.config.aliases["info"].to, ("alice", "bob"))
        r = self.submit("/aliases", "save_alias", name="info", to="alice zed")
        self.assertEqual(r.code, 400)
        self.assertIn("unknown user or alias", r.text)
        self.submit("/aliases", "save_alias", name="info", to="alice x@home.example")
        self.assertEqual(self.c.office.config.aliases["info"].to, ("alice", "x@home.example"))
        self.submit("/aliases", "delete_alias", name="info")
        self.assertNotIn("info", self.c.office.config.aliases)

    def test_deleting_a_user_an_alias_needs_is_refused(self):
        r = self.submit("/users/bob", "delete_user", name="bob")
        self.assertEqual(r.code, 400)
        self.assertIn("bob", self.c.office.config.users)

    def test_services_and_admin_password(self):
        self.submit("/services", "save", **{"mail.enabled": "yes", "mail.smarthost": "smtp.isp.example",
                                            "mail.max_message_size": "10M", "mail.fetch_interval": "5m",
                                            "sip.voicemail_timeout": "25", "sip.voicemail_number": "400",
                                            "sip.rtp_ports": "10000-20000", "web.admin_port": "8080",
                                            "web.http_port": "80"})
        self.assertEqual(self.c.office.config.mail.smarthost, ("smtp.isp.example", 25))
        self.assertFalse(self.c.office.config.ldap.enabled)
        r = self.submit("/services", "admin_password", new_password="short", confirm_password="short")
        self.assertEqual(r.code, 400)
        r = self.submit("/services", "admin_password", new_password="new-secret-1",
                        confirm_password="new-secret-1")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/login"])
        self.assertIsNone(self.c.office.config.web.admin_password)    # moved to [user admin]
        self.assertTrue(verify_password(self.c.office.config.users["admin"].password,
                                        "new-secret-1"))
        self.assertEqual(self.c.get("/status").code, 303)  # every session ended
        self.assertEqual(self.c.login("new-secret-1").code, 303)


class UserPageTests(LoggedIn):
    """Users: the password hashed with its SIP digest, fetch accounts kept masked."""

    def test_lock_outs_listed_and_cleared(self):
        throttle = self.c.ctx.throttle
        self.assertIn("No login is locked out.", self.c.get("/users").text)
        for _ in range(5):
            throttle.failed("192.168.2.50", "alice")
        for n in range(20):
            throttle.failed("192.168.2.60", "guess%d" % n)
        page = self.c.get("/users").text
        self.assertIn("alice at 192.168.2.50", page)
        self.assertIn("source 192.168.2.60 (every login from it)", page)
        self.assertIn("(in 15m)", page)
        r = self.submit("/users", "unlock", user="alice", source="192.168.2.50")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/users"])
        page = self.c.get("/users").text
        self.assertIn("Unlocked alice at 192.168.2.50.", page)
        self.assertNotIn("alice at 192.168.2.50</td>", page)
        self.assertEqual(throttle.locked_for("192.168.2.50", "alice"), 0)
        self.submit("/users", "unlock", user="", source="192.168.2.60")
        self.assertEqual(throttle.lockouts(), [])
        r = self.submit("/users", "unlock", user="alice", source="")
        self.assertEqual(r.code, 400)

    def test_add_user(self):
        r = self.submit("/users", "add_user", name="dave", full_name="Dave Dunn", password="dave-pw",
                        extension="104", voicemail_pin="4567", email_forward="", pop3_fetch="")
        self.assertEqual(r.code, 303)
        dave = self.c.office.config.users["dave"]
        self.assertTrue(verify_password(dave.password, "dave-pw"))
        from allworx.passwords import sip_digest, parse_sip_digest
        expected = parse_sip_digest(sip_digest("104", "example.com", "dave-pw"))
        self.assertEqual(dict(dave.sip_digest), expected)
        self.assertNotIn("dave-pw", self.c.tap_conf())
        self.assertIn("Dave Dunn", self.c.get("/users").text)

    def test_add_user_without_password(self):
        r = self.submit("/users", "add_user", name="dave", password="", extension="104")
        self.assertEqual(r.code, 400)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="add_user-password"')

    def test_duplicate_extension_is_marked(self):
        r = self.submit("/users", "add_user", name="dave", password="pw", extension="101")
        self.assertEqual(r.code, 400)
        self.assertIn("already the extension of user alice", r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="add_user-extension"')
        self.assertNotIn("dave", self.c.office.config.users)

    def test_bad_user_name(self):
        r = self.submit("/users", "add_user", name="Bad Name", password="pw")
        self.assertEqual(r.code, 400)
        self.assertNotIn("Bad Name", self.c.office.config.users)

    def test_edit_keeps_password_when_empty(self):
        old = self.c.office.config.users["alice"].password
        r = self.submit("/users/alice", "save_user", name="alice", full_name="Alice A. Archer",
                        password="", extension="101", voicemail_pin="", email_forward="",
                        pop3_fetch="")
        self.assertEqual(r.code, 303)
        alice = self.c.office.config.users["alice"]
        self.assertEqual(alice.full_name, "Alice A. Archer")
        self.assertEqual(alice.password, old)

    def test_fetch_account_password_is_masked_and_kept(self):
        self.c.office.patch_record("user", "alice", {"pop3_fetch": "pop3://alice:s3cret@pop.isp.example"})
        self.c.ctx.views.fetch = FetchBoard()
        self.c.ctx.views.fetch.status["pop3://alice@pop.isp.example:110"] = {
            "state": "waiting", "last_success": -60, "fetched": 2, "error": "", "next_attempt": 300}
        page = self.c.get("/users/alice").text
        self.assertNotIn("s3cret", page)
        self.assertIn("pop3://alice:********@pop.isp.example", page)
        self.assertIn("waiting; last fetched 1m ago; 2 message(s) so far; next in 5m",
                      self.c.get("/users").text)
        self.submit("/users/alice", "save_user", name="alice", full_name="Alice Archer", password="",
                    extension="101", voicemail_pin="", email_forward="",
                    pop3_fetch="pop3://alice:********@pop.isp.example\npop3s://a2:pw2@mail.isp.example")
        accounts = self.c.office.config.users["alice"].pop3_fetch
        self.assertEqual([a.password for a in accounts], ["s3cret", "pw2"])

    def test_delete_user(self):
        self.c.office.delete_record("alias", "sales")
        r = self.submit("/users/bob", "delete_user", name="bob")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/users"])
        self.assertNotIn("bob", self.c.office.config.users)


class BackupTests(LoggedIn):
    """Download tap.conf; upload one, validated before anything changes."""

    def test_download(self):
        r = self.c.get("/backup/tap.conf")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.text, self.c.office.document_text())
        self.assertIn("attachment", r.headers.getRawHeaders("content-disposition")[0])

    def test_download_needs_login(self):
        self.c.post("/logout", {"csrf": self.c.csrf()})
        self.assertEqual(self.c.get("/backup/tap.conf").code, 303)

    def _upload(self, text):
        token = self.c.csrf("/backup")
        return self.c.upload("/backup", {"csrf": token, "action": "restore"}, "file", "tap.conf",
                             text.encode())

    def test_restore(self):
        text = with_sections("[host nas]\nmac = 02:00:00:00:00:99\naddress = 192.168.2.99\n",
                             self.c.office.document_text())
        r = self._upload(text)
        self.assertEqual(r.code, 303)
        self.assertIn("nas", self.c.office.config.hosts)
        self.assertEqual(self.c.tap_conf(), text)

    def test_bad_restore_changes_nothing(self):
        before = self.c.tap_conf()
        r = self._upload(before.replace("[web]", "[web]\nadmin_port = 99999"))
        self.assertEqual(r.code, 400)
        self.assertIn("admin_port", r.text)
        self.assertIn("out of range", r.text)
        self.assertEqual(self.c.tap_conf(), before)


# ---------------------------------------------------------------- runtime stand-ins

@attr.s
class Lease:
    mac = attr.ib()
    address = attr.ib()
    hostname = attr.ib()
    expires = attr.ib()
    state = attr.ib(default="active")


class FakeLeases:
    def __init__(self, leases):
        self.leases = leases

    def active_leases(self):
        return list(self.leases)


class FakeLog:
    def __init__(self, entries, counts):
        self.entries, self.counts = entries, counts

    def recent(self, limit=200):
        return self.entries[:limit]


class FakeRegistrar:
    def bindings(self):
        return [{"user": "alice", "extension": "101", "contact": "sip:101@192.168.2.20",
                 "source": "192.168.2.20:5060", "expires": 3600}]

    def active_calls(self):
        return [{"caller": "101", "callee": "102", "state": "ringing", "started": 0}]


class FakeQueue:
    def __init__(self):
        self.items = [{"id": "q1", "sender": "alice@example.com", "recipients": ["x@example.net"],
                       "attempts": 2, "next_attempt": 600, "last_error": "451 try later"}]
        self.retried = []

    def entries(self):
        return list(self.items)

    def retry(self, queue_id):
        self.retried.append(queue_id)

    def remove(self, queue_id):
        self.items = [i for i in self.items if i["id"] != queue_id]


@attr.s
class Entry:
    name = attr.ib()
    rtype = attr.ib()
    value = attr.ib()
    ttl = attr.ib()
    source = attr.ib()


class FakeRowsZone:
    """Shaped like the DNS service's OfficeZone: rows() and entries."""

    entries = [Entry("www.example.com", "A", "203.0.113.2", 300, "built-in"),
               Entry("pc1.example.com", "A", "192.168.2.10", 60, "dhcp")]

    def rows(self):
        return [("example.com", "SOA", "ns.example.com. admin.example.com. 1 3600 600 86400 300", 300)] + [
            (e.name, e.rtype, e.value, e.ttl) for e in self.entries]

    def as_text(self):
        return "\n".join("%s %d IN %s %s" % (n, ttl, t, v) for n, t, v, ttl in self.rows())


class FakeZone:
    entries = ()

    def rows(self):
        return []

    def as_text(self):
        return "www IN A 203.0.113.2"


@attr.s
class FetchBoard:
    status = attr.ib(factory=dict)


@attr.s
class ZoneSource:
    zone = attr.ib()


class MailQueueTests(LoggedIn):
    """Retry and delete go to the queue object."""

    def test_retry_and_delete(self):
        queue = self.c.ctx.views.mail_queue = FakeQueue()
        self.submit("/mailqueue", "retry", id="q1")
        self.assertEqual(queue.retried, ["q1"])
        self.submit("/mailqueue", "delete", id="q1")
        self.assertEqual(queue.items, [])

    def test_not_running(self):
        r = self.submit("/mailqueue", "retry", id="q1")
        self.assertEqual(r.code, 400)
        self.assertIn("not running", r.text)


class HelperTests(unittest.TestCase):
    """Small pure pieces of the pages."""

    def test_ago_or_in(self):
        self.assertEqual(pages.ago_or_in(1000, 1000 + 3700), "in 1h 1m")
        self.assertEqual(pages.ago_or_in(1000, 1000 - 90), "1m ago")
        self.assertEqual(pages.ago_or_in(0, 5), "in 5s")
        self.assertEqual(pages.ago_or_in(0, None), "")

    def test_configured_zone(self):
        from allworx.config import parse_config
        config = parse_config(MINIMAL)
        rows = pages.configured_zone(config, "203.0.113.2")
        self.assertIn(("www", "A", "203.0.113.2"), rows)
        self.assertIn(("corp", "A", "192.168.2.254"), rows)
        self.assertIn(("smtp", "A", "203.0.113.2"), rows)
        self.assertNotIn(("www", "A", "None"), pages.configured_zone(config, None))


    def test_configured_zone_is_the_zones_own_rows(self):
        # The page lists what allworx.protocols.dns.zone makes of the config,
        # names relative to the domain, the reverse zone left out.
        from allworx.config import parse_config
        from allworx.protocols.dns import zone as dnszone
        from allworx.tests.confs import with_sections
        config = parse_config(with_sections(
            "[host printer]\nmac = 02:00:00:00:00:50\naddress = 192.168.2.150\n\n"
            "[host cam]\nmac = 02:00:00:00:00:51\n\n"
            "[record @]\ntxt = v=spf1 mx -all\n", MINIMAL))
        rows = pages.configured_zone(config, "203.0.113.2")
        self.assertIn(("@", "MX", "10 allworx.example.com"), rows)
        self.assertIn(("allworx", "A", "192.168.2.254"), rows)
        self.assertIn(("printer", "A", "192.168.2.150"), rows)
        self.assertIn(("@", "TXT", '"v=spf1 mx -all"'), rows)
        self.assertEqual([r for r in rows if r[0] == "cam"], [])  # no lease, no address
        entries = dnszone.zone_entries(config, "203.0.113.2")
        self.assertEqual(len(rows), len([e for e in entries if "in-addr.arpa" not in e.name]))

    def test_a_builtin_name_added_to_the_zone_shows_without_a_web_change(self):
        from allworx.config import parse_config
        from allworx.protocols.dns import zone as dnszone
        self.patch(dnszone, "BUILTIN_NAMES", dnszone.BUILTIN_NAMES + ("imap",))
        self.patch(dnszone, "BUILTIN_SIDES", dict(dnszone.BUILTIN_SIDES, imap=("lan", "wan")))
        rows = pages.configured_zone(parse_config(MINIMAL), "203.0.113.2")
        self.assertIn(("imap", "A", "192.168.2.254"), rows)
        self.assertIn(("imap", "A", "203.0.113.2"), rows)


class BrokenRuntimeTests(LoggedIn):
    """A runtime object that fails does not take its page down."""

    def test_failing_lease_table(self):
        class Broken:
            def active_leases(self):
                raise RuntimeError("boom")
        self.c.ctx.views.leases = Broken()
        r = self.c.get("/dhcp")
        self.assertEqual(r.code, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
