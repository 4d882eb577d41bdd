# -*- test-case-name: allworx.tests.web.test_lines -*-
"""
The Phone lines page (SPEC 15) over in-memory HTTP with a real Office on a
temporary tap.conf: each section renders; trunks, numbers, ring groups and
attendants are added, changed and deleted through their forms, as a browser
sends them (the fields read back from the page); every error of a form is
shown at once next to its field and changes nothing; a form saved unchanged
leaves tap.conf byte for byte; a trunk's password never reaches any page.
Also the `[sip]` dialling rules, the user form's call keys, and a trunk
added and removed in the page registering and unregistering live.
"""

from html.parser import HTMLParser

from twisted.internet import defer

from allworx.office import ConfigChanged
from allworx.protocols.sip.trunk import TrunkManager
from allworx.protocols.web import pages
from allworx.tests.sip.test_trunk import FakeCore, Provider
from allworx.tests.web.test_pages import FakeRegistrar, LoggedIn
from allworx.tests.webhelpers import CHEAP, CHEAP_HASH

SECRET = "top-s3cret word"

LINES = CHEAP + """
[sip]
outbound_prefix = 9
country_code = 1

[trunk main]
registrar = sip.provider.example
username = office
secret = top-s3cret word
# the provider's longest
expires = 1d
numbers = +15551230000
   +15551230001
channels = 4

[number +15551230000]
to = frontdesk

[group team]
number = 500
members = 101 102
ring_timeout = 30s

[attendant frontdesk]
number = 600
greeting = Welcome to Example.
key_1 = team
hours = mon-fri 08:30-17:30
after_hours = voicemail 101

[user carol]
full_name = Carol Cole
extension = 103
password = {pw}
outside = true
forward_noanswer = 915551112222
""".format(pw=CHEAP_HASH)


class FormReader(HTMLParser):
    """The fields of each form of a page, as a browser would send them."""

    def __init__(self):
        HTMLParser.__init__(self)
        self.forms, self.current = [], None
        self.select = self.option = self.textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.current = {}
            self.forms.append(self.current)
        elif self.current is None:
            return
        elif tag == "input" and a.get("name"):
            if a.get("type") != "checkbox":
                self.current[a["name"]] = a.get("value") or ""
            elif "checked" in a:
                self.current[a["name"]] = a.get("value", "on")
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select:
            # The selected option, else the first.
            self.option = "selected" in a or self.select not in self.current
        elif tag == "textarea":
            self.textarea = a["name"]
            self.current[self.textarea] = ""

    def handle_data(self, data):
        if self.option:
            self.current[self.select] = data
            self.option = None
        elif self.textarea:
            self.current[self.textarea] += data

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None
        elif tag == "form":
            self.current = None


def form_of(text, action, name=None):
    """The form of `text` whose action is `action` (and whose name is `name`)."""
    reader = FormReader()
    reader.feed(text)
    found = [f for f in reader.forms if f.get("action") == action
             and (name is None or f.get("name") == name)]
    assert len(found) == 1, (action, name, reader.forms)
    return found[0]


class LinesCase(LoggedIn):
    text = LINES

    def send(self, url, action, which=None, **changes):
        """
        Post the form `action` of the page at `url` (the one for the record
        `which`, if several) with `changes` made, as a browser would.
        """
        data = form_of(self.c.get(url).text, action, which)
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)         # an unticked checkbox
            else:
                data[key] = value
        return self.c.post(url, data)

    def assertNoSecret(self, text, where):
        self.assertNotIn("s3cret", text, where)


