"""
The Status page as the dashboard: alerts from the services' views, the
server's facts, the graphs' wiring to /api/v1/stats and Chart.js, and the
same facts added to /api/v1/status.
"""

import os
import re

from zope.interface import implementer

from allworx.hostfacts import TIME_ERROR, HostFacts
from allworx.interfaces import IStats
from allworx.protocols.web import admin, dashboard
from allworx.tests.core.test_hostfacts import StatVfs, fake_proc
from allworx.tests.web.test_api import ApiCase
from allworx.tests.web.test_pages import LoggedIn
from allworx.tests.webhelpers import AdminClient

NOW = 1800000000.0


class Roomy(StatVfs):
    f_bfree = 500
    f_bavail = 490


class FullDisk(StatVfs):
    f_bfree = 20
    f_bavail = 10


class Rogue:
    message = "Another DHCP server, 192.168.2.99, is answering on the LAN"

    def __str__(self):
        return self.message


class Rogues:
    def warnings(self):
        return [Rogue()]


class Trunks:
    def __init__(self, state):
        self.state = state

    def status(self):
        return [{"name": "provider", "state": self.state, "last_error": "403 Forbidden",
                 "registrar": "sip.example", "since": None, "expires": None,
                 "channels": 2, "channels_in_use": 0}]


class Queue:
    def __init__(self, entries):
        self.items = entries

    def entries(self):
        return list(self.items)


class Certificates:
    def __init__(self, when):
        self.when = when

    def expires(self):
        return self.when


class Wan:
    def lease(self):
        return {"address": "203.0.113.23/24", "router": "203.0.113.1", "server": "203.0.113.1",
                "obtained": NOW - 600, "renews": NOW + 1200, "expires": NOW + 3000}

    def gateway_health(self):
        return {"gateway": "203.0.113.1", "probes": 10, "answered": 9, "loss": 0.1,
                "latency_ms": 2.5, "last_ms": 2.1, "last_at": NOW - 5, "every_s": 10.0,
                "error": None}


@implementer(IStats)
class Stats:
    def series(self):
        return [{"name": "wan.rx_bps", "unit": "bit/s", "path": "/api/v1/stats/wan.rx_bps"}]

    def points(self, name, range="hour"):
        return {"name": name, "unit": "bit/s", "step_s": 10, "points": [[NOW, 1.0]]}


class DashboardCase(LoggedIn):
    def setUp(self):
        self.c = AdminClient(self, self.text)
        self.c.clock.advance(NOW)       # before the login: sessions live on this clock
        self.assertEqual(self.c.login().code, 303)
        self.synced = 0
        self.disk = Roomy
        self.c.ctx.host_facts = HostFacts(self.c.clock, fake_proc(self),
                                          statvfs=lambda path: self.disk(),
                                          clock_state=lambda: {"synchronised": self.synced != TIME_ERROR,
                                                               "source": "kernel"})

    def alerts(self, text=None):
        text = text if text is not None else self.c.get("/status").text
        return re.findall(r'<p class="alert (\w+)" role="alert" data-kind="(\w+)">([^<]*)</p>', text)

    def kinds(self):
        return [kind for _, kind, _ in self.alerts()]


