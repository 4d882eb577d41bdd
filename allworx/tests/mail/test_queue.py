"""Tests for the outbound queue (allworx.protocols.mail.queue), bounces (dsn) and relay routing (relay)."""

import email

from twisted.internet import defer
from twisted.names import dns, error as dns_error
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from allworx.interfaces import IMailQueue
from allworx.protocols.mail import dsn
from allworx.protocols.mail import queue as queue_mod
from allworx.protocols.mail.relay import Outcome, SmtpRelay, _stuffing_transform, outcome_for_reply
from allworx.tests.mailtesting import FakeRelay, make_store

MSG = b"From: alice@example.com\nTo: x@other.example\nSubject: out\n\nbody\n"
TEMP = Outcome("temporary", "4.4.1", "cannot talk to 198.51.100.10:25: refused")
PERM = Outcome("permanent", "5.1.1", "550 5.1.1 no such user")
SENT = Outcome("sent", "2.0.0", "250 ok")


class QueueTests(unittest.TestCase):

    def setUp(self):
        self.answer = TEMP
        self.relay = FakeRelay(lambda domain, rcpt: self.answer)
        self.office, self.store, self.queue, self.clock = make_store(self, relay=self.relay)
        self.queue.load()
        self.queue.start()

    def send(self, sender="alice@example.com", rcpts=("x@other.example",), message=MSG):
        out = []
        self.store.deliver(list(rcpts), message, sender).addBoth(out.append)
        return out[0]

    def test_interface(self):
        verifyObject(IMailQueue, self.queue)

    def test_retry_delays(self):
        self.assertEqual([queue_mod.retry_delay(n) for n in range(1, 8)],
                         [300, 600, 1200, 2400, 4800, 9600, 14400])
        self.assertEqual(queue_mod.retry_delay(50), 14400)

    def test_delivered_at_once(self):
        self.answer = SENT
        self.send()
        self.clock.advance(0)
        self.assertEqual(len(self.relay.calls), 1)
        domain, sender, rcpts, data = self.relay.calls[0]
        self.assertEqual((domain, sender, rcpts), ("other.example", "alice@example.com", ["x@other.example"]))
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(self.queue._entries, {})

    def test_backoff_on_clock(self):
        self.send()
        self.clock.advance(0)
        self.assertEqual(len(self.relay.calls), 1)
        [entry] = self.queue.entries()
        self.assertEqual(entry["attempts"], 1)
        self.assertEqual(entry["next_attempt"], 300)
        self.assertIn("cannot talk", entry["last_error"])
        self.clock.advance(299)
        self.assertEqual(len(self.relay.calls), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.relay.calls), 2)
        self.clock.advance(599)
        self.assertEqual(len(self.relay.calls), 2)
        self.answer = SENT
        self.clock.advance(1)
        self.assertEqual(len(self.relay.calls), 3)
        self.assertEqual(len(self.queue), 0)

    def test_permanent_failure_bounces_to_local_sender(self):
        self.answer = PERM
        self.send()
        self.clock.advance(0)
        self.assertEqual(len(self.queue), 0)
        [bounce] = self.store.list_messages("alice")
        self.assertEqual(bounce.subject, "Undelivered Mail Returned to Sender")
        text = self.store.read_message("alice", bounce.uid)
        msg = email.message_from_bytes(text)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertIn(b"Final-Recipient: rfc822; x@other.example", text)
        self.assertIn(b"Status: 5.1.1", text)
        self.assertIn(b"Subject: out", text)

    def test_no_bounce_for_a_bounce(self):
        self.answer = PERM
        self.send(sender="")
        self.clock.advance(0)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(self.store.list_messages("alice"), [])
        self.assertEqual(len(self.relay.calls), 1)

    def test_bounce_to_outside_sender_has_null_sender(self):
        self.answer = PERM
        self.send(sender="someone@far.example")
        self.clock.advance(0)
        # The bounce itself is queued for far.example with the null sender.
        self.clock.advance(0)
        bounce_calls = [c for c in self.relay.calls if c[0] == "far.example"]
        self.assertEqual(bounce_calls[0][1], "")
        self.assertEqual(len(self.queue), 0)   # its own failure makes no new bounce

    def test_expiry_after_five_days(self):
        self.send()
        for _ in range(60):
            self.clock.advance(queue_mod.MAX_RETRY)
        self.assertEqual(len(self.queue), 0)
        [bounce] = self.store.list_messages("alice")
        text = self.store.read_message("alice", bounce.uid)
        self.assertIn(b"could not be delivered for 5 days", text)
        self.assertLessEqual(self.clock.seconds(), 60 * queue_mod.MAX_RETRY)

    def test_partial_delivery(self):
        self.relay.outcome = lambda d, r: SENT if r.startswith("a@") else TEMP
        self.send(rcpts=("a@other.example", "b@other.example"))
        self.clock.advance(0)
        [entry] = self.queue.entries()
        self.assertEqual(entry["recipients"], ["b@other.example"])

    def test_survives_restart(self):
        self.send()
        self.clock.advance(0)
        self.queue.stop()
        again = queue_mod.OutboundQueue(self.office, self.store.writer, self.clock, self.relay, self.store)
        self.assertEqual(again.load(), 1)
        [entry] = again.entries()
        self.assertEqual(entry["attempts"], 1)
        self.assertEqual(entry["next_attempt"], 300)
        again.start()
        self.answer = SENT
        self.clock.advance(300)
        self.assertEqual(len(again), 0)

    def test_unfinished_write_is_dropped(self):
        import os
        os.makedirs(self.queue.directory, exist_ok=True)
        with open(os.path.join(self.queue.directory, "half.eml"), "wb") as f:
            f.write(b"x")
        fresh = queue_mod.OutboundQueue(self.office, self.store.writer, self.clock, self.relay, self.store)
        self.assertEqual(fresh.load(), 0)
        self.assertFalse(os.path.exists(os.path.join(self.queue.directory, "half.eml")))

    def test_retry_and_remove(self):
        self.send()
        self.clock.advance(0)
        [entry] = self.queue.entries()
        self.queue.retry(entry["id"])
        self.clock.advance(0)
        self.assertEqual(len(self.relay.calls), 2)
        self.queue.remove(entry["id"])
        self.assertEqual(self.queue.entries(), [])
        self.assertRaises(KeyError, self.queue.remove, entry["id"])


