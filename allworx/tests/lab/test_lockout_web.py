# -*- test-case-name: allworx.tests.lab.test_lockout_web -*-
"""
The log-in lock-out is by user (SPEC 10, issue 19 item 3), in headless
Chromium through the lab's port forward, so every login comes from the one
address behind it: alice's five typos lock alice there and the page says
until when; bob, an admin too, logs in from the same address; he sees the
lock-out on the Users page and ends it, and alice logs in. Needs root where
`ip netns` works, chromium and chromedriver; without them it fails and says why.
"""

import re
import time

from allworx.tests.confs import PW_HASH
from allworx.tests.lab import test_web
from allworx.tests.lab.fixtures import start_lab
from allworx.tests.lab.server import LabServer
from allworx.tests.lab.test_web import CONF, PREFIX, WebLabCase

# The test office with admins by the new story (no [web] admin_password):
# admin (whom LabServer's readiness checks log in as), alice and bob.
ADMINS = CONF.replace("[web]\nadmin_password = %s\n" % PW_HASH,
                      "[user admin]\npassword = %s\nadmin = yes\n" % PW_HASH).replace(
    "[user alice]\n", "[user alice]\nadmin = yes\n").replace(
    "[user bob]\n", "[user bob]\nadmin = yes\n")


class LockoutBrowserTests(WebLabCase):
    """The login page in Chromium, from one address for everyone."""

    programs = test_web.BrowserTests.programs
    SERVICES = ("network", "firewall", "web")
    chromium = test_web.BrowserTests.chromium
    shot = test_web.BrowserTests.shot
    wait_text = test_web.BrowserTests.wait_text
    wait_url = test_web.BrowserTests.wait_url

    def setUp(self):
        self.assertIn("admin = yes", ADMINS)
        self.assertNotIn("admin_password", ADMINS)
        self.lab = start_lab(self, prefix=PREFIX, programs=self.programs)
        self.server = LabServer(self.lab, ADMINS)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(self.SERVICES)
        self._browser()

    def _browser(self):
        import importlib.util
        import os
        if importlib.util.find_spec("selenium") is None:
            self.fail("selenium is not installed (pip install -e '.[test]')")
        self.port = test_web.free_port()
        self.lab.forward_port(self.port, "admin", test_web.SERVER, 8080)
        self.base = "https://127.0.0.1:%d" % self.port
        self.shots = os.path.abspath("screenshots")
        os.makedirs(self.shots, exist_ok=True)
        self.driver = self.chromium()

    def log_in(self, user, password):
        """Fill and send the login form; the message shown, if any."""
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + "/login")
        name = d.find_element(By.NAME, "username")
        name.clear()
        name.send_keys(user)
        d.find_element(By.NAME, "password").send_keys(password)
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()

    def message(self):
        from selenium.webdriver.common.by import By
        found = self.driver.find_elements(By.CSS_SELECTOR, ".login .errors")
        return found[0].text if found else ""

    def test_five_typos_lock_that_user_not_the_colleagues(self):
        from selenium.webdriver.common.by import By
        d = self.driver
        for n in range(5):
            self.log_in("alice", "typo-%d" % n)
            self.wait_text("Wrong user name or password", timeout=40)
        self.log_in("alice", "admin-demo")          # the right one, too late
        self.wait_text("locked until", timeout=40)
        text = self.message()
        self.shot("lockout-01-alice-locked")
        m = re.search(r"Too many failed logins for alice from (\S+): locked until "
                      r"(\d\d):(\d\d) UTC", text)
        self.assertIsNotNone(m, text)
        # About 15 minutes from now, in UTC.
        now = time.gmtime()
        lifts = (int(m.group(2)) * 60 + int(m.group(3)) - (now.tm_hour * 60 + now.tm_min)) % 1440
        self.assertIn(lifts, (14, 15, 16), text)
        address = m.group(1)

        # bob, behind the same address, logs in.
        self.log_in("bob", "admin-demo")
        self.wait_url("/status", timeout=40)
        self.assertNotIn("locked until", d.page_source)

        # He sees alice's lock-out on the Users page (at that address) and ends it.
        d.get(self.base + "/users")
        self.wait_text("alice at %s" % address)
        self.shot("lockout-02-users-page")
        form = d.find_element(By.XPATH, "//form[input[@name='action' and @value='unlock']"
                                        " and input[@name='user' and @value='alice']]")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait_text("Unlocked alice at %s." % address)
        # Logged out, alice logs in with her right password.
        d.delete_all_cookies()
        self.log_in("alice", "admin-demo")
        self.wait_url("/status", timeout=40)
        self.assertNotIn("Traceback", self.server.log())
