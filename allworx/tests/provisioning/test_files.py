"""Who gets which file: the MAC and lease check, new phones, the rate limit (SPEC 19)."""

from twisted.internet import task
from twisted.trial import unittest

from allworx.protocols.provisioning.files import Provisioner
from allworx.tests.provisioning.fakes import BERLIN, FakeLeases, FakePhoneBook, office_config


class ProvisionerTests(unittest.TestCase):

    def setUp(self):
        self.config = office_config()
        self.book = FakePhoneBook()
        self.leases = FakeLeases({"001565123456": "192.168.2.37",
                                  "001565999999": "192.168.2.40",
                                  "02aa00000004": "192.168.2.41",
                                  "001565000005": "192.168.2.42",
                                  "02bb00000001": "192.168.2.43"},
                                 vendor_classes={"001565999999": "yealink SIP-T46S"})
        self.clock = task.Clock()
        self.p = Provisioner(lambda: self.config, self.book, self.leases, self.clock,
                             timezone=lambda: BERLIN)

    def test_the_lease_holder_gets_its_file_and_is_seen(self):
        a = self.p.fetch("001565123456.cfg", "192.168.2.37", "Yealink SIP-T46S 66.86")
        self.assertEqual((a.code, a.content_type), (200, "text/plain; charset=utf-8"))
        self.assertIn(b"account.1.password = secret-001565123456", a.body)
        s = self.book.seen[-1]
        self.assertEqual((s.mac, s.address, s.model, s.filename, s.user_agent),
                         ("001565123456", "192.168.2.37", "yealink", "001565123456.cfg",
                          "Yealink SIP-T46S 66.86"))

    def test_another_address_gets_403_and_is_not_seen(self):
        for address in ("192.168.2.38", "10.0.0.1"):
            a = self.p.fetch("001565123456.cfg", address)
            self.assertEqual(a.code, 403)
            self.assertNotIn(b"secret", a.body)
        self.assertEqual(self.book.seen, [])

    def test_a_mac_without_a_lease_gets_403(self):
        self.assertEqual(self.p.fetch("cfg000b82000001.xml", "192.168.2.37").code, 403)

    def test_a_new_phone_is_seen_and_gets_404(self):
        a = self.p.fetch("001565999999.cfg", "192.168.2.40", None)
        self.assertEqual(a.code, 404)
        s = self.book.seen[-1]
        self.assertEqual((s.mac, s.address, s.model), ("001565999999", "192.168.2.40", "yealink"))
        self.assertEqual(self.book.secrets, {})     # no secret made for it

    def test_model_from_the_vendor_class(self):
        self.leases.vendor_classes["02bb00000001"] = "Polycom-VVX400"
        self.p.fetch("02bb00000001.cfg", "192.168.2.43")
        self.assertEqual(self.book.seen[-1].model, "polycom")

    def test_a_known_phone_without_a_model_is_guessed(self):
        # [phone 001565000005] has no model: the OUI says Yealink.
        a = self.p.fetch("001565000005.cfg", "192.168.2.42")
        self.assertEqual(a.code, 200)
        self.assertIn(b"account.1.user_name = 102", a.body)

    def test_unknown_model_is_404_with_the_reason(self):
        # A .cfg is Yealink's or Polycom's; nothing says which this phone is.
        self.config = office_config("\n[phone 02bb00000001]\nuser = bob\n")
        a = self.p.fetch("02bb00000001.cfg", "192.168.2.43")
        self.assertEqual(a.code, 404)
        self.assertIn("set model in [phone 02bb00000001]", a.why)

    def test_common_files_to_anyone_without_secrets(self):
        for name in ("y000000000000.cfg", "000000000000.cfg"):
            a = self.p.fetch(name, "192.168.2.99")
            self.assertEqual(a.code, 200, name)
            self.assertNotIn(b"secret", a.body)
        self.assertEqual(self.book.seen, [])

    def test_names_outside_the_set_404(self):
        for name in ("", "../tap.conf", "index.html", "secrets.json", "y000000000001.cfg"):
            self.assertEqual(self.p.fetch(name, "192.168.2.37").code, 404, name)

    def test_rate_limit_per_address(self):
        allowed = sum(self.p.allow("192.168.2.37") for _ in range(100))
        self.assertEqual(allowed, 30)
        self.assertTrue(self.p.allow("192.168.2.38"))
        self.clock.advance(1)
        self.assertEqual(sum(self.p.allow("192.168.2.37") for _ in range(10)), 2)

    def test_without_a_phone_book_no_file_is_made(self):
        p = Provisioner(lambda: self.config, None, self.leases, self.clock,
                        timezone=lambda: BERLIN)
        a = p.fetch("001565123456.cfg", "192.168.2.37")
        self.assertEqual(a.code, 404)
        self.assertIn("no phone book", a.why)
