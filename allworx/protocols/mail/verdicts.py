# -*- test-case-name: allworx.tests.mail.test_smtp -*-
"""
The seam between the inbound checks and the content filter (SPEC 18).

``MessageFacts`` is what the inbound pipeline learned about a message from
the WAN (who sent it, SPF/DKIM/DMARC results); ``ContentVerdict`` is what
``content_filter.check(message_bytes, facts)`` answers.
"""

import attr


@attr.s(frozen=True, slots=True)
class MessageFacts:
    """
    What is known about a message before its content is judged.

    spf and dmarc are result words ("pass", "fail", "softfail", "neutral",
    "none", "temperror", "permerror"); dkim is a sequence of
    (domain, selector, result) triples, one per signature.
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
    The content filter's answer: action "accept" | "junk" | "reject", the
    score, the rules that fired ((name, points, text) triples), the reply
    (code, status, text) when rejecting, and the X-Spam-Status value.
    """

    action = attr.ib()
    score = attr.ib()
    rules = attr.ib(default=())
    reply = attr.ib(default=None)
    status_header = attr.ib(default="")
