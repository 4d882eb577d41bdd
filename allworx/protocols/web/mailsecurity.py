# -*- test-case-name: allworx.tests.web.test_mailsecurity -*-
"""
The Mail security page and the JSON of its API (SPEC 18): the DNS records
the office's mail needs in public DNS (to copy to the registrar when the
office's zone is not the public one), the DKIM selector and key rotation,
the last decisions on mail from the internet (filtered by verdict, paged),
the messages in each user's Junk folder, and the `[mail]` keys of mail
authentication and spam. Everything live comes from the mail service's
IMailSecurity (`Views.mail_security`); None means mail is not running.
"""

import time
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.logger import Logger

from allworx.config import ConfigError, ConfigErrors
from allworx.protocols.web import changes
from allworx.protocols.web import forms
from allworx.protocols.web import logtables
from allworx.protocols.web.forms import Field
from allworx.protocols.web.pagebase import Page, Redirect, ago_or_in

log = Logger()

HERE = "/mailsecurity"
VERDICTS = ("accepted", "junk", "refused", "greylisted")
DECISIONS_KEPT = 500        # what the mail service keeps; the page filters and pages these
PAGE_SIZE = 25
API_LIMIT = 100             # decisions the API gives without ?limit=

SETTINGS = (
    Field("mail.dkim_selector", "DKIM selector",
          help="Names the RSA key in DNS (SELECTOR._domainkey); the ed25519 key is "
               "SELECTOR-ed25519. Changed by a rotation; set by hand only to take over keys."),
    Field("mail.dnsbl", "DNS blocklists",
          help="Zones asked about each internet client, space separated, e.g. "
               "zen.spamhaus.org. A listed client is refused. Empty: none."),
    Field("mail.greylist", "Greylist unknown senders", "checkbox",
          help="A first message from an unknown internet server is deferred for 5 minutes; "
               "real servers try again."),
    Field("mail.spam_threshold", "Junk from score",
          help="Mail scoring this much or more goes to the recipient's Junk folder (default 5)."),
    Field("mail.spam_reject", "Refuse from score",
          help="Mail scoring this much or more is refused (default 15); above the Junk score."),
    Field("mail.rspamd", "rspamd",
          help="host[:port] of an rspamd whose verdict replaces the built-in score. Empty: none."),
    Field("mail.clamd", "clamd socket",
          help="Path of clamd's unix socket: attachments are scanned for viruses. Empty: none."),
)


def _ask(view, method, *args):
    """What `view.method(*args)` answers, or None when it fails (logged: the page stays up)."""
    try:
        return getattr(view, method)(*args)
    except Exception:
        log.failure("mail security page: {method}() failed", method=method)
        return None


def rfc3339(when):
    """An epoch time as RFC 3339 UTC (`2026-12-07T10:00:00Z`), or None."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(when)))
    except (TypeError, ValueError, OverflowError):
        return None


def score_number(score):
    """A decision's score as a number, or None."""
    if score is None or isinstance(score, bool):
        return None
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def score_text(score):
    value = score_number(score)
    return "" if value is None else ("%.2f" % value).rstrip("0").rstrip(".")


def recipients_of(decision):
    rcpts = decision.get("recipients") or ()
    return [rcpts] if isinstance(rcpts, str) else [str(r) for r in rcpts]


# ---- the JSON of GET /api/v1/mail/security

def record_json(record):
    return {k: str(record.get(k) or "") for k in ("name", "type", "value", "purpose", "source",
                                                   "note")}


def decision_json(decision):
    return {"time": rfc3339(decision.get("time")), "client": str(decision.get("client") or ""),
            "helo": str(decision.get("helo") or ""), "sender": str(decision.get("sender") or ""),
            "recipients": recipients_of(decision), "verdict": str(decision.get("verdict") or ""),
            "reason": str(decision.get("reason") or ""), "score": score_number(decision.get("score")),
            "auth": str(decision.get("auth") or "")}


def security_json(view, limit=API_LIMIT, verdict=None):
    """
    {"records", "decisions" (newest first, at most `limit`, only `verdict`'s
    if given), "junk" ({user: n})}.
    """
    decisions = [d for d in view.decisions(DECISIONS_KEPT if verdict else limit)
                 if verdict is None or d.get("verdict") == verdict][:limit]
    return {"records": [record_json(r) for r in view.records()],
            "decisions": [decision_json(d) for d in decisions],
            "junk": {str(u): int(n) for u, n in dict(view.junk_counts()).items()}}


def rotate(view):
    """Rotate the DKIM keys: a Deferred of the new selector."""
    return defer.maybeDeferred(view.rotate_dkim).addCallback(str)


# ---- the page

def relative_name(name, domain):
    """`allworx._domainkey` for `allworx._domainkey.example.com`; `@` for the domain itself."""
    name = (name or "").rstrip(".")
    if name == domain:
        return "@"
    return name[:-len(domain) - 1] if name.endswith("." + domain) else name


