# -*- test-case-name: allworx.tests.web.test_mailsecurity -*-
"""
The Mail security page and its API (SPEC 18) over in-memory HTTP with a real
Office on a temporary tap.conf and a fake IMailSecurity: the records to
publish with their copy buttons, the decisions (escaped, filtered by
verdict, paged), the Junk counts, DKIM rotation through a CSRF-checked form
and the API, the `[mail]` keys saved (every error at once, values shown as
written), the JSON shapes, 401 and 503, and the OpenAPI document.
"""

import datetime
import os
import re

from twisted.internet import task
from zope.interface import implementer
from zope.interface.verify import verifyObject

from allworx.interfaces import IMailSecurity
from allworx.protocols.web import admin, mailsecurity
from allworx.protocols.web.openapi import openapi_document
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_lines import form_of
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import CHEAP, AdminClient

T0 = 1796601600     # 2026-12-07T00:00:00Z

DKIM_VALUE = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 300

RECORDS = [
    {"name": "allworx._domainkey.example.com", "type": "TXT", "value": DKIM_VALUE,
     "purpose": "dkim", "source": "built-in", "note": ""},
    {"name": "allworx-ed25519._domainkey.example.com", "type": "TXT",
     "value": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
     "purpose": "dkim", "source": "built-in", "note": ""},
    {"name": "example.com", "type": "TXT", "value": "v=spf1 mx a:smtp.isp.example ~all",
     "purpose": "spf", "source": "built-in",
     "note": "Add your mail provider's own SPF include (such as include:isp.example)."},
    {"name": "_dmarc.example.com", "type": "TXT", "value": "v=DMARC1; p=reject",
     "purpose": "dmarc", "source": "record", "note": ""},
]


def decision(n, verdict="accepted", **kw):
    out = {"time": T0 + n * 60, "client": "198.51.100.%d" % (n % 250 + 1),
           "helo": "mx%d.internet.example" % n, "sender": "sender%d@internet.example" % n,
           "recipients": ["alice@example.com"], "verdict": verdict,
           "reason": "reason %d" % n, "score": 1.5 if verdict != "greylisted" else None,
           "auth": "allworx.example.com; spf=pass smtp.mailfrom=internet.example"}
    out.update(kw)
    return out


@implementer(IMailSecurity)
class FakeMailSecurity:
    """What the mail service tells the page; rotation as the DKIM signer does it."""

    def __init__(self, office, decisions=(), junk=None, clock=None):
        self.office = office
        self.log = list(decisions)          # oldest first, as they happened
        self.junk = {"alice": 3, "bob": 0} if junk is None else junk
        self.clock = clock
        self.rotations = 0
        self.limits = []

    def records(self):
        return [dict(r) for r in RECORDS]

    def decisions(self, limit=100):
        self.limits.append(limit)
        return list(reversed(self.log))[:limit]

    def junk_counts(self):
        return dict(self.junk)

    def rotate_dkim(self):
        self.rotations += 1
        new = "allworx-20261207" + ("-%d" % self.rotations if self.rotations > 1 else "")

        def done():
            self.office.update_settings("mail", {"dkim_selector": new})
            return new
        if self.clock is None:
            return done()
        return task.deferLater(self.clock, 1.0, done)    # as a Deferred, later


class PageCase(LoggedIn):
    def setUp(self):
        self.c = AdminClient(self, self.text)
        self.c.clock.advance(T0 + 3600)     # an hour after the first decision
        self.assertEqual(self.c.login().code, 303)
        self.view = FakeMailSecurity(self.c.office, [decision(n) for n in range(3)],
                                     clock=self.c.clock)
        verifyObject(IMailSecurity, self.view)
        self.c.ctx.views.mail_security = self.view

    def rows(self, text):
        """The decisions table's rows, as their text without tags."""
        table = text.split('<table class="list decisions">', 1)[1].split("</table>", 1)[0]
        body = table.split("<tbody>", 1)[1]
        return [re.sub(r"<[^>]+>", " ", row) for row in body.split("<tr>")[1:]]


