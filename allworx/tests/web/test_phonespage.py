# -*- test-case-name: allworx.tests.web.test_phonespage -*-
"""
The Phones page's phones (SPEC 19) with fakes of the phone book, check-sync,
registrar and leases: the assigned phones' table, the new phones ("new
phone: Snom, 192.168.2.37, asked 2m ago"), giving one to a user from its
form (errors on that form only, nothing written), a new secret never shown,
removing a phone.
"""

import re

from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.web.test_phones import SNOM, T0, TEXT, YEALINK, fakes
from allworx.tests.webhelpers import AdminClient


class PhonesPageTests(LoggedIn):
    text = TEXT

    def setUp(self):
        self.c = AdminClient(self, self.text)
        self.c.clock.advance(T0)
        self.assertEqual(self.c.login().code, 303)
        self.views = fakes(self.c.ctx.views)

    def rows(self, text):
        body = text.split('<table class="list phones">', 1)[1].split("</table>", 1)[0]
        return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
                for row in body.split("<tbody>", 1)[1].split("<tr>")[1:]]

    def new(self, text):
        body = text.split('<ul class="new-phones">', 1)[1].split("</ul>", 1)[0]
        return re.findall(r"<p>(New phone: [^<]*)<code>([^<]*)</code>", body)

    def test_page(self):
        r = self.c.get("/phones")
        self.assertEqual(r.code, 200, r.text)
        self.assertEqual(self.rows(r.text), [
            "Alice Archer (101) Yealink Front desk 00:15:65:ab:cd:ef 192.168.2.31 5m ago yes "
            "New secret Remove"])
        self.assertEqual(self.new(r.text), [
            ("New phone: Snom, 192.168.2.37, asked 2m ago ", "00:04:13:aa:bb:cc"),
            ("New phone: Polycom, 192.168.2.41, asked 2h ago ", "00:04:f2:11:22:33")])
        self.assertIn('<option value="bob">Bob Baker (102)</option>', r.text)
        self.assertNotIn("secret-of", r.text)
        self.assertNotIn("Phone provisioning not running", r.text)

    def test_without_the_services(self):
        views = self.c.ctx.views
        views.phones = views.registrations = views.leases = views.checksync = None
        r = self.c.get("/phones")
        self.assertEqual(r.code, 200, r.text)
        self.assertIn("Phone provisioning not running", r.text)
        self.assertEqual(self.rows(r.text), [
            "Alice Archer (101) Yealink Front desk 00:15:65:ab:cd:ef never no New secret Remove"])
        self.assertIn("No new phone has asked for its settings.", r.text)

    def test_give_a_new_phone(self):
        r = self.submit("/phones", "give", mac=SNOM, user="bob", model="", label="Bob's desk")
        self.assertEqual((r.code, r.headers.getRawHeaders("location")), (303, ["/phones"]))
        phone = self.c.office.config.phone_by_mac(SNOM)
        self.assertEqual((phone.user, phone.model, phone.label), ("bob", "snom", "Bob's desk"))
        self.assertEqual(self.views.checksync.sent, [SNOM])
        text = self.c.get("/phones").text
        self.assertIn("Phone 00:04:13:aa:bb:cc given to Bob Baker (102). The phone was told to "
                      "fetch its settings again.", text)
        self.assertEqual(len(self.rows(text)), 2)
        self.assertEqual(len(self.new(text)), 1)

    def test_errors_on_that_form_only_nothing_written(self):
        before = self.c.tap_conf()
        r = self.submit("/phones", "give", mac=SNOM, user="", model="", label="x" * 40)
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("Nothing was changed.", r.text)
        self.assertEqual(r.text.count('class="error-text"'), 2, r.text)
        form = r.text.split('id="new-%s"' % SNOM, 1)[1].split("</form>", 1)[0]
        self.assertIn('value="%s"' % ("x" * 40), form)
        self.assertEqual(self.c.tap_conf(), before)
        self.assertEqual(self.views.checksync.sent, [])

    def test_not_registered_says_so(self):
        self.views.checksync.answer = False
        self.submit("/phones", "give", mac=SNOM, user="102", model="", label="")
        self.assertIn("The phone is not registered", self.c.get("/phones").text)

    def test_new_secret(self):
        r = self.submit("/phones", "new_secret", mac=YEALINK)
        self.assertEqual(r.code, 303, r.text)
        self.assertEqual(self.views.phones.rotated, [YEALINK])
        text = self.c.get("/phones").text
        self.assertIn("Phone 00:15:65:ab:cd:ef has a new SIP secret.", text)
        self.assertNotIn("NEW-SECRET", text)

    def test_remove(self):
        r = self.submit("/phones", "remove", mac=YEALINK)
        self.assertEqual(r.code, 303, r.text)
        self.assertNotIn("[phone", self.c.tap_conf())
        text = self.c.get("/phones").text
        self.assertIn("No phone is given to anyone yet.", text)
        self.assertEqual(len(self.new(text)), 3)