class AlertTests(DashboardCase):
    def test_none_when_all_is_well(self):
        text = self.c.get("/status").text
        self.assertEqual(self.alerts(text), [])
        self.assertIn("No alerts", text)

    def test_rogue_dhcp_server(self):
        self.c.ctx.views.rogues = Rogues()
        [(severity, kind, message)] = self.alerts()
        self.assertEqual((severity, kind), ("critical", "rogue_dhcp"))
        self.assertIn("192.168.2.99", message)

    def test_trunk_down_not_while_registered(self):
        self.c.ctx.views.trunks = Trunks("registered")
        self.assertEqual(self.kinds(), [])
        self.c.ctx.views.trunks = Trunks("auth_failed")
        [(_, kind, message)] = self.alerts()
        self.assertEqual(kind, "trunk_down")
        self.assertIn("Trunk provider is down (auth failed): 403 Forbidden.", message)

    def test_disk_over_ninety_percent(self):
        self.disk = FullDisk
        [(_, kind, message)] = self.alerts()
        self.assertEqual(kind, "disk_full")
        self.assertIn("99% full", message)

    def test_certificate_within_fourteen_days(self):
        self.c.ctx.views.certificates = Certificates(NOW + 15 * 86400)
        self.assertEqual(self.kinds(), [])
        self.c.ctx.views.certificates = Certificates(NOW + 3 * 86400)
        [(severity, kind, message)] = self.alerts()
        self.assertEqual((severity, kind), ("warning", "certificate_expiring"))
        self.assertIn("expires in 3d", message)
        self.c.ctx.views.certificates = Certificates(NOW - 60)
        self.assertEqual(self.alerts()[0][0], "critical")

    def test_mail_queue_stuck(self):
        fresh = {"id": "q1", "created": NOW - 600, "last_error": "", "sender": "a@b",
                 "recipients": ["c@d"], "attempts": 1, "next_attempt": NOW}
        self.c.ctx.views.mail_queue = Queue([fresh])
        self.assertEqual(self.kinds(), [])
        self.c.ctx.views.mail_queue = Queue([dict(fresh, created=NOW - 7300)])
        [(_, kind, message)] = self.alerts()
        self.assertEqual(kind, "mail_queue_stuck")
        self.assertIn("the oldest message has waited 2h 1m", message)
        self.c.ctx.views.mail_queue = Queue([dict(fresh, last_error="550 no such user")])
        [(_, kind, message)] = self.alerts()
        self.assertIn("1 message(s) failed to send (last: 550 no such user)", message)

    def test_clock_not_synchronised(self):
        self.synced = TIME_ERROR
        self.assertEqual(self.kinds(), ["clock_unsynchronised"])

    def test_the_critical_first(self):
        self.synced = TIME_ERROR
        self.c.ctx.views.rogues = Rogues()
        self.assertEqual(self.kinds(), ["rogue_dhcp", "clock_unsynchronised"])

    def test_a_failing_view_does_not_take_the_page_down(self):
        class Broken:
            def expires(self):
                raise RuntimeError("boom")
        self.c.ctx.views.certificates = Broken()
        self.assertEqual(self.c.get("/status").code, 200)
        self.flushLoggedErrors(RuntimeError)


class FactsTests(DashboardCase):
    def test_facts_on_the_page(self):
        self.c.ctx.views.wan = Wan()
        text = self.c.get("/status").text
        self.assertIn("allworx 0.1.0", text)
        self.assertIn("machine 1h 2m", text)
        self.assertRegex(text, r"CPU</dt><dd>20% machine, \?|CPU</dt><dd>20% machine")
        self.assertIn("Memory</dt><dd>5.7 GB of 7.6 GB used (75%); this server 50.0 MB", text)
        self.assertIn("50% used, 1.9 MB free of 3.9 MB", text)
        self.assertIn("WAN lease</dt><dd>203.0.113.23/24 from 203.0.113.1, renews in 20m, "
                      "expires in 50m", text)
        self.assertIn("WAN gateway 203.0.113.1</dt><dd>2.5 ms, 10% loss over the last 10 "
                      "probes (every 10s)", text)
        self.assertIn("Clock</dt><dd>synchronised (kernel)", text)
        # The alerts and facts refresh in place (static/refresh.js).
        self.assertIn('data-refresh="live"', text)
        self.assertIn('<div id="live">', text)

    def test_counts_say_their_window(self):
        class Log:
            counts = {"allow": 10}

            def recent(self, limit=200):
                return []
        self.c.ctx.views.connections = Log()
        text = self.c.get("/status").text
        self.assertRegex(text, r"Flows allow</dt><dd>10 since the server started \S+")
        self.assertRegex(text, r"Users</dt><dd>2<")