class RenderTests(LinesCase):

    def test_each_section(self):
        r = self.c.get("/lines")
        self.assertEqual(r.code, 200)
        text = r.text
        for heading in ("Trunks", "Numbers", "Ring groups", "Auto attendants",
                        "Dialling out and remote phones"):
            self.assertIn("%s</h2>" % heading, text)
        self.assertIn('<a href="/lines/edit/trunk/main">main</a></td><td>sip.provider.example</td>'
                      "<td>office</td><td>+15551230000 +15551230001</td><td>yes</td>", text)
        self.assertIn('<a href="/lines/edit/number/%2B15551230000">+15551230000</a></td>'
                      "<td>frontdesk</td>", text)
        self.assertIn("<td>500</td><td>101 102</td><td>ring-all</td><td>30s</td>", text)
        self.assertIn("<td>Welcome to Example.</td><td>1: team</td><td>mon-fri 08:30-17:30</td>"
                      "<td>voicemail 101</td>", text)
        self.assertIn("phone system not running", text)
        for action in ("add_trunk", "add_number", "add_group", "add_attendant", "save_dialling"):
            form_of(text, action)
        # The add forms start from the defaults: a new trunk registers.
        self.assertEqual(form_of(text, "add_trunk").get("register"), "yes")
        self.assertEqual(form_of(text, "add_group")["ring_timeout"], "20")
        dialling = form_of(text, "save_dialling")
        self.assertEqual((dialling["sip.outbound_prefix"], dialling["sip.international_prefix"]),
                         ("9", "011"))
        self.assertNotIn("sip.wan", dialling)       # no: unticked

    def test_in_the_menu_beside_phones(self):
        slugs = [p.slug for p in pages.PAGES]
        self.assertEqual(slugs[slugs.index("phones") + 1], "lines")
        self.assertIn('<a href="/lines" aria-current="page">Phone lines</a>', self.c.get("/lines").text)
        self.assertIn('href="/lines#dialling"', self.c.get("/services").text)

    def test_edit_forms_show_the_files_words(self):
        text = self.c.get("/lines/edit/trunk/main").text
        self.assertIn("Change trunk main</h3>", text)
        form = form_of(text, "save_trunk")
        self.assertEqual((form["expires"], form["numbers"], form["secret"]),
                         ("1d", "+15551230000 +15551230001", ""))
        self.assertEqual(form_of(self.c.get("/lines/edit/group/team").text,
                                 "save_group")["ring_timeout"], "30s")
        form = form_of(self.c.get("/lines/edit/number/+15551230000").text, "save_number")
        self.assertEqual((form["name"], form["to"]), ("+15551230000", "frontdesk"))
        form = form_of(self.c.get("/lines/edit/attendant/frontdesk").text, "save_attendant")
        self.assertEqual((form["key_1"], form["key_2"], form["hours"]),
                         ("team", "", "mon-fri 08:30-17:30"))

    def test_unknown_records_and_paths(self):
        for url in ("/lines/edit/trunk/nope", "/lines/edit/user/alice", "/lines/x"):
            self.assertEqual(self.c.get(url).code, 404, url)

    def test_login_and_csrf(self):
        before = self.c.tap_conf()
        data = form_of(self.c.get("/lines").text, "add_number")
        data.update(name="+15551230001", to="101", csrf="forged")
        r = self.c.post("/lines", data)
        self.assertEqual(r.code, 403)
        self.assertEqual(self.c.tap_conf(), before)
        self.c.post("/logout", {"csrf": self.c.csrf()})
        r = self.c.get("/lines")
        self.assertEqual(r.headers.getRawHeaders("location"), ["/login?next=/lines"])

    def test_phones_page_links_the_trunks_here(self):
        reg = FakeRegistrar()

        class Trunks:
            def status(self):
                return [{"name": "main", "registrar": "sip.provider.example",
                         "state": "registered", "channels": 4, "channels_in_use": 0}]
        self.c.ctx.views.registrations = self.c.ctx.views.calls = reg
        self.c.ctx.views.trunks = Trunks()
        text = self.c.get("/phones").text
        self.assertIn('<a href="/lines/edit/trunk/main">Change</a>', text)
        self.assertIn('<a href="/lines">Phone lines</a>', text)
        self.assertIn("<td>registered</td>", self.c.get("/lines").text)


