"""Tests for SPF (allworx.protocols.mail.spf) over a fake resolver."""

from twisted.trial import unittest

from allworx.protocols.mail import dnslookup, spf
from allworx.tests.mail.fakedns import FakeResolver

IP = "192.0.2.10"


class SpfCase(unittest.TestCase):

    def setUp(self):
        self.dns = FakeResolver()

    def result(self, mail_from="user@example.com", ip=IP, helo="mail.example.com"):
        d = spf.check(self.dns, ip, helo, mail_from)
        self.assertTrue(d.called)
        return self.successResultOf(d)

    def word(self, *args, **kw):
        return self.result(*args, **kw).result

    def record(self, text, domain="example.com"):
        self.dns.add(domain, "TXT", text)


class MechanismTests(SpfCase):

    def test_no_record_is_none(self):
        self.dns.add("example.com", "A", "192.0.2.1")
        self.assertEqual(self.word(), "none")

    def test_nxdomain_is_none(self):
        self.assertEqual(self.word(), "none")

    def test_other_txt_only_is_none(self):
        self.record("google-site-verification=abc")
        self.assertEqual(self.word(), "none")

    def test_ip4(self):
        self.record("v=spf1 ip4:192.0.2.0/24 -all")
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(ip="198.51.100.1"), "fail")

    def test_ip6(self):
        self.record("v=spf1 ip6:2001:db8::/32 ~all")
        self.assertEqual(self.word(ip="2001:db8::5"), "pass")
        self.assertEqual(self.word(ip="2001:db9::5"), "softfail")
        self.assertEqual(self.word(), "softfail")       # a v4 client never matches ip6

    def test_v4_mapped_client_is_v4(self):
        self.record("v=spf1 ip4:192.0.2.10 -all")
        self.assertEqual(self.word(ip="::ffff:192.0.2.10"), "pass")

    def test_qualifiers(self):
        for qualifier, word in (("+", "pass"), ("-", "fail"), ("~", "softfail"), ("?", "neutral")):
            self.dns = FakeResolver()
            self.record("v=spf1 %sip4:%s" % (qualifier, IP))
            self.assertEqual(self.word(), word)

    def test_no_match_is_neutral(self):
        self.record("v=spf1 ip4:198.51.100.1")
        self.assertEqual(self.word(), "neutral")

    def test_a_with_cidr(self):
        self.record("v=spf1 a a:other.example.com/24 -all")
        self.dns.add("example.com", "A", "203.0.113.1")
        self.dns.add("other.example.com", "A", "192.0.2.99")
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(ip="203.0.113.1"), "pass")
        self.assertEqual(self.word(ip="203.0.113.2"), "fail")

    def test_a_dual_cidr_v6(self):
        self.record("v=spf1 a/24//64 -all")
        self.dns.add("example.com", "AAAA", "2001:db8:1:2::1")
        self.assertEqual(self.word(ip="2001:db8:1:2::99"), "pass")
        self.assertEqual(self.word(ip="2001:db8:1:3::1"), "fail")

    def test_mx(self):
        self.record("v=spf1 mx -all")
        self.dns.add("example.com", "MX", (10, "mx1.example.com"), (20, "mx2.example.com"))
        self.dns.add("mx1.example.com", "A", "198.51.100.1")
        self.dns.add("mx2.example.com", "A", IP)
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(ip="198.51.100.2"), "fail")

    def test_too_many_mx_is_permerror(self):
        self.record("v=spf1 mx -all")
        self.dns.add("example.com", "MX", *[(n, "mx%d.example.com" % n) for n in range(11)])
        self.assertEqual(self.word(), "permerror")

    def test_ptr(self):
        self.record("v=spf1 ptr -all")
        self.dns.add("10.2.0.192.in-addr.arpa", "PTR", "out.example.com")
        self.dns.add("out.example.com", "A", IP)
        self.assertEqual(self.word(), "pass")
        self.dns = FakeResolver()
        self.record("v=spf1 ptr -all")
        self.dns.add("10.2.0.192.in-addr.arpa", "PTR", "out.example.com")
        self.dns.add("out.example.com", "A", "192.0.2.11")      # not confirmed forward
        self.assertEqual(self.word(), "fail")

    def test_exists(self):
        self.record("v=spf1 exists:%{i}.allow.example.com -all")
        self.dns.add("192.0.2.10.allow.example.com", "A", "127.0.0.2")
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(ip="192.0.2.11"), "fail")

    def test_include(self):
        self.record("v=spf1 include:_spf.provider.example -all")
        self.dns.add("_spf.provider.example", "TXT", "v=spf1 ip4:192.0.2.0/28 ~all")
        self.assertEqual(self.word(), "pass")
        # the include's softfail is "no match": the outer -all decides
        self.assertEqual(self.word(ip="192.0.2.100"), "fail")

    def test_include_without_record_is_permerror(self):
        self.record("v=spf1 include:nothing.example -all")
        self.assertEqual(self.word(), "permerror")

    def test_redirect(self):
        self.record("v=spf1 redirect=_spf.example.net")
        self.dns.add("_spf.example.net", "TXT", "v=spf1 ip4:%s -all" % IP)
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(ip="198.51.100.9"), "fail")

    def test_redirect_ignored_with_all(self):
        self.record("v=spf1 ?all redirect=_spf.example.net")
        self.dns.add("_spf.example.net", "TXT", "v=spf1 -all")
        self.assertEqual(self.word(), "neutral")

    def test_redirect_to_nothing_is_permerror(self):
        self.record("v=spf1 redirect=nothing.example")
        self.assertEqual(self.word(), "permerror")