class PageTests(PageCase):
    def test_records_with_copy_buttons_and_notes(self):
        r = self.c.get("/mailsecurity")
        self.assertEqual(r.code, 200)
        text = r.text
        self.assertIn("<h1>Mail security</h1>", text)
        self.assertIn("DNS records to publish", text)
        self.assertIn("registrar", text)
        for n, rec in enumerate(RECORDS, 1):
            self.assertIn('<code class="record-value" id="record-%d">%s</code>' % (n, rec["value"]),
                          text)
            self.assertIn('<button type="button" class="copy" data-copy="record-%d" hidden>' % n,
                          text)
            self.assertIn("<code>%s</code>" % rec["name"], text)
        self.assertIn("host: <code>allworx._domainkey</code>", text)
        self.assertIn("host: <code>@</code>", text)
        self.assertIn("include:isp.example", text)
        self.assertIn('<script src="/static/copy.js" defer></script>', text)
        self.assertIn('href="/mailsecurity" aria-current="page">Mail security<', text)

    def test_copy_script_is_a_static_file(self):
        # Served by the static resource (no inline script: the CSP forbids it).
        with open(os.path.join(admin.STATIC_DIR, "copy.js")) as f:
            self.assertIn("button.copy[data-copy]", f.read())

    def test_in_the_menu_after_the_mail_queue(self):
        text = self.c.get("/status").text
        self.assertLess(text.index('href="/mailqueue"'), text.index('href="/mailsecurity"'))

    def test_decisions_newest_first_with_verdict_classes(self):
        self.view.log.append(decision(3, "refused", score=None, reason="DMARC policy reject"))
        text = self.c.get("/mailsecurity").text
        rows = self.rows(text)
        self.assertEqual(len(rows), 4)
        self.assertIn("2026-12-07 00:03:00 UTC", rows[0])
        self.assertIn("57m ago", rows[0])
        self.assertIn("DMARC policy reject", rows[0])
        self.assertIn("sender0@internet.example", rows[3])
        self.assertIn("198.51.100.1", rows[3])
        self.assertIn("HELO mx0.internet.example", rows[3])
        self.assertIn('<span class="state verdict-refused">refused</span>', text)
        self.assertIn('<span class="state verdict-accepted">accepted</span>', text)
        self.assertIn("<td>1.5</td>", text)
        self.assertIn("spf=pass smtp.mailfrom=internet.example", text)

    def test_decision_fields_are_escaped(self):
        self.view.log.append(decision(9, sender="<script>alert(1)</script>@x.example",
                                      reason='<img src=x onerror="alert(2)">',
                                      helo="<b>helo</b>", recipients=["<i>r</i>@example.com"]))
        text = self.c.get("/mailsecurity").text
        self.assertNotIn("<script>alert", text)
        self.assertNotIn("<img src=x", text)
        self.assertNotIn("<b>helo", text)
        self.assertNotIn("<i>r</i>", text)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;@x.example", text)
        self.assertIn("&lt;img src=x onerror=&#34;alert(2)&#34;&gt;", text)

    def test_filter_by_verdict(self):
        self.view.log.extend([decision(10, "junk", reason="spam score 7.2"),
                              decision(11, "greylisted", reason="first try")])
        text = self.c.get("/mailsecurity?verdict=junk").text
        rows = self.rows(text)
        self.assertEqual(len(rows), 1)
        self.assertIn("spam score 7.2", rows[0])
        self.assertIn('<option value="junk" selected>junk (1)</option>', text)
        self.assertIn('<option value="accepted">accepted (3)</option>', text)
        rows = self.rows(self.c.get("/mailsecurity?verdict=refused").text)
        self.assertIn("No decisions with the verdict refused yet.", rows[0])
        text = self.c.get("/mailsecurity?verdict=%3Cbogus%3E").text
        self.assertIn("The filter verdict=&lt;bogus&gt; was ignored", text)
        self.assertEqual(len(self.rows(text)), 5)
        # The whole log is asked for, then filtered: a rare verdict is not cut off.
        self.assertEqual(set(self.view.limits), {mailsecurity.DECISIONS_KEPT})

    def test_paging(self):
        self.view.log = [decision(n, "junk" if n % 2 else "accepted") for n in range(60)]
        text = self.c.get("/mailsecurity").text
        rows = self.rows(text)
        self.assertEqual(len(rows), 25)
        self.assertIn("sender59@", rows[0])
        self.assertIn("Decisions 1 to 25 of 60", text)
        self.assertIn('href="/mailsecurity?page=2#decisions">Older', text)
        self.assertNotIn(">Newer<", text)
        text = self.c.get("/mailsecurity?page=3").text
        rows = self.rows(text)
        self.assertEqual(len(rows), 10)
        self.assertIn("sender9@", rows[0])
        self.assertIn("sender0@", rows[-1])
        self.assertIn('href="/mailsecurity?page=2#decisions">Newer', text)
        self.assertNotIn(">Older<", text)
        # The filter is kept in the links; a page past the end shows the last.
        text = self.c.get("/mailsecurity?verdict=junk&page=9").text
        self.assertIn("Decisions 26 to 30 of 30", text)
        self.assertIn('href="/mailsecurity?verdict=junk#decisions">Newer', text)
        self.assertIn("Decisions 1 to 25", self.c.get("/mailsecurity?page=x").text)

    def test_junk_counts(self):
        self.view.junk = {"bob": 12, "alice": 3}
        text = self.c.get("/mailsecurity").text
        self.assertIn("<tr><td>alice</td><td>3</td></tr>", text)
        self.assertIn("<tr><td>bob</td><td>12</td></tr>", text)
        self.assertLess(text.index("<td>alice</td>"), text.index("<td>bob</td>"))

    def test_mail_off_or_not_running(self):
        self.c.ctx.views.mail_security = None
        text = self.c.get("/mailsecurity").text
        self.assertIn("The mail service is not running", text)
        self.assertNotIn("DNS records to publish", text)
        self.assertNotIn('value="rotate_dkim"', text)
        self.assertIn('value="save"', text)      # the settings can still be set
        self.c.office.update_settings("mail", {"enabled": "no"})
        self.assertIn("Mail is off", self.c.get("/mailsecurity").text)
        r = self.submit("/mailsecurity", "rotate_dkim")
        self.assertEqual(r.code, 400)
        self.assertIn("the mail service is not running", r.text)

    def test_a_failing_service_does_not_take_the_page_down(self):
        class Broken(FakeMailSecurity):
            def decisions(self, limit=100):
                raise RuntimeError("boom")
        self.c.ctx.views.mail_security = Broken(self.c.office)
        r = self.c.get("/mailsecurity")
        self.assertEqual(r.code, 200)
        self.assertIn("allworx._domainkey.example.com", r.text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unknown_sub_page(self):
        self.assertEqual(self.c.get("/mailsecurity/nothing").code, 404)


class RotationTests(PageCase):
    def test_rotate_calls_the_service_and_shows_the_new_selector(self):
        text = self.c.get("/mailsecurity").text
        self.assertIn("<dd><code>allworx</code></dd>", text)
        data = form_of(text, "rotate_dkim")
        r = self.c.post("/mailsecurity", data)
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/mailsecurity"])
        self.assertEqual(self.view.rotations, 1)
        text = self.c.get("/mailsecurity").text
        self.assertIn("New DKIM keys: the selector is now allworx-20261207 "
                      "(and allworx-20261207-ed25519)", text)
        self.assertIn("The old selector allworx stays published", text)
        self.assertIn("<dd><code>allworx-20261207</code></dd>", text)
        self.assertEqual(self.c.office.config.mail.dkim_selector, "allworx-20261207")

    def test_rotate_answering_at_once(self):
        self.view.clock = None
        self.submit("/mailsecurity", "rotate_dkim")
        self.assertIn("the selector is now allworx-20261207",
                      self.c.get("/mailsecurity").text)

    def test_without_csrf_token_refused(self):
        r = self.c.post("/mailsecurity", {"action": "rotate_dkim"})
        self.assertEqual(r.code, 403)
        self.assertIn("Nothing was changed", r.text)
        r = self.c.post("/mailsecurity", {"action": "rotate_dkim", "csrf": "forged"})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.view.rotations, 0)
        self.assertEqual(self.c.office.config.mail.dkim_selector, "allworx")