def decision_row(decision, now):
    when = rfc3339(decision.get("time"))
    verdict = str(decision.get("verdict") or "")
    return {"time": when.replace("T", " ").replace("Z", " UTC") if when else "",
            "ago": ago_or_in(now, decision.get("time")) if when else "",
            "client": str(decision.get("client") or ""), "helo": str(decision.get("helo") or ""),
            "sender": str(decision.get("sender") or "") or "<>",
            "recipients": ", ".join(recipients_of(decision)), "verdict": verdict,
            "verdict_class": verdict if verdict in VERDICTS else "other",
            "reason": str(decision.get("reason") or ""), "score": score_text(decision.get("score")),
            "auth": str(decision.get("auth") or "")}


def page_number(text):
    try:
        return max(1, int(text))
    except (TypeError, ValueError):
        return 1


def _link(verdict, page, filters=None):
    params = {k: v for k, v in (filters or {}).items() if v}
    if verdict:
        params["verdict"] = verdict
    if page > 1:
        params["page"] = str(page)
    return HERE + ("?" + urlencode(params) if params else "") + "#decisions"


def decisions_context(view, query, now):
    """
    The table of decisions: the verdict filter, sender, recipient, search
    text and page from the query (`logtables`), rows, links.
    """
    out = {"verdicts": VERDICTS, "verdict": "", "filter_error": None, "decisions": [],
           "verdict_counts": {}, "decisions_total": 0, "first": 0, "last": 0,
           "newer": None, "older": None, "page_number": 1}
    verdict = (query.get("verdict") or "").strip()
    if verdict and verdict not in VERDICTS:
        out["filter_error"] = "The filter verdict=%s was ignored: it is one of %s." % (
            verdict, ", ".join(VERDICTS))
        verdict = ""
    out["verdict"] = verdict
    every = _ask(view, "decisions", DECISIONS_KEPT) if view is not None else None
    every = [d for d in (every or ()) if isinstance(d, dict)]
    for d in every:
        out["verdict_counts"][d.get("verdict")] = out["verdict_counts"].get(d.get("verdict"), 0) + 1
    filters, wanted = logtables.parse_mail_filters(query)
    out["filters"] = filters
    chosen = [d for d in every if (not verdict or d.get("verdict") == verdict) and wanted(d)]
    pages = max(1, (len(chosen) + PAGE_SIZE - 1) // PAGE_SIZE)
    number = min(page_number(query.get("page")), pages)
    start = (number - 1) * PAGE_SIZE
    out["decisions"] = [decision_row(d, now) for d in chosen[start:start + PAGE_SIZE]]
    out["decisions_total"] = len(chosen)
    out["page_number"] = number
    if out["decisions"]:
        out["first"], out["last"] = start + 1, start + len(out["decisions"])
    if number > 1:
        out["newer"] = _link(verdict, number - 1, filters)
    if number < pages:
        out["older"] = _link(verdict, number + 1, filters)
    return out


class MailSecurityPage(Page):
    """DNS records to publish, DKIM rotation, recent decisions, Junk counts, the [mail] keys."""

    slug, title, template = "mailsecurity", "Mail security", "mailsecurity.html"

    def context_for(self, ctx, sub, query):
        if sub:
            raise KeyError("page %s/%s" % (HERE, "/".join(sub)))
        office, view = ctx.office, ctx.views.mail_security
        config = office.config
        domain = config.system.domain
        out = {"running": view is not None, "mail_enabled": config.mail.enabled,
               "selector": config.mail.dkim_selector, "domain": domain,
               "fields": SETTINGS, "current": forms.current_settings(office, SETTINGS)}
        records = (_ask(view, "records") or []) if view is not None else []
        out["records"] = [dict(record_json(r), host=relative_name(r.get("name"), domain))
                          for r in records if isinstance(r, dict)]
        junk = (_ask(view, "junk_counts") or {}) if view is not None else {}
        out["junk"] = sorted((str(u), n) for u, n in dict(junk).items())
        out.update(decisions_context(view, query, ctx.clock.seconds()))
        return out

    def _view(self, ctx):
        view = ctx.views.mail_security
        if view is None:
            raise ConfigErrors([ConfigError(None, None, 0, "the mail service is not running")])
        return view

    def do_rotate_dkim(self, ctx, form, sub):
        old = ctx.office.config.mail.dkim_selector

        def done(selector):
            log.info("DKIM keys rotated from the admin pages: {old} -> {new}", old=old,
                     new=selector)
            return Redirect("New DKIM keys: the selector is now %s (and %s-ed25519). The old "
                            "selector %s stays published until no queued message needs it; "
                            "publish the new records below where the domain's public DNS is."
                            % (selector, selector, old), HERE)
        return rotate(self._view(ctx)).addCallback(done)

    def do_save(self, ctx, form, sub):
        office = ctx.office
        values = forms.section_changes(office, SETTINGS, "mail", form)
        if not values:
            return Redirect("Nothing changed in the mail security settings.", HERE)
        changes.apply_settings(office, {"mail": values})
        return Redirect("Mail security settings saved.", HERE)
