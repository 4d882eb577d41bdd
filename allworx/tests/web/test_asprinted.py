# -*- test-case-name: allworx.tests.web.test_asprinted -*-
"""
Issue 19, "everything as printed", for the pages and the API in memory:
every form of every page saved as shown leaves tap.conf byte for byte (no key
added that the file leaves out, no word rewritten, comments kept); units keep
the admin's words (`1d`, `25M`) in the pages and the API; several mistakes
in one form or request are all reported and nothing is half-applied.
"""

from allworx.tests.web.test_lines import LINES, FormReader
from allworx.tests.web.test_pages import LoggedIn

WORDS = LINES.replace("hostname = allworx\n", "hostname = allworx\nbackup_every = 1w\n") + """
[dhcp]
# a day, as the admin wrote it
lease_time = 1d
range=10-60

[mail]
max_message_size = 25M
fetch_interval =   5m

[host printer]
mac = 52:54:00:aa:bb:cc
address = 192.168.2.40

[record files]
# the file server
a = 192.168.2.41

[forward camera]
proto = tcp
wan_port = 8443
to = 192.168.2.42:443

[alias team]
to = alice   bob
"""

# The pages and the record forms below them, and the forms they hold.
URLS = ("/network", "/security", "/security/edit/camera", "/dhcp", "/dhcp/edit/printer",
        "/dns", "/dns/edit/files", "/aliases", "/users/alice", "/users/bob", "/users/carol",
        "/services", "/mailsecurity", "/lines", "/lines/edit/trunk/main",
        "/lines/edit/group/team", "/lines/edit/attendant/frontdesk",
        "/lines/edit/number/+15551230000", "/sites", "/backup")


def page_forms(text):
    reader = FormReader()
    reader.feed(text)
    return reader.forms


class UnchangedPagesTests(LoggedIn):
    """Each page's save forms sent back as shown change nothing in tap.conf."""

    text = WORDS

    def test_every_save_form_as_shown(self):
        before = self.c.tap_conf()
        sent = []
        for url in URLS:
            r = self.c.get(url)
            self.assertEqual(r.code, 200, url)
            for form in page_forms(r.text):
                action = form.get("action", "")
                if not action.startswith("save"):
                    continue
                r = self.c.post(url, form)
                self.assertEqual(r.code, 303, (url, action, r.text[:2000]))
                self.assertEqual(self.c.tap_conf(), before, (url, action))
                sent.append((url, action))
        self.assertGreaterEqual(len(sent), len(URLS), sent)


UNKNOWN = ("/nope", "/status/extra", "/network/x", "/dhcp/foo", "/dhcp/edit/printer/more",
           "/users/alice/extra", "/lines/x", "/backup/other", "/static/nope.css",
           "/static/", "/static/vendor/", "/static/vendor/x.js", "/login/extra", "/aliases/edit/team",
           "/users/nobody", "/dhcp/edit/nobody", "/lines/edit/trunk/nobody")


class NotFoundTests(LoggedIn):
    """SPEC 10: an unknown path answers 404 with a styled page (menu, or a link to the login)."""

    text = WORDS

    def test_logged_in_the_menu(self):
        for url in UNKNOWN:
            r = self.c.get(url)
            self.assertEqual(r.code, 404, url)
            self.assertIn("<h1>Not found</h1>", r.text, url)
            self.assertIn('<nav class="menu"', r.text, url)
            self.assertIn('<a href="/network" title="Network Settings">Network</a>', r.text, url)
            self.assertIn('href="/static/style.css"', r.text, url)
            self.assertNotIn('aria-current="page"', r.text, url)

    def test_logged_out_a_link_to_the_login(self):
        self.c.post("/logout", {"csrf": self.c.csrf()})
        for url in UNKNOWN[:14]:      # (a name that may exist: the login first)
            r = self.c.get(url)
            self.assertEqual(r.code, 404, url)
            self.assertIn("<h1>Not found</h1>", r.text, url)
            self.assertIn('<a href="/login">Log in</a>', r.text, url)
            self.assertNotIn('<nav class="menu"', r.text, url)

    def test_known_paths_still_answer(self):
        for url in ("/status", "/dhcp/edit/printer", "/users/alice", "/lines/edit/trunk/main",
                    "/backup/tap.conf"):
            self.assertEqual(self.c.get(url).code, 200, url)


class NamedCallersTests(LoggedIn):
    """Callers shown with names: the directory's (`Alice Archer (101)`), else the call's own."""

    def test_phones_page(self):
        class Registrar:
            def bindings(self):
                return [{"user": "alice", "extension": "101", "contact": "sip:101@192.168.2.20",
                         "source": "192.168.2.20:5060", "expires": 3600}]

            def active_calls(self):
                return [{"caller": "101", "callee": "102", "state": "ringing", "started": 0},
                        {"caller": "+15557770000", "caller_name": "Dora Dunn", "callee": "101",
                         "state": "answered", "started": 0}]
        self.c.ctx.views.registrations = self.c.ctx.views.calls = Registrar()
        text = self.c.get("/phones").text
        self.assertIn("<tr><td>Alice Archer (101)</td><td>101</td>", text)
        self.assertIn("<tr><td>Alice Archer (101)</td><td>Bob Baker (102)</td><td>ringing</td>", text)
        self.assertIn("<tr><td>Dora Dunn (+15557770000)</td><td>Alice Archer (101)</td>", text)