SETTINGS_CONF = CHEAP + """
[mail]
# as the admin wrote them
spam_threshold = 6.50
dnsbl = zen.spamhaus.org,  bl.example
"""


class SettingsTests(PageCase):
    text = SETTINGS_CONF

    def test_values_shown_as_written(self):
        data = form_of(self.c.get("/mailsecurity").text, "save")
        self.assertEqual(data["mail.spam_threshold"], "6.50")
        self.assertEqual(data["mail.dnsbl"], "zen.spamhaus.org,  bl.example")
        self.assertEqual(data["mail.spam_reject"], "15")
        self.assertEqual((data["mail.dkim_selector"], data["mail.rspamd"], data["mail.clamd"]),
                         ("allworx", "", ""))
        self.assertNotIn("mail.greylist", data)     # unticked

    def test_saved_unchanged_changes_nothing(self):
        before = self.c.tap_conf()
        r = self.c.post("/mailsecurity", form_of(self.c.get("/mailsecurity").text, "save"))
        self.assertEqual(r.code, 303)
        self.assertIn("Nothing changed", self.c.get("/mailsecurity").text)
        self.assertEqual(self.c.tap_conf(), before)

    def test_save(self):
        data = form_of(self.c.get("/mailsecurity").text, "save")
        data.update({"mail.greylist": "yes", "mail.spam_reject": "12.5",
                     "mail.rspamd": "127.0.0.1:11333", "mail.clamd": "/run/clamav/clamd.ctl"})
        r = self.c.post("/mailsecurity", data)
        self.assertEqual(r.code, 303, r.text)
        mail = self.c.office.config.mail
        self.assertEqual((mail.greylist, mail.spam_reject, mail.spam_threshold),
                         (True, 12.5, 6.5))
        self.assertEqual(mail.clamd, "/run/clamav/clamd.ctl")
        self.assertEqual(mail.rspamd[1], 11333)
        conf = self.c.tap_conf()
        self.assertIn("spam_threshold = 6.50\n", conf)      # untouched keys keep their words
        self.assertIn("# as the admin wrote them", conf)
        self.assertIn("greylist = yes", conf)
        self.assertIn("Mail security settings saved.", self.c.get("/mailsecurity").text)

    def test_every_error_at_once_and_nothing_changed(self):
        before = self.c.tap_conf()
        data = form_of(self.c.get("/mailsecurity").text, "save")
        data.update({"mail.spam_reject": "3", "mail.dkim_selector": "bad selector!",
                     "mail.clamd": "relative.sock"})
        r = self.c.post("/mailsecurity", data)
        self.assertEqual(r.code, 400)
        text = r.text
        self.assertIn("Nothing was changed", text)
        self.assertIn("[mail] spam_reject: must be above spam_threshold", text)
        self.assertIn("[mail] dkim_selector: expected a DKIM selector", text)
        self.assertIn("[mail] clamd: expected the absolute path", text)
        # Each field marked, with what was typed.
        self.assertEqual(text.count('<div class="field invalid">'), 3)
        self.assertIn('value="bad selector!" aria-invalid="true"', text)
        self.assertIn('value="3" aria-invalid="true"', text)
        self.assertEqual(self.c.tap_conf(), before)


