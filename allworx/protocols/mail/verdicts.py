# -*- test-case-name: allworx.tests.mail.test_spam -*-
"""
What the inbound checks know about a message from the internet
(`MessageFacts`) and what the content filter says of it (`ContentVerdict`):
the seam between the SMTP pipeline and the content filter (SPEC 18).
"""

import attr


@attr.s(frozen=True, slots=True)
class MessageFacts:
    """
    client_ip, helo, sender (MAIL FROM), recipients (RCPT TO addresses),
    users (local user names the message is for); spf and dmarc are result
    words ("pass", "fail", "softfail", "none", "temperror", ...); dkim a
    tuple of (domain, selector, result); auth_results the
    Authentication-Results header value added.
    """
    client_ip = attr.ib()
    helo = attr.ib()
    sender = attr.ib()
    recipients = attr.ib()
    users = attr.ib()
    spf = attr.ib()
    dkim = attr.ib()
    dmarc = attr.ib()
    auth_results = attr.ib()


@attr.s(frozen=True, slots=True)
class ContentVerdict:
    """
    action "accept" | "junk" | "reject"; score; rules a tuple of
    (name, points, text); reply (code, status, text) when refused, else
    None; status_header the X-Spam-Status value.
    """
    action = attr.ib()
    score = attr.ib()
    rules = attr.ib(default=())
    reply = attr.ib(default=None)
    status_header = attr.ib(default="")
