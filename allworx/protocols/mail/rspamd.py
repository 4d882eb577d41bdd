# -*- test-case-name: allworx.tests.mail.test_rspamd -*-
"""
rspamd as the content filter (SPEC 18, `[mail] rspamd = HOST:PORT`): the
message is POSTed to rspamd's normal worker at `/checkv2` with what the
SMTP session knew in request headers (IP, Helo, From, one Rcpt per
recipient), and rspamd's JSON answer's `action` becomes our verdict:

  reject                        -> reject, 550 5.7.1
  soft reject                   -> reject, 451 4.7.1 (try again later)
  add header, rewrite subject   -> junk
  greylist, no action           -> accept (greylisting is ours to do)

Its `score`, `required_score` and `symbols` fill the X-Spam-Status header
and the rules of the verdict. A request that fails or takes longer than
TIMEOUT fails the Deferred (RspamdError): the caller falls back to the
built-in score.
"""

import io
import json

from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from allworx.protocols.mail.verdicts import ContentVerdict

TIMEOUT = 10.0
MAX_SYMBOLS = 100
USER_AGENT = b"allworx"

ACTIONS = {
    "reject": ("reject", (550, "5.7.1", "message refused as spam")),
    "soft reject": ("reject", (451, "4.7.1", "message deferred by the spam filter, try again later")),
    "add header": ("junk", None),
    "rewrite subject": ("junk", None),
    "greylist": ("accept", None),
    "no action": ("accept", None),
}


class RspamdError(Exception):
    """rspamd could not be asked, or its answer could not be read."""


def _header(value):
    return str(value).encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")


def request_headers(facts):
    """The rspamd request headers for what the SMTP session knew."""
    h = Headers({b"User-Agent": [USER_AGENT], b"Content-Type": [b"message/rfc822"]})
    if facts is None:
        return h
    if facts.client_ip:
        h.setRawHeaders(b"IP", [_header(facts.client_ip)])
    if facts.helo:
        h.setRawHeaders(b"Helo", [_header(facts.helo)])
    h.setRawHeaders(b"From", [_header(facts.sender or "")])
    rcpts = [_header(r) for r in facts.recipients or ()]
    if rcpts:
        h.setRawHeaders(b"Rcpt", rcpts)
    return h


def status_header(spam, score, required, names):
    """An X-Spam-Status value the SpamAssassin way."""
    return "%s, score=%.1f required=%.1f tests=%s" % (
        "Yes" if spam else "No", score, required, ",".join(names) or "none")


def to_verdict(answer):
    """A ContentVerdict of rspamd's parsed JSON answer (RspamdError when it makes no sense)."""
    if not isinstance(answer, dict):
        raise RspamdError("rspamd's answer is not a JSON object")
    action = str(answer.get("action", "")).lower()
    if action not in ACTIONS:
        raise RspamdError("rspamd answered an unknown action %r" % action[:40])
    try:
        score = float(answer.get("score", 0.0))
        required = float(answer.get("required_score", 0.0))
    except (TypeError, ValueError):
        raise RspamdError("rspamd's score is not a number")
    rules = []
    symbols = answer.get("symbols") or {}
    if isinstance(symbols, dict):
        for name, sym in list(symbols.items())[:MAX_SYMBOLS]:
            sym = sym if isinstance(sym, dict) else {}
            try:
                points = float(sym.get("score", 0.0))
            except (TypeError, ValueError):
                points = 0.0
            rules.append((str(name)[:64], points, str(sym.get("description", ""))[:200]))
    rules.sort(key=lambda r: (-abs(r[1]), r[0]))
    verdict_action, reply = ACTIONS[action]
    spam = verdict_action != "accept" and not (reply and reply[0] == 451)
    header = status_header(spam, score, required, [r[0] for r in rules if r[1]])
    return ContentVerdict(verdict_action, score, tuple(rules), reply, header)


class RspamdClient:
    """Asks rspamd at (host, port) about messages; `check(data, facts)` -> Deferred[ContentVerdict]."""

    def __init__(self, reactor, host, port, timeout=TIMEOUT, agent=None):
        self.reactor = reactor
        self.url = b"http://%s:%d/checkv2" % (host.encode("idna") if not _is_ipv6(host)
                                              else b"[" + host.encode() + b"]", port)
        self.timeout = timeout
        self.agent = agent if agent is not None else Agent(reactor)

    @defer.inlineCallbacks
    def check(self, data, facts):
        request = self.agent.request(b"POST", self.url, request_headers(facts),
                                     FileBodyProducer(io.BytesIO(data)))
        request.addTimeout(self.timeout, self.reactor)
        try:
            response = yield request
            body = yield readBody(response).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            raise RspamdError("rspamd at %s: %s" % (self.url.decode(), str(e) or type(e).__name__))
        if response.code != 200:
            raise RspamdError("rspamd answered HTTP %d: %s" % (response.code,
                                                               body[:200].decode("utf-8", "replace")))
        try:
            answer = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise RspamdError("rspamd's answer is not JSON: %s" % e)
        return to_verdict(answer)


def _is_ipv6(host):
    return ":" in host
