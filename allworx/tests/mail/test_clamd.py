"""
Tests for the clamd client (allworx.protocols.mail.clamd) against a fake
clamd on a unix socket: the INSTREAM framing, the answers, silence and
absence.
"""

import os
import shutil
import struct
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from allworx.protocols.mail.clamd import CHUNK, ClamdClient, ClamdError, parse_reply


class FakeClamdProtocol(protocol.Protocol):
    """Reads zINSTREAM\\0 and the chunks; answers what the factory says."""

    def connectionMade(self):
        self.buf = b""
        self.factory.connections.append(self)

    def dataReceived(self, data):
        self.buf += data
        if not self.buf.startswith(b"zINSTREAM\0"[:len(self.buf)]):
            self.transport.write(b"UNKNOWN COMMAND\0")
            return self.transport.loseConnection()
        rest = self.buf[len(b"zINSTREAM\0"):]
        chunks = []
        while len(rest) >= 4:
            (size,) = struct.unpack(">I", rest[:4])
            if len(rest) < 4 + size:
                return
            if size == 0:
                self.factory.streams.append(chunks)
                if self.factory.answer is not None:
                    self.transport.write(self.factory.answer)
                    self.transport.loseConnection()
                if not self.factory.received.called:
                    self.factory.received.callback(None)
                return
            chunks.append(rest[4:4 + size])
            rest = rest[4 + size:]


class FakeClamd(protocol.ServerFactory):
    protocol = FakeClamdProtocol

    def __init__(self):
        self.streams = []
        self.connections = []
        self.answer = b"stream: OK\0"
        self.received = defer.Deferred()


class ParseTests(unittest.TestCase):

    def test_replies(self):
        self.assertIsNone(parse_reply("stream: OK"))
        self.assertEqual(parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND\0"), "Win.Test.EICAR_HDB-1")
        self.assertRaises(ClamdError, parse_reply, "INSTREAM size limit exceeded. ERROR")
        self.assertRaises(ClamdError, parse_reply, "stream: Can't allocate memory ERROR")
        self.assertRaises(ClamdError, parse_reply, "")


class ClientTests(unittest.TestCase):

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="clamd-")     # short: unix socket paths are
        self.addCleanup(shutil.rmtree, directory, True)    # limited to 108 bytes
        self.path = os.path.join(directory, "clamd.ctl")
        self.fake = FakeClamd()
        self.port = reactor.listenUNIX(self.path, self.fake)
        self.addCleanup(self.port.stopListening)
        self.client = ClamdClient(reactor, self.path, timeout=5)

    @defer.inlineCallbacks
    def test_clean_message_streamed_in_chunks(self):
        data = bytes(range(256)) * (CHUNK * 2 // 256 + 3)
        found = yield self.client.scan(data)
        self.assertIsNone(found)
        [chunks] = self.fake.streams
        self.assertEqual(b"".join(chunks), data)
        self.assertEqual([len(c) for c in chunks[:2]], [CHUNK, CHUNK])

    @defer.inlineCallbacks
    def test_found(self):
        self.fake.answer = b"stream: Allworx.Test.Signature.UNOFFICIAL FOUND\0"
        found = yield self.client.scan(b"X5O!P%@AP")
        self.assertEqual(found, "Allworx.Test.Signature.UNOFFICIAL")

    @defer.inlineCallbacks
    def test_error_answer_and_empty_close_fail(self):
        self.fake.answer = b"INSTREAM size limit exceeded. ERROR\0"
        yield self.assertFailure(self.client.scan(b"x"), ClamdError)
        self.fake.answer = b""
        yield self.assertFailure(self.client.scan(b"x"), ClamdError)

    @defer.inlineCallbacks
    def test_silence_times_out(self):
        self.fake.answer = None
        clock = task.Clock()
        client = ClamdClient(reactor, self.path, timeout=30, clock=clock)
        d = client.scan(b"some message")
        yield self.fake.received
        self.assertFalse(d.called)
        clock.advance(30)
        failure = yield self.assertFailure(d, ClamdError)
        self.assertIn("no answer", str(failure))
        for c in self.fake.connections:
            c.transport.loseConnection()

    @defer.inlineCallbacks
    def test_nobody_listening_fails(self):
        yield self.port.stopListening()
        failure = yield self.assertFailure(self.client.scan(b"x"), ClamdError)
        self.assertIn(self.path, str(failure))
