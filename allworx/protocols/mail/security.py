# -*- test-case-name: allworx.tests.mail.test_security -*-
"""
Mail authentication and spam as the admin pages see them (`IMailSecurity`,
SPEC 18): the records to publish come from the DKIM signer, the decisions
from the inbound checks' log, the Junk counts from the store.
"""

from twisted.internet import defer
from zope.interface import implementer

from allworx.interfaces import IMailSecurity


@implementer(IMailSecurity)
class MailSecurity:
    """The mail service's pieces behind one seam for the web."""

    def __init__(self, office, signer, decisions, store):
        self.office = office
        self.signer = signer
        self.decisions_log = decisions
        self.store = store

    def records(self):
        return self.signer.records()

    def decisions(self, limit=100):
        return self.decisions_log.decisions(limit)

    def junk_counts(self):
        return {name: self.store.junk_count(name) for name in sorted(self.office.config.users)}

    def rotate_dkim(self):
        return defer.maybeDeferred(self.signer.rotate)
