"""The files over HTTP: 200, 403, 404, 405, 429, LAN peers only (SPEC 19)."""

from twisted.internet import address, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.protocols.provisioning.files import Provisioner
from allworx.protocols.provisioning.http import ProvisioningRoot, ProvisioningSite, limited
from allworx.tests.provisioning.fakes import BERLIN, FakeLeases, FakePhoneBook, office_config


class HttpTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.book = FakePhoneBook()
        config = office_config()
        self.provisioner = Provisioner(lambda: config, self.book,
                                       FakeLeases({"001565123456": "192.168.2.37",
                                                   "001565999999": "192.168.2.40"}),
                                       self.clock, timezone=lambda: BERLIN)
        self.site = ProvisioningSite(ProvisioningRoot(self.provisioner), self.is_lan,
                                     reactor=self.clock)

    def is_lan(self, host):
        return host.startswith("192.168.2.")

    def get(self, path, host="192.168.2.37", method="GET", agent=None, factory=None):
        factory = factory or self.site
        proto = factory.buildProtocol(address.IPv4Address("TCP", host, 40000))
        if proto is None:
            return None
        transport = StringTransport(peerAddress=address.IPv4Address("TCP", host, 40000))
        proto.makeConnection(transport)
        headers = "Host: 192.168.2.254:8089\r\n"
        if agent:
            headers += "User-Agent: %s\r\n" % agent
        proto.dataReceived(("%s %s HTTP/1.1\r\n%sConnection: close\r\n\r\n"
                            % (method, path, headers)).encode())
        raw = transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, head.decode("latin-1"), body

    def test_the_lease_holder_gets_its_file(self):
        status, head, body = self.get("/001565123456.cfg", agent="Yealink SIP-T46S 66.86")
        self.assertEqual(status, 200, body)
        self.assertIn("Content-Type: text/plain; charset=utf-8", head)
        self.assertIn("Cache-Control: no-store", head)
        self.assertIn(b"account.1.password = secret-001565123456", body)
        self.assertEqual(self.book.seen[-1].user_agent, "Yealink SIP-T46S 66.86")

    def test_another_address_gets_403(self):
        status, _, body = self.get("/001565123456.cfg", host="192.168.2.38")
        self.assertEqual(status, 403)
        self.assertNotIn(b"secret", body)

    def test_new_phone_404_and_seen(self):
        self.assertEqual(self.get("/001565999999.cfg", host="192.168.2.40")[0], 404)
        self.assertEqual(self.book.seen[-1].mac, "001565999999")

    def test_no_listing_no_paths(self):
        for path in ("/", "/x/001565123456.cfg", "/..%2f001565123456.cfg", "/tap.conf",
                     "/001565123456.cfg/"):
            self.assertEqual(self.get(path)[0], 404, path)

    def test_only_get_and_head(self):
        status, head, _ = self.get("/001565123456.cfg", method="POST")
        self.assertEqual(status, 405)
        self.assertIn("Allow: GET, HEAD", head)
        status, _, body = self.get("/y000000000000.cfg", method="HEAD")
        self.assertEqual((status, body), (200, b""))

    def test_rate_limited(self):
        statuses = [self.get("/y000000000000.cfg")[0] for _ in range(31)]
        self.assertEqual(statuses[-2:], [200, 429])

    def test_wan_peers_are_not_served(self):
        self.assertIsNone(self.get("/y000000000000.cfg", host="203.0.113.9"))
        self.assertIsNone(self.get("/y000000000000.cfg", host="203.0.113.9",
                                   factory=limited(self.site)))