class ApiTests(ApiCase):
    def setUp(self):
        ApiCase.setUp(self)
        self.view = FakeMailSecurity(self.c.office, [decision(0), decision(1, "junk", score=7),
                                                     decision(2, "greylisted")])
        self.c.ctx.views.mail_security = self.view

    def test_shape_and_types(self):
        r = self.call("GET", "/mail/security")
        self.assertEqual(r.code, 200, r.text)
        body = r.json
        self.assertEqual(set(body), {"records", "decisions", "junk"})
        self.assertEqual(body["records"], RECORDS)
        self.assertEqual(body["junk"], {"alice": 3, "bob": 0})
        newest, junk, oldest = body["decisions"]
        self.assertEqual(newest["time"], "2026-12-07T00:02:00Z")
        datetime.datetime.strptime(newest["time"], "%Y-%m-%dT%H:%M:%SZ")
        self.assertIsNone(newest["score"])
        self.assertEqual((junk["verdict"], junk["score"]), ("junk", 7))
        self.assertIsInstance(oldest["score"], float)
        self.assertEqual(oldest["recipients"], ["alice@example.com"])
        self.assertEqual(set(oldest), {"time", "client", "helo", "sender", "recipients",
                                       "verdict", "reason", "score", "auth"})

    def test_limit_and_verdict(self):
        body = self.call("GET", "/mail/security?limit=1").json
        self.assertEqual([d["verdict"] for d in body["decisions"]], ["greylisted"])
        body = self.call("GET", "/mail/security?verdict=junk").json
        self.assertEqual([d["verdict"] for d in body["decisions"]], ["junk"])
        r = self.call("GET", "/mail/security?verdict=spam")
        self.assertEqual((r.code, r.json["field"]), (400, "verdict"))
        r = self.call("GET", "/mail/security?limit=many")
        self.assertEqual((r.code, r.json["field"]), (400, "limit"))

    def test_rotate(self):
        r = self.call("POST", "/mail/dkim/rotate")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(r.json, {"selector": "allworx-20261207"})
        self.assertEqual(self.call("POST", "/mail/dkim/rotate").json,
                         {"selector": "allworx-20261207-2"})
        self.assertEqual(self.c.office.config.mail.dkim_selector, "allworx-20261207-2")

    def test_rotate_deferred(self):
        self.view.clock = self.c.clock
        r = self.call("POST", "/mail/dkim/rotate")
        self.assertEqual(r.json, {"selector": "allworx-20261207"})

    def test_no_mail_service_503(self):
        self.c.ctx.views.mail_security = None
        for method, url in (("GET", "/mail/security"), ("POST", "/mail/dkim/rotate")):
            r = self.call(method, url)
            self.assertEqual(r.code, 503, url)
            self.assertEqual(r.json["error"], "not running")
            self.assertIn("mail service", r.json["reason"])

    def test_401_without_credentials(self):
        for method, url in (("GET", "/mail/security"), ("POST", "/mail/dkim/rotate")):
            r = self.call(method, url, auth=False)
            self.assertEqual(r.code, 401, url)
            self.assertEqual(r.json["error"], "unauthorized")
        self.assertEqual(self.view.rotations, 0)

    def test_page_session_needs_csrf_to_rotate(self):
        self.c.login()
        self.assertEqual(self.call("GET", "/mail/security", auth=False).code, 200)
        r = self.call("POST", "/mail/dkim/rotate", auth=False)
        self.assertEqual(r.code, 403)
        self.assertEqual(self.view.rotations, 0)

    def test_listed_and_described(self):
        resources = self.call("GET", "/").json["resources"]
        self.assertIn("/api/v1/mail/security", resources)
        self.assertIn("/api/v1/mail/dkim/rotate", resources)
        doc = self.call("GET", "/openapi.json", auth=False).json
        get = doc["paths"]["/api/v1/mail/security"]["get"]
        self.assertEqual(set(get["responses"]), {"200", "400", "401", "503"})
        self.assertIn("post", doc["paths"]["/api/v1/mail/dkim/rotate"])
        decision_schema = doc["components"]["schemas"]["MailDecision"]["properties"]
        self.assertEqual(decision_schema["time"]["format"], "date-time")
        self.assertTrue(decision_schema["score"]["nullable"])
        self.assertEqual(decision_schema["verdict"]["enum"], list(mailsecurity.VERDICTS))
        self.assertEqual(set(doc["components"]["schemas"]["MailRecord"]["properties"]),
                         set(RECORDS[0]))
        self.assertEqual(doc, openapi_document())

    def test_every_fixed_route_is_documented_with_its_methods(self):
        # The index and the document itself aside (and /settings, the sum of
        # /settings/{section}), what the API serves is in the OpenAPI document.
        from allworx.protocols.web import api
        paths = openapi_document()["paths"]
        for rule in api.OfficeApi.app.url_map.iter_rules():
            if "<" in rule.rule or rule.rule in ("/v1/", "/v1/openapi.json", "/v1/settings"):
                continue
            path = "/api" + rule.rule
            self.assertIn(path, paths)
            for method in set(rule.methods) - {"HEAD", "OPTIONS"}:
                self.assertIn(method.lower(), paths[path], path)
