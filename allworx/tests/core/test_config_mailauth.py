"""
Tests for the [mail] keys of mail authentication and spam (SPEC 18): their
defaults, readers, round trip and the check that spam_reject is above
spam_threshold.
"""

from twisted.trial import unittest

from allworx import config as C
from allworx.config.values import format_score, parse_dkim_selector, parse_dnsbl_zones, parse_score
from allworx.tests.confs import MINIMAL
from allworx.tests.core.test_config import errors_of


def with_mail(lines):
    return MINIMAL + "\n[mail]\n" + lines + "\n"


class MailAuthKeyTests(unittest.TestCase):

    def test_defaults(self):
        m = C.parse_config(MINIMAL).mail
        self.assertEqual((m.dkim_selector, m.dnsbl, m.greylist, m.spam_threshold, m.spam_reject,
                          m.rspamd, m.clamd), ("allworx", (), False, 5.0, 15.0, None, None))

    def test_values(self):
        m = C.parse_config(with_mail(
            "dkim_selector = Mail2026\ndnsbl = bl.example.net, zen.example.org\ngreylist = yes\n"
            "spam_threshold = 4.5\nspam_reject = 12\nrspamd = 127.0.0.1\n"
            "clamd = /run/clamav/clamd.ctl")).mail
        self.assertEqual(m.dkim_selector, "mail2026")
        self.assertEqual(m.dnsbl, ("bl.example.net", "zen.example.org"))
        self.assertEqual((m.greylist, m.spam_threshold, m.spam_reject), (True, 4.5, 12.0))
        self.assertEqual(m.rspamd, ("127.0.0.1", 11333))
        self.assertEqual(m.clamd, "/run/clamav/clamd.ctl")

    def test_refused_values_name_the_key(self):
        for line, key in (("dkim_selector = a_b", "dkim_selector"), ("dnsbl = bad..zone", "dnsbl"),
                          ("spam_threshold = lots", "spam_threshold"),
                          ("spam_threshold = 5\nspam_reject = 3", "spam_reject"),
                          ("clamd = relative.sock", "clamd")):
            errors = errors_of(with_mail(line))
            self.assertEqual([(e.section, e.key) for e in errors], [("mail", key)], line)

    def test_readers(self):
        self.assertEqual(parse_dkim_selector(" S1 "), "s1")
        self.assertRaises(ValueError, parse_dkim_selector, "-x")
        self.assertEqual(parse_dnsbl_zones("a.example a.example. b.example"),
                         ("a.example", "b.example"))
        self.assertRaises(ValueError, parse_score(), "nan")
        self.assertRaises(ValueError, parse_score(), "-1")
        self.assertEqual([format_score(v) for v in (5.0, 7.5, 0.25)], ["5", "7.5", "0.25"])
