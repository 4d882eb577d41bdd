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
