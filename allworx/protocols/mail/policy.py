# -*- test-case-name: allworx.tests.mail.test_aliases -*-
"""
Who may send mail to whom through the server (pure decisions).

LAN clients and authenticated users relay anywhere (guide 8.1 note); peers on
the WAN may only reach the office's own users and aliases unless
`[mail] relay_from_wan`; an address of the office's domain that names nobody
is refused outright. The SMTP protocol asks these functions and sends the
reply they give.
"""

import attr

from allworx.protocols.mail.aliases import classify


@attr.s(frozen=True, slots=True)
class Refusal(Exception):
    """An SMTP refusal: reply code, enhanced status code and text."""

    code = attr.ib()
    status = attr.ib()
    text = attr.ib()

    def reply(self):
        """The reply line's text after the code: `5.7.1 relaying denied`."""
        return "%s %s" % (self.status, self.text)


@attr.s(frozen=True, slots=True)
class Client:
    """What the server knows about an SMTP client when it judges a command."""

    from_lan = attr.ib()
    authenticated = attr.ib(default=None)   # the user name after AUTH
    submission = attr.ib(default=False)     # on the submission port (587)


def sender_verdict(config, client, sender):
    """None when `client` may use `sender` (bytes or str; '' is the null sender), else a Refusal."""
    if client.submission and not client.authenticated:
        return Refusal(530, "5.7.0", "authentication required on the submission port")
    return None


def recipient_verdict(config, client, recipient):
    """
    None when the server takes mail for `recipient` from `client`, else a
    Refusal: `550 5.1.1` for nobody of the office, `550 5.7.1` for relaying
    that is not allowed.
    """
    kind = classify(config, recipient)
    if kind == "local":
        return None
    if kind == "unknown":
        return Refusal(550, "5.1.1", "no such user here")
    if client.from_lan or client.authenticated or config.mail.relay_from_wan:
        return None
    return Refusal(550, "5.7.1", "relaying denied: this server only takes mail "
                   "for %s from the internet" % config.system.domain)
