"""
What a test of hostile input checks besides the answer: the log. Bad input
may be logged as one line; a traceback (any event carrying a failure, as
`log.err`, `Logger.failure` and an unhandled Deferred error all do) is a
defect.
"""

import gc

from twisted.logger import globalLogPublisher, formatEvent


class LogWatch:
    """Records every log event while a test runs (removed at cleanup)."""

    def __init__(self, testcase):
        self.testcase = testcase
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        testcase.addCleanup(self.assert_no_traceback, full=True)

    def clear(self):
        del self.events[:]

    def lines(self, namespace):
        """The text of each event logged under `namespace` (a module's Logger)."""
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace", "").startswith(namespace)]

    def assert_no_traceback(self, full=False):
        """
        Fails when anything logged a failure. Young garbage is collected first,
        so an unhandled error in a Deferred just dropped shows too (a full
        collection, which is slow in a loop of examples, at the test's end).
        """
        gc.collect(2 if full else 1)
        failures = [e for e in self.events if e.get("log_failure") is not None or e.get("isError")]
        flushed = self.testcase.flushLoggedErrors()
        texts = [formatEvent(e) + "\n" + e["log_failure"].getTraceback()
                 if e.get("log_failure") is not None else formatEvent(e) for e in failures]
        self.testcase.assertEqual((texts, len(flushed)), ([], 0))
