# -*- test-case-name: allworx.tests.lab.test_asprinted_web -*-
"""
Issue 19's "as printed" in headless Chromium against the real server in the
virtual office (test_web's lab and browser): every settings page saved
unchanged leaves tap.conf byte for byte; units keep the admin's words (`1d`,
`25M`) through a change; several mistakes in one form are all reported and
nothing changes; the styled 404, logged in (menu) and not (login link); the
menu on one line at 1280 px. Needs root where `ip netns` works, chromium and
chromedriver; without them it fails and says why.
"""

from allworx.tests.lab import test_web
from allworx.tests.lab.fixtures import start_lab
from allworx.tests.lab.server import LabServer
from allworx.tests.lab.test_web import CONF, PREFIX, SERVER, WebLabCase, free_port

# The admin's own words: a day, a size, a comment, spacing of their own.
WORDS = CONF.replace("lease_time = 1h\n", "# a day\nlease_time = 1d\n") + """
[mail]
max_message_size = 25M
fetch_interval =  5m
"""

SETTINGS_PAGES = ("/network", "/security", "/dhcp", "/dns", "/services", "/mailsecurity",
                  "/lines", "/sites", "/backup")


class AsPrintedBrowserTests(WebLabCase):
    """The pages keep the admin's words, report every mistake, and hold together."""

    programs = test_web.BrowserTests.programs
    chromium = test_web.BrowserTests.chromium
    shot = test_web.BrowserTests.shot
    field = test_web.BrowserTests.field
    submit = test_web.BrowserTests.submit
    tap_conf = test_web.BrowserTests.tap_conf
    wait_text = test_web.BrowserTests.wait_text
    wait_url = test_web.BrowserTests.wait_url

    def setUp(self):
        import importlib.util
        import os
        if importlib.util.find_spec("selenium") is None:
            self.fail("selenium is not installed (pip install -e '.[test]')")
        self.lab = start_lab(self, prefix=PREFIX, programs=self.programs)
        self.server = LabServer(self.lab, WORDS)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(self.SERVICES)
        self.port = free_port()
        self.lab.forward_port(self.port, "admin", SERVER, 8080)
        self.base = "https://127.0.0.1:%d" % self.port
        self.shots = os.path.abspath("screenshots")
        os.makedirs(self.shots, exist_ok=True)
        self.driver = self.chromium()

    def login(self, path):
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + path)
        self.assertIn("/login", d.current_url)
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url(path)

    def save_as_shown(self, path, action="save"):
        self.driver.get(self.base + path)
        self.submit(action)
        self.wait_text('class="notice"')

    def test_pages_keep_the_words(self):
        from selenium.webdriver.common.by import By
        d = self.driver
        before = self.tap_conf()
        self.login("/dhcp")
        # Every settings page saved as shown: not a byte changes.
        for path in SETTINGS_PAGES:
            action = "save_dialling" if path == "/lines" else "save"
            self.save_as_shown(path, action)
            self.assertEqual(self.tap_conf(), before, path)
        # The units as written, in the page.
        d.get(self.base + "/dhcp")
        self.assertEqual(self.field("dhcp.lease_time", "save").get_attribute("value"), "1d")
        d.get(self.base + "/services")
        self.assertEqual(self.field("mail.max_message_size", "save").get_attribute("value"), "25M")
        # One change: the rest keeps its words.
        d.get(self.base + "/dhcp")
        rng = self.field("dhcp.range", "save")
        rng.clear()
        rng.send_keys("1-50")
        self.submit("save")
        self.wait_text("saved")
        text = self.tap_conf()
        self.assertIn("range = 1-50\n# a day\nlease_time = 1d\n", text)
        self.assertIn("max_message_size = 25M\nfetch_interval =  5m\n", text)
        d.get(self.base + "/dhcp")
        self.assertEqual(self.field("dhcp.lease_time", "save").get_attribute("value"), "1d")
        self.shot("asprinted-01-dhcp")

        # Several mistakes in one form: every one reported, each field marked, nothing changed.
        before = self.tap_conf()
        for name, bad in (("dhcp.range", "1-300"), ("dhcp.lease_time", "soon")):
            box = self.field(name, "save")
            box.clear()
            box.send_keys(bad)
        self.submit("save")
        self.wait_text("Nothing was changed")
        marked = {e.get_attribute("name")
                  for e in d.find_elements(By.CSS_SELECTOR, ".field.invalid input")}
        self.assertEqual(marked, {"dhcp.range", "dhcp.lease_time"})
        summary = d.find_element(By.CSS_SELECTOR, "div.errors").text
        self.assertIn("lease_time", summary)
        self.assertIn("range", summary)
        self.assertEqual(self.tap_conf(), before)
        self.shot("asprinted-02-every-mistake")

    def heading_once_loaded(self, path, timeout=10):
        """The page's h1 once the browser shows `path` (a navigation still in
        flight, the login's redirect, must not be read in its place)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
        d = self.driver
        WebDriverWait(d, timeout).until(
            lambda d: d.current_url.endswith(path)
            and d.execute_script("return document.readyState") == "complete",
            "not at %s: %s" % (path, d.current_url))
        return d.find_element(By.TAG_NAME, "h1").text

    def test_not_found_and_the_menu(self):
        from selenium.webdriver.common.by import By
        d = self.driver
        # Not logged in: the styled page with a link to the login.
        for path in ("/nope", "/status/extra", "/static/nope.css"):
            d.get(self.base + path)
            self.assertEqual(self.heading_once_loaded(path), "Not found", path)
            d.find_element(By.LINK_TEXT, "Log in")
            self.assertFalse(d.find_elements(By.CSS_SELECTOR, "nav.menu"), path)
        self.shot("asprinted-03-404-logged-out")
        self.login("/status")
        for path in ("/nope", "/status/extra", "/static/nope.css"):
            d.get(self.base + path)
            self.assertEqual(self.heading_once_loaded(path), "Not found", path)
            self.assertTrue(d.find_elements(By.CSS_SELECTOR, "nav.menu a"), path)
        self.shot("asprinted-04-404-logged-in")
        # The menu on one line at 1280 px: every link at the same height, nothing scrolled off.
        d.set_window_size(1280, 1000)
        d.get(self.base + "/status")
        tops, overflow = d.execute_script(
            "var links = document.querySelectorAll('nav.menu a');"
            "var ul = document.querySelector('nav.menu ul');"
            "return [Array.from(links).map(function (a) { return a.getBoundingClientRect().top; }),"
            "        ul.scrollWidth - ul.clientWidth];")
        self.assertEqual(len(set(tops)), 1, tops)
        self.assertLessEqual(overflow, 0)
