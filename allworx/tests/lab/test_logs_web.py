# -*- test-case-name: allworx.tests.lab.test_logs_web -*-
"""
The Logs page of the real server in the virtual office, in headless Chromium
(selenium), as test_web's BrowserTests drive it: the page filters by
service, and tails: an event the server logs after the page loaded (a lab PC
taking a DHCP lease) appears without a reload. Also `GET /api/v1/logs` from
a LAN host with curl. Needs root where `ip netns` works, chromium and
chromedriver; without them it fails and says why.
"""

import json

from allworx.tests.lab import test_web
from allworx.tests.lab.test_web import SERVER, WebLabCase


class LogsBrowserTests(WebLabCase):
    """The Logs page in Chromium."""

    programs = test_web.BrowserTests.programs
    setUp = test_web.BrowserTests.setUp
    chromium = test_web.BrowserTests.chromium
    shot = test_web.BrowserTests.shot
    wait_text = test_web.BrowserTests.wait_text
    wait_url = test_web.BrowserTests.wait_url

    def login(self, path):
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + path)
        self.assertIn("/login", d.current_url)
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url(path)

    def services_shown(self):
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#log-events td.service'))"
            ".map(function (td) { return td.textContent; });")

    def test_filter_by_service_and_tail(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait
        d = self.driver
        self.login("/logs")
        # Every service's events at first: at least the server's start and the web's login.
        shown = set(self.services_shown())
        self.assertIn("web", shown, shown)
        self.assertIn("server", shown, shown)
        self.shot("logs-00-every-service")

        # The service filter: only DHCP's events.
        Select(d.find_element(By.ID, "log-service")).select_by_visible_text("dhcp")
        d.find_element(By.CSS_SELECTOR, "#log-filters button[type=submit]").click()
        WebDriverWait(d, 20).until(lambda d: "service=dhcp" in d.current_url,
                                   "not filtered: %s" % d.current_url)
        self.assertLessEqual(set(self.services_shown()), {"dhcp"})
        # A marker that a reload would lose.
        d.execute_script("window.loadedOnce = 'yes';")
        self.wait_text("Following new events.")

        # The server logs something new: pc2 takes a lease; the page shows it by itself.
        lease = self.lab.dhclient("pc2")
        address = lease["ip_address"]
        granted = "dhcp: %s granted to" % address
        WebDriverWait(d, 20).until(
            lambda d: granted in d.find_element(By.ID, "log-events").text,
            "the lease of %s never appeared on the Logs page" % address)
        self.assertEqual(d.execute_script("return window.loadedOnce;"), "yes",
                         "the page was reloaded")
        self.assertEqual(set(self.services_shown()), {"dhcp"})
        row = d.find_element(By.XPATH, "//table[@id='log-events']//tr[contains(., '%s')]"
                             % granted)
        self.assertIn("dhcp", row.text)
        self.shot("logs-01-dhcp-tail")

        # The API has the same event, and knows its filters.
        rc, code, body, report = self.curl("admin", "https://%s:8080/api/v1/logs?service=dhcp"
                                           "&q=%s" % (SERVER, address), "-u", "admin:admin-demo")
        self.assertEqual((rc, code), (0, 200), report)
        events = json.loads(body)["events"]
        self.assertTrue(events, body)
        self.assertEqual({e["service"] for e in events}, {"dhcp"}, body)
        self.assertIn(granted, [e["message"][:len(granted)] for e in events], body)
        self.assertNotIn("Traceback", self.server.log())
