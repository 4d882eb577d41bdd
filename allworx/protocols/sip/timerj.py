# -*- test-case-name: allworx.tests.sip.test_hotpath -*-
"""
Timer J (RFC 3261 17.2.2) as the core keeps it: the final answer of each
completed non-INVITE server transaction over UDP, as bytes only, for 64*T1
so that a retransmitted request gets it again. The expiry order holds one
entry a second (its keys in a list), not a (time, key) pair per answer:
at thousands of REGISTERs a second, 32 seconds of answers are what the
server holds most of.
"""

import collections
import math

from allworx.protocols.sip.transaction import T1


class KeptAnswers(dict):
    """transaction key -> the answer's bytes (b"": kept, nothing to send); swept each second."""

    def __init__(self, clock, keep_for=64 * T1):
        dict.__init__(self)
        self.clock = clock
        self.keep_for = keep_for
        self.order = collections.deque()     # (due whole second, [keys])
        self.sweeper = None

    def keep(self, key, data):
        """Keep `data` (None: nothing to send) for `key` at least `keep_for` seconds, at most one more."""
        self[key] = data if data is not None else b""
        due = math.ceil(self.clock.seconds() + self.keep_for)
        order = self.order
        if order and order[-1][0] == due:
            order[-1][1].append(key)
        else:
            order.append((due, [key]))
        if self.sweeper is None:
            self.sweeper = self.clock.callLater(1.0, self.sweep)

    def sweep(self):
        self.sweeper = None
        now = self.clock.seconds()
        order = self.order
        while order and order[0][0] <= now:
            for key in order.popleft()[1]:
                self.pop(key, None)
        if order:
            self.sweeper = self.clock.callLater(1.0, self.sweep)
