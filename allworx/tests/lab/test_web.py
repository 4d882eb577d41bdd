# -*- test-case-name: allworx.tests.lab.test_web -*-
"""
The admin pages, API, websites and LDAP address book of the real server in
the virtual office (lab prefix `aww`), with real clients: curl, ldapsearch,
ldapwhoami and ldapmodify from the lab's hosts, and headless Chromium (driven
by selenium) through a port forward to the admin port as the admin PC sees it.
They need root where `ip netns` works; without it, or without a client, they
fail and say why.
"""

import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile

from twisted.trial import unittest

from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.lab.fixtures import client_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "aww"
SERVER = "192.168.2.254"
WAN_IP = "203.0.113.2"
BASE = "dc=example,dc=com"

CONF = NETWORK + """
[dhcp]
range = 1-100
lease_time = 1h

[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[ldap]
enabled = yes

[user alice]
full_name = Alice Archer
extension = 101
password = {pw}

[user bob]
full_name = Bob Baker
extension = 102
password = {pw}
""".format(pw=PW_HASH)


def free_port():
    """A TCP port free on the host's loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebLabCase(unittest.TestCase):
    """A lab with the server running; pc1 has a fixed LAN address."""

    programs = ("curl", "ldapsearch", "ldapwhoami", "ldapmodify")
    # What these tests use of the server: each is up before a test goes on.
    SERVICES = ("network", "firewall", "dhcp", "ldap", "web", "mail", "pop3")

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=self.programs)
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(self.SERVICES)
        self.lab.run("pc1", ["ip", "addr", "add", "192.168.2.61/24", "dev", "eth0"])

    def curl(self, host, url, *args, timeout=4):
        """
        curl run in lab host `host`: (exit code, HTTP status or 0, body,
        curl's report for assertion messages).
        """
        if url.startswith("https://"):
            args = tuple(self.server.curl_https()) + args     # verified against the server's CA
        out = self.lab.run(host, ["curl", "-sS", "-m", str(timeout), "-o", "-", "-w",
                                  "\n%{http_code}", *args, url], check=False, timeout=timeout + 10)
        body, _, code = out.stdout.rpartition("\n")
        return out.returncode, int(code or 0), body, client_report(out)

    def client(self, host, argv, **kw):
        """A client run in a lab host, its exit status left to the test: (its
        CompletedProcess, its report for assertion messages)."""
        done = self.lab.run(host, argv, check=False, **kw)
        return done, client_report(done)


class CertificateTests(WebLabCase):
    """
    SPEC 17: every TLS port verifies against the server's own CA (openssl
    s_client from LAN hosts); plain HTTP on the admin port is sent to
    https://; the CA certificate is offered at /ca.crt.
    """

    programs = WebLabCase.programs + ("openssl",)

    def s_client(self, host, port, *check):
        """openssl s_client verifying the server's certificate: (CompletedProcess, report)."""
        return self.client(host, [
            "openssl", "s_client", "-connect", "%s:%d" % (SERVER, port), "-verify_return_error",
            "-CAfile", self.server.ca_file, "-brief", *check], input="", timeout=20)

    def test_tls_ports_verify_against_the_ca(self):
        for host, port, check in (
                ("admin", 8080, ("-verify_ip", SERVER)),
                ("pc1", 465, ("-verify_hostname", "smtp.example.com")),
                ("pc1", 995, ("-verify_hostname", "pop.example.com")),
                ("pc1", 993, ("-verify_hostname", "imap.example.com")),
                ("pc1", 5061, ("-verify_hostname", "allworx.example.com")),
                ("pc1", 443, ("-verify_hostname", "corp.example.com"))):
            done, report = self.s_client(host, port, *check)
            self.assertEqual(done.returncode, 0, "port %d: %s" % (port, report))
            self.assertIn("Verification: OK", done.stdout + done.stderr, report)
            self.assertRegex(done.stdout + done.stderr, r"Protocol version: TLSv1\.[23]", report)
        # A name the certificate does not carry fails: the check is real.
        done, report = self.s_client("pc1", 465, "-verify_hostname", "elsewhere.example.org")
        self.assertNotEqual(done.returncode, 0, report)

    def test_plain_http_redirected_and_ca_offered(self):
        _, status, body, report = self.curl("admin", "http://%s:8080/users" % SERVER, "-D", "-")
        self.assertEqual(status, 301, report)
        self.assertIn("location: https://%s:8080/users" % SERVER, body.lower(), report)
        _, status, body, report = self.curl("pc1", "http://%s/ca.crt" % SERVER)
        self.assertEqual(status, 200, report)
        with open(self.server.ca_file) as f:
            self.assertEqual(body, f.read(), report)
        _, status, body, report = self.curl("pc1", "http://%s/" % SERVER)
        self.assertIn("ca.crt", body, report)


