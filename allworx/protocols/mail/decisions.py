# -*- test-case-name: allworx.tests.mail.test_inbound -*-
"""
The decisions on mail from the internet (SPEC 18, `IMailSecurity.decisions`):
a ring of the last MAX_DECISIONS, each logged as one structured event and
counted for Prometheus by verdict (accepted | junk | refused | greylisted).
"""

import collections
import itertools

from prometheus_client import Counter
from twisted.logger import Logger

log = Logger()

MAX_DECISIONS = 500
VERDICTS = ("accepted", "junk", "refused", "greylisted")
DECIDED = Counter("allworx_mail_inbound_verdicts_total",
                  "Decisions on mail from the internet, by verdict", ["verdict"])


class DecisionLog:
    """The last decisions, newest first; `counts` by verdict since start."""

    def __init__(self, clock, size=MAX_DECISIONS):
        self.clock = clock
        self.ring = collections.deque(maxlen=size)
        self.counts = dict.fromkeys(VERDICTS, 0)

    def record(self, client, helo, sender, recipients, verdict, reason, score=None, auth=""):
        if verdict not in VERDICTS:
            raise ValueError("unknown verdict %r" % verdict)
        entry = {"time": self.clock.seconds(), "client": client, "helo": helo or "",
                 "sender": sender or "", "recipients": list(recipients), "verdict": verdict,
                 "reason": reason or "", "score": None if score is None else float(score),
                 "auth": auth or ""}
        self.ring.appendleft(entry)
        self.counts[verdict] += 1
        DECIDED.labels(verdict).inc()
        log.info("mail from {client} <{sender}> for {rcpts}: {verdict} ({reason})",
                 event_kind="mail_decision", rcpts=", ".join(entry["recipients"]), **entry)
        return entry

    def decisions(self, limit=100):
        """Copies of the last `limit` decisions, newest first."""
        return [dict(e, recipients=list(e["recipients"]))
                for e in itertools.islice(self.ring, max(0, int(limit)))]
