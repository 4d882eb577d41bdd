"""Tests for the built-in content rules (allworx.protocols.mail.contentrules)."""

import base64
import time

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from allworx.protocols.mail import contentrules
from allworx.protocols.mail.contentrules import auth_rules, evaluate, parse_message, texts
from allworx.protocols.mail.verdicts import MessageFacts

NOW = 1_800_000_000
GOOD = (b"From: Alice <alice@example.org>\r\nTo: bob@corp.example\r\nSubject: Lunch\r\n"
        b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
        b"Shall we meet at noon?\r\n")


def names(raw, facts=None):
    return {name for name, _, _ in evaluate(parse_message(raw), facts, now=NOW)}


def facts(spf="pass", dkim=(("example.org", "s1", "pass"),), dmarc="pass"):
    return MessageFacts("198.51.100.7", "mx.example.org", "alice@example.org",
                        ("bob@corp.example",), ("bob",), spf, dkim, dmarc, "")


def html_message(body, with_text=False, cte="7bit"):
    parts = []
    if with_text:
        parts.append(b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n")
    if cte == "base64":
        body = base64.encodebytes(body)
    parts.append(b"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
                 + cte.encode() + b"\r\n\r\n" + body + b"\r\n")
    head = GOOD.split(b"\r\n\r\n")[0]
    return (head + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
            + b"".join(parts) + b"--b--\r\n")


class RuleTests(unittest.TestCase):

    def test_a_plain_good_message_hits_nothing(self):
        self.assertEqual(names(GOOD), set())
        self.assertEqual(names(GOOD, facts()), {"DMARC_PASS"})

    def test_missing_headers(self):
        raw = b"From: a@b.example\r\n\r\nbody\r\n"
        self.assertEqual(names(raw), {"MISSING_DATE", "MISSING_MID", "MISSING_SUBJECT", "MISSING_TO"})
        self.assertIn("FROM_NO_ADDRESS", names(b"From: nobody\r\n\r\nx\r\n"))
        self.assertIn("INVALID_DATE", names(GOOD.replace(b"Fri, 15 Jan 2027 08:00:00 +0000", b"soon")))
        self.assertIn("DATE_IN_FUTURE", names(GOOD.replace(b"2027", b"2031")))

    def test_from_name_with_another_address(self):
        raw = GOOD.replace(b"Alice <alice@example.org>", b'"service@bank.example" <x@spam.example>')
        self.assertIn("FROM_NAME_OTHER_ADDR", names(raw))
        raw = GOOD.replace(b"Alice <alice@example.org>", b'"alice@example.org" <alice@example.org>')
        self.assertNotIn("FROM_NAME_OTHER_ADDR", names(raw))

    def test_subject_shouting(self):
        self.assertIn("SUBJ_ALL_CAPS", names(GOOD.replace(b"Lunch", b"YOU HAVE WON A PRIZE")))
        self.assertNotIn("SUBJ_ALL_CAPS", names(GOOD.replace(b"Lunch", b"RE: OK")))
        self.assertIn("SUBJ_EXCLAIM", names(GOOD.replace(b"Lunch", b"Act now!!!")))
        self.assertIn("SUBJ_ALL_CAPS", names(GOOD.replace(b"Lunch", b"=?utf-8?b?"
                                                           + base64.b64encode(b"FREE MONEY TODAY") + b"?=")))

    def test_urls(self):
        self.assertIn("URL_BARE_IP", names(GOOD.replace(b"noon?", b"noon? http://192.0.2.4/login")))
        self.assertIn("URL_SHORTENER", names(GOOD.replace(b"noon?", b"see https://bit.ly/xyz")))
        self.assertEqual(names(GOOD.replace(b"noon?", b"see https://www.example.org/menu")), set())

    def test_html_rules(self):
        link = b'<p>Pay <a href="http://evil.example/x">https://www.mybank.example/login</a></p>'
        self.assertEqual(names(html_message(link)), {"HTML_ONLY", "HTML_LINK_MISMATCH"})
        ok = b'<a href="https://www.mybank.example/login">mybank.example</a> <a href="http://x.example">here</a>'
        self.assertEqual(names(html_message(ok, with_text=True)), set())
        self.assertIn("BASE64_TEXT", names(html_message(ok, with_text=True, cte="base64")))

    def test_html_text_is_stripped(self):
        m = parse_message(html_message(b"<style>p{}</style><p>Hello &amp; <b>bye</b></p><!-- hidden -->"))
        [text] = texts(m)
        self.assertEqual(text.split(), ["Hello", "&", "bye"])

    def test_link_text_split_by_tags_still_counts(self):
        link = b'<a href="http://evil.example/x"><b>mybank</b>.example</a> <a href=x>'
        self.assertIn("HTML_LINK_MISMATCH", names(html_message(link)))
        self.assertEqual(contentrules.links('<A HREF="h">t<abbr>x</abbr></a><a href=z>'),
                         [("h", "tx")])
        self.assertEqual(contentrules.strip_html("a<script>x</SCRIPT >b<!-- c"), "a b ")

    def test_unclosed_markup_takes_linear_time(self):
        # Regular expressions with lazy repeats over unclosed `<a href>`,
        # `<script`, `<!--` or `<` took minutes of the reactor for one such message.
        size = 256 * 1024
        for piece in ("<a href=x>", "<script", "<!--", "<", "<a href=http://x.example/>x<b>"):
            html_text = piece * (size // len(piece))
            started = time.monotonic()
            contentrules.strip_html(html_text)
            contentrules._mismatched_link(html_text)
            took = time.monotonic() - started
            self.assertLess(took, 5.0, "%r took %.1f s" % (piece, took))

    def test_charsets(self):
        raw = GOOD.replace(b"Subject:", b"Content-Type: text/plain; charset=x-nonsense\r\nSubject:")
        self.assertIn("UNKNOWN_CHARSET", names(raw))
        raw = GOOD.replace(b"Subject:", b"Content-Type: text/plain; charset=koi8-r\r\nSubject:")
        self.assertIn("UNUSUAL_CHARSET", names(raw))

    def test_forged_outlook(self):
        raw = GOOD.replace(b"Subject:", b"X-Mailer: Microsoft Outlook 16.0\r\nSubject:")
        self.assertIn("FORGED_OUTLOOK", names(raw))
        raw = raw.replace(b"Subject:", b"Thread-Index: AdXyz==\r\nSubject:")
        self.assertNotIn("FORGED_OUTLOOK", names(raw))

    def test_gtube(self):
        raw = GOOD.replace(b"noon?", contentrules.GTUBE.encode())
        self.assertIn("GTUBE", names(raw))

    def test_auth_points(self):
        def points(**kw):
            return {n: p for n, p, _ in auth_rules(facts(**kw))}
        self.assertEqual(points(spf="fail", dkim=(), dmarc="none"), {"SPF_FAIL": 3.0})
        self.assertEqual(points(spf="softfail", dkim=(("a.example", "s", "fail"),), dmarc="fail"),
                         {"SPF_SOFTFAIL": 1.0, "DKIM_INVALID": 1.5, "DMARC_FAIL": 2.0})
        self.assertEqual(points(spf="none", dkim=(), dmarc="none"), {"NO_AUTH": 0.3})
        self.assertEqual(points(spf="pass", dkim=(("a.example", "s", "fail"), ("b.example", "s", "pass")),
                                dmarc="none"), {})
        self.assertEqual(auth_rules(None), [])

    def test_only_the_head_of_huge_parts_is_decoded(self):
        limit = contentrules.TEXT_PART_LIMIT
        words = b"cheap pills http://192.0.2.4/x " * (limit // 10)
        for cte, body in ((b"7bit", words), (b"base64", base64.encodebytes(words)),
                          (b"quoted-printable", words.replace(b" ", b"=20"))):
            raw = GOOD.replace(b"Subject:", b"Content-Transfer-Encoding: " + cte + b"\r\nSubject:") \
                .replace(b"Shall we meet at noon?", body)
            [text] = texts(parse_message(raw))
            self.assertLessEqual(len(text), limit)
            self.assertGreater(len(text), limit // 2)
            self.assertTrue(text.startswith("cheap pills"), (cte, text[:40]))
            self.assertIn("URL_BARE_IP", names(raw))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2000))
    def test_garbage_never_raises(self, raw):
        evaluate(parse_message(raw), None, now=NOW)
        texts(parse_message(raw))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from([
        b"--b\r\n", b"--b--\r\n", b"Content-Type: text/html; charset=\"x\xff\"\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"\r\n", b"<a href=http://[::1/>x.example</a>",
        b"=?utf-8?q?=FF?=", b"PGEgaHJlZj0=\r\n", b"=\r\n", b"Content-Type: message/rfc822\r\n",
        b"From: \"a@b.example\" <@>\r\n", b"Date: Mon, 99 Foo 20000 99:99 +9999\r\n"]), max_size=40))
    def test_mime_shaped_garbage_never_raises(self, pieces):
        raw = b"Content-Type: multipart/mixed; boundary=b\r\n" + b"".join(pieces)
        evaluate(parse_message(raw), None, now=NOW)