class UnchangedTests(LinesCase):
    """A form saved as shown changes nothing in tap.conf."""

    def test_every_form_saved_unchanged(self):
        before = self.c.tap_conf()
        config = self.c.office.config
        for url, action, notice in (
                ("/lines/edit/trunk/main", "save_trunk", "Nothing changed in trunk main."),
                ("/lines/edit/number/+15551230000", "save_number",
                 "Nothing changed in number +15551230000."),
                ("/lines/edit/group/team", "save_group", "Nothing changed in ring group team."),
                ("/lines/edit/attendant/frontdesk", "save_attendant",
                 "Nothing changed in attendant frontdesk."),
                ("/lines", "save_dialling", "Nothing changed in the dialling rules.")):
            r = self.send(url, action)
            self.assertEqual((r.code, r.headers.getRawHeaders("location")), (303, ["/lines"]), url)
            self.assertIn(notice, self.c.get("/lines").text)
            self.assertEqual(self.c.tap_conf(), before, url)
        self.assertIs(self.c.office.config, config)
        for user in ("carol", "alice", "bob"):
            r = self.send("/users/" + user, "save_user")
            self.assertEqual(r.code, 303, r.text)
            self.assertEqual(self.c.tap_conf(), before, user)

    def test_one_change_keeps_the_other_words(self):
        r = self.send("/lines/edit/trunk/main", "save_trunk", channels="6")
        self.assertEqual(r.code, 303, r.text)
        text = self.c.tap_conf()
        self.assertIn("channels = 6\n", text)
        self.assertIn("# the provider's longest\nexpires = 1d\nnumbers = +15551230000\n"
                      "   +15551230001\n", text)
        self.assertIn("secret = top-s3cret word\n", text)
        self.assertNotIn("transport", text)         # a default stays a default
        self.assertEqual(self.c.office.config.trunks["main"].channels, 6)
        self.send("/lines", "save_dialling", **{"sip.country_code": "44"})
        self.assertIn("[sip]\noutbound_prefix = 9\ncountry_code = 44\n", self.c.tap_conf())


