"""Tests for allworx.protocols.mail.security: the mail service's IMailSecurity for the admin pages."""

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.interfaces import IMailSecurity
from allworx.protocols.mail import service as mail_service
from allworx.tests.mailtesting import PlainChecker, make_office, sync_thread


class MailSecurityTests(unittest.TestCase):

    def setUp(self):
        self.office = make_office(self)
        self.reactor = MemoryReactorClock()
        self.mail = mail_service.MailService(self.office, self.reactor, checker=PlainChecker({}),
                                             defer_to_thread=sync_thread)
        self.security = self.mail.security

    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(IMailSecurity, self.security))

    def test_records_name_both_selectors_spf_and_dmarc(self):
        self.mail.dkim.start()
        rows = self.security.records()
        names = {r["name"]: r for r in rows}
        domain = self.office.config.system.domain
        selector = self.office.config.mail.dkim_selector
        self.assertIn("%s._domainkey.%s" % (selector, domain), names)
        self.assertIn("%s-ed25519._domainkey.%s" % (selector, domain), names)
        self.assertTrue(names[domain]["value"].startswith("v=spf1"))
        self.assertTrue(names["_dmarc." + domain]["value"].startswith("v=DMARC1"))

    def test_decisions_and_junk_counts(self):
        self.mail.decisions.record("198.51.100.7", "mx.example.net", "a@example.net",
                                   ["alice@example.com"], "junk", "spam score 7", score=7.0)
        [d] = self.security.decisions(10)
        self.assertEqual((d["client"], d["verdict"], d["score"]), ("198.51.100.7", "junk", 7.0))
        user = sorted(self.office.config.users)[0]
        junk = os.path.join(self.mail.store.junk_folder(user), "new")
        os.makedirs(junk)
        for n in range(2):
            with open(os.path.join(junk, "m%d" % n), "wb") as f:
                f.write(b"Subject: x\n\nx\n")
        counts = self.security.junk_counts()
        self.assertEqual(counts[user], 2)
        self.assertEqual(set(counts), set(self.office.config.users))

    def test_rotate_makes_the_new_selector_current(self):
        self.mail.dkim.start()
        old = self.office.config.mail.dkim_selector
        results = []
        self.security.rotate_dkim().addCallback(results.append)
        [new] = results
        self.assertNotEqual(new, old)
        self.assertEqual(self.office.config.mail.dkim_selector, new)
        names = {r["name"] for r in self.security.records()}
        self.assertIn("%s._domainkey.%s" % (new, self.office.config.system.domain), names)
