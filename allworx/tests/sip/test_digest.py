# -*- test-case-name: allworx.tests.sip.test_digest -*-
"""
The client side of digest (allworx.protocols.sip.digest): the RFC 2617 and
RFC 7616 worked examples, a SHA-256 answer computed here step by step, the
RFC 2069 form without qop, challenges it cannot answer, and the choice among
several challenges.
"""

import hashlib

from twisted.trial import unittest

from allworx.protocols.sip import digest

RFC2617 = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
           'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
           'opaque="5ccc069c403ebaf9f0171e9517f40e41"')

RFC7616 = ('Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=%s, '
           'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
           'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def fields(value):
    """An Authorization value's parameters (the server side's view of it)."""
    return {k: v for k, v in digest.parse_challenge(value).items() if k != "scheme"}


class ParseTests(unittest.TestCase):
    def test_parses_quoted_and_bare_values(self):
        c = digest.parse_challenge(RFC2617)
        self.assertEqual(c["realm"], "testrealm@host.com")
        self.assertEqual(c["qop"], "auth,auth-int")
        self.assertEqual(c["nonce"], "dcd98b7102dd2f0e8b11d0f600bfb0c093")
        c = digest.parse_challenge('Digest realm="a \\"b\\", c", nonce=abc, stale=TRUE, algorithm=MD5')
        self.assertEqual((c["realm"], c["nonce"], c["stale"], c["algorithm"]),
                         ('a "b", c', "abc", "TRUE", "MD5"))

    def test_refuses_other_schemes_and_no_nonce(self):
        self.assertRaises(digest.DigestError, digest.parse_challenge, 'Basic realm="x"')
        self.assertRaises(digest.DigestError, digest.parse_challenge, 'Digest realm="x"')
        self.assertRaises(digest.DigestError, digest.parse_challenge, 'Digest realm="x", "junk"')


class AnswerTests(unittest.TestCase):
    def test_rfc2617_worked_example(self):
        value = digest.answer(RFC2617, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                              cnonce="0a4f113b", nc=1)
        self.assertTrue(value.startswith("Digest "))
        f = fields(value)
        self.assertEqual(f["response"], "6629fae49393a05397450978507c4ef1")
        self.assertEqual((f["username"], f["realm"], f["uri"], f["qop"], f["nc"], f["cnonce"],
                          f["opaque"]),
                         ("Mufasa", "testrealm@host.com", "/dir/index.html", "auth", "00000001",
                          "0a4f113b", "5ccc069c403ebaf9f0171e9517f40e41"))

    def test_rfc7616_examples(self):
        for algorithm, expected in (
                ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
                ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")):
            f = fields(digest.answer(RFC7616 % algorithm, "GET", "/dir/index.html", "Mufasa",
                                     "Circle of Life", cnonce=RFC7616_CNONCE))
            self.assertEqual(f["response"], expected, algorithm)
            self.assertEqual(f["algorithm"], algorithm)

    def test_sha256_for_sip_computed_here(self):
        challenge = ('Digest realm="sip.internet.example", nonce="5f2a9c", algorithm=SHA-256, '
                     'qop="auth"')
        value = digest.answer(challenge, "REGISTER", "sip:sip.internet.example", "office",
                              "s3cret", cnonce="c0ffee", nc=3)

        def sha(text):
            return hashlib.sha256(text.encode()).hexdigest()
        ha1 = sha("office:sip.internet.example:s3cret")
        ha2 = sha("REGISTER:sip:sip.internet.example")
        expected = sha("%s:5f2a9c:00000003:c0ffee:auth:%s" % (ha1, ha2))
        f = fields(value)
        self.assertEqual(f["response"], expected)
        self.assertEqual((f["nc"], f["algorithm"], f["uri"]),
                         ("00000003", "SHA-256", "sip:sip.internet.example"))
        self.assertNotIn("opaque", f)

    def test_without_qop_the_rfc2069_form(self):
        value = digest.answer('Digest realm="r", nonce="n"', "INVITE", "sip:+15557770001@p",
                              "office", "pw")

        def md5(text):
            return hashlib.md5(text.encode()).hexdigest()
        expected = md5("%s:n:%s" % (md5("office:r:pw"), md5("INVITE:sip:+15557770001@p")))
        f = fields(value)
        self.assertEqual(f["response"], expected)
        self.assertNotIn("qop", f)
        self.assertNotIn("nc", f)
        self.assertNotIn("cnonce", f)

    def test_md5_sess(self):
        value = digest.answer('Digest realm="r", nonce="n", algorithm=MD5-sess, qop=auth',
                              "REGISTER", "sip:p", "u", "pw", cnonce="cn")

        def md5(text):
            return hashlib.md5(text.encode()).hexdigest()
        ha1 = md5("%s:n:cn" % md5("u:r:pw"))
        expected = md5("%s:n:00000001:cn:auth:%s" % (ha1, md5("REGISTER:sip:p")))
        self.assertEqual(fields(value)["response"], expected)

    def test_random_cnonce_by_default(self):
        a = fields(digest.answer(RFC2617, "GET", "/", "u", "p"))
        b = fields(digest.answer(RFC2617, "GET", "/", "u", "p"))
        self.assertNotEqual(a["cnonce"], b["cnonce"])

    def test_accepts_a_parsed_challenge(self):
        parsed = digest.parse_challenge(RFC2617)
        self.assertEqual(digest.answer(parsed, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                       cnonce="0a4f113b"),
                         digest.answer(RFC2617, "GET", "/dir/index.html", "Mufasa",
                                       "Circle Of Life", cnonce="0a4f113b"))

    def test_unanswerable(self):
        self.assertRaises(digest.DigestError, digest.answer,
                          'Digest realm="r", nonce="n", algorithm=SHA-512-256', "GET", "/", "u", "p")
        self.assertRaises(digest.DigestError, digest.answer,
                          'Digest realm="r", nonce="n", qop="auth-int"', "GET", "/", "u", "p")


class ChooseTests(unittest.TestCase):
    def test_prefers_sha256_and_skips_what_it_cannot_answer(self):
        md5 = 'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"'
        sha = 'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"'
        odd = 'Digest realm="r", nonce="c", algorithm=SHA-512-256, qop="auth"'
        self.assertEqual(digest.choose([md5, sha, odd])["nonce"], "b")
        self.assertEqual(digest.choose([odd, md5])["nonce"], "a")
        self.assertIsNone(digest.choose([odd, 'Basic realm="x"']))