class ErrorTests(SpfCase):

    def test_two_records_permerror(self):
        self.record("v=spf1 -all")
        self.record("v=spf1 +all")
        self.assertEqual(self.word(), "permerror")

    def test_unknown_mechanism_permerror_even_after_a_match(self):
        self.record("v=spf1 ip4:%s foo:bar -all" % IP)
        self.assertEqual(self.word(), "permerror")

    def test_unknown_modifier_ignored(self):
        self.record("v=spf1 foo=bar ip4:%s -all" % IP)
        self.assertEqual(self.word(), "pass")

    def test_ten_lookups_limit(self):
        self.record("v=spf1 " + " ".join("a:h%d.example.com" % n for n in range(11)) + " -all")
        for n in range(11):
            self.dns.add("h%d.example.com" % n, "A", "198.51.100.%d" % n)
        self.assertEqual(self.word(), "permerror")

    def test_ten_lookups_are_allowed(self):
        self.record("v=spf1 " + " ".join("a:h%d.example.com" % n for n in range(10)) + " -all")
        for n in range(10):
            self.dns.add("h%d.example.com" % n, "A", "198.51.100.%d" % n)
        self.assertEqual(self.word(), "fail")

    def test_include_loop_hits_the_limit(self):
        self.record("v=spf1 include:example.com -all")
        self.assertEqual(self.word(), "permerror")

    def test_void_lookup_limit(self):
        self.record("v=spf1 a:v1.example.com a:v2.example.com a:v3.example.com -all")
        self.assertEqual(self.word(), "permerror")
        self.dns = FakeResolver()
        self.record("v=spf1 a:v1.example.com a:v2.example.com -all")
        self.assertEqual(self.word(), "fail")

    def test_servfail_is_temperror(self):
        self.dns = FakeResolver(servfail=["example.com"])
        self.assertEqual(self.word(), "temperror")

    def test_servfail_in_include_is_temperror(self):
        self.record("v=spf1 include:broken.example -all")
        self.dns.servfail.add("broken.example")
        self.assertEqual(self.word(), "temperror")

    def test_bad_ip4_permerror(self):
        self.record("v=spf1 ip4:192.0.2.300 -all")
        self.assertEqual(self.word(), "permerror")

    def test_lookups_are_deferreds(self):
        self.dns = FakeResolver(silent=["example.com"])
        d = spf.check(self.dns, IP, "h.example.com", "u@example.com")
        self.assertNoResult(d)
        self.dns.pending[0].errback(dnslookup.TempError("timeout"))
        self.assertEqual(self.successResultOf(d).result, "temperror")


