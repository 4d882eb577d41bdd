# -*- test-case-name: allworx.tests.core.test_hidden -*-
"""tap.conf's text with its secrets masked, for the history page and API (SPEC 11)."""

from twisted.trial import unittest

from allworx.config.hidden import MASK, hide_secrets, secret_keys


class HideTests(unittest.TestCase):

    def test_the_secret_keys(self):
        self.assertTrue({"password", "sip_digest", "voicemail_pin", "secret", "metrics_token",
                         "admin_password"} <= secret_keys())
        self.assertNotIn("full_name", secret_keys())

    def test_text_and_diff_masked(self):
        text = ("[user alice]\nfull_name = Alice\npassword = $argon2id$abc\n"
                "voicemail_pin = 1234\nsip_digest = md5:0123\n"
                "pop3_fetch = pop3://alice:hunter2@pop.isp.example pop3s://a:b%40c@h:995\n"
                "\n[trunk main]\nsecret = top s3cret\n[web]\nmetrics_token = tok0123456789abcdef\n")
        shown = hide_secrets(text)
        for secret in ("$argon2id$abc", "1234", "md5:0123", "hunter2", "b%40c", "top s3cret",
                       "tok0123456789abcdef"):
            self.assertNotIn(secret, shown)
        self.assertIn("full_name = Alice\npassword = %s\n" % MASK, shown)
        self.assertIn("pop3://alice:%s@pop.isp.example" % MASK, shown)
        diff = "@@ -1,2 +1,2 @@\n-secret = old one\n+secret = new one\n password = x\n"
        self.assertEqual(hide_secrets(diff), "@@ -1,2 +1,2 @@\n-secret = %s\n+secret = %s\n"
                                             " password = %s\n" % (MASK, MASK, MASK))
        # An empty value, and a comment, stay as they are.
        self.assertEqual(hide_secrets("voicemail_pin =\n# password = here\n"),
                         "voicemail_pin =\n# password = here\n")
