# -*- test-case-name: allworx.tests.lab.test_provisioning -*-
"""
The provisioning service in the virtual office (lab prefix `awy`, SPEC 19),
with real clients on the LAN's hosts, which get their addresses from the
server's DHCP (ISC dhclient): curl and busybox's tftp fetch the common file,
and a phone its own file with its own secret;
a host asking for another MAC's file is refused (403, TFTP error 2); a MAC
without a [phone] section that asks for its own file gets 404 and is logged
as a new phone; the service is not reachable from the internet. Needs root
where `ip netns` works.
"""

from twisted.trial import unittest

from allworx.tests.confs import NETWORK, PW_HASH
from allworx.tests.lab.fixtures import client_report, process_report, start_lab
from allworx.tests.lab.server import LabServer

PREFIX = "awy"
SERVER = "192.168.2.254"
PHONE1_MAC = "02a100000211"     # the lab's phone1 (allworx.lab.topology)
PC1_MAC = "02a100000201"

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

[phone 02:a1:00:00:02:11]
user = alice
model = generic
label = Front desk
""".format(pw=PW_HASH)


class ProvisioningLabTests(unittest.TestCase):

    def setUp(self):
        self.lab = start_lab(self, prefix=PREFIX, programs=("dhclient", "curl", "busybox", "tftp"))
        self.server = LabServer(self.lab, CONF)
        self.addCleanup(self.server.stop)
        self.server.start()
        self.server.wait_services(["dhcp", "provisioning"])
        self.addresses = {}
        for host in ("phone1", "pc1"):
            lease = self.lab.dhclient(host)
            self.addresses[host] = lease.get("ip_address")
            self.assertTrue(self.addresses[host],
                            "%s: no address\n%s" % (host, process_report(
                                self.lab, "dhclient-%s-eth0" % host)))

    def curl(self, host, name, server=SERVER, https=False):
        """(HTTP status, body, the report) of `host` fetching `name` with curl
        (over HTTPS on the next port, trusting the server's own CA)."""
        url = ("https://%s:8090/%s" if https else "http://%s:8089/%s") % (server, name)
        tls = self.server.curl_https() if https else []
        done = self.lab.run(host, ["curl", "-sS", "-m", "5", "-w", "\n%{http_code}"] + tls
                            + [url], check=False, timeout=15)
        body, _, code = done.stdout.rpartition("\n")
        return code, body, client_report(done)

    def tftp(self, host, name, blksize=None):
        """(exit status, file text, the report) of busybox tftp in `host` fetching `name`."""
        local = "/tmp/awy-%s-%s" % (host, name)
        argv = ["busybox", "tftp", "-g", "-r", name, "-l", local]
        if blksize:
            argv[2:2] = ["-b", str(blksize)]
        done = self.lab.run(host, argv + [SERVER], check=False, timeout=20)
        text = ""
        if done.returncode == 0:
            text = self.lab.run(host, ["cat", local], check=False).stdout
        self.lab.run(host, ["rm", "-f", local], check=False)
        return done.returncode, text, client_report(done)

    def tftp_hpa(self, host, name):
        """(exit status, file text, the report) of tftp-hpa's client in `host` fetching `name`."""
        local = "/tmp/awy-hpa-%s-%s" % (host, name)
        done = self.lab.run(host, ["tftp", "-m", "binary", SERVER, "-c", "get", name, local],
                            check=False, timeout=20)
        text = ""
        if done.returncode == 0:
            text = self.lab.run(host, ["cat", local], check=False).stdout
        self.lab.run(host, ["rm", "-f", local], check=False)
        return done.returncode, text, client_report(done)

    def test_common_file_by_http_and_tftp(self):
        code, body, said = self.curl("phone1", "y000000000000.cfg")
        self.assertEqual(code, "200", said)
        self.assertIn("local_time.ntp_server1 = %s" % SERVER, body, said)
        self.assertNotIn("account.", body, said)
        for blksize in (None, 1024):
            status, text, said = self.tftp("phone1", "y000000000000.cfg", blksize)
            self.assertEqual((status, text), (0, body), said)
        status, text, said = self.tftp_hpa("phone1", "y000000000000.cfg")
        self.assertEqual((status, text), (0, body), said)

    def test_the_phone_gets_its_own_file_by_http_and_tftp(self):
        name = "%s.baresip" % PHONE1_MAC
        code, body, said = self.curl("phone1", name)
        self.assertEqual(code, "200", said)
        accounts = [l for l in body.splitlines() if l.startswith("<sip:")]
        self.assertEqual(len(accounts), 1, said)
        self.assertTrue(accounts[0].startswith("<sip:101@%s>;auth_user=101;auth_pass=" % SERVER),
                        said)
        status, text, said = self.tftp("phone1", name)
        self.assertEqual((status, text), (0, body), said)
        status, text, said = self.tftp_hpa("phone1", name)
        self.assertEqual((status, text), (0, body), said)
        code, text, said = self.curl("phone1", name, https=True)
        self.assertEqual((code, text), ("200", body), said)
        # The same phone's secret both times, kept under data_dir (SPEC 19).
        self.server.wait_for("provisioning: %s (generic) to %s (tftp) for alice"
                             % (name, self.addresses["phone1"]))

    def test_another_hosts_phone_file_is_refused(self):
        name = "%s.baresip" % PHONE1_MAC
        code, body, said = self.curl("pc1", name)
        self.assertEqual(code, "403", said)
        self.assertNotIn("auth_pass", body, said)
        status, _, said = self.tftp("pc1", name)
        self.assertNotEqual(status, 0, said)
        self.assertIn("server error: (2)", said)
        self.server.wait_for("provisioning: %s asked for %s (tftp)" % (self.addresses["pc1"],
                                                                       name))

    def test_a_new_phone_is_logged_and_gets_404(self):
        code, _, said = self.curl("pc1", "%s.baresip" % PC1_MAC)
        self.assertEqual(code, "404", said)
        self.server.wait_for("new phone %s" % PC1_MAC)
        status, _, said = self.tftp("pc1", "nothing-here.cfg")
        self.assertIn("server error: (1)", said)

    def test_not_from_the_internet(self):
        done = self.lab.run("inet", ["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w",
                                     "%{http_code}", "http://203.0.113.2:8089/y000000000000.cfg"],
                            check=False, timeout=15)
        self.assertNotEqual(done.returncode, 0, client_report(done))
