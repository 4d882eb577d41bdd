"""Tests for Authentication-Results (authresults) and DKIM verification (dkimverify)."""

import base64

import dkim
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.trial import unittest

from allworx.protocols.mail import authresults, dkimverify
from allworx.protocols.mail.dkimverify import DkimResult
from allworx.protocols.mail.dmarc import DmarcResult
from allworx.protocols.mail.spf import SpfResult
from allworx.tests.mail.fakedns import FakeResolver

OURS = "allworx.example.com"
MESSAGE = (b"From: Alice <alice@sender.example>\r\nTo: bob@example.com\r\n"
           b"Subject: hello\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nHello Bob.\r\n")


def _keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL,
                            ser.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)).decode()
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_private = base64.b64encode(ed.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw,
                                                   ser.NoEncryption()))
    ed_public = base64.b64encode(ed.public_key().public_bytes(
        ser.Encoding.Raw, ser.PublicFormat.Raw)).decode()
    return pem, "v=DKIM1; k=rsa; p=" + pub, ed_private, "v=DKIM1; k=ed25519; p=" + ed_public


RSA_PRIVATE, RSA_TXT, ED_PRIVATE, ED_TXT = _keys()


def sign(message=MESSAGE, domain=b"sender.example"):
    """The message signed twice (rsa-sha256 with selector s1, ed25519-sha256 with s1-ed25519)."""
    headers = [b"from", b"to", b"subject", b"date"]
    rsa_sig = dkim.sign(message, b"s1", domain, RSA_PRIVATE, include_headers=headers,
                        canonicalize=(b"relaxed", b"relaxed"))
    ed_sig = dkim.sign(message, b"s1-ed25519", domain, ED_PRIVATE, include_headers=headers,
                       signature_algorithm=b"ed25519-sha256", canonicalize=(b"relaxed", b"relaxed"))
    return rsa_sig + ed_sig + message


def published(domain="sender.example"):
    r = FakeResolver()
    r.add("s1._domainkey." + domain, "TXT", RSA_TXT)
    r.add("s1-ed25519._domainkey." + domain, "TXT", ED_TXT)
    return r


