# -*- test-case-name: allworx.tests.mail.test_bayes -*-
"""
The per-user Bayes filter (SPEC 18): trained from the user's Junk folder
(spam in, ham out), asked of each message from the internet.

- Tokens: words of the Subject and From (prefixed, so "subject:free" is not
  "free"), the From domain, link hosts, and the words of the body text (text
  parts, HTML with its tags stripped); each counted once per message, at most
  MAX_TOKENS_PER_MESSAGE.
- Each token's spamminess is Robinson's f(w) with s = 1, x = 0.5; the
  CLUES tokens farthest from 0.5 are combined with Fisher's chi-square
  method into a probability of spam (0..1). The filter says nothing (None)
  until it was trained with MIN_TRAINED spam and MIN_TRAINED ham.
- One JSON file per user, `data_dir/mail/USER/allworx-bayes.json`:
  {"nspam", "nham", "day", "tokens": {token: [spam, ham, last day seen]}}.
  Above MAX_TOKENS the rare and stale tokens are dropped (down to
  PRUNE_TO). Training marks the file dirty; it is written SAVE_DELAY
  seconds later (one write for a whole batch of messages moved at once),
  in a thread, atomically, one write after the other.
"""

import json
import math
import os
import re

from twisted.internet import defer, threads
from twisted.logger import Logger

from allworx.atomicfile import ensure_directory, write_atomically

log = Logger()

FILENAME = "allworx-bayes.json"
CLUES = 15
STRENGTH = 1.0          # Robinson's s
NEUTRAL = 0.5           # Robinson's x
MIN_TRAINED = 5
MAX_TOKENS = 50000
PRUNE_TO = 40000
MAX_TOKENS_PER_MESSAGE = 3000
SAVE_DELAY = 10.0

_WORD = re.compile(r"[^\W_][\w'$€£.-]{1,38}[^\W_]|[^\W_]{3}", re.UNICODE)
_URL_HOST = re.compile(r"(?i)https?://([a-z0-9.-]{1,253})")


def tokens(subject, sender, bodies):
    """The set of tokens of a message (subject, From, and its body texts)."""
    out = set()
    for word in _WORD.findall(subject.lower())[:200]:
        out.add("subject:" + word)
    sender = sender.lower()
    for word in _WORD.findall(sender)[:50]:
        out.add("from:" + word)
    if "@" in sender:
        out.add("fromdomain:" + sender.rsplit("@", 1)[1].strip("> \t"))
    for text in bodies:
        if len(out) >= MAX_TOKENS_PER_MESSAGE:
            break
        low = text.lower()
        for host in _URL_HOST.findall(low)[:200]:
            out.add("url:" + host.strip("."))
        for word in _WORD.findall(low):
            out.add(word.strip(".-'"))
            if len(out) >= MAX_TOKENS_PER_MESSAGE:
                break
    out.discard("")
    return out


def chi2q(x2, v):
    """P(chi-square with v (even) degrees of freedom >= x2)."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


class BayesData:
    """One user's counts, and the classification over them."""

    def __init__(self, nspam=0, nham=0, words=None, day=0):
        self.nspam = nspam
        self.nham = nham
        self.words = words if words is not None else {}   # token -> (spam, ham, day)
        self.day = day

    @classmethod
    def from_json(cls, value):
        words = {}
        for token, counts in value.get("tokens", {}).items():
            spam, ham, day = (list(counts) + [0, 0, 0])[:3]
            words[str(token)] = (int(spam), int(ham), int(day))
        return cls(int(value.get("nspam", 0)), int(value.get("nham", 0)), words,
                   int(value.get("day", 0)))

    def to_json(self):
        return {"version": 1, "nspam": self.nspam, "nham": self.nham, "day": self.day,
                "tokens": {t: list(c) for t, c in self.words.items()}}

    @property
    def ready(self):
        return self.nspam >= MIN_TRAINED and self.nham >= MIN_TRAINED

    def train(self, toks, is_spam, day):
        self.day = max(self.day, day)
        if is_spam:
            self.nspam += 1
        else:
            self.nham += 1
        words = self.words
        for token in toks:
            spam, ham, _ = words.get(token, (0, 0, 0))
            words[token] = (spam + 1, ham, day) if is_spam else (spam, ham + 1, day)
        if len(words) > MAX_TOKENS:
            self.prune()

    def prune(self):
        """Keep the PRUNE_TO tokens seen in most messages, the recent first among equals."""
        ranked = sorted(self.words.items(), key=lambda kv: (kv[1][0] + kv[1][1], kv[1][2]),
                        reverse=True)
        self.words = dict(ranked[:PRUNE_TO])

    def spamminess(self, token):
        """Robinson's f(w), or None for a token never seen."""
        counts = self.words.get(token)
        if counts is None:
            return None
        spam, ham, _ = counts
        n = spam + ham
        if n == 0:
            return None
        spam_ratio = spam / max(self.nspam, 1)
        ham_ratio = ham / max(self.nham, 1)
        p = spam_ratio / (spam_ratio + ham_ratio) if spam_ratio + ham_ratio else NEUTRAL
        return (STRENGTH * NEUTRAL + n * p) / (STRENGTH + n)

    def probability(self, toks):
        """The probability of spam by Fisher's method, or None before enough training."""
        if not self.ready:
            return None
        clues = []
        for token in toks:
            f = self.spamminess(token)
            if f is not None:
                clues.append((abs(f - NEUTRAL), token, f))
        clues.sort(reverse=True)
        fs = [min(max(f, 1e-6), 1 - 1e-6) for _, _, f in clues[:CLUES]]
        if not fs:
            return NEUTRAL
        n = len(fs)
        spam = 1.0 - chi2q(-2.0 * sum(math.log(1.0 - f) for f in fs), 2 * n)
        ham = 1.0 - chi2q(-2.0 * sum(math.log(f) for f in fs), 2 * n)
        return (1.0 + spam - ham) / 2.0


