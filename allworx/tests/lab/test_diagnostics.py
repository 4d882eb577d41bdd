# -*- test-case-name: allworx.tests.lab.test_diagnostics -*-
"""
Diagnostics of the real server in the virtual office (SPEC 20): `curl
--no-buffer` on the admin PC gets ping's lines as they come (the summary
seconds after the first line), the DNS lookup, TCP connect and traceroute
answer with their summaries, a bad target is refused; and in headless
Chromium the Diagnostics page streams a ping of the server's LAN address
into the page. They need root where `ip netns` works; without it, or
without a client, they fail and say why.
"""

import json
import os
import select
import subprocess
import time

from allworx.tests.lab import test_web
from allworx.tests.lab.test_web import SERVER, WebLabCase

INTERNET_HOST = "198.51.100.10"     # the lab's web server on the Internet (port 80)
ADMIN_URL = "https://%s:8080/api/v1/diagnostics/" % SERVER


class CurlTests(WebLabCase):
    """The API from the admin PC with curl: lines stream, each kind ends with its summary."""

    def post(self, kind, body, timeout=40):
        """curl's (exit code, HTTP status, body, report) for one diagnostic."""
        return self.curl(self.server.admin_host, ADMIN_URL + kind, "-u", "admin:admin-demo",
                         "-H", "Content-Type: application/json", "--data", json.dumps(body),
                         timeout=timeout)

    def timed_lines(self, kind, body, timeout=30):
        """[(seconds since the start, line)] as curl --no-buffer printed them."""
        argv = ["curl", "-sS", "--no-buffer", "-m", str(timeout), "-u", "admin:admin-demo",
                *self.server.curl_https(), "-H", "Content-Type: application/json",
                "--data", json.dumps(body), ADMIN_URL + kind]
        proc = self.lab.popen(self.server.admin_host, argv, name="diag-curl",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.lab.stop, proc)
        began = time.monotonic()
        lines, partial = [], b""
        fd = proc.stdout.fileno()
        while time.monotonic() - began < timeout + 5:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            now = time.monotonic() - began
            *complete, partial = (partial + data).split(b"\n")
            lines.extend((now, line.decode("utf-8", "replace")) for line in complete)
        proc.wait(timeout=10)
        report = "curl exit %s, stderr: %s" % (proc.returncode, proc.stderr.read().decode())
        return lines, report

    def test_ping_lines_arrive_before_the_summary(self):
        lines, report = self.timed_lines("ping", {"target": SERVER})
        texts = [text for _, text in lines]
        self.assertTrue(texts, report)
        self.assertRegex(texts[-1], r"^4 sent, 4 received, 0% loss, avg [\d.]+ ms$",
                         "%s\n%s" % (texts, report))
        first = next(t for t, text in lines if "icmp_seq=1" in text)
        summary = lines[-1][0]
        # ping sends one echo a second: a buffered answer would come all at once.
        self.assertGreater(summary - first, 2.0, "%s\n%s" % (lines, report))
        self.assertEqual(texts[0], "$ ping -n -c 4 -W 2 -- %s" % SERVER)

    def test_dns_tcp_traceroute_and_a_bad_target(self):
        rc, code, body, report = self.post("dns", {"target": "www.example.com"})
        self.assertEqual((rc, code), (0, 200), report)
        lines = body.splitlines()
        self.assertTrue(lines[0].startswith("the server's resolver (127.0.0.1): A www.example.com: A "),
                        body)
        self.assertIn("forwarder primary (203.0.113.1)", body)
        self.assertRegex(lines[-1], r"^resolved in [\d.]+ ms$", body)

        rc, code, body, report = self.post("tcp", {"target": INTERNET_HOST, "port": 80})
        self.assertEqual((rc, code), (0, 200), report)
        self.assertRegex(body.splitlines()[-1], r"^connected in [\d.]+ ms$", body)
        rc, code, body, report = self.post("tcp", {"target": SERVER, "port": 9})
        self.assertRegex(body.splitlines()[-1], r"^not connected after [\d.]+ ms: ", body)

        rc, code, body, report = self.post("traceroute", {"target": INTERNET_HOST})
        self.assertEqual((rc, code), (0, 200), report)
        self.assertIn("traceroute to %s" % INTERNET_HOST, body)
        self.assertRegex(body.splitlines()[-1], r"^reached in \d+ hops?$", body)

        rc, code, body, report = self.post("ping", {"target": "-f"})
        self.assertEqual(code, 400, report)
        self.assertEqual(json.loads(body)["errors"][0]["key"], "target", body)
        self.assertNotIn("Traceback", self.server.log())


class DiagnosticsBrowserTests(WebLabCase):
    """Headless Chromium: the Diagnostics page streams a ping's lines into the page."""

    programs = test_web.BrowserTests.programs
    setUp = test_web.BrowserTests.setUp
    chromium = test_web.BrowserTests.chromium
    shot = test_web.BrowserTests.shot
    wait_url = test_web.BrowserTests.wait_url

    def test_ping_streams_into_the_page(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
        d = self.driver
        d.get(self.base + "/diagnostics")
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url("/diagnostics")
        self.assertEqual(d.find_element(By.TAG_NAME, "h1").text, "Diagnostics")
        target = d.find_element(By.ID, "diag-target")
        self.assertEqual(target.get_attribute("value"), SERVER)
        d.find_element(By.ID, "diag-run").click()
        output = d.find_element(By.ID, "diag-output")
        wait = WebDriverWait(d, 20, poll_frequency=0.05)
        # The first echo is in the page while ping still runs: no summary yet.
        early = wait.until(lambda _: "icmp_seq=1" in output.text and output.text,
                           "no ping line in the page: %r" % output.text)
        self.assertNotIn("received", early.splitlines()[-1])
        self.assertNotIn("4 sent", early)
        self.shot("diagnostics-running")
        wait.until(lambda _: "4 sent, 4 received, 0% loss" in output.text,
                   "no summary in the page: %r" % output.text)
        wait.until(lambda _: d.find_element(By.ID, "diag-state").text == "Done.")
        self.assertIn("icmp_seq=4", output.text)
        self.shot("diagnostics-done")

        # A bad target: the page shows the API's error for the field, nothing runs.
        target.clear()
        target.send_keys("-c 1")
        d.find_element(By.ID, "diag-run").click()
        errors = d.find_element(By.ID, "diag-errors")
        wait.until(lambda _: errors.is_displayed() and "target:" in errors.text,
                   "no error shown: %r" % errors.text)
        self.assertEqual(output.text, "")
        self.assertNotIn("Traceback", self.server.log())