class ChartTests(DashboardCase):
    def test_charts_wired_to_the_stats_api(self):
        self.c.ctx.views.stats = Stats()
        text = self.c.get("/status").text
        self.assertIn('<div id="charts" data-ranges="hour day week">', text)
        for title, names in dashboard.CHARTS:
            self.assertIn('<figure class="chart" data-series="%s">' % " ".join(names), text)
        self.assertIn('<script src="/static/vendor/chart.min.js" defer></script>', text)
        self.assertIn('<script src="/static/dashboard.js" defer></script>', text)
        # No inline script: the Content-Security-Policy forbids it.
        self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)", text), [])
        with open(os.path.join(admin.STATIC_DIR, "dashboard.js")) as f:
            script = f.read()
        self.assertIn('getJSON("/api/v1/stats")', script)
        self.assertIn('"range=" + range', script)
        self.assertIn("setInterval", script)

    def test_every_series_of_the_spec_is_charted(self):
        charted = [n for _, names in dashboard.CHARTS for n in names]
        self.assertEqual(sorted(charted), sorted([
            "wan.rx_bps", "wan.tx_bps", "lan.rx_bps", "lan.tx_bps", "firewall.new_flows",
            "firewall.drops", "dns.queries", "dns.cache_hit_ratio", "dhcp.leases", "mail.in",
            "mail.out", "mail.queue", "sip.calls", "sip.registered"]))

    def test_without_chart_js_the_page_says_so(self):
        self.c.ctx.views.stats = Stats()
        self.patch(dashboard, "CHART_JS", self.mktemp())
        text = self.c.get("/status").text
        self.assertIn("The graphs need Chart.js (the Debian package libjs-chart.js)", text)
        self.assertNotIn('id="charts"', text)
        self.assertIsNone(dashboard.chart_js_path())
        self.assertEqual(dashboard.vendor_files().children, {})

    def test_without_stats(self):
        text = self.c.get("/status").text
        self.assertIn("The statistics are not being kept on this server", text)
        self.assertNotIn('id="charts"', text)

    def test_chart_js_served_from_the_debian_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("/*! Chart.js v3.9.1 */")
        self.patch(dashboard, "CHART_JS", path)
        files = AdminClient(self).root.children[b"static"]
        chart = files.children[b"vendor"].children[b"chart.min.js"]
        self.assertEqual(chart.path, os.path.abspath(path))
        self.assertEqual(chart.defaultType, "text/javascript")
        self.assertEqual(list(files.children[b"vendor"].children), [b"chart.min.js"])


class StatusApiTests(ApiCase):
    def setUp(self):
        ApiCase.setUp(self)
        self.c.clock.advance(NOW)
        self.c.ctx.host_facts = HostFacts(self.c.clock, fake_proc(self),
                                          statvfs=lambda path: FullDisk(),
                                          clock_state=lambda: {"synchronised": True,
                                                               "source": "kernel"})

    def test_the_old_keys_stay_and_the_facts_are_added(self):
        self.c.office.set_status("dns", "up", "listening")
        self.c.ctx.views.wan = Wan()
        self.c.ctx.views.certificates = Certificates(NOW + 86400)
        s = self.call("GET", "/status").json
        self.assertEqual(s["wan_address"], "203.0.113.2/24")
        self.assertEqual(s["services"]["dns"]["state"], "up")
        self.assertEqual(s["security_mode"], "firewall-nat")
        self.assertEqual(s["version"], "0.1.0")
        self.assertEqual(s["memory"]["process_rss"], 51200 * 1024)
        self.assertEqual(s["disk"]["used_percent"], 99.0)
        self.assertEqual(s["cpu"]["machine"], 20.0)
        self.assertEqual(s["uptime"]["machine_s"], 3725.5)
        self.assertEqual(s["wan_lease"]["expires"], "2027-01-15T08:50:00Z")
        self.assertEqual(s["gateway"]["latency_ms"], 2.5)
        self.assertEqual(s["gateway"]["last_at"], "2027-01-15T07:59:55Z")
        self.assertEqual(s["certificate_expires"], "2027-01-16T08:00:00Z")
        self.assertEqual(s["clock"]["synchronised"], True)
        self.assertEqual(sorted(a["kind"] for a in s["alerts"]),
                         ["certificate_expiring", "disk_full"])

    def test_without_the_services(self):
        s = self.call("GET", "/status").json
        self.assertIsNone(s["wan_lease"])
        self.assertIsNone(s["gateway"])
        self.assertIsNone(s["certificate_expires"])


class LeaseCountTests(DashboardCase):
    def test_the_lease_count_comes_without_the_list(self):
        class Counted:
            wholes = 0

            def active_leases(self):
                self.wholes += 1
                return [{"mac": "02:00:00:00:00:01"}] * 4000

            def lease_count(self):
                return 4000

            def leases_page(self, offset, limit):
                return []

        table = self.c.ctx.views.leases = Counted()
        text = self.c.get("/status").text
        self.assertIn("<dt>DHCP leases</dt><dd>4000</dd>", text)
        self.assertEqual(table.wholes, 0)

    def test_a_broken_count_leaves_the_page_up(self):
        class Broken:
            def active_leases(self):
                return []

            def lease_count(self):
                raise RuntimeError("boom")

        self.c.ctx.views.leases = Broken()
        text = self.c.get("/status").text
        self.assertIn("<dt>DHCP leases</dt><dd>0</dd>", text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
