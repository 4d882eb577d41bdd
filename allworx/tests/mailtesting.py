"""Shared pieces of the mail tests: an office on a temp dir, a store without threads."""

import os

from twisted.cred import error as cred_error
from twisted.internet import defer, task
from zope.interface import implementer
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword

from allworx.config import parse_config
from allworx.protocols.mail.durable import DurableWriter
from allworx.protocols.mail.queue import OutboundQueue
from allworx.protocols.mail.store import MailStore
from allworx.office import Office
from allworx.tests.confs import MINIMAL, PW_HASH

MAIL_CONF = MINIMAL + """
[user admin]
password = {pw}

[user carol]
password = {pw}
email_forward = carol@home.example

[alias bob]
to = bob bob@elsewhere.example

[alias team]
to = sales carol

[alias everyone]
to = team admin alice
""".format(pw=PW_HASH)


def sync_thread(f, *args, **kw):
    """deferToThread stand-in: run now, in this thread."""
    return defer.maybeDeferred(f, *args, **kw)


def make_office(testcase, text=MAIL_CONF):
    """An Office whose data_dir is a fresh temp dir of `testcase`."""
    data = os.path.abspath(testcase.mktemp())
    os.makedirs(data)
    return Office(parse_config(text), data_dir=data)


class FakeRelay:
    """Records deliveries; answers with `outcome(domain, rcpt)`."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.calls = []

    def deliver(self, domain, sender, recipients, data):
        self.calls.append((domain, sender, list(recipients), data))
        return defer.succeed({r: self.outcome(domain, r) for r in recipients})


def make_store(testcase, office=None, relay=None, clock=None):
    """(office, store, queue, clock) wired like the service, with no threads."""
    office = office or make_office(testcase)
    clock = clock or task.Clock()
    writer = DurableWriter(sync_thread)
    store = MailStore(office, writer, clock)
    queue = OutboundQueue(office, writer, clock, relay, store)
    store.queue = queue
    return office, store, queue, clock


@implementer(ICredentialsChecker)
class PlainChecker:
    """Passwords in a dict, no hashing: for protocol tests."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, passwords):
        self.passwords = passwords

    def requestAvatarId(self, creds):
        # Any bytes, decoded as the office's checker does (allworx.auth).
        name = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        pw = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password
        if self.passwords.get(name) == pw:
            return defer.succeed(name)
        return defer.fail(cred_error.UnauthorizedLogin("wrong"))
