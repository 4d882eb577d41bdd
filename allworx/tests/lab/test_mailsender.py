"""
Tests for allworx.lab.mailsender (the lab's internet mail senders and their
DKIM keys) and the mail records the ISP's DNS publishes; they run anywhere
(no namespaces: the DNS is answered from the lab's own record list).
"""

import email
import email.policy
import os
import stat

import dkim
from twisted.trial import unittest

from allworx.lab import mailsender, peers
from allworx.lab.namespaces import Lab
from allworx.lab.topology import (
    DNSBL_REASON,
    DNSBL_ZONE,
    FORGED_DOMAIN,
    INET_IP,
    LISTED_IP,
    MAIL_DOMAIN,
    QUARANTINE_DOMAIN,
)


class TxtStringsTests(unittest.TestCase):

    def test_short_value_is_one_string(self):
        self.assertEqual(mailsender.txt_strings("v=spf1 -all"), ["v=spf1 -all"])
        self.assertEqual(mailsender.txt_strings(""), [""])

    def test_long_value_is_cut_at_255(self):
        value = "x" * 600
        parts = mailsender.txt_strings(value)
        self.assertEqual([len(p) for p in parts], [255, 255, 90])
        self.assertEqual("".join(parts), value)


class LabKeysTests(unittest.TestCase):
    """The keys, their DNS records, and signatures that dkimpy verifies against them."""

    def setUp(self):
        self.lab = Lab(prefix="awt", state_root=self.mktemp())
        self.keys = self.lab.mail_keys

    def dnsfunc(self, name, timeout=5):
        """dkimpy's DNS: the ISP's published TXT records, as a resolver joins their strings."""
        records = dict(self.lab.dns_txt_records())
        return records.get(name.decode().rstrip("."), "").encode()

    def test_no_key_records_before_the_keys_exist(self):
        self.assertFalse(self.keys.exist())
        self.assertEqual(self.keys.records(), [])
        self.assertNotIn("_domainkey", self.lab.dnsmasq_config())

    def test_keys_are_made_once_and_private(self):
        self.keys.ensure()
        self.assertTrue(self.keys.exist())
        mode = os.stat(self.keys.directory).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o700)
        for name in os.listdir(self.keys.directory):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.keys.directory, name)).st_mode),
                             0o600, name)
        records = self.keys.records()
        self.keys.ensure()
        self.assertEqual(self.keys.records(), records)

    def test_records(self):
        self.keys.ensure()
        records = dict(self.keys.records())
        self.assertEqual(sorted(records), ["lab-ed25519._domainkey.internet.example",
                                           "lab._domainkey.internet.example"])
        self.assertTrue(records["lab._domainkey.internet.example"].startswith(
            "v=DKIM1; k=rsa; p=MIIB"))
        self.assertRegex(records["lab-ed25519._domainkey.internet.example"],
                         r"^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$")

    def test_dnsmasq_publishes_long_keys_in_strings_of_255(self):
        self.keys.ensure()
        text = self.lab.dnsmasq_config()
        [line] = [l for l in text.splitlines()
                  if l.startswith("txt-record=lab._domainkey.internet.example,")]
        strings = line.split(",", 1)[1].split(",")
        self.assertGreater(len(strings), 1)
        for s in strings:
            self.assertTrue(s.startswith('"') and s.endswith('"'), s)
            self.assertLessEqual(len(s) - 2, 255)
        self.assertEqual("".join(s[1:-1] for s in strings),
                         dict(self.keys.records())["lab._domainkey.internet.example"])

    def test_signed_message_verifies_with_both_keys(self):
        self.keys.ensure()
        data = mailsender.message("news@internet.example", "alice@example.com", "signed")
        signed = self.keys.sign(data)
        verifier = dkim.DKIM(signed)
        self.assertTrue(verifier.verify(0, dnsfunc=self.dnsfunc))
        self.assertTrue(verifier.verify(1, dnsfunc=self.dnsfunc))
        parsed = email.message_from_bytes(signed)
        tags = [dict(t.strip().split("=", 1) for t in h.replace("\r\n", "").split(";") if "=" in t)
                for h in parsed.get_all("DKIM-Signature")]
        self.assertEqual([(t["a"], t["s"], t["d"], t["c"]) for t in tags],
                         [("rsa-sha256", "lab", "internet.example", "relaxed/relaxed"),
                          ("ed25519-sha256", "lab-ed25519", "internet.example", "relaxed/relaxed")])

    def test_a_changed_body_fails(self):
        self.keys.ensure()
        signed = self.keys.sign(mailsender.message("news@internet.example", "alice@example.com"))
        tampered = signed.replace(b"lab's internet", b"lab's intranet")
        self.assertFalse(dkim.verify(tampered, dnsfunc=self.dnsfunc))

    def test_an_authentication_results_on_top_is_not_signed(self):
        """A sender's own Authentication-Results may be removed without breaking the signature."""
        self.keys.ensure()
        forged = ("Authentication-Results", "allworx.example.com; dkim=pass")
        signed = self.keys.sign(mailsender.message("news@internet.example", "alice@example.com",
                                                   headers=[forged]))
        self.assertIn(b"\r\nAuthentication-Results: allworx.example.com; dkim=pass\r\n", signed)
        stripped = signed.replace(b"Authentication-Results: allworx.example.com; dkim=pass\r\n", b"")
        self.assertTrue(dkim.verify(stripped, dnsfunc=self.dnsfunc))

    def test_attachment(self):
        data = mailsender.message("x@internet.example", "bob@example.com",
                                  attachments=[("invoice.exe", "application/octet-stream",
                                                b"MZ\x90\x00")])
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual([p.get_filename() for p in parsed.iter_attachments()], ["invoice.exe"])
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""))

    def test_command_line_writes_a_signed_file(self):
        out = os.path.join(self.mktemp())
        self.assertEqual(mailsender.main([
            "--keys", self.keys.directory, "--from", "news@internet.example",
            "--to", "alice@example.com", "--subject", "cli", "--header", "X-Lab: yes",
            "--out", out]), 0)
        with open(out, "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(b"DKIM-Signature: "))
        self.assertIn(b"\r\nX-Lab: yes\r\n", data)
        self.assertTrue(dkim.verify(data, dnsfunc=self.dnsfunc))
        self.assertEqual(mailsender.main(["--keys", self.keys.directory, "--from", "a@b",
                                          "--to", "c@d", "--header", "no colon"]), 2)


class MailRecordsTests(unittest.TestCase):
    """The senders' SPF and DMARC and the blocklist, as the ISP's dnsmasq has them."""

    def setUp(self):
        self.lab = Lab(prefix="awt", state_root=self.mktemp())
        self.lines = self.lab.dnsmasq_config().splitlines()

    def test_sender_policies(self):
        for line in (
                'txt-record=%s,"v=spf1 ip4:%s -all"' % (MAIL_DOMAIN, INET_IP),
                'txt-record=_dmarc.%s,"v=DMARC1; p=reject"' % MAIL_DOMAIN,
                'txt-record=%s,"v=spf1 a -all"' % FORGED_DOMAIN,
                'txt-record=_dmarc.%s,"v=DMARC1; p=reject"' % FORGED_DOMAIN,
                'txt-record=_dmarc.%s,"v=DMARC1; p=quarantine"' % QUARANTINE_DOMAIN):
            self.assertIn(line, self.lines)
        # The forger's victim sends from an address no lab host has.
        self.assertIn("host-record=%s,198.51.100.40" % FORGED_DOMAIN, self.lines)

    def test_blocklist(self):
        self.assertEqual(peers.dnsbl_name(LISTED_IP), "66.100.51.198." + DNSBL_ZONE)
        for name in ("66.100.51.198." + DNSBL_ZONE, "2.0.0.127." + DNSBL_ZONE):
            self.assertIn("host-record=%s,127.0.0.2" % name, self.lines)
        self.assertIn('txt-record=66.100.51.198.%s,"%s"' % (DNSBL_ZONE, DNSBL_REASON), self.lines)
        self.assertIn("198.51.100.66", DNSBL_REASON)
        # Nothing else is listed: INET_IP's name is not there.
        self.assertFalse([l for l in self.lines if "10.100.51.198." + DNSBL_ZONE in l])

    def test_quotes_are_refused(self):
        self.assertRaises(ValueError, peers._dnsmasq_quoted, 'say "hi"')