class SidesAndDirectoryTests(WebLabCase):
    """What the LAN and the Internet each see, and the address book with real LDAP clients."""

    def test_api_sides_and_ldap(self):
        # The API wants credentials.
        _, status, body, report = self.curl("admin", "https://%s:8080/api/v1/users" % SERVER)
        self.assertEqual(status, 401, report)
        self.assertEqual(json.loads(body)["error"], "unauthorized", report)
        _, status, body, report = self.curl("admin", "https://%s:8080/api/v1/users" % SERVER,
                                            "-u", "admin:admin-demo")
        self.assertEqual([u["name"] for u in json.loads(body)], ["alice", "bob"], report)
        _, status, body, report = self.curl(
            "admin", "https://%s:8080/api/v1/settings/dhcp" % SERVER, "-u", "admin:admin-demo",
            "-X", "PATCH", "-H", "Content-Type: application/json", "-d", '{"range": "1-300"}')
        self.assertEqual((status, json.loads(body)["field"]), (400, "range"), report)
        # /metrics wants an admin login (or the metrics token), SPEC 11.
        _, status, _, report = self.curl("admin", "https://%s:8080/metrics" % SERVER)
        self.assertEqual(status, 401, report)
        _, status, body, report = self.curl("admin", "https://%s:8080/metrics" % SERVER,
                                            "-u", "admin:admin-demo")
        self.assertEqual(status, 200, report)
        self.assertIn("allworx_office_service_up", body, report)

        # The intranet for the LAN, the public site for the Internet.
        intranet = os.path.join(self.server.data_dir, "intranet")
        with open(os.path.join(intranet, "plans.html"), "w") as f:
            f.write("<p>office plans</p>")
        _, status, body, report = self.curl("pc1", "http://%s/" % SERVER)
        self.assertEqual(status, 200, report)
        self.assertIn("corp.example.com", body, report)
        _, status, body, report = self.curl("pc1", "http://%s/plans.html" % SERVER)
        self.assertEqual((status, body), (200, "<p>office plans</p>"), report)
        _, status, body, report = self.curl("inet", "http://%s/" % WAN_IP)
        self.assertEqual(status, 200, report)
        self.assertIn("www.example.com", body, report)
        self.assertNotIn("corp.example.com", body, report)
        _, status, body, report = self.curl("inet", "http://%s/plans.html" % WAN_IP)
        self.assertEqual(status, 404, report)
        _, status, _, report = self.curl("inet", "http://%s/../intranet/plans.html" % WAN_IP,
                                         "--path-as-is")
        self.assertIn(status, (400, 404), report)

        # From the Internet the admin port and LDAP do not answer.
        rc, status, _, report = self.curl("inet", "http://%s:8080/login" % WAN_IP, timeout=3)
        self.assertNotEqual(rc, 0, report)
        self.assertEqual(status, 0, report)
        rc, status, _, report = self.curl("inet", "http://%s:8080/api/v1/status" % WAN_IP, "-u",
                                          "admin:admin-demo", timeout=3)
        self.assertEqual(status, 0, report)
        out, report = self.client("inet", ["ldapsearch", "-x", "-o", "nettimeout=3", "-H",
                                           "ldap://%s" % WAN_IP, "-b", BASE, "(uid=alice)"],
                                  timeout=15)
        self.assertNotEqual(out.returncode, 0, report)
        self.assertNotIn("alice@example.com", out.stdout, report)

        # ldapsearch from a PC finds a user by name, with mail and phone number.
        out = self.lab.run("pc1", ["ldapsearch", "-x", "-LLL", "-H", "ldap://%s" % SERVER,
                                   "-b", BASE, "(cn=alice*)", "mail", "telephoneNumber"])
        report = client_report(out)
        self.assertIn("dn: uid=alice,ou=people,%s" % BASE, out.stdout, report)
        self.assertIn("mail: alice@example.com", out.stdout, report)
        self.assertIn("telephoneNumber: 101", out.stdout, report)
        self.assertNotIn("bob", out.stdout, report)

        # ldapwhoami binds with the right password only.
        alice = "uid=alice,ou=people,%s" % BASE
        out = self.lab.run("pc1", ["ldapwhoami", "-x", "-H", "ldap://%s" % SERVER, "-D", alice,
                                   "-w", "admin-demo"])
        self.assertEqual(out.stdout.strip(), "dn:" + alice, client_report(out))
        out, report = self.client("pc1", ["ldapwhoami", "-x", "-H", "ldap://%s" % SERVER,
                                          "-D", alice, "-w", "wrong"])
        self.assertEqual(out.returncode, 49, report)  # invalidCredentials
        # Read-only: a modify is refused.
        ldif = "dn: %s\nchangetype: modify\nreplace: mail\nmail: x@evil.example\n" % alice
        out, report = self.client("pc1", ["ldapmodify", "-x", "-H", "ldap://%s" % SERVER,
                                          "-D", alice, "-w", "admin-demo"], input=ldif)
        self.assertEqual(out.returncode, 50, report)  # insufficientAccessRights

        # The directory follows a change made through the API, live.
        _, status, body, report = self.curl(
            "admin", "https://%s:8080/api/v1/users" % SERVER, "-u", "admin:admin-demo",
            "-X", "POST", "-H", "Content-Type: application/json", "-d",
            json.dumps({"name": "erin", "full_name": "Erin Eng", "password": "erin-pw-1",
                        "extension": "105"}))
        self.assertEqual(status, 201, report)
        out = self.lab.run("pc1", ["ldapsearch", "-x", "-LLL", "-H", "ldap://%s" % SERVER,
                                   "-b", BASE, "(sn=Eng)", "telephoneNumber"])
        self.assertIn("telephoneNumber: 105", out.stdout, client_report(out))
        out = self.lab.run("pc1", ["ldapwhoami", "-x", "-H", "ldap://%s" % SERVER, "-D",
                                   "uid=erin,ou=people,%s" % BASE, "-w", "erin-pw-1"])
        self.assertIn("uid=erin", out.stdout, client_report(out))
        self.assertNotIn("Traceback", self.server.log())


