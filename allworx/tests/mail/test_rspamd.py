"""
Tests for the rspamd client (allworx.protocols.mail.rspamd) against a fake
rspamd: a real twisted.web Site on a loopback port.
"""

import json

from twisted.internet import defer, reactor, task
from twisted.web.client import Agent
from twisted.web import resource, server
from twisted.trial import unittest

from allworx.protocols.mail.rspamd import RspamdClient, RspamdError, to_verdict
from allworx.protocols.mail.verdicts import MessageFacts

FACTS = MessageFacts("198.51.100.7", "mx.example.org", "alice@example.org",
                     ("bob@corp.example", "carol@corp.example"), ("bob", "carol"), "pass", (), "none", "")
MESSAGE = b"From: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


class FakeRspamd(resource.Resource):
    isLeaf = True

    def __init__(self):
        resource.Resource.__init__(self)
        self.requests = []
        self.answer = {"action": "no action", "score": 0.5, "required_score": 15.0, "symbols": {}}
        self.code = 200
        self.hang = False
        self.arrived = defer.Deferred()

    def render_POST(self, request):
        self.requests.append((request.path, request.requestHeaders, request.content.read()))
        if not self.arrived.called:
            self.arrived.callback(None)
        if self.hang:
            return server.NOT_DONE_YET
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", b"application/json")
        body = self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode()
        return body


class MappingTests(unittest.TestCase):

    def answer(self, action, score=3.0, symbols=None):
        return to_verdict({"action": action, "score": score, "required_score": 15.0,
                           "symbols": symbols or {}})

    def test_actions(self):
        self.assertEqual(self.answer("no action").action, "accept")
        self.assertEqual(self.answer("greylist").action, "accept")
        for action in ("add header", "rewrite subject"):
            v = self.answer(action, 7.25)
            self.assertEqual((v.action, v.reply), ("junk", None))
            self.assertTrue(v.status_header.startswith("Yes, score=7.2"), v.status_header)
        v = self.answer("reject", 20)
        self.assertEqual((v.action, v.reply[:2]), ("reject", (550, "5.7.1")))
        v = self.answer("soft reject")
        self.assertEqual((v.action, v.reply[:2]), ("reject", (451, "4.7.1")))
        self.assertRaises(RspamdError, self.answer, "explode")
        self.assertRaises(RspamdError, to_verdict, [])
        self.assertRaises(RspamdError, to_verdict, {"action": "reject", "score": "lots"})

    def test_symbols_become_rules_and_status(self):
        v = self.answer("add header", 6.0, {
            "BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.1, "description": "Message probably spam"},
            "R_SPF_ALLOW": {"name": "R_SPF_ALLOW", "score": -0.2},
            "ARC_NA": {"name": "ARC_NA", "score": 0.0}, "ODD": "garbage"})
        self.assertEqual(v.rules[0], ("BAYES_SPAM", 5.1, "Message probably spam"))
        self.assertEqual(v.status_header, "Yes, score=6.0 required=15.0 tests=BAYES_SPAM,R_SPF_ALLOW")


class ClientTests(unittest.TestCase):

    def setUp(self):
        self.fake = FakeRspamd()
        site = server.Site(self.fake)
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.client = RspamdClient(reactor, "127.0.0.1", self.port.getHost().port, timeout=2)

    @defer.inlineCallbacks
    def test_posts_to_checkv2_with_the_session_headers(self):
        self.fake.answer = {"action": "add header", "score": 8.5, "required_score": 15.0,
                            "symbols": {"GTUBE": {"score": 8.5}}}
        v = yield self.client.check(MESSAGE, FACTS)
        self.assertEqual((v.action, v.score), ("junk", 8.5))
        [(path, headers, body)] = self.fake.requests
        self.assertEqual(path, b"/checkv2")
        self.assertEqual(body, MESSAGE)
        self.assertEqual(headers.getRawHeaders(b"IP"), [b"198.51.100.7"])
        self.assertEqual(headers.getRawHeaders(b"Helo"), [b"mx.example.org"])
        self.assertEqual(headers.getRawHeaders(b"From"), [b"alice@example.org"])
        self.assertEqual(headers.getRawHeaders(b"Rcpt"), [b"bob@corp.example", b"carol@corp.example"])
        self.assertEqual(headers.getRawHeaders(b"User-Agent"), [b"allworx"])

    @defer.inlineCallbacks
    def test_reject(self):
        self.fake.answer = {"action": "reject", "score": 30, "required_score": 15}
        v = yield self.client.check(MESSAGE, FACTS)
        self.assertEqual(v.reply[:2], (550, "5.7.1"))

    @defer.inlineCallbacks
    def test_bad_answers_fail(self):
        self.fake.code = 500
        yield self.assertFailure(self.client.check(MESSAGE, FACTS), RspamdError)
        self.fake.code = 200
        self.fake.answer = b"<html>not json"
        yield self.assertFailure(self.client.check(MESSAGE, FACTS), RspamdError)

    @defer.inlineCallbacks
    def test_silence_times_out(self):
        self.fake.hang = True
        clock = task.Clock()
        client = RspamdClient(clock, "127.0.0.1", self.port.getHost().port, agent=Agent(reactor))
        d = client.check(MESSAGE, FACTS)
        yield self.fake.arrived
        self.assertFalse(d.called)
        clock.advance(10)
        failure = yield self.assertFailure(d, RspamdError)
        self.assertIn("127.0.0.1", str(failure))

    @defer.inlineCallbacks
    def test_nobody_listening_fails(self):
        yield self.port.stopListening()
        yield self.assertFailure(self.client.check(MESSAGE, FACTS), RspamdError)