class BayesFilter:
    """
    Every user's Bayes data, loaded when first asked (in a thread) and kept;
    `classify(user, tokens)` and `train(user, tokens, is_spam)` return
    Deferreds; `flush()` writes what is pending at once (at stop).
    """

    def __init__(self, mail_dir, reactor, defer_to_thread=threads.deferToThread):
        self.mail_dir = mail_dir
        self.reactor = reactor
        self.defer = defer_to_thread
        self.users = {}         # user -> BayesData
        self.loading = {}       # user -> [Deferreds waiting]
        self.dirty = set()
        self.timer = None
        self.writing = defer.succeed(None)

    def path(self, user):
        return os.path.join(self.mail_dir, user, FILENAME)

    def _read(self, user):
        try:
            with open(self.path(user)) as f:
                return BayesData.from_json(json.load(f))
        except FileNotFoundError:
            return BayesData()
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warn("bayes: {path} unreadable ({why}): starting afresh", path=self.path(user),
                     why=str(e))
            return BayesData()

    def data(self, user):
        """A Deferred firing with the user's BayesData."""
        if user in self.users:
            return defer.succeed(self.users[user])
        if not user or "/" in user or user.startswith(".") or "\0" in user:
            return defer.fail(KeyError(user))
        waiting = self.loading.get(user)
        d = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self.loading[user] = [d]

        def loaded(data):
            self.users[user] = data
            for w in self.loading.pop(user):
                w.callback(data)

        def failed(f):
            log.failure("bayes: could not load {user}", f, user=user)
            loaded(BayesData())
        self.defer(self._read, user).addCallbacks(loaded, failed)
        return d

    def classify(self, user, toks):
        """A Deferred of the user's probability that `toks` are spam (None: not trained)."""
        return self.data(user).addCallback(lambda data: data.probability(toks))

    def train(self, user, toks, is_spam):
        """Count a message as spam or ham for the user; saved a little later."""
        def trained(data):
            data.train(toks, is_spam, int(self.reactor.seconds() // 86400))
            self.dirty.add(user)
            if self.timer is None or not self.timer.active():
                self.timer = self.reactor.callLater(SAVE_DELAY, self.flush)
        return self.data(user).addCallback(trained)

    def flush(self):
        """Write every dirty user's file (after any write under way); a Deferred."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        for user in sorted(self.dirty):
            text = json.dumps(self.users[user].to_json(), separators=(",", ":"))
            self.writing.addCallback(lambda _, u=user, t=text: self.defer(self._write, u, t))
            self.writing.addErrback(lambda f: log.failure("bayes: could not save", f))
        self.dirty.clear()
        done = defer.Deferred()

        def finished(result):
            done.callback(None)
            return result
        self.writing.addBoth(finished)
        return done

    def _write(self, user, text):
        ensure_directory(os.path.dirname(self.path(user)))
        write_atomically(self.path(user), text)