class BrowserTests(WebLabCase):
    """Headless Chromium logs in, changes the DHCP range and adds a user."""

    programs = WebLabCase.programs + ("chromium", "chromedriver")

    def setUp(self):
        if importlib.util.find_spec("selenium") is None:
            self.fail("selenium is not installed (pip install -e '.[test]')")
        WebLabCase.setUp(self)
        self.port = free_port()
        self.lab.forward_port(self.port, "admin", SERVER, 8080)
        self.base = "https://127.0.0.1:%d" % self.port   # the admin port speaks HTTPS
        self.shots = os.path.abspath("screenshots")
        os.makedirs(self.shots, exist_ok=True)
        print("\nscreenshots in %s" % self.shots)
        self.driver = self.chromium()

    def chromium(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        profile = tempfile.mkdtemp(prefix="aww-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                     # the forwarded port is 127.0.0.1, not a name the certificate carries
                     "--ignore-certificate-errors",
                     "--user-data-dir=" + profile):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.addCleanup(driver.quit)
        driver.set_page_load_timeout(20)
        return driver

    def shot(self, name):
        """A screenshot of the whole page (the window grows to fit it for the moment)."""
        d = self.driver
        size = d.get_window_size()
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(size["width"], min(max(height + 140, size["height"]), 6000))
        d.save_screenshot(os.path.join(self.shots, name + ".png"))
        d.set_window_size(size["width"], size["height"])

    def field(self, name, form_action=None):
        from selenium.webdriver.common.by import By
        scope = self.driver
        if form_action:
            scope = self.driver.find_element(
                By.XPATH, "//form[input[@name='action' and @value='%s']]" % form_action)
        return scope.find_element(By.NAME, name)

    def submit(self, form_action):
        from selenium.webdriver.common.by import By
        form = self.driver.find_element(
            By.XPATH, "//form[input[@name='action' and @value='%s']]" % form_action)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def tap_conf(self):
        with open(self.server.conf_path) as f:
            return f.read()

    def wait_text(self, text, timeout=20):
        """Wait until the page shows `text` (a form post hashes passwords: it takes a moment)."""
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(self.driver, timeout).until(lambda d: text in d.page_source,
                                                  "no %r on %s" % (text, self.driver.current_url))

    def wait_url(self, ending, timeout=20):
        """Wait until the browser has loaded the page at path `ending`. The
        path alone is compared (the login's `/login?next=/status` must not pass
        for `/status`) and the document must be complete, so that the next
        navigation does not race the one still in flight."""
        from urllib.parse import urlsplit
        from selenium.webdriver.support.ui import WebDriverWait

        def there(d):
            url = urlsplit(d.current_url)
            where = url.path + ("?" + url.query if "?" in ending else "")
            return (where.endswith(ending)
                    and d.execute_script("return document.readyState") == "complete")
        WebDriverWait(self.driver, timeout).until(
            there, "not at %s: %s" % (ending, self.driver.current_url))

    def test_login_change_dhcp_range_add_user(self):
        from selenium.webdriver.common.by import By
        d = self.driver
        d.get(self.base + "/dhcp")
        self.assertIn("/login", d.current_url)
        self.shot("00-login")
        # A wrong password first: refused, with a message.
        d.find_element(By.NAME, "password").send_keys("wrong")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_text("Wrong user name or password")
        d.find_element(By.NAME, "password").send_keys("admin-demo")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait_url("/dhcp")
        self.assertTrue(d.get_cookie("allworx_session")["httpOnly"])

        # Some life for the live tables: a PC takes a lease and browses the Internet.
        lease = self.lab.dhclient("pc1")
        rc, _, _, report = self.curl("pc1", "http://198.51.100.10/whoami")
        self.assertEqual(rc, 0, report)
        # Every page renders; a screenshot of each.
        from allworx.protocols.web.pages import PAGES
        for n, page in enumerate(PAGES, 1):
            d.get(self.base + "/" + page.slug)
            self.assertEqual(d.find_element(By.TAG_NAME, "h1").text, page.title, page.slug)
            self.shot("%02d-%s" % (n, page.slug))
        d.get(self.base + "/users/alice")
        self.shot("20-user-alice")
        d.get(self.base + "/dhcp")
        self.assertIn(lease["ip_address"], d.find_element(By.ID, "leases").text)
        d.get(self.base + "/connections")
        self.assertIn("198.51.100.10:80", d.find_element(By.ID, "connlog").text)

        # A bad DHCP range: the field is marked, nothing changes.
        before = self.tap_conf()
        d.get(self.base + "/dhcp")
        rng = self.field("dhcp.range", "save")
        rng.clear()
        rng.send_keys("1-300")
        self.submit("save")
        self.wait_text("Nothing was changed")
        invalid = d.find_element(By.CSS_SELECTOR, ".field.invalid input")
        self.assertEqual(invalid.get_attribute("name"), "dhcp.range")
        self.shot("21-dhcp-error")
        self.assertEqual(self.tap_conf(), before)

        # A good one applies at once and is on disk.
        rng = self.field("dhcp.range", "save")
        rng.clear()
        rng.send_keys("120-140")
        self.submit("save")
        self.wait_text("Servers - DHCP saved.")
        self.assertIn("range = 120-140", self.tap_conf())
        self.shot("22-dhcp-saved")

        # Add a user.
        d.get(self.base + "/users")
        for name, value in (("name", "dave"), ("full_name", "Dave Dunn"),
                            ("password", "dave-secret-1"), ("extension", "104"),
                            ("voicemail_pin", "4567")):
            self.field(name, "add_user").send_keys(value)
        self.submit("add_user")
        self.wait_text("Added user dave.")
        self.assertIn("[user dave]", self.tap_conf())
        self.assertNotIn("dave-secret-1", self.tap_conf())
        self.shot("23-user-added")

        # On a phone-sized screen the menu and forms still fit.
        d.set_window_size(390, 844)
        d.get(self.base + "/users")
        self.shot("24-users-phone")
        width = d.execute_script("return document.documentElement.scrollWidth")
        self.assertLessEqual(width, 420)
        d.set_window_size(1280, 1000)

        # Log out: the pages want a login again.
        d.find_element(By.CSS_SELECTOR, "form.logout button").click()
        self.wait_url("/login")
        d.get(self.base + "/status")
        self.assertIn("/login", d.current_url)

        # A lab PC sees the change: the directory has dave at once ...
        out = self.lab.run("pc1", ["ldapsearch", "-x", "-LLL", "-H", "ldap://%s" % SERVER,
                                   "-b", BASE, "(uid=dave)", "telephoneNumber"])
        self.assertIn("telephoneNumber: 104", out.stdout, client_report(out))
        # ... POP3 logs in as dave ...
        code = ("import poplib;p=poplib.POP3(%r,110,timeout=5);p.user('dave');"
                "p.pass_('dave-secret-1');print(p.stat()[0]);p.quit()" % SERVER)
        out, report = self.client("pc1", [sys.executable, "-c", code])
        self.assertEqual(out.stdout.strip(), "0", report)
        # ... and a new PC gets a lease in the new range.
        lease = self.lab.dhclient("pc2")
        last = int(lease["ip_address"].split(".")[-1])
        self.assertTrue(120 <= last <= 140, lease["ip_address"])
        self.assertNotIn("Traceback", self.server.log())
