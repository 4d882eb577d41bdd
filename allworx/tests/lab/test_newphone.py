# -*- test-case-name: allworx.tests.lab.test_newphone -*-
"""
A phone nobody has set up yet, end to end in the virtual office (lab prefix
`awh`, SPEC 19): phone2 (baresip, with no [phone] section for its MAC)
gets its DHCP lease with a phone's vendor class and option 66, asks for its
`{mac}.baresip` and gets 404; `/api/v1/phones` and the Phones page show it
as a new phone; the admin gives it to bob with `POST /api/v1/phones/{mac}`;
it asks again, gets bob's extension with its own secret, starts baresip from
that file (as the lab's phones do) and registers. Needs root where `ip
netns` works.
"""

import json
import re

from twisted.trial import unittest

from allworx.lab import labphones
from allworx.lab.processes import LabError
from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.lab.fixtures import client_report, process_report, start_lab, wait_until
from allworx.tests.lab.server import LabServer

PREFIX = "awh"
SERVER = "192.168.2.254"
HOST = "phone2"
MAC = labphones.host_mac(HOST)          # 02a100000212 (allworx.lab.topology)
ADMIN = "https://%s:8080" % SERVER
ADMIN_LOGIN = "admin:admin-demo"        # PW_HASH is admin-demo's

CONF = NETWORK + """

[dhcp]
range = 1-100

[dns]
primary = 203.0.113.1

[web]
admin_password = {pw}

[user alice]
full_name = Alice Archer
extension = 101
password = {pw}

[user bob]
full_name = Bob Baker
extension = 102
password = {pw}
""".format(pw=PW_HASH)


def source_host(binding):
    """The address a registration came from (the API gives `source` as [host, port] or text)."""
    source = binding.get("source")
    if isinstance(source, (list, tuple)):
        return source[0] if source else None
    return str(source or "").rpartition(":")[0] or source


