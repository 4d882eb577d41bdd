# -*- test-case-name: allworx.tests.mail.test_inbound -*-
"""
The checks on mail from the internet (SPEC 18), for the SMTP server to ask.
LAN and authenticated clients never come here (smtp.py decides).

At RCPT (`at_rcpt`): the DNSBL zones of `[mail] dnsbl` (postmaster@DOMAIN
excepted; once per session), then greylisting when `[mail] greylist`.

At the end of DATA (`at_data`), in this order: Authentication-Results
headers claiming our authserv-id are removed; SPF (MAIL FROM, or HELO for
the null sender), DKIM, DMARC; a DMARC failure under p=reject is refused
with 550 5.7.26; then the content filter (`content_filter.check(message,
facts)`, see verdicts.py); a DMARC failure under p=quarantine, or the
filter's "junk", sends every local copy to Junk. The new
Authentication-Results (and the filter's X-Spam-Status) go on top. DNS
temperrors are recorded, never a reason to refuse. Every outcome is
recorded in the DecisionLog.
"""

import math

import attr
from twisted.internet import defer
from twisted.logger import Logger

from allworx.protocols.mail import authresults, dkimverify, dmarc, spf
from allworx.protocols.mail.aliases import AliasLoop, expand
from allworx.protocols.mail.smtpwire import Reply
from allworx.protocols.mail.verdicts import ContentVerdict, MessageFacts

log = Logger()


class AcceptAll:
    """The content filter until a real one is given: everything scores 0 and is accepted."""

    def check(self, message, facts):
        return defer.succeed(ContentVerdict("accept", 0.0))


@attr.s(frozen=True, slots=True)
class Outcome:
    """What to do with a message: a refusal, or the headers to put on top and who gets it in Junk."""

    reply = attr.ib(default=None)
    top = attr.ib(default=b"")
    message = attr.ib(default=b"")
    junk = attr.ib(default=())


def _text(value):
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value or ""


class InboundChecks:
    """
    The pipeline, over the office's config. `resolver` (a twisted.names
    resolver: the mail service sets its own_resolver and renews it when the
    config changes), `content_filter`, `decisions` (DecisionLog), `dnsbl`
    (dnsbl.Dnsbl) and `greylist` (greylist.Greylist, or None) are given.
    """

    def __init__(self, office, resolver, decisions, dnsbl, greylist=None, content_filter=None):
        self.office = office
        self.resolver = resolver
        self.decisions = decisions
        self.dnsbl = dnsbl
        self.greylist = greylist
        self.content_filter = content_filter or AcceptAll()

    @property
    def config(self):
        return self.office.config

    def _record(self, session, sender, recipients, verdict, reason, score=None, auth=""):
        self.decisions.record(session.peer_ip, _text(session.helo), sender, recipients,
                              verdict, reason, score, auth)

    # ------------------------------------------------------------ RCPT

    def _listing(self, session):
        """The session's DNSBL answer (asked once per session, then cached by the Dnsbl too)."""
        known = getattr(session, "dnsbl_listing", None)
        if known is not None:
            return defer.succeed(known[0])
        d = self.dnsbl.check(self.resolver, self.config.mail.dnsbl, session.peer_ip)

        def keep(listing):
            session.dnsbl_listing = (listing,)
            return listing
        return d.addCallback(keep)

    def at_rcpt(self, session, sender, recipient):
        """Fires with None (go on) or the Reply refusing `recipient`."""
        mail = self.config.mail
        postmaster = "postmaster@%s" % self.config.system.domain
        if mail.dnsbl and recipient.lower() != postmaster.lower():
            d = self._listing(session)
        else:
            d = defer.succeed(None)

        def listed(listing):
            if listing is not None:
                why = "%s is listed in %s" % (session.peer_ip, listing.zone)
                if listing.reason:
                    why += ": %s" % listing.reason
                self._record(session, sender, [recipient], "refused", why)
                return Reply(554, "5.7.1", why)
            if mail.greylist and self.greylist is not None:
                wait = self.greylist.check(session.peer_ip, sender, recipient)
                if wait is not None:
                    wait = int(math.ceil(wait))
                    self._record(session, sender, [recipient], "greylisted",
                                 "first attempt: retry after %d s" % wait)
                    return Reply(451, "4.7.1", "greylisted: please try again in %d seconds" % wait)
            return None
        return d.addCallback(listed)

    # ------------------------------------------------------------ DATA

    def _users(self, recipients):
        try:
            return tuple(expand(self.config, recipients).users)
        except AliasLoop:
            return ()

    @defer.inlineCallbacks
    def at_data(self, session, sender, recipients, message):
        """Fires with an Outcome for the message `sender` sent to `recipients`."""
        config = self.config
        server_id = authresults.authserv_id(config)
        message, removed = authresults.remove_ours(message, server_id)
        if removed:
            log.info("SMTP {session}: removed {n} Authentication-Results header(s) claiming {id}",
                     session=session.session, n=removed, id=server_id)
        helo = _text(session.helo)
        spf_result = yield spf.check(self.resolver, session.peer_ip, helo, sender)
        dkim_results = yield dkimverify.verify(self.resolver, message)
        dmarc_result = yield dmarc.check(self.resolver, message, spf_result, dkim_results)
        auth = authresults.value(server_id, spf_result, dkim_results, dmarc_result)
        top = authresults.header(auth)
        dmarc_failed = dmarc_result.result == "fail"
        if dmarc_failed and dmarc_result.policy == "reject":
            why = "message from %s failed DMARC and %s's policy is to reject it" % (
                dmarc_result.domain, dmarc_result.domain)
            self._record(session, sender, recipients, "refused", why, auth=auth)
            return Outcome(Reply(550, "5.7.26", why))
        users = self._users(recipients)
        facts = MessageFacts(
            client_ip=session.peer_ip, helo=helo, sender=sender or "",
            recipients=tuple(recipients), users=users, spf=spf_result.result,
            dkim=tuple((r.domain, r.selector, r.result) for r in dkim_results),
            dmarc=dmarc_result.result, auth_results=auth)
        try:
            eol = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
            verdict = yield self.content_filter.check(top.replace(b"\n", eol) + message, facts)
        except Exception:
            log.failure("SMTP {session}: the content filter failed; the message is accepted",
                        session=session.session)
            verdict = ContentVerdict("accept", None, reply=None, status_header="")
        if verdict.status_header:
            top += b"X-Spam-Status: " + verdict.status_header.encode("utf-8", "replace") + b"\n"
        if verdict.action == "reject":
            code, status, text = verdict.reply or (550, "5.7.1", "message refused as spam")
            self._record(session, sender, recipients, "refused", text, verdict.score, auth)
            return Outcome(Reply(code, status, text))
        if dmarc_failed and dmarc_result.policy == "quarantine":
            reason = "DMARC failed for %s (p=quarantine)" % dmarc_result.domain
        elif verdict.action == "junk":
            reason = "spam score %s" % verdict.score
        else:
            self._record(session, sender, recipients, "accepted", "", verdict.score, auth)
            return Outcome(None, top, message, ())
        self._record(session, sender, recipients, "junk", reason, verdict.score, auth)
        return Outcome(None, top, message, users)