class DsnTests(unittest.TestCase):

    def test_status_for(self):
        self.assertEqual(dsn.status_for(550, "5.7.1 relaying denied"), "5.7.1")
        self.assertEqual(dsn.status_for(550, "no"), "5.0.0")
        self.assertEqual(dsn.status_for(451, b"later"), "4.0.0")

    def test_large_original_only_headers(self):
        big = b"Subject: big\n\n" + b"x" * 100000
        text = dsn.build_bounce("h.example", "Q1", "a@b.example", [("c@d.example", "5.0.0", "no")],
                                big, 0)
        self.assertIn(b"text/rfc822-headers", text)
        self.assertLess(len(text), 5000)

    def test_outcome_for_reply(self):
        self.assertEqual(outcome_for_reply(250, b"ok").kind, "sent")
        self.assertEqual(outcome_for_reply(550, b"5.1.1 unknown"), Outcome("permanent", "5.1.1", "550 5.1.1 unknown"))
        self.assertEqual(outcome_for_reply(451, b"later").kind, "temporary")


class FakeResolver:

    def __init__(self, mx=None, hosts=None, fail=None):
        self.mx = mx or {}
        self.hosts = hosts or {}
        self.fail = fail

    def lookupMailExchange(self, name):
        if self.fail:
            return defer.fail(self.fail)
        answers = [dns.RRHeader(name=name, type=dns.MX, payload=dns.Record_MX(pref, host))
                   for pref, host in self.mx.get(name, ())]
        return defer.succeed((answers, [], []))

    def getHostByName(self, name):
        if name in self.hosts:
            return defer.succeed(self.hosts[name])
        return defer.fail(dns_error.DNSNameError(name))


