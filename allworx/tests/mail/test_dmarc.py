"""Tests for DMARC (allworx.protocols.mail.dmarc) over a fake resolver."""

from twisted.trial import unittest

from allworx.protocols.mail import dmarc
from allworx.protocols.mail.dkimverify import DkimResult
from allworx.protocols.mail.spf import SpfResult
from allworx.tests.mail.fakedns import FakeResolver


def message(from_=b"Alice <alice@sender.example>"):
    return b"From: " + from_ + b"\r\nSubject: x\r\n\r\nbody\r\n"


def spf(result="pass", domain="sender.example"):
    return SpfResult(result, "mailfrom", domain, "bounce@" + domain)


def dkim(result="pass", domain="sender.example"):
    return DkimResult(domain, "s1", "rsa-sha256", result)


class DmarcTests(unittest.TestCase):

    def setUp(self):
        self.dns = FakeResolver()
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=reject")

    def check(self, msg=None, spf_result=None, dkim_results=()):
        d = dmarc.check(self.dns, msg or message(), spf_result, list(dkim_results))
        return self.successResultOf(d)

    def test_spf_aligned_pass(self):
        r = self.check(spf_result=spf())
        self.assertEqual((r.result, r.policy, r.domain), ("pass", "reject", "sender.example"))

    def test_dkim_aligned_pass(self):
        r = self.check(spf_result=spf("fail"), dkim_results=[dkim()])
        self.assertEqual(r.result, "pass")

    def test_relaxed_alignment_of_a_subdomain(self):
        r = self.check(spf_result=spf(domain="bounces.sender.example"))
        self.assertEqual(r.result, "pass")
        r = self.check(dkim_results=[dkim(domain="mail.sender.example")])
        self.assertEqual(r.result, "pass")

    def test_strict_alignment(self):
        self.dns = FakeResolver()
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=quarantine; aspf=s; adkim=s")
        r = self.check(spf_result=spf(domain="bounces.sender.example"),
                       dkim_results=[dkim(domain="mail.sender.example")])
        self.assertEqual((r.result, r.policy), ("fail", "quarantine"))
        self.assertEqual(self.check(dkim_results=[dkim()]).result, "pass")

    def test_unaligned_passes_fail(self):
        r = self.check(spf_result=spf(domain="forger.example"),
                       dkim_results=[dkim(domain="forger.example")])
        self.assertEqual((r.result, r.policy), ("fail", "reject"))

    def test_failed_dkim_of_the_domain_fails(self):
        r = self.check(spf_result=spf("softfail"), dkim_results=[dkim("fail")])
        self.assertEqual(r.result, "fail")

    def test_no_record(self):
        r = self.check(message(b"x@nopolicy.example"), spf_result=spf("fail"))
        self.assertEqual((r.result, r.policy, r.domain), ("none", "", "nopolicy.example"))

    def test_org_domain_fallback_with_sp(self):
        self.dns = FakeResolver()
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=reject; sp=quarantine")
        r = self.check(message(b"x@news.sender.example"))
        self.assertEqual((r.result, r.policy, r.domain), ("fail", "quarantine", "news.sender.example"))
        self.assertIn(("_dmarc.news.sender.example", "TXT"), self.dns.asked)
        # the org domain's own mail: p
        self.assertEqual(self.check().policy, "reject")

    def test_org_domain_fallback_without_sp_uses_p(self):
        r = self.check(message(b"x@a.b.sender.example"))
        self.assertEqual((r.result, r.policy), ("fail", "reject"))

    def test_multi_label_suffix(self):
        self.assertEqual(dmarc.organizational_domain("mail.shop.co.uk"), "shop.co.uk")
        self.assertEqual(dmarc.organizational_domain("shop.co.uk"), "shop.co.uk")
        self.assertEqual(dmarc.organizational_domain("a.b.example.com.au"), "example.com.au")
        self.assertEqual(dmarc.organizational_domain("a.b.example.com"), "example.com")
        self.dns.add("_dmarc.shop.co.uk", "TXT", "v=DMARC1; p=quarantine")
        r = self.check(message(b"x@mail.shop.co.uk"))
        self.assertEqual((r.result, r.policy), ("fail", "quarantine"))
        self.assertNotIn(("_dmarc.co.uk", "TXT"), self.dns.asked)

    def test_generic_second_level_under_a_country_code(self):
        # bank.com.es and attacker.com.es are two registrants, not one "com.es".
        self.assertEqual(dmarc.organizational_domain("mail.bank.com.es"), "bank.com.es")
        self.assertEqual(dmarc.organizational_domain("www.shop.org.pl"), "shop.org.pl")
        self.dns.add("_dmarc.bank.com.es", "TXT", "v=DMARC1; p=reject")
        r = self.check(message(b"CEO <ceo@bank.com.es>"), spf_result=spf(domain="attacker.com.es"),
                       dkim_results=[dkim(domain="attacker.com.es")])
        self.assertEqual((r.result, r.policy), ("fail", "reject"))
        r = self.check(message(b"CEO <ceo@bank.com.es>"), spf_result=spf(domain="mx.bank.com.es"))
        self.assertEqual(r.result, "pass")

    def test_too_many_from_domains_fail(self):
        others = b", ".join(b"x@d%d.example" % i for i in range(5))
        r = self.check(message(others + b", ceo@sender.example"),
                       spf_result=spf(domain="d0.example"))
        self.assertEqual((r.result, r.policy), ("fail", "quarantine"))

    def test_invisible_characters_do_not_hide_the_domain(self):
        for forged in (b"ceo@sender.example\x0b", b"ceo@sender.\x00example",
                       "ceo@sender.example\u200b".encode()):
            r = self.check(message(forged), spf_result=spf(domain="forger.example"))
            self.assertEqual((r.result, r.policy, r.domain), ("fail", "reject", "sender.example"),
                             forged)

    def test_temperror(self):
        self.dns.servfail.add("_dmarc.sender.example")
        self.assertEqual(self.check(spf_result=spf("fail")).result, "temperror")

    def test_two_records_are_none(self):
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=none")
        self.assertEqual(self.check().result, "none")

    def test_not_a_dmarc_record(self):
        self.dns = FakeResolver()
        self.dns.add("_dmarc.sender.example", "TXT", "p=reject; v=DMARC1")
        self.assertEqual(self.check().result, "none")

    def test_bad_policy_is_none(self):
        self.dns = FakeResolver()
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=bogus")
        self.assertEqual(self.check().policy, "none")

    def test_no_from_is_permerror(self):
        r = self.check(b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(r.result, "permerror")

    def test_a_second_from_cannot_hide_a_failure(self):
        msg = b"From: x@sender.example\r\nFrom: y@nopolicy.example\r\n\r\nbody\r\n"
        r = self.check(msg, spf_result=spf(domain="nopolicy.example"))
        self.assertEqual((r.result, r.domain), ("fail", "sender.example"))
