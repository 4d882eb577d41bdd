# -*- test-case-name: allworx.tests.mail.test_spam -*-
"""
The content filter of mail from the internet (SPEC 18): `ContentFilter`,
what the inbound pipeline asks at the end of DATA
(`check(message_bytes, facts) -> Deferred[ContentVerdict]`).

In order:
1. Attachments (attachments.py): an executable or script anywhere, zips
   included, refuses the message: 552 5.7.1 naming the file.
2. clamd, when `[mail] clamd` is set: a virus found refuses it (552 5.7.1
   naming the signature); clamd unreachable or failing: the message goes
   on unscanned, and the log says so.
3. rspamd, when `[mail] rspamd` is set: its action is the verdict
   (rspamd.py); rspamd down or failing: the built-in score, logged.
4. The built-in score: the content rules and the authentication results'
   points (contentrules.py) plus the Bayes term of the recipients (each
   user's own filter; several users: the average of those trained; none
   trained: nothing). From `[mail] spam_reject` the message is refused
   (550 5.7.1), from `spam_threshold` it goes to Junk; both read at each
   check, so a change of configuration counts at once.

Training (`train(user, data, is_spam)`) is what IMAP's Junk folder calls:
the mail service puts it in `Mailboxes.trainers`.
"""

import os

from twisted.internet import defer, threads
from twisted.logger import Logger

from allworx.protocols.mail.attachments import find_refused
from allworx.protocols.mail.bayes import BayesFilter, tokens
from allworx.protocols.mail.clamd import ClamdClient, ClamdError
from allworx.protocols.mail.contentrules import evaluate, header_text, parse_message, texts
from allworx.protocols.mail.rspamd import RspamdClient, RspamdError, status_header
from allworx.protocols.mail.verdicts import ContentVerdict

log = Logger()

TRAIN_LIMIT = 1024 * 1024       # what of a message the Bayes filter learns from

# (above, name, points): the first whose bound the probability is above.
BAYES_SPAM = ((0.99, "BAYES_99", 4.5), (0.9, "BAYES_90", 2.5))
# (below, name, points): the first whose bound the probability is below.
BAYES_HAM = ((0.01, "BAYES_00", -3.0), (0.1, "BAYES_05", -1.5))


def bayes_rule(probability):
    """The (name, points, text) rule for a probability of spam, or None (None: no opinion)."""
    if probability is None:
        return None
    for bound, name, points in BAYES_SPAM:
        if probability > bound:
            return (name, points, "Bayes spam probability %.3f" % probability)
    for bound, name, points in BAYES_HAM:
        if probability < bound:
            return (name, points, "Bayes spam probability %.3f" % probability)
    return None


def message_tokens(message):
    """The Bayes tokens of a parsed message."""
    return tokens(header_text(message, "Subject"), header_text(message, "From"), texts(message))


class ContentFilter:
    """Rules, Bayes, attachments, and rspamd and clamd when configured."""

    def __init__(self, office, reactor, bayes=None, defer_to_thread=threads.deferToThread,
                 rspamd_client=RspamdClient, clamd_client=ClamdClient):
        self.office = office
        self.reactor = reactor
        if bayes is None:
            mail_dir = os.path.join(office.config.system.data_dir, "mail")
            bayes = BayesFilter(mail_dir, reactor, defer_to_thread)
        self.bayes = bayes
        self.make_rspamd = rspamd_client
        self.make_clamd = clamd_client
        self._rspamd = (None, None)         # (address, client)
        self._clamd = (None, None)

    def rspamd(self, address):
        if self._rspamd[0] != address:
            self._rspamd = (address, self.make_rspamd(self.reactor, address[0], address[1]))
        return self._rspamd[1]

    def clamd(self, path):
        if self._clamd[0] != path:
            self._clamd = (path, self.make_clamd(self.reactor, path))
        return self._clamd[1]

    def check(self, data, facts):
        """A Deferred[ContentVerdict] for the message bytes; never fails (a fault: accept, logged)."""
        d = self._check(data, facts)

        def fault(f):
            log.failure("spam: the content filter failed; the message is accepted unfiltered", f)
            return ContentVerdict("accept", 0.0, (), None, "No, score=0.0 filter failed")
        return d.addErrback(fault)

    @defer.inlineCallbacks
    def _check(self, data, facts):
        config = self.office.config.mail
        message = parse_message(data)
        refused = find_refused(message)
        if refused is not None:
            text = "attachment %s refused (%s)" % (refused.filename, refused.why)
            return _refusal("BANNED_ATTACHMENT", text)
        if config.clamd:
            try:
                found = yield self.clamd(config.clamd).scan(data)
            except ClamdError as e:
                log.warn("spam: message NOT scanned for viruses, accepted as it is: {why}",
                         why=str(e))
            else:
                if found:
                    return _refusal("VIRUS", "virus found: %s" % found)
        if config.rspamd:
            try:
                verdict = yield self.rspamd(config.rspamd).check(data, facts)
            except RspamdError as e:
                log.warn("spam: {why}; using the built-in score", why=str(e))
            else:
                return verdict
        rules = evaluate(message, facts, now=self.reactor.seconds())
        users = tuple(getattr(facts, "users", None) or ())
        if users:
            probability = yield self.probability(users, message_tokens(message))
            rule = bayes_rule(probability)
            if rule is not None:
                rules.append(rule)
        return self.verdict(rules)

    def verdict(self, rules):
        """The verdict of the built-in rules against the thresholds as configured now."""
        config = self.office.config.mail
        score = round(sum(points for _, points, _ in rules), 2)
        names = [name for name, points, _ in sorted(rules, key=lambda r: (-abs(r[1]), r[0]))
                 if points]
        if score >= config.spam_reject:
            action = "reject"
            reply = (550, "5.7.1", "message refused as spam (score %.1f)" % score)
        elif score >= config.spam_threshold:
            action, reply = "junk", None
        else:
            action, reply = "accept", None
        header = status_header(action != "accept", score, config.spam_threshold, names)
        return ContentVerdict(action, score, tuple(rules), reply, header)

    @defer.inlineCallbacks
    def probability(self, users, toks):
        """The average spam probability of the users whose filters are trained (None: none is)."""
        found = []
        for user in users:
            try:
                p = yield self.bayes.classify(user, toks)
            except KeyError:
                continue
            if p is not None:
                found.append(p)
        return sum(found) / len(found) if found else None

    def train(self, user, data, is_spam):
        """Learn a message as spam or ham for `user` (what the Junk folder calls); a Deferred."""
        try:
            toks = message_tokens(parse_message(data[:TRAIN_LIMIT]))
        except Exception:
            log.failure("spam: could not read a message to train {user}'s filter", user=user)
            return defer.succeed(None)
        d = self.bayes.train(user, toks, is_spam)
        d.addErrback(lambda f: log.failure("spam: could not train {user}'s filter", f, user=user))
        return d

    def stop(self):
        """Write what training left pending; a Deferred."""
        return self.bayes.flush()


def _refusal(name, text):
    return ContentVerdict("reject", 0.0, ((name, 0.0, text),), (552, "5.7.1", text),
                          "Yes, score=0.0 tests=%s" % name)
