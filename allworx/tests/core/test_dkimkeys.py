"""Tests for allworx.dkimkeys: the DKIM keys on disk, their TXT values, retirement, the mail records."""

import base64
import os
import stat

from cryptography.hazmat.primitives import serialization
from twisted.trial import unittest

from allworx.config import parse_config
from allworx.dkimkeys import DkimKeys, MailRecord, mail_dns_records, spf_value
from allworx.tests.confs import MINIMAL, with_sections
from allworx.tests.dkimtesting import install_keys


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class KeyFileTests(unittest.TestCase):

    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)

    def test_ensure_makes_both_keys_private_once(self):
        keys = DkimKeys(self.data_dir)
        self.assertEqual(keys.ensure("allworx"), ["allworx", "allworx-ed25519"])
        directory = os.path.join(self.data_dir, "dkim")
        self.assertEqual(mode(directory), 0o700)
        files = sorted(os.listdir(directory))
        self.assertEqual(files, ["allworx.ed25519.pem", "allworx.rsa.pem"])
        before = {}
        for name in files:
            path = os.path.join(directory, name)
            self.assertEqual(mode(path), 0o600, name)
            with open(path, "rb") as f:
                before[name] = f.read()
        # Idempotent: the mail and DNS services may both ask.
        self.assertEqual(DkimKeys(self.data_dir).ensure("allworx"), [])
        for name, data in before.items():
            with open(os.path.join(directory, name), "rb") as f:
                self.assertEqual(f.read(), data)
        self.assertTrue(keys.has("allworx"))
        self.assertFalse(keys.has("other"))

    def test_txt_values(self):
        keys = install_keys(self.data_dir)
        rsa_txt = keys.txt("allworx")
        self.assertTrue(rsa_txt.startswith("v=DKIM1; k=rsa; p="), rsa_txt)
        public = serialization.load_der_public_key(base64.b64decode(rsa_txt.split("p=")[1]))
        self.assertEqual(public.key_size, 2048)
        self.assertGreater(len(rsa_txt), 255)   # so the zone must split it
        ed_txt = keys.txt("allworx-ed25519")
        self.assertTrue(ed_txt.startswith("v=DKIM1; k=ed25519; p="), ed_txt)
        self.assertEqual(len(base64.b64decode(ed_txt.split("p=")[1])), 32)
        self.assertIsNone(keys.txt("missing"))
        self.assertIsNone(keys.txt("missing-ed25519"))

    def test_signing_keys_as_dkimpy_takes_them(self):
        keys = install_keys(self.data_dir)
        rsa_key, ed_key = keys.signing_keys("allworx")
        self.assertEqual((rsa_key.algorithm, rsa_key.selector), (b"rsa-sha256", "allworx"))
        self.assertIn(b"BEGIN RSA PRIVATE KEY", rsa_key.key)
        self.assertEqual((ed_key.algorithm, ed_key.selector), (b"ed25519-sha256", "allworx-ed25519"))
        self.assertEqual(len(base64.b64decode(ed_key.key)), 32)

    def test_unreadable_key_is_not_published(self):
        keys = install_keys(self.data_dir)
        with open(os.path.join(keys.directory, "allworx.rsa.pem"), "wb") as f:
            f.write(b"garbage")
        self.assertIsNone(keys.txt("allworx"))
        self.assertEqual([k.selector for k in keys.signing_keys("allworx")], ["allworx-ed25519"])

    def test_retire_restore_drop(self):
        keys = install_keys(self.data_dir, "old")
        install_keys(self.data_dir, "allworx")
        self.assertEqual(keys.published("allworx"), ["allworx", "allworx-ed25519"])
        keys.retire("old")
        keys.retire("old")
        self.assertEqual(keys.retired(), ["old"])
        self.assertEqual(mode(os.path.join(keys.directory, "state.json")), 0o600)
        # Another reader of the same directory sees the state.
        self.assertEqual(DkimKeys(self.data_dir).published("allworx"),
                         ["allworx", "allworx-ed25519", "old", "old-ed25519"])
        keys.restore("old")
        self.assertEqual(keys.retired(), [])
        keys.retire("old")
        keys.drop("old")
        self.assertEqual(keys.retired(), [])
        self.assertEqual(keys.published("allworx"), ["allworx", "allworx-ed25519"])
        self.assertEqual(sorted(os.listdir(keys.directory)),
                         ["allworx.ed25519.pem", "allworx.rsa.pem", "state.json"])

    def test_a_bad_state_file_counts_as_none_retired(self):
        keys = install_keys(self.data_dir)
        with open(os.path.join(keys.directory, "state.json"), "w") as f:
            f.write("{not json")
        self.assertEqual(keys.retired(), [])


