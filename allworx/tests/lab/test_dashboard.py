# -*- test-case-name: allworx.tests.lab.test_dashboard -*-
"""
The dashboard in headless Chromium against the real server in the virtual
office: the Status page's graphs are drawn by Chart.js from /api/v1/stats
with data points, and take new points every 10 seconds without a reload.
Needs root where `ip netns` works, chromium, chromedriver and selenium (and
the stats store and API of SPEC 20); without one it fails and says why.
"""

# The module, not its classes: a TestCase imported here would run here too.
from allworx.tests.lab import test_web

CHART = 'figure.chart[data-series="wan.rx_bps wan.tx_bps"]'

# What the page's charts hold now, read in the page (Chart.js 3's registry).
READ_CHART = """
var figure = document.querySelector(arguments[0]);
var box = document.getElementById("charts");
var chart = figure && window.Chart && Chart.getChart(figure.querySelector("canvas"));
if (!chart) return null;
var data = chart.data.datasets[0].data;
return {points: data.length, last: data.length ? data[data.length - 1].x : null,
        refreshes: Number(box.getAttribute("data-refreshes") || 0),
        note: box.querySelector(".chart-note").hidden ? "" :
              box.querySelector(".chart-note").textContent,
        marker: window.allworxNoReload || null};
"""


class DashboardBrowserTests(test_web.WebLabCase):
    """Chromium on the Status page: charts with points, updated in place."""

    programs = test_web.BrowserTests.programs
    setUp = test_web.BrowserTests.setUp
    chromium = test_web.BrowserTests.chromium
    shot = test_web.BrowserTests.shot
    wait_url = test_web.BrowserTests.wait_url

    def login(self, path):
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + path)
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url(path)

    def wait_chart(self, check, what, timeout):
        """The chart's state once `check(state)` holds; fails naming `what` and the last state."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        seen = []

        def ready(d):
            state = d.execute_script(READ_CHART, CHART)
            seen.append(state)
            return state if state and check(state) else False
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(ready)
        except TimeoutException:
            self.shot("dashboard-failed")
            self.fail("%s within %ss; last chart state %r; the server's log ends:\n%s" % (
                what, timeout, seen[-1] if seen else None, self.server.log()[-3000:]))

    def test_charts_render_with_points_and_update_without_reload(self):
        # Some traffic through the office for the graphs.
        self.lab.dhclient("pc1")
        rc, _, _, report = self.curl("pc1", "http://198.51.100.10/whoami")
        self.assertEqual(rc, 0, report)
        self.login("/status")
        d = self.driver
        self.assertEqual(d.execute_script("return typeof Chart"), "function",
                         "Chart.js was not loaded from /static/vendor/chart.min.js")
        first = self.wait_chart(lambda s: s["points"] > 0 and s["refreshes"] >= 1,
                                "no data points drawn", 40)
        self.assertEqual(first["note"], "")
        self.shot("dashboard-status")
        # A marker in the page: a reload would lose it.
        d.execute_script("window.allworxNoReload = 'still here';")
        later = self.wait_chart(
            lambda s: s["refreshes"] > first["refreshes"] and (
                s["last"] > first["last"] or s["points"] > first["points"]),
            "the chart did not take a new point", 45)
        self.assertEqual(later["marker"], "still here", "the page was reloaded")
        # The facts and alerts are on the same page.
        text = d.find_element("id", "live").text
        self.assertIn("Version", text)
        self.assertIn("WAN gateway", text)
        # The range buttons fetch the day's points.
        d.find_element("css selector", 'button.range[data-range="day"]').click()
        self.wait_chart(lambda s: s["refreshes"] > later["refreshes"],
                        "the day's range was not drawn", 20)
        self.shot("dashboard-day")