class AddEditDeleteTests(LinesCase):

    def test_trunk(self):
        r = self.send("/lines", "add_trunk", name="backup", registrar="sip2.provider.example:5070",
                      username="office2", secret="an0ther pass", numbers="+15557770000",
                      register=None, expires="30m")
        self.assertEqual(r.code, 303, r.text)
        self.assertIn("Added trunk backup.", self.c.get("/lines").text)
        trunk = self.c.office.config.trunks["backup"]
        self.assertEqual((trunk.registrar, trunk.register, trunk.expires, trunk.secret),
                         (("sip2.provider.example", 5070), False, 1800, "an0ther pass"))
        section = self.c.tap_conf().split("[trunk backup]\n")[1]
        self.assertEqual(section, "registrar = sip2.provider.example:5070\nusername = office2\n"
                                  "secret = an0ther pass\nexpires = 30m\nregister = no\n"
                                  "numbers = +15557770000\n")
        r = self.send("/lines/edit/trunk/backup", "save_trunk", transport="tcp", register="yes",
                      caller_id="+15557770000")
        self.assertEqual(r.code, 303, r.text)
        trunk = self.c.office.config.trunks["backup"]
        self.assertEqual((trunk.transport, trunk.register, trunk.caller_id, trunk.secret),
                         ("tcp", True, "+15557770000", "an0ther pass"))
        self.assertIn("expires = 30m\n", self.c.tap_conf())
        r = self.send("/lines", "delete_trunk", which="backup")
        self.assertEqual(r.code, 303, r.text)
        self.assertNotIn("backup", self.c.office.config.trunks)
        self.assertNotIn("[trunk backup]", self.c.tap_conf())

    def test_number(self):
        r = self.send("/lines", "add_number", name="+15551230001", to="voicemail 102")
        self.assertEqual(r.code, 303, r.text)
        self.assertIn("[number +15551230001]\nto = voicemail 102\n", self.c.tap_conf())
        r = self.send("/lines/edit/number/+15551230001", "save_number", to="team")
        self.assertEqual(r.code, 303, r.text)
        config = self.c.office.config
        self.assertEqual(config.resolve_target(config.numbers["+15551230001"].to).kind, "group")
        self.assertIn("<td>team</td>", self.c.get("/lines").text)
        # Emptied: the operator.
        self.send("/lines/edit/number/+15551230001", "save_number", to="")
        self.assertIsNone(self.c.office.config.numbers["+15551230001"].to)
        self.assertIn("<td>the operator</td>", self.c.get("/lines").text)
        self.send("/lines", "delete_number", which="+15551230001")
        self.assertNotIn("+15551230001", self.c.office.config.numbers)

    def test_group(self):
        r = self.send("/lines", "add_group", name="support", number="510", members="102 101",
                      strategy="hunt", fallback="voicemail 101")
        self.assertEqual(r.code, 303, r.text)
        group = self.c.office.config.groups["support"]
        self.assertEqual((group.members, group.strategy, group.ring_timeout),
                         (("102", "101"), "hunt", 20))
        self.assertNotIn("ring_timeout", self.c.tap_conf().split("[group support]")[1])
        self.send("/lines/edit/group/support", "save_group", ring_timeout="1m", members="101")
        group = self.c.office.config.groups["support"]
        self.assertEqual((group.members, group.ring_timeout), (("101",), 60))
        self.assertIn("ring_timeout = 1m", self.c.tap_conf())
        self.send("/lines", "delete_group", which="support")
        self.assertNotIn("support", self.c.office.config.groups)

    def test_attendant(self):
        r = self.send("/lines", "add_attendant", name="night", greeting="We are closed.",
                      key_0="101", key_9="voicemail 102", timeout="5s", fallback="team")
        self.assertEqual(r.code, 303, r.text)
        attendant = self.c.office.config.attendants["night"]
        self.assertEqual(sorted(attendant.menu()), ["0", "9"])
        self.assertEqual(attendant.timeout, 5)
        self.assertIn("<td>0: 101, 9: voicemail 102</td>", self.c.get("/lines").text)
        self.send("/lines/edit/attendant/night", "save_attendant", key_9="",
                  hours="mon-fri 18:00-24:00", after_hours="voicemail 101")
        attendant = self.c.office.config.attendants["night"]
        self.assertEqual(sorted(attendant.menu()), ["0"])
        self.assertTrue(attendant.hours.covers(0, 19 * 60))
        self.assertIn("timeout = 5s", self.c.tap_conf())
        self.send("/lines", "delete_attendant", which="night")
        self.assertNotIn("night", self.c.office.config.attendants)

    def test_delete_of_a_target_still_named_is_refused(self):
        before = self.c.tap_conf()
        r = self.send("/lines", "delete_attendant", which="frontdesk")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("Nothing was changed", r.text)
        self.assertIn("[number +15551230000]", r.text)
        self.assertEqual(self.c.tap_conf(), before)
        data = form_of(self.c.get("/lines").text, "delete_group", "team")
        r = self.c.post("/lines", dict(data, name="gone"))
        self.assertEqual(r.code, 303)
        self.assertIn("There is no group gone", self.c.get("/lines").text)

    def test_dialling_rules(self):
        # Carol's forwarding dials 9 first: another prefix is refused, saying so.
        before = self.c.tap_conf()
        r = self.send("/lines", "save_dialling", **{"sip.outbound_prefix": "8"})
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("[user carol] forward_noanswer: write an outside number as a phone dials it "
                      "(the outbound prefix 8 first)", r.text)
        self.assertEqual(self.c.tap_conf(), before)
        r = self.send("/lines", "save_dialling", **{
            "sip.national_prefix": "none", "sip.wan": "yes", "sip.operator": "102"})
        self.assertEqual(r.code, 303, r.text)
        sip = self.c.office.config.sip
        self.assertEqual((sip.outbound_prefix, sip.national_prefix, sip.wan, sip.operator),
                         ("9", "", True, "102"))
        self.assertNotIn("tls_port", self.c.tap_conf())
        self.send("/lines", "save_dialling", **{"sip.wan": None, "sip.operator": ""})
        sip = self.c.office.config.sip
        self.assertEqual((sip.wan, sip.operator), (False, None))