class DkimVerifyTests(unittest.TestCase):

    def verify(self, resolver, message):
        d = dkimverify.verify(resolver, message)
        return self.successResultOf(d)

    def test_both_signatures_pass(self):
        results = self.verify(published(), sign())
        self.assertEqual([(r.domain, r.selector, r.algorithm, r.result) for r in results],
                         [("sender.example", "s1", "rsa-sha256", "pass"),
                          ("sender.example", "s1-ed25519", "ed25519-sha256", "pass")])

    def test_lf_line_ends_verify(self):
        results = self.verify(published(), sign().replace(b"\r\n", b"\n"))
        self.assertEqual([r.result for r in results], ["pass", "pass"])

    def test_changed_body_fails(self):
        results = self.verify(published(), sign().replace(b"Hello Bob.", b"Send money."))
        self.assertEqual([r.result for r in results], ["fail", "fail"])

    def test_changed_subject_fails(self):
        results = self.verify(published(), sign().replace(b"Subject: hello", b"Subject: win"))
        self.assertEqual([r.result for r in results], ["fail", "fail"])

    def test_no_key_is_permerror(self):
        results = self.verify(FakeResolver(), sign())
        self.assertEqual([r.result for r in results], ["permerror", "permerror"])

    def test_key_lookup_failure_is_temperror(self):
        r = published()
        r.servfail.add("s1._domainkey.sender.example")
        results = self.verify(r, sign())
        self.assertEqual([r.result for r in results], ["temperror", "pass"])

    def test_wrong_key_fails(self):
        r = FakeResolver()
        r.add("s1._domainkey.sender.example", "TXT", RSA_TXT)
        r.add("s1-ed25519._domainkey.sender.example", "TXT",
              "v=DKIM1; k=ed25519; p=" + base64.b64encode(b"\1" * 32).decode())
        results = self.verify(r, sign())
        self.assertEqual([r.result for r in results], ["pass", "fail"])

    def test_unsigned(self):
        self.assertEqual(self.verify(FakeResolver(), MESSAGE), [])

    def test_keys_are_fetched_before_verifying(self):
        r = published()
        r.silent.add("s1._domainkey.sender.example")
        d = dkimverify.verify(r, sign())
        self.assertNoResult(d)
        self.assertIn(("s1-ed25519._domainkey.sender.example", "TXT"), r.asked)
        r.pending[0].callback(([], [], []))
        self.assertEqual([x.result for x in self.successResultOf(d)], ["permerror", "pass"])

    def test_body_length_limit_with_an_appended_tail_is_policy(self):
        # RFC 6376 8.2: with l= anyone may append to the body; the signature
        # still verifies, but says nothing of the tail, so it is no pass.
        signed = dkim.sign(MESSAGE, b"s1", b"sender.example", RSA_PRIVATE, length=True,
                           include_headers=[b"from", b"to", b"subject", b"date"],
                           canonicalize=(b"relaxed", b"relaxed")) + MESSAGE
        [result] = self.verify(published(), signed)
        self.assertEqual(result.result, "pass")
        [result] = self.verify(published(), signed + b"Wire the money to IBAN XX00 1234.\r\n")
        self.assertEqual(result.result, "policy")
        self.assertIn("unsigned", result.reason)

    def test_a_key_too_costly_is_refused_unused(self):
        # A made-up key whose exponent is as long as its modulus: pure-Python
        # RSA takes ~0.4 s per 4096-bit signature, 14 s per 16384-bit one.
        def der(tag, body):
            n = len(body)
            size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
                n.to_bytes((n.bit_length() + 7) // 8, "big")
            return bytes([tag]) + size + body

        def integer(value):
            return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))
        modulus = (1 << 4095) | 0x1234567 | 1
        exponent = (1 << 4094) | 0xabcdef | 1
        spki = der(0x30, der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
                   + der(0x03, b"\x00" + der(0x30, integer(modulus) + integer(exponent))))
        r = FakeResolver()
        r.add("s1._domainkey.sender.example", "TXT",
              "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode())
        results = self.verify(r, sign())
        self.assertEqual(results[0].result, "permerror")
        self.assertIn("exponent", results[0].reason)
        big = "v=DKIM1; k=rsa; p=" + "A" * 5000
        r.records[("s1._domainkey.sender.example", "TXT")] = [big]
        self.assertEqual(self.verify(r, sign())[0].result, "permerror")

    def test_signatures_are_parsed(self):
        tags = dkimverify.signatures(sign())
        self.assertEqual([(t["d"], t["s"], t["a"]) for t in tags],
                         [("sender.example", "s1", "rsa-sha256"),
                          ("sender.example", "s1-ed25519", "ed25519-sha256")])


class FormatTests(unittest.TestCase):

    def test_the_value(self):
        value = authresults.value(
            OURS, SpfResult("pass", "mailfrom", "sender.example", "alice@sender.example"),
            [DkimResult("sender.example", "s1", "rsa-sha256", "pass")],
            DmarcResult("pass", "sender.example", "reject"))
        self.assertEqual(value, "allworx.example.com; spf=pass smtp.mailfrom=alice@sender.example; "
                         "dkim=pass header.d=sender.example header.s=s1 header.a=rsa-sha256; "
                         "dmarc=pass (p=reject) header.from=sender.example")

    def test_helo_none_and_no_policy(self):
        value = authresults.value(
            OURS, SpfResult("none", "helo", "mx.sender.example", "postmaster@mx.sender.example"),
            [], DmarcResult("none", "sender.example"))
        self.assertEqual(value, "allworx.example.com; spf=none smtp.helo=mx.sender.example; "
                         "dkim=none; dmarc=none header.from=sender.example")

    def test_odd_sender_is_quoted(self):
        value = authresults.value(OURS, SpfResult("fail", "mailfrom", "x.example",
                                                  'a "b"; c@x.example'))
        self.assertIn('smtp.mailfrom="a \\"b\\"; c@x.example"', value)

    def test_header_is_folded(self):
        h = authresults.header("a.example; spf=pass smtp.mailfrom=x@y; dkim=none")
        self.assertEqual(h, b"Authentication-Results: a.example;\n\tspf=pass smtp.mailfrom=x@y;"
                         b"\n\tdkim=none\n")
        fields, _ = authresults.split_head(h + b"\n")
        self.assertEqual(authresults.claimed_id(fields[0]), "a.example")


class RemovalTests(unittest.TestCase):

    def test_forged_removed_other_kept(self):
        message = (b"Received: from x\r\n"
                   b"Authentication-Results: ALLWORX.example.com; dkim=pass header.d=bank.example\r\n"
                   b"Authentication-Results: mx.google.com;\r\n\tspf=pass smtp.mailfrom=x@y\r\n"
                   b"Authentication-Results: (comment (nested)) allworx.example.com 1;\r\n"
                   b"\tspf=pass\r\n\tsmtp.mailfrom=a@bank.example\r\n"
                   b"Authentication-Results:\r\n allworx.example.com; dmarc=pass\r\n"
                   b"Authentication-Results: allworx.example.com.evil; spf=pass\r\n"
                   b"Subject: hi\r\n\r\n"
                   b"Authentication-Results: allworx.example.com; in the body stays\r\n")
        out, removed = authresults.remove_ours(message, OURS)
        self.assertEqual(removed, 3)
        self.assertEqual(out, b"Received: from x\r\n"
                         b"Authentication-Results: mx.google.com;\r\n\tspf=pass smtp.mailfrom=x@y\r\n"
                         b"Authentication-Results: allworx.example.com.evil; spf=pass\r\n"
                         b"Subject: hi\r\n\r\n"
                         b"Authentication-Results: allworx.example.com; in the body stays\r\n")

    def test_quoted_id_escaped_comment_and_final_dot_are_ours_too(self):
        # RFC 8601's authserv-id is a `value` (token or quoted-string) after
        # CFWS; a comment's quoted-pair "\(" does not open a comment.
        for value in (b'"allworx.example.com"; dkim=pass header.d=bank.example',
                      b'"allworx.example\\.com" ; dkim=pass',
                      b'(a \\( b) allworx.example.com; dkim=pass',
                      b'(x\\)) allworx.example.com; dkim=pass',
                      b'allworx.example.com.; dkim=pass'):
            message = b"Authentication-Results: " + value + b"\r\nSubject: hi\r\n\r\nbody\r\n"
            self.assertEqual(authresults.remove_ours(message, OURS),
                             (b"Subject: hi\r\n\r\nbody\r\n", 1), value)
        other = b'Authentication-Results: "allworx.example.com.evil"; spf=pass\r\n\r\n'
        self.assertEqual(authresults.remove_ours(other, OURS), (other, 0))

    def test_nothing_to_remove_keeps_the_bytes(self):
        out, removed = authresults.remove_ours(MESSAGE, OURS)
        self.assertEqual((out, removed), (MESSAGE, 0))

    def test_lf_message(self):
        message = b"Authentication-Results: allworx.example.com; spf=pass\nSubject: x\n\nbody\n"
        self.assertEqual(authresults.remove_ours(message, OURS),
                         (b"Subject: x\n\nbody\n", 1))
