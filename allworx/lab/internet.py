# -*- test-case-name: allworx.tests.lab.test_namespaces -*-
"""
The lab's internet host: a web server, echo, an SMTP sink and POP3 mailboxes.

`allworx lab up` runs it in the `inet` namespace (198.51.100.10) as
`python -m allworx.lab.internet --dir STATE/inet`. It serves:

- HTTP on 80: `/` a page, `/whoami` the client's address (what NAT made of it);
- echo on TCP and UDP 7;
- SMTP on 25 accepting any mail, one Maildir per recipient under `smtp/`
  (or refusing every recipient with the code in `smtp-refuse`, if present);
- POP3 on 110 for the accounts in `pop3-accounts.json`, Maildirs under `pop3/`;
  deletions take effect at QUIT, as RFC 1939 says.
"""

import argparse
import os
import sys

from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer, protocol
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.mail import pop3, smtp
from twisted.protocols import wire
from twisted.web import resource, server
from zope.interface import implementer

from allworx.lab.maildir import (
    ACCOUNTS_FILE,
    POP3_FOLDERS,
    SMTP_FOLDERS,
    Maildir,
    envelope_headers,
    folder_name,
    read_accounts,
    read_refusal,
)

log = Logger()

HOSTNAME = b"mail.internet.example"


# ---------------------------------------------------------------- web

class WhoAmI(resource.Resource):
    """Answers with the address the request came from, one line of text."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (request.getClientAddress().host + "\n").encode()


class FrontPage(resource.Resource):
    """The site's front page, so a browser behind the office sees something."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            b"<!DOCTYPE html><title>web.internet.example</title>"
            b"<h1>web.internet.example</h1><p>The allworx lab's internet.</p>\n"
        )


def web_site():
    """The HTTP site: `/` and `/whoami`."""
    root = resource.Resource()
    root.putChild(b"", FrontPage())
    root.putChild(b"whoami", WhoAmI())
    return server.Site(root)


class UDPEcho(protocol.DatagramProtocol):
    """Sends each datagram back to where it came from."""

    def datagramReceived(self, data, addr):
        self.transport.write(data, addr)


# ---------------------------------------------------------------- SMTP sink

@implementer(smtp.IMessage)
class MaildirMessage:
    """One message for one recipient, stored in its Maildir at end of data."""

    def __init__(self, maildir, envelope):
        self.maildir = maildir
        self.lines = [envelope.rstrip(b"\n")]

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        data = b"\n".join(self.lines) + b"\n"
        self.lines = None
        # A synchronous fsync is fine here: this host serves one lab's tests,
        # and 250 must only be said once the message is on disk.
        return defer.succeed(self.maildir.deliver(data))

    def connectionLost(self):
        self.lines = None


@implementer(smtp.IMessageDelivery)
class SinkDelivery:
    """Accepts every sender and recipient; each recipient gets a Maildir."""

    def __init__(self, directory):
        self.directory = directory

    def receivedHeader(self, helo, origin, recipients):
        peer = helo[1] if isinstance(helo[1], bytes) else str(helo[1]).encode()
        return b"Received: from %s ([%s])\n\tby %s (allworx lab); %s" % (
            helo[0], peer, HOSTNAME, smtp.rfc822date())

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        refusal = read_refusal(self.directory)
        if refusal is not None:
            code, text = refusal
            raise smtp.SMTPBadRcpt(str(user.dest), code, text)
        recipient = str(user.dest)
        maildir = Maildir(os.path.join(
            self.directory, SMTP_FOLDERS, folder_name(recipient)))
        envelope = envelope_headers(str(user.orig), recipient)
        return lambda: MaildirMessage(maildir, envelope)


class SinkFactory(smtp.SMTPFactory):
    """ESMTP server whose every connection delivers through one SinkDelivery."""

    protocol = smtp.ESMTP
    domain = HOSTNAME

    def __init__(self, delivery):
        smtp.SMTPFactory.__init__(self)
        self.delivery = delivery

    def buildProtocol(self, addr):
        p = smtp.SMTPFactory.buildProtocol(self, addr)
        p.delivery = self.delivery
        return p


# ---------------------------------------------------------------- POP3