SMARTHOST = with_sections("[mail]\nsmarthost = smtp.provider.example:587\n")


class MailRecordTests(unittest.TestCase):

    def setUp(self):
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        self.keys = install_keys(self.data_dir)

    def records(self, text=MINIMAL, keys="default"):
        return mail_dns_records(parse_config(text), self.keys if keys == "default" else keys)

    def test_the_records_to_publish(self):
        rows = self.records()
        self.assertEqual([(r.label, r.rtype, r.purpose, r.source) for r in rows], [
            ("allworx._domainkey", "TXT", "dkim", "built-in"),
            ("allworx-ed25519._domainkey", "TXT", "dkim", "built-in"),
            ("@", "TXT", "spf", "built-in"),
            ("_dmarc", "TXT", "dmarc", "built-in")])
        self.assertEqual(rows[0].value, self.keys.txt("allworx"))
        self.assertEqual(rows[2].value, "v=spf1 mx -all")
        self.assertEqual(rows[3].value, "v=DMARC1; p=quarantine")
        # The contract's 5-tuple, and the page's dict.
        label, rtype, value, purpose, note = rows[2]
        self.assertEqual((label, rtype, value, purpose, note), ("@", "TXT", "v=spf1 mx -all", "spf", ""))
        self.assertEqual(rows[3].as_dict("example.com"), {
            "name": "_dmarc.example.com", "type": "TXT", "value": "v=DMARC1; p=quarantine",
            "purpose": "dmarc", "source": "built-in", "note": ""})
        self.assertEqual(rows[2].as_dict("example.com")["name"], "example.com")

    def test_without_keys_spf_and_dmarc_only(self):
        self.assertEqual([r.purpose for r in self.records(keys=None)], ["spf", "dmarc"])

    def test_smarthost_spf(self):
        config = parse_config(SMARTHOST)
        self.assertEqual(spf_value(config), "v=spf1 mx a:smtp.provider.example ~all")
        [spf] = [r for r in mail_dns_records(config, self.keys) if r.purpose == "spf"]
        self.assertEqual(spf.value, "v=spf1 mx a:smtp.provider.example ~all")
        self.assertIn("include", spf.note)
        by_ip = parse_config(with_sections("[mail]\nsmarthost = 198.51.100.25\n"))
        self.assertEqual(spf_value(by_ip), "v=spf1 mx ip4:198.51.100.25 ~all")

    def test_record_overrides(self):
        text = with_sections("""
[record _dmarc]
txt = v=DMARC1; p=reject; rua=mailto:dmarc@example.com

[record allworx._domainkey]
txt = v=DKIM1; k=rsa; p=ELSEWHERE

[record @]
txt = v=spf1 mx include:_spf.provider.example -all
""")
        rows = {r.label: r for r in self.records(text)}
        self.assertEqual(rows["_dmarc"].value, "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")
        self.assertEqual(rows["_dmarc"].source, "record")
        self.assertEqual(rows["allworx._domainkey"].value, "v=DKIM1; k=rsa; p=ELSEWHERE")
        self.assertEqual(rows["allworx._domainkey"].source, "record")
        self.assertEqual(rows["allworx-ed25519._domainkey"].source, "built-in")
        self.assertEqual((rows["@"].value, rows["@"].source),
                         ("v=spf1 mx include:_spf.provider.example -all", "record"))

    def test_an_apex_txt_that_is_not_spf_leaves_the_spf(self):
        text = with_sections("[record @]\ntxt = site-verification=abc\n")
        [spf] = [r for r in self.records(text) if r.purpose == "spf"]
        self.assertEqual((spf.value, spf.source), ("v=spf1 mx -all", "built-in"))

    def test_a_record_without_txt_does_not_override(self):
        text = with_sections("[record _dmarc]\na = 192.168.2.9\n")
        [dmarc] = [r for r in self.records(text) if r.purpose == "dmarc"]
        self.assertEqual(dmarc.source, "built-in")

    def test_retired_selector_published_with_a_note(self):
        install_keys(self.data_dir, "old")
        self.keys.retire("old")
        rows = self.records()
        self.assertEqual([r.label for r in rows if r.purpose == "dkim"], [
            "allworx._domainkey", "allworx-ed25519._domainkey",
            "old._domainkey", "old-ed25519._domainkey"])
        self.assertEqual([bool(r.note) for r in rows if r.purpose == "dkim"],
                         [False, False, True, True])

    def test_mail_record_is_a_five_tuple(self):
        self.assertEqual(tuple(MailRecord("@", "TXT", "v", "spf", "n", "record")),
                         ("@", "TXT", "v", "spf", "n"))