class ErrorTests(LinesCase):
    """Every error at once, next to its field; nothing changed."""

    def assertMarked(self, text, action, key, message):
        self.assertRegex(text, r'class="field invalid">\s*<label for="%s-%s"' % (action, key))
        self.assertIn(message, text)

    def test_add_shows_every_error(self):
        before = self.c.tap_conf()
        config = self.c.office.config
        r = self.send("/lines", "add_group", name="sales2", number="5x", strategy="hunt",
                      ring_timeout="1d", members="101 1x5", fallback="two words")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("Nothing was changed", r.text)
        self.assertMarked(r.text, "add_group", "number", "5x")
        self.assertMarked(r.text, "add_group", "ring_timeout", "out of range")
        self.assertMarked(r.text, "add_group", "members", "1x5")
        self.assertMarked(r.text, "add_group", "fallback", "two words")
        # What was typed is shown again, as typed.
        form = form_of(r.text, "add_group")
        self.assertEqual((form["ring_timeout"], form["strategy"], form["members"]),
                         ("1d", "hunt", "101 1x5"))
        # What the values name is checked once they read: every such error at once too.
        r = self.send("/lines", "add_group", name="sales2", number="101", members="101 105",
                      fallback="nobody")
        self.assertEqual(r.code, 400, r.text)
        self.assertMarked(r.text, "add_group", "number", "already the extension of user alice")
        self.assertMarked(r.text, "add_group", "members", "no user has the extension 105")
        self.assertMarked(r.text, "add_group", "fallback", "no [group nobody]")
        self.assertEqual(self.c.tap_conf(), before)
        self.assertIs(self.c.office.config, config)

    def test_a_bad_name_and_bad_values_together(self):
        before = self.c.tap_conf()
        r = self.send("/lines", "add_trunk", name="Bad Name", registrar="", username="office 2",
                      secret="x", channels="0", register=None)
        self.assertEqual(r.code, 400, r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="add_trunk-name"')
        self.assertMarked(r.text, "add_trunk", "registrar", "is required")
        self.assertMarked(r.text, "add_trunk", "username", "not a SIP user name")
        self.assertMarked(r.text, "add_trunk", "channels", "out of range")
        self.assertNotIn("checked", str(form_of(r.text, "add_trunk").get("register")))
        self.assertNotIn("register", form_of(r.text, "add_trunk"))   # unticked, as sent
        r = self.send("/lines", "add_number", name="5551230000", to="101")
        self.assertEqual(r.code, 400, r.text)
        self.assertMarked(r.text, "add_number", "name", "E.164")
        self.assertEqual(self.c.tap_conf(), before)

    def test_edit_shows_every_error(self):
        before = self.c.tap_conf()
        r = self.send("/lines/edit/trunk/main", "save_trunk", transport="tls",
                      numbers="+15551230000 12345", expires="1w", secret="typed-new-one")
        self.assertEqual(r.code, 400, r.text)
        self.assertMarked(r.text, "save_trunk", "numbers", "not an E.164 number")
        self.assertMarked(r.text, "save_trunk", "expires", "out of range")
        form = form_of(r.text, "save_trunk")
        self.assertEqual((form["transport"], form["expires"], form["secret"]), ("tls", "1w", ""))
        self.assertNotIn("typed-new-one", r.text)
        self.assertEqual(self.c.tap_conf(), before)
        r = self.send("/lines", "save_dialling", **{"sip.country_code": "abc",
                                                    "sip.tls_port": "99999"})
        self.assertEqual(r.code, 400, r.text)
        self.assertMarked(r.text, "save_dialling", "sip.country_code", "abc")
        self.assertMarked(r.text, "save_dialling", "sip.tls_port", "99999")
        self.assertEqual(self.c.tap_conf(), before)


class SecretTests(LinesCase):
    """A trunk's password: set, never shown, kept when left empty."""

    def test_never_in_any_page(self):
        urls = ["/" + p.slug for p in pages.PAGES] + [
            "/lines/edit/trunk/main", "/users/alice", "/backup"]
        for url in urls:
            r = self.c.get(url)
            self.assertEqual(r.code, 200, url)
            self.assertNoSecret(r.text, url)
        # Nor after a form with it comes back with errors.
        r = self.send("/lines", "add_trunk", name="other", registrar="sip.provider.example",
                      username="x", secret="s3cret-too", channels="many")
        self.assertEqual(r.code, 400)
        self.assertNoSecret(r.text, "add_trunk with errors")

    def test_blank_keeps_typed_replaces(self):
        self.send("/lines/edit/trunk/main", "save_trunk", secret="", username="office9")
        trunk = self.c.office.config.trunks["main"]
        self.assertEqual((trunk.username, trunk.secret), ("office9", SECRET))
        self.assertIn("secret = %s\n" % SECRET, self.c.tap_conf())
        self.send("/lines/edit/trunk/main", "save_trunk", secret="brand new")
        self.assertEqual(self.c.office.config.trunks["main"].secret, "brand new")
        self.assertNoSecret(self.c.get("/lines/edit/trunk/main").text, "edit")
        self.assertNotIn("brand new", self.c.get("/lines/edit/trunk/main").text)

    def test_a_new_trunk_needs_one(self):
        r = self.send("/lines", "add_trunk", name="other", registrar="sip.provider.example",
                      username="x")
        self.assertEqual(r.code, 400, r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="add_trunk-secret"')


class UserCallKeysTests(LinesCase):
    """Outside calls, forwarding and do-not-disturb on the user form."""

    def test_shown_in_the_files_words(self):
        form = form_of(self.c.get("/users/carol").text, "save_user")
        self.assertEqual((form["outside"], form["forward_noanswer"], form.get("dnd")),
                         ("yes", "915551112222", None))

    def test_set_and_cleared(self):
        r = self.send("/users/bob", "save_user", outside=None, dnd="yes", forward_busy="101")
        self.assertEqual(r.code, 303, r.text)
        bob = self.c.office.config.users["bob"]
        self.assertEqual((bob.outside, bob.dnd, bob.forward_busy.value), (False, True, "101"))
        section = self.c.tap_conf().split("[user bob]\n")[1].split("\n\n")[0]
        self.assertIn("outside = no\nforward_busy = 101\ndnd = yes", section)
        self.assertNotIn("forward_noanswer", section)
        # Forwarding outside needs outside calls.
        r = self.send("/users/bob", "save_user", forward_always="+15559990000")
        self.assertEqual(r.code, 400, r.text)
        self.assertIn("the user may not call outside", r.text)
        r = self.send("/users/bob", "save_user", outside="yes", dnd=None, forward_busy="",
                      forward_always="+15559990000")
        self.assertEqual(r.code, 303, r.text)
        bob = self.c.office.config.users["bob"]
        self.assertEqual((bob.outside, bob.dnd, bob.forward_busy, bob.forward_always.value),
                         (True, False, None, "+15559990000"))

    def test_errors_at_once(self):
        before = self.c.tap_conf()
        r = self.send("/users/bob", "save_user", forward_busy="x1", forward_always="+1")
        self.assertEqual(r.code, 400, r.text)
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save_user-forward_busy"')
        self.assertRegex(r.text, r'class="field invalid">\s*<label for="save_user-forward_always"')
        self.assertEqual(self.c.tap_conf(), before)

    def test_a_new_user_gets_the_defaults(self):
        form = form_of(self.c.get("/users").text, "add_user")
        self.assertEqual(form.get("outside"), "yes")
        r = self.send("/users", "add_user", name="dave", password="pass-word-1", extension="104")
        self.assertEqual(r.code, 303, r.text)
        self.assertTrue(self.c.office.config.users["dave"].outside)
        section = self.c.tap_conf().split("[user dave]\n")[1]
        self.assertNotIn("outside", section)
        self.assertNotIn("dnd", section)


class LiveTrunkTests(LinesCase):
    """A trunk added in the page registers; changed, it registers again; removed, it stops."""

    def test_follows_the_page(self):
        core = FakeCore(self.c.clock)
        provider = Provider(password="pa55 word")
        core.provider = provider
        dns = {"sip.provider.example": "198.51.100.20", "sip.other.example": "198.51.100.30"}
        manager = TrunkManager(core, self.c.office, lambda host: defer.succeed(dns[host]))
        self.c.office.subscribe(ConfigChanged, lambda e: manager.config_changed(e.old, e.new))
        self.c.ctx.views.trunks = manager
        manager.start()
        self.c.clock.advance(0)
        r = self.send("/lines", "add_trunk", name="other", registrar="sip.other.example",
                      username="office", secret="pa55 word", numbers="+15558880000")
        self.assertEqual(r.code, 303, r.text)
        for _ in range(5):
            self.c.clock.advance(1)
        states = {t["name"]: t["state"] for t in manager.status()}
        self.assertEqual(states["other"], "registered", manager.status())
        self.assertIn("<td>registered</td>", self.c.get("/lines").text)
        sent = len(core.sent)
        self.send("/lines/edit/trunk/other", "save_trunk", username="office-b")
        for _ in range(40):
            self.c.clock.advance(1)
        self.assertGreater(len(core.sent), sent)      # unregistered and registered again
        self.assertEqual(manager.registrations["other"].trunk.username, "office-b")
        self.send("/lines", "delete_trunk", which="other")
        self.c.clock.advance(40)
        self.assertNotIn("other", [t["name"] for t in manager.status()])