def pop3_size(data):
    """The octets RETR sends for a message stored with LF line ends."""
    return len(data) + data.count(b"\n")


@implementer(pop3.IMailbox)
class MaildirMailbox:
    """A POP3 view of a Maildir, fixed at login; deletions happen at sync()."""

    def __init__(self, maildir):
        self.paths = maildir.messages()
        self.sizes = []
        for path in self.paths:
            with open(path, "rb") as f:
                self.sizes.append(pop3_size(f.read()))
        self.deleted = set()

    def _check(self, index):
        if not 0 <= index < len(self.paths):
            raise ValueError("no message %d" % (index + 1,))

    def listMessages(self, index=None):
        if index is None:
            return [0 if i in self.deleted else size
                    for i, size in enumerate(self.sizes)]
        self._check(index)
        return 0 if index in self.deleted else self.sizes[index]

    def getMessage(self, index):
        self._check(index)
        if index in self.deleted:
            raise ValueError("message %d is deleted" % (index + 1,))
        return open(self.paths[index], "rb")

    def getUidl(self, index):
        self._check(index)
        if index in self.deleted:
            raise ValueError("message %d is deleted" % (index + 1,))
        return os.path.basename(self.paths[index]).split(":")[0]

    def deleteMessage(self, index):
        self._check(index)
        self.deleted.add(index)

    def undeleteMessages(self):
        self.deleted.clear()

    def sync(self):
        for index in sorted(self.deleted):
            try:
                os.unlink(self.paths[index])
            except FileNotFoundError:
                pass
        self.deleted.clear()


@implementer(checkers.ICredentialsChecker)
class AccountFileChecker:
    """Checks USER/PASS against the accounts file, read at each login."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, path):
        self.path = path

    def requestAvatarId(self, creds):
        user = creds.username
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        password = read_accounts(self.path).get(user)
        if password is not None and creds.checkPassword(password.encode()):
            return defer.succeed(user)
        return defer.fail(error.UnauthorizedLogin())


@implementer(portal.IRealm)
class MailboxRealm:
    """Gives each POP3 user the Maildir named after them."""

    def __init__(self, directory):
        self.directory = directory

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pop3.IMailbox not in interfaces:
            raise NotImplementedError("only POP3 mailboxes here")
        maildir = Maildir(os.path.join(self.directory, folder_name(avatarId)))
        return pop3.IMailbox, MaildirMailbox(maildir), lambda: None


class POP3Factory(protocol.ServerFactory):
    """POP3 server authenticating through one portal."""

    protocol = pop3.POP3

    def __init__(self, portal):
        self.portal = portal

    def buildProtocol(self, addr):
        p = protocol.ServerFactory.buildProtocol(self, addr)
        p.portal = self.portal
        return p


def pop3_factory(directory):
    """The POP3 factory over `directory`'s accounts file and mailboxes."""
    realm = MailboxRealm(os.path.join(directory, POP3_FOLDERS))
    checker = AccountFileChecker(os.path.join(directory, ACCOUNTS_FILE))
    return POP3Factory(portal.Portal(realm, [checker]))


# ---------------------------------------------------------------- program

def listen(reactor, options):
    """Start every service on the ports in `options`."""
    interface = options.interface
    reactor.listenTCP(options.http_port, web_site(), interface=interface)
    reactor.listenTCP(options.echo_port,
                      protocol.Factory.forProtocol(wire.Echo), interface=interface)
    reactor.listenUDP(options.echo_port, UDPEcho(), interface=interface)
    reactor.listenTCP(options.smtp_port,
                      SinkFactory(SinkDelivery(options.dir)), interface=interface)
    reactor.listenTCP(options.pop3_port, pop3_factory(options.dir),
                      interface=interface)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m allworx.lab.internet",
        description="The allworx lab's internet host services.")
    parser.add_argument("--dir", required=True,
                        help="data directory (mail, POP3 accounts)")
    parser.add_argument("--interface", default="", help="address to bind")
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--echo-port", type=int, default=7)
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--pop3-port", type=int, default=110)
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    os.makedirs(options.dir, exist_ok=True)
    listen(reactor, options)
    log.info("internet host serving from {dir}", dir=options.dir)
    reactor.run()


if __name__ == "__main__":
    main()
