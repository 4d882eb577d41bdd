# -*- test-case-name: allworx.tests.mail.test_clamd -*-
"""
clamd as the virus scanner (SPEC 18, `[mail] clamd = /run/clamav/clamd.ctl`):
each message from the internet is streamed to clamd over its unix socket
with INSTREAM: the command `zINSTREAM\\0`, then chunks each preceded by its
length (4 bytes, big-endian), then a zero-length chunk; clamd answers one
line (ended by NUL with the z prefix): `stream: OK`, `stream: NAME FOUND`
or `... ERROR`.

`ClamdClient.scan(data)` fires with None (clean) or the signature's name;
it fails with ClamdError when clamd cannot be reached, answers an error, or
says nothing within the timeout: the caller then accepts the message and
logs that it was not scanned.
"""

import struct

from twisted.internet import defer, protocol
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.python import failure

TIMEOUT = 30.0
CHUNK = 64 * 1024
MAX_REPLY = 4096


class ClamdError(Exception):
    """clamd could not scan the message."""


def parse_reply(text):
    """None for clean, the signature name when found; ClamdError otherwise."""
    text = text.strip("\0\r\n ")
    _, sep, result = text.partition(": ")
    if not sep:
        raise ClamdError("clamd answered %r" % text[:200])
    if result == "OK":
        return None
    if result.endswith(" FOUND"):
        return result[:-len(" FOUND")].strip() or "unknown"
    raise ClamdError("clamd answered %r" % text[:200])


class _InstreamProtocol(protocol.Protocol):
    """Sends one INSTREAM and collects the reply line."""

    def __init__(self, data):
        self.data = data
        self.reply = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        t = self.transport
        t.write(b"zINSTREAM\0")
        view = memoryview(self.data)
        for start in range(0, len(view), CHUNK):
            chunk = view[start:start + CHUNK]
            t.write(struct.pack(">I", len(chunk)) + bytes(chunk))
        t.write(struct.pack(">I", 0))

    def dataReceived(self, data):
        self.reply += data
        if b"\0" in self.reply or len(self.reply) > MAX_REPLY:
            self._finish()
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self._finish()

    def _finish(self):
        if self.done.called:
            return
        line = self.reply.split(b"\0", 1)[0].decode("utf-8", "replace")
        if not line:
            self.done.errback(ClamdError("clamd closed the connection without an answer"))
            return
        try:
            self.done.callback(parse_reply(line))
        except ClamdError as e:
            self.done.errback(e)


class ClamdClient:
    """Scans messages with the clamd listening on the unix socket `path`."""

    def __init__(self, reactor, path, timeout=TIMEOUT, clock=None):
        self.reactor = reactor
        self.path = path
        self.timeout = timeout
        self.clock = clock if clock is not None else reactor     # for the timeout

    def scan(self, data):
        """A Deferred: None when clean, the signature name when found (ClamdError: not scanned)."""
        proto = _InstreamProtocol(data)
        endpoint = UNIXClientEndpoint(self.reactor, self.path, timeout=self.timeout)
        connecting = connectProtocol(endpoint, proto)
        result = defer.Deferred(lambda _: connecting.cancel())

        def answered(outcome):
            if not result.called:       # not after the timeout
                if isinstance(outcome, failure.Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        def connected(p):
            p.done.addBoth(answered)

        def not_connected(f):
            if not result.called:
                result.errback(ClamdError("cannot reach clamd at %s: %s" % (
                    self.path, f.getErrorMessage())))
        connecting.addCallbacks(connected, not_connected)

        def timed_out(f):
            if f.check(defer.TimeoutError, defer.CancelledError):
                if proto.transport is not None:
                    proto.transport.abortConnection()
                raise ClamdError("clamd at %s gave no answer in %ds" % (self.path, self.timeout))
            return f
        result.addTimeout(self.timeout, self.clock)
        return result.addErrback(timed_out)
