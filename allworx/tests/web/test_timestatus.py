"""
The time server on the dashboard (allworx.protocols.web.timestatus): the
"Time server" line, the clock alerts from the time server's own truth, and
`time` in /api/v1/status; fed by a real TimeSource and SNTP client.
"""

from twisted.internet import defer

from allworx.protocols.ntp import service as ntp
from allworx.protocols.ntp.client import SntpClient
from allworx.tests.ntp.test_client import UdpReactor, server_reply
from allworx.tests.ntp.test_service import SYNCED_KERNEL, UNSYNCED_KERNEL
from allworx.hostfacts import HostFacts
from allworx.tests.core.test_hostfacts import fake_proc
from allworx.tests.web import test_dashboard, test_pages
from allworx.tests.web.test_api import ApiCase

NOW = test_dashboard.NOW


class Time:
    """A TimeSource on its own fake reactor, polling ntp.isp.example."""

    def __init__(self, test, kernel, servers=("ntp.isp.example",)):
        self.reactor = UdpReactor()
        self.reactor.advance(NOW - 30)
        self.client = SntpClient(self.reactor, resolve=lambda n: defer.succeed("203.0.113.1"))
        self.source = ntp.TimeSource(self.reactor, self.client, lambda: kernel)
        self.source.running = True
        self.client.start(servers)
        test.addCleanup(self.client.stop)
        self.reactor.advance(0)

    def answer(self, offset):
        data, _ = self.client.transport.sent[-1]
        self.reactor.advance(0.002)
        self.client.datagramReceived(server_reply(data, self.reactor.seconds(), offset=offset,
                                                  stratum=1, after=0.002), ("203.0.113.1", 123))

    def status(self):
        return self.source.status()


class PageTests(test_dashboard.DashboardCase):

    def row(self):
        text = self.c.get("/status").text
        start = text.index("Time server</dt><dd>") + len("Time server</dt><dd>")
        return text[start:text.index("</dd>", start)]

    def test_following_an_upstream(self):
        time = self.c.ctx.views.time = Time(self, UNSYNCED_KERNEL)
        time.answer(0.25)
        self.assertEqual(self.row(), "following ntp.isp.example (203.0.113.1, stratum 1): host "
                         "clock offset +0.250 s, last polled 30s ago; serving stratum 2")
        # The kernel's word does not matter while the upstream answers.
        self.synced = 5     # TIME_ERROR
        self.assertEqual(self.kinds(), [])

    def test_far_off_host_clock_said(self):
        time = self.c.ctx.views.time = Time(self, SYNCED_KERNEL)
        time.answer(-2.5)
        [(severity, kind, message)] = self.alerts()
        self.assertEqual((severity, kind), ("warning", "clock_offset"))
        self.assertIn("The host clock is -2.5 s off the time server ntp.isp.example", message)

    def test_no_upstream_answering_and_unsynchronised(self):
        time = self.c.ctx.views.time = Time(self, UNSYNCED_KERNEL)
        time.reactor.advance(4)
        self.assertEqual(self.row(), (
            "no upstream answered its last 3 polls (ntp.isp.example: no answer in 4 s); serving "
            "the host clock as not synchronised (leap indicator 3, stratum 16): the kernel says "
            "it is unsynchronised"))
        [(_, kind, message)] = self.alerts()
        self.assertEqual(kind, "clock_unsynchronised")
        self.assertIn("the time server tells LAN clients not to trust it", message)

    def test_no_upstream_named_and_synchronised(self):
        self.c.ctx.views.time = Time(self, SYNCED_KERNEL, servers=())
        self.assertEqual(self.row(), "no upstream named in [ntp] servers; serving the host clock "
                         "(synchronised, says the kernel) at stratum 3")
        self.assertEqual(self.kinds(), [])

    def test_time_server_off(self):
        time = self.c.ctx.views.time = Time(self, UNSYNCED_KERNEL, servers=())
        time.source.running = False
        self.assertEqual(self.row(), "off ([ntp] enabled = no)")
        self.synced = 5     # then the kernel's word alone
        self.assertEqual(self.kinds(), ["clock_unsynchronised"])


class ApiTests(ApiCase):

    def setUp(self):
        ApiCase.setUp(self)
        self.c.clock.advance(NOW)
        self.c.ctx.host_facts = HostFacts(self.c.clock, fake_proc(self),
                                          statvfs=lambda path: test_dashboard.Roomy(),
                                          clock_state=lambda: {"synchronised": True,
                                                               "source": "kernel"})

    def test_time_in_the_status(self):
        time = self.c.ctx.views.time = Time(self, UNSYNCED_KERNEL)
        time.answer(0.25)
        s = self.call("GET", "/status").json["time"]
        self.assertEqual((s["source"], s["upstream"], s["address"], s["upstream_stratum"],
                          s["stratum"], s["leap"], s["reference_id"]),
                         ("upstream", "ntp.isp.example", "203.0.113.1", 1, 2, 0, "203.0.113.1"))
        self.assertAlmostEqual(s["offset_s"], 0.25, places=5)
        [server] = s["servers"]
        self.assertEqual((server["last_poll"], server["reach"], server["poll_s"]),
                         ("2027-01-15T07:59:30Z", "001", 64))
        self.assertTrue(server["last_answer"].startswith("2027-01-15T07:59:30"))


class ServicesFormTests(test_pages.LoggedIn):
    """`[ntp] servers` on the Services page: shown, saved, a bad name named."""

    FORM = {"ntp.enabled": "yes", "web.admin_port": "8080", "web.http_port": "80",
            "sip.voicemail_timeout": "20", "sip.voicemail_number": "400",
            "sip.rtp_ports": "10000-20000"}

    def test_saved_and_shown(self):
        self.assertIn('name="ntp.servers"', self.c.get("/services").text)
        r = self.submit("/services", "save", **dict(self.FORM, **{
            "ntp.servers": "203.0.113.1 ntp.isp.example"}))
        self.assertEqual(r.code, 303, r.text)
        self.assertEqual(self.c.office.config.ntp.servers, ("203.0.113.1", "ntp.isp.example"))
        self.assertIn("servers = 203.0.113.1 ntp.isp.example", self.c.tap_conf())
        self.assertIn('value="203.0.113.1 ntp.isp.example"', self.c.get("/services").text)

    def test_bad_name_refused(self):
        before = self.c.tap_conf()
        r = self.submit("/services", "save", **dict(self.FORM, **{"ntp.servers": "ntp_isp"}))
        self.assertEqual(r.code, 400)
        self.assertIn("&#x27;ntp_isp&#x27; is not a valid host name", r.text.replace("&#39;", "&#x27;"))
        self.assertEqual(self.c.tap_conf(), before)