class RelayRouteTests(unittest.TestCase):

    def route(self, relay, domain):
        out = []
        relay.route(domain).addBoth(out.append)
        return out[0]

    def test_mx_in_preference_order(self):
        r = SmtpRelay(None, FakeResolver(mx={"internet.example": [(20, "b.internet.example"),
                                                                  (10, "mail.internet.example")]},
                                         hosts={"mail.internet.example": "198.51.100.10",
                                                "b.internet.example": "198.51.100.11"}), "h")
        self.assertEqual(self.route(r, "internet.example"),
                         [("198.51.100.10", 25), ("198.51.100.11", 25)])

    def test_implicit_mx(self):
        r = SmtpRelay(None, FakeResolver(hosts={"plain.example": "198.51.100.12"}), "h")
        self.assertEqual(self.route(r, "plain.example"), [("198.51.100.12", 25)])

    def test_nxdomain_is_permanent(self):
        r = SmtpRelay(None, FakeResolver(fail=dns_error.DNSNameError("x")), "h")
        f = self.route(r, "nowhere.example")
        self.assertEqual(f.value.outcome.kind, "permanent")

    def test_timeout_is_temporary(self):
        r = SmtpRelay(None, FakeResolver(fail=dns_error.DNSQueryTimeoutError("x")), "h")
        f = self.route(r, "slow.example")
        self.assertEqual(f.value.outcome.kind, "temporary")

    def test_smarthost(self):
        r = SmtpRelay(None, FakeResolver(), "h", smarthost=("198.51.100.10", 2525))
        self.assertEqual(self.route(r, "anything.example"), [("198.51.100.10", 2525)])

    def test_dot_stuffing_across_chunks(self):
        class P:
            def resetTimeout(self):
                pass
        t = _stuffing_transform(P())
        out = t(b".first\nline\n") + t(b".\nafter")
        self.assertEqual(out, b"..first\r\nline\r\n..\r\nafter")


class QueueBoundTests(unittest.TestCase):

    def test_full_queue_refuses(self):
        relay = FakeRelay(lambda d, r: TEMP)
        office, store, queue, clock = make_store(self, relay=relay)
        queue.max_entries = 2
        results = []
        for _ in range(3):
            store.deliver(["x@other.example"], MSG, "alice@example.com").addBoth(results.append)
        self.assertIsInstance(results[2].value, queue_mod.QueueFull)
        self.assertEqual(len(queue), 2)


class RelayToServerTests(unittest.TestCase):
    """SmtpRelay talking to this server's own SmtpServer, in memory (iosim)."""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        from twisted.test.iosim import ConnectionCompleter
        from allworx.protocols.mail.smtp import SmtpFactory
        self.reactor = MemoryReactorClock()
        self.office, self.store, _, _ = make_store(self, clock=self.reactor)
        self.reactor.listenTCP(25, SmtpFactory(self.office, self.store.deliver, self.reactor))
        self.completer = ConnectionCompleter(self.reactor)
        self.relay = SmtpRelay(self.reactor, FakeResolver(), "sender.example",
                               smarthost=("192.0.2.25", 25))

    def deliver(self, rcpts, data):
        out = []
        self.relay.deliver("example.com", "x@sender.example", rcpts, data).addBoth(out.append)
        for _ in range(5):
            pump = self.completer.succeedOnce()
            if pump is not None:
                pump.flush()
        return out[0]

    def test_sent_with_dots_intact(self):
        data = b"Subject: dots\n\n.\n..two\n.\nend\n"
        result = self.deliver(["alice@example.com"], data)
        self.assertEqual(result["alice@example.com"].kind, "sent")
        [info] = self.store.list_messages("alice")
        stored = self.store.read_message("alice", info.uid)
        self.assertTrue(stored.endswith(data), stored)

    def test_refused_recipient_is_permanent(self):
        result = self.deliver(["alice@example.com", "nobody@example.com"], b"Subject: x\n\nhi\n")
        self.assertEqual(result["alice@example.com"].kind, "sent")
        self.assertEqual(result["nobody@example.com"].kind, "permanent")
        self.assertEqual(result["nobody@example.com"].status, "5.1.1")

    def test_connection_failure_is_temporary(self):
        out = []
        self.relay.deliver("example.com", "x@sender.example", ["alice@example.com"],
                           b"x\n").addBoth(out.append)
        self.completer.failOnce()
        self.assertEqual(out[0]["alice@example.com"].kind, "temporary")


class QueueDamageTests(unittest.TestCase):

    def test_lost_message_file_drops_entry(self):
        import os
        relay = FakeRelay(lambda d, r: SENT)
        office, store, queue, clock = make_store(self, relay=relay)
        store.deliver(["x@other.example"], MSG, "alice@example.com")
        [entry] = queue.entries()
        os.unlink(os.path.join(queue.directory, entry["id"] + ".eml"))
        queue.start()
        clock.advance(0)
        self.assertEqual(queue.entries(), [])
        self.assertEqual(relay.calls, [])