class NewPhoneLabTests(unittest.TestCase):

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("dhclient", "curl", "baresip"))
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(["dhcp", "provisioning", "sip"])

    def context(self):
        return "--- server:\n%s\n%s" % (self.server.log()[-3000:], process_report(
            self.lab, labphones.process_name(HOST)))

    def curl(self, host, argv):
        """(HTTP status, body, the report) of curl in `host` with `argv` (its options and URL)."""
        done = self.lab.run(host, ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}"] + argv,
                            check=False, timeout=20)
        body, _, code = done.stdout.rpartition("\n")
        return code, body, client_report(done)

    def fetch(self):
        """What phone2 gets asking for its own file over HTTP (status, body, report)."""
        return self.curl(HOST, ["http://%s:8089/%s.baresip" % (SERVER, MAC)])

    def api(self, method, path, body=None):
        """(status, decoded JSON or None, report): the admin API from the lab's admin host."""
        argv = ["-u", ADMIN_LOGIN, "-X", method] + self.server.curl_https()
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        code, text, said = self.curl("admin", argv + [ADMIN + "/api/v1" + path])
        try:
            return code, json.loads(text), said
        except ValueError:
            return code, None, said

    def listed(self):
        """This phone's object in GET /api/v1/phones, or None."""
        code, phones, _ = self.api("GET", "/phones")
        if code != "200" or not isinstance(phones, list):
            return None
        return next((p for p in phones if p.get("mac") == MAC), None)

    def phones_page(self):
        """The Phones page's HTML, as the admin logged in with the login form sees it (curl)."""
        jar = "/tmp/%s-cookies" % self.lab.prefix
        self.addCleanup(self.lab.run, "admin", ["rm", "-f", jar], check=False)
        tls = self.server.curl_https() + ["-b", jar, "-c", jar]
        code, form, said = self.curl("admin", tls + [ADMIN + "/login"])
        self.assertEqual(code, "200", said)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        self.assertTrue(csrf, "no csrf field in the login form\n" + said)
        code, _, said = self.curl("admin", tls + [
            "--data-urlencode", "csrf=" + csrf.group(1), "--data-urlencode", "username=admin",
            "--data-urlencode", "password=admin-demo", "--data-urlencode", "next=/phones",
            ADMIN + "/login"])
        self.assertIn(code, ("302", "303"), said)
        code, page, said = self.curl("admin", tls + [ADMIN + "/phones"])
        self.assertEqual(code, "200", said)
        return page, said

    def test_a_new_phone_is_listed_given_to_bob_and_registers(self):
        lease = self.lab.dhclient(HOST, vendor_class=labphones.PHONE_VENDOR_CLASS)
        address = lease.get("ip_address")
        self.assertTrue(address, "%s: no address\n%s" % (HOST, process_report(
            self.lab, "dhclient-%s-eth0" % HOST)))
        self.assertEqual(lease.get("tftp_server_name"), SERVER, lease)

        # Nobody has this phone yet: nothing to give it, and the server notes it.
        code, body, said = self.fetch()
        self.assertEqual(code, "404", said)
        self.assertNotIn("auth_pass", body, said)
        url = labphones.provisioning_url(lease, MAC)
        self.assertRaises(LabError, labphones.fetch_provisioning, self.lab, HOST, url)

        def new():
            phone = self.listed()
            return phone if phone and phone.get("state") == "new" else None
        phone = wait_until(self, new, "phone2 as a new phone in /api/v1/phones", 15,
                           lambda: "%s\n%s" % (self.api("GET", "/phones")[2], self.context()))
        self.assertIsNone(phone["user"], phone)
        self.assertEqual(phone["address"], address, phone)
        self.assertFalse(phone["registered"], phone)
        self.assertTrue(phone["last_fetch"], phone)

        page, said = self.phones_page()
        item = re.search(r'<li id="new-%s">(.*?)</li>' % MAC, page, re.S)
        self.assertTrue(item, "phone2 is not among the new phones of the Phones page\n" + said)
        self.assertIn("New phone:", item.group(1))
        self.assertIn(address, item.group(1))

        # The admin gives it to bob in one step.
        code, given, said = self.api("POST", "/phones/" + MAC, {"user": "bob"})
        self.assertIn(code, ("200", "201"), said)
        self.assertEqual((given["mac"], given["user"], given["state"]),
                         (MAC, "bob", "assigned"), said)

        # It asks again: bob's extension, with the phone's own secret.
        code, body, said = self.fetch()
        self.assertEqual(code, "200", said)
        accounts = [l for l in body.splitlines() if l.startswith("<sip:")]
        self.assertEqual(len(accounts), 1, said)
        self.assertTrue(accounts[0].startswith("<sip:102@%s>;auth_user=102;auth_pass=" % SERVER),
                        said)
        secret = re.search(r";auth_pass=([^;]+)", accounts[0])
        self.assertTrue(secret and len(secret.group(1)) >= 16, said)

        # baresip set up from that file as the lab's phones are (over option 66's TFTP).
        _, how = labphones.start_phone(self.lab, HOST, address, lease)
        self.assertEqual(how, "provisioned from " + url, self.context())

        def registered():
            code, bindings, _ = self.api("GET", "/sip/registrations")
            return code == "200" and [b for b in bindings or [] if b.get("user") == "bob"
                                      and source_host(b) == address]
        wait_until(self, registered, "bob's registration from %s in /api/v1/sip/registrations"
                   % address, 20, lambda: "%s\n%s" % (
                       self.api("GET", "/sip/registrations")[2], self.context()))

        def assigned_and_registered():
            phone = self.listed()
            return phone if phone and phone.get("registered") is True else None
        phone = wait_until(self, assigned_and_registered, "phone2 registered in /api/v1/phones",
                           15, lambda: "%s\n%s" % (self.api("GET", "/phones")[2], self.context()))
        self.assertEqual((phone["state"], phone["user"], phone["address"]),
                         ("assigned", "bob", address), phone)