class MacroTests(SpfCase):

    def expand(self, spec, ip=IP, sender="strong-bad@email.example.com", helo="mx.example.org"):
        ev = spf._Evaluation(self.dns, ip, helo)
        return ev.expand(spec, "email.example.com", sender)

    def test_rfc_examples(self):
        self.assertEqual(self.expand("%{s}"), "strong-bad@email.example.com")
        self.assertEqual(self.expand("%{o}"), "email.example.com")
        self.assertEqual(self.expand("%{d}"), "email.example.com")
        self.assertEqual(self.expand("%{d4}"), "email.example.com")
        self.assertEqual(self.expand("%{d3}"), "email.example.com")
        self.assertEqual(self.expand("%{d2}"), "example.com")
        self.assertEqual(self.expand("%{d1}"), "com")
        self.assertEqual(self.expand("%{dr}"), "com.example.email")
        self.assertEqual(self.expand("%{d2r}"), "example.email")
        self.assertEqual(self.expand("%{l}"), "strong-bad")
        self.assertEqual(self.expand("%{l-}"), "strong.bad")
        self.assertEqual(self.expand("%{lr}"), "strong-bad")
        self.assertEqual(self.expand("%{lr-}"), "bad.strong")
        self.assertEqual(self.expand("%{l1r-}"), "strong")
        self.assertEqual(self.expand("%{ir}.%{v}._spf.%{d2}"),
                         "10.2.0.192.in-addr._spf.example.com")
        self.assertEqual(self.expand("%{lr-}.lp._spf.%{d2}"), "bad.strong.lp._spf.example.com")
        self.assertEqual(self.expand("%{ir}.%{v}._spf.%{d2}", ip="2001:db8::cb01"),
                         "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
                         ".ip6._spf.example.com")
        self.assertEqual(self.expand("%{h}"), "mx.example.org")
        self.assertEqual(self.expand("a%%b%_c%-d"), "a%b c%20d")
        self.assertEqual(self.expand("%{L}"), "strong-bad")
        self.assertEqual(self.expand("%{S}", sender="a b@x.example"), "a%20b%40x.example")

    def test_bad_macros(self):
        for spec in ("%{x}", "%{d0}", "%a", "trailing%"):
            self.assertRaises(spf.PermError, self.expand, spec)

    def test_macro_in_record(self):
        self.record("v=spf1 exists:%{l}.users.%{d} -all")
        self.dns.add("user.users.example.com", "A", "127.0.0.2")
        self.assertEqual(self.word(), "pass")
        self.assertEqual(self.word(mail_from="other@example.com"), "fail")


class HeloTests(SpfCase):

    def test_null_sender_checks_helo(self):
        self.record("v=spf1 a -all", domain="mail.example.com")
        self.dns.add("mail.example.com", "A", IP)
        r = self.result(mail_from="")
        self.assertEqual((r.result, r.identity, r.domain, r.sender),
                         ("pass", "helo", "mail.example.com", "postmaster@mail.example.com"))
        self.assertEqual(r.auth_property(), "smtp.helo=mail.example.com")

    def test_helo_not_a_domain_is_none(self):
        self.assertEqual(self.word(mail_from="", helo="localhost"), "none")
        self.assertEqual(self.word(mail_from="", helo="[192.0.2.10]"), "none")

    def test_mailfrom_property(self):
        self.record("v=spf1 -all")
        r = self.result()
        self.assertEqual((r.result, r.auth_property()), ("fail", "smtp.mailfrom=user@example.com"))
