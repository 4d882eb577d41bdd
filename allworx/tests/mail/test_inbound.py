"""
Tests for the checks on mail from the internet (allworx.protocols.mail.inbound)
through SMTP sessions on a StringTransport, a fake resolver and task.Clock;
the decision log; delivery to Junk seen by an IMAP session.
"""

from twisted.internet import address, defer, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from allworx.protocols.mail.decisions import DecisionLog
from allworx.protocols.mail.dnsbl import Dnsbl
from allworx.protocols.mail.greylist import DELAY, Greylist
from allworx.protocols.mail.inbound import InboundChecks
from allworx.protocols.mail.smtp import SmtpFactory
from allworx.protocols.mail.store import Delivered
from allworx.protocols.mail.verdicts import ContentVerdict
from allworx.tests.mail.test_authresults import MESSAGE, published, sign
from allworx.tests.mail.test_imap import ImapCase
from allworx.tests.mailtesting import PlainChecker, make_office

LAN = "192.168.2.10"
WAN = "198.51.100.10"
LISTED = "198.51.100.66"


class Delivery:
    """The store's deliver: records (recipients, message, sender, junk)."""

    def __init__(self):
        self.calls = []

    def __call__(self, recipients, message, sender, junk=()):
        self.calls.append((list(recipients), bytes(message), sender, tuple(junk)))
        return defer.succeed(Delivered("ID%d" % len(self.calls), tuple(recipients), ()))


class Filter:
    """A content filter answering `verdict`, remembering what it was asked."""

    def __init__(self, verdict=None):
        self.verdict = verdict or ContentVerdict("accept", 0.0)
        self.asked = []

    def check(self, message, facts):
        self.asked.append((message, facts))
        return defer.succeed(self.verdict)


def world():
    """The internet as DNS sees it: sender.example signs and has p=reject, and the others."""
    dns = published()
    dns.add("sender.example", "TXT", "v=spf1 ip4:%s -all" % WAN)
    dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=reject")
    dns.add("bank.example", "TXT", "v=spf1 ip4:203.0.113.0/24 -all")
    dns.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")
    dns.add("shop.example", "TXT", "v=spf1 -all")
    dns.add("_dmarc.shop.example", "TXT", "v=DMARC1; p=quarantine")
    dns.add("nopolicy.example", "TXT", "v=spf1 -all")
    dns.add("66.100.51.198.bl.example", "A", "127.0.0.2")
    dns.add("66.100.51.198.bl.example", "TXT", "listed for spam, see bl.example")
    return dns


class InboundCase(unittest.TestCase):

    def setUp(self):
        self.office = make_office(self)
        self.clock = task.Clock()
        self.dns = world()
        self.decisions = DecisionLog(self.clock)
        self.filter = Filter()
        grey_path = self.mktemp()
        self.inbound = InboundChecks(self.office, self.dns, self.decisions, Dnsbl(self.clock),
                                     Greylist(grey_path, self.clock, write=lambda p, t: None),
                                     content_filter=self.filter)
        self.delivery = Delivery()
        self.factory = SmtpFactory(self.office, self.delivery, self.clock,
                                   PlainChecker({"alice": "secret"}), inbound=self.inbound)

    def connect(self, peer=WAN):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=address.IPv4Address("TCP", peer, 40000))
        proto.makeConnection(transport)
        transport.clear()
        return proto, transport

    def talk(self, data, peer=WAN, session=None):
        proto, transport = session or self.connect(peer)
        proto.dataReceived(data)
        lines = [line for line in transport.value().decode().split("\r\n") if line]
        transport.clear()
        return lines

    def send(self, message, mail_from=b"bounce@sender.example", rcpt=b"alice@example.com",
             peer=WAN, helo=b"mx.sender.example"):
        lines = self.talk(b"EHLO " + helo + b"\r\nMAIL FROM:<" + mail_from + b">\r\nRCPT TO:<" +
                          rcpt + b">\r\nDATA\r\n" + message + b".\r\n", peer)
        return [line for line in lines if line[3:4] == " "]

    def delivered(self):
        self.assertEqual(len(self.delivery.calls), 1)
        return self.delivery.calls[0]


class EndOfDataTests(InboundCase):

    def test_signed_message_passes_with_our_header_on_top(self):
        replies = self.send(sign())
        self.assertTrue(replies[-1].startswith("250 2.0.0"), replies)
        rcpts, message, sender, junk = self.delivered()
        self.assertEqual(junk, ())
        first = message.split(b"\n\t")[0]
        self.assertEqual(first, b"Authentication-Results: allworx.example.com;")
        head = message.split(b"\nReceived:")[0].replace(b"\n\t", b" ")
        self.assertEqual(head, b"Authentication-Results: allworx.example.com; "
                         b"spf=pass smtp.mailfrom=bounce@sender.example; "
                         b"dkim=pass header.d=sender.example header.s=s1 header.a=rsa-sha256; "
                         b"dkim=pass header.d=sender.example header.s=s1-ed25519 "
                         b"header.a=ed25519-sha256; dmarc=pass (p=reject) header.from=sender.example")
        [decision] = self.decisions.decisions()
        self.assertEqual((decision["verdict"], decision["client"], decision["sender"],
                          decision["recipients"], decision["helo"]),
                         ("accepted", WAN, "bounce@sender.example", ["alice@example.com"],
                          "mx.sender.example"))
        self.assertIn("dmarc=pass", decision["auth"])

    def test_forged_from_refused_550_5_7_26(self):
        forged = b"From: Bank <security@bank.example>\r\nSubject: verify\r\n\r\nclick\r\n"
        replies = self.send(forged, mail_from=b"x@nopolicy.example")
        self.assertTrue(replies[-1].startswith("550 5.7.26"), replies)
        self.assertIn("bank.example", replies[-1])
        self.assertIn("DMARC", replies[-1])
        self.assertEqual(self.delivery.calls, [])
        decision = self.decisions.decisions()[0]
        self.assertEqual(decision["verdict"], "refused")
        self.assertIn("dmarc=fail (p=reject) header.from=bank.example", decision["auth"])
        self.assertEqual(self.filter.asked, [])

    def test_session_goes_on_after_a_refusal(self):
        session = self.connect()
        forged = b"From: security@bank.example\r\n\r\nclick\r\n"
        self.talk(b"EHLO x.example\r\nMAIL FROM:<x@nopolicy.example>\r\nRCPT TO:<alice@example.com>"
                  b"\r\nDATA\r\n" + forged + b".\r\n", session=session)
        lines = self.talk(b"MAIL FROM:<bounce@sender.example>\r\nRCPT TO:<alice@example.com>\r\n"
                          b"DATA\r\n" + sign() + b".\r\n", session=session)
        self.assertTrue(lines[-1].startswith("250 2.0.0"), lines)

    def test_quarantine_goes_to_junk(self):
        msg = b"From: deals@shop.example\r\nSubject: deal\r\n\r\nbuy\r\n"
        replies = self.send(msg, mail_from=b"deals@shop.example", rcpt=b"team@example.com")
        self.assertTrue(replies[-1].startswith("250"), replies)
        rcpts, message, sender, junk = self.delivered()
        self.assertEqual(set(junk), {"alice", "bob", "carol"})     # team: sales (alice, bob), carol
        self.assertEqual(self.decisions.decisions()[0]["verdict"], "junk")

    def test_forged_authentication_results_removed_others_kept(self):
        msg = (b"Authentication-Results: allworx.example.com; dmarc=pass header.from=bank.example\r\n"
               b"Authentication-Results: mx.other.example; spf=pass smtp.mailfrom=x@y.example\r\n"
               + sign())
        self.send(msg)
        message = self.delivered()[1]
        self.assertEqual(message.count(b"Authentication-Results: allworx.example.com"), 1)
        self.assertNotIn(b"header.from=bank.example", message)
        self.assertIn(b"Authentication-Results: mx.other.example; spf=pass", message)

    def test_spf_fail_without_policy_accepted_and_told_to_the_filter(self):
        msg = b"From: x@nopolicy.example\r\nSubject: hi\r\n\r\nhi\r\n"
        replies = self.send(msg, mail_from=b"x@nopolicy.example")
        self.assertTrue(replies[-1].startswith("250"), replies)
        message, facts = self.filter.asked[0]
        self.assertEqual((facts.spf, facts.dmarc, facts.dkim), ("fail", "none", ()))
        self.assertEqual((facts.client_ip, facts.helo, facts.sender, facts.recipients, facts.users),
                         (WAN, "mx.sender.example", "x@nopolicy.example",
                          ("alice@example.com",), ("alice",)))
        self.assertTrue(message.startswith(b"Authentication-Results: allworx.example.com;"))
        self.assertIn("spf=fail", facts.auth_results)

    def test_dns_temperrors_never_reject(self):
        self.dns.servfail.update({"bank.example", "_dmarc.bank.example"})
        forged = b"From: security@bank.example\r\n\r\nclick\r\n"
        replies = self.send(forged, mail_from=b"x@bank.example")
        self.assertTrue(replies[-1].startswith("250"), replies)
        self.assertIn(b"spf=temperror", self.delivered()[1])
        self.assertIn(b"dmarc=temperror", self.delivered()[1])

    def test_reply_waits_for_the_dns(self):
        self.dns.silent.add("sender.example")
        proto, transport = self.connect()
        proto.dataReceived(b"EHLO x.example\r\nMAIL FROM:<bounce@sender.example>\r\n"
                           b"RCPT TO:<alice@example.com>\r\nDATA\r\n" + sign() + b".\r\nNOOP\r\n")
        self.assertNotIn(b"2.0.0 OK: queued", transport.value())
        self.assertNotIn(b"250 2.0.0 OK\r\n", transport.value())     # the NOOP waits too
        self.dns.pending[0].errback(Exception("timeout"))
        self.assertIn(b"250 2.0.0 OK: queued", transport.value())
        self.assertTrue(transport.value().endswith(b"250 2.0.0 OK\r\n"))

    def test_content_filter_junk_and_status_header(self):
        self.filter.verdict = ContentVerdict("junk", 7.5, (("BAYES", 5.0, "bayes"),),
                                             status_header="Yes, score=7.5 required=5.0")
        self.send(sign())
        rcpts, message, sender, junk = self.delivered()
        self.assertEqual(junk, ("alice",))
        self.assertIn(b"\nX-Spam-Status: Yes, score=7.5 required=5.0\nReceived:", message)
        d = self.decisions.decisions()[0]
        self.assertEqual((d["verdict"], d["score"]), ("junk", 7.5))

    def test_content_filter_reject(self):
        self.filter.verdict = ContentVerdict("reject", 0.0, (),
                                             (552, "5.7.0", "executable attachment evil.exe refused"))
        replies = self.send(sign())
        self.assertEqual(replies[-1], "552 5.7.0 executable attachment evil.exe refused")
        self.assertEqual(self.delivery.calls, [])
        self.assertEqual(self.decisions.decisions()[0]["verdict"], "refused")

    def test_lan_clients_are_not_checked(self):
        forged = b"From: security@bank.example\r\n\r\nclick\r\n"
        replies = self.send(forged, mail_from=b"x@nopolicy.example", peer=LAN)
        self.assertTrue(replies[-1].startswith("250"), replies)
        self.assertEqual(self.dns.asked, [])
        self.assertNotIn(b"Authentication-Results", self.delivered()[1])
        self.assertEqual(self.decisions.decisions(), [])

    def test_authenticated_clients_are_not_checked(self):
        from twisted.internet import interfaces
        from zope.interface import directlyProvides
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=address.IPv4Address("TCP", WAN, 40000))
        directlyProvides(transport, interfaces.ISSLTransport)
        proto.makeConnection(transport)
        self.office.update_settings("mail", {"dnsbl": "bl.example"})
        lines = self.talk(b"EHLO x.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"
                          b"MAIL FROM:<x@bank.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
                          b"From: security@bank.example\r\n\r\nhi\r\n.\r\n", session=(proto, transport))
        self.assertTrue(lines[-1].startswith("250 2.0.0"), lines)
        self.assertEqual(self.dns.asked, [])


class RcptTests(InboundCase):

    def setUp(self):
        InboundCase.setUp(self)
        self.office.update_settings("mail", {"dnsbl": "bl.example"})

    def test_listed_client_refused_at_rcpt(self):
        lines = self.talk(b"EHLO spam.example\r\nMAIL FROM:<x@y.example>\r\n"
                          b"RCPT TO:<alice@example.com>\r\n", peer=LISTED)
        self.assertEqual(lines[-1], "554 5.7.1 198.51.100.66 is listed in bl.example: "
                         "listed for spam, see bl.example")
        d = self.decisions.decisions()[0]
        self.assertEqual((d["verdict"], d["client"]), ("refused", LISTED))

    def test_postmaster_is_exempt(self):
        lines = self.talk(b"EHLO spam.example\r\nMAIL FROM:<x@y.example>\r\n"
                          b"RCPT TO:<postmaster@example.com>\r\nRCPT TO:<postmaster>\r\n",
                          peer=LISTED)
        self.assertEqual([line[:3] for line in lines[-2:]], ["250", "250"])

    def test_listed_lan_client_is_not_asked_about(self):
        self.dns.add("10.2.168.192.bl.example", "A", "127.0.0.2")
        lines = self.talk(b"EHLO pc\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<alice@example.com>\r\n",
                          peer=LAN)
        self.assertTrue(lines[-1].startswith("250"), lines)
        self.assertEqual(self.dns.asked, [])

    def test_asked_once_per_session(self):
        self.talk(b"EHLO ok.example\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<alice@example.com>\r\n"
                  b"RCPT TO:<admin@example.com>\r\n")
        self.assertEqual([q for q in self.dns.asked if q[0].endswith("bl.example")],
                         [("10.100.51.198.bl.example", "A")])

    def test_silent_zone_skipped_after_two_seconds(self):
        self.dns.silent.add("10.100.51.198.bl.example")
        proto, transport = self.connect()
        proto.dataReceived(b"EHLO ok.example\r\nMAIL FROM:<x@y.example>\r\n"
                           b"RCPT TO:<alice@example.com>\r\n")
        self.assertNotIn(b"2.1.5", transport.value())
        self.clock.advance(2.1)
        self.assertIn(b"250 2.1.5", transport.value())
        self.flushLoggedErrors()

    def test_greylisting(self):
        self.office.update_settings("mail", {"greylist": "yes"})
        rcpt = b"EHLO ok.example\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<alice@example.com>\r\n"
        lines = self.talk(rcpt)
        self.assertEqual(lines[-1], "451 4.7.1 greylisted: please try again in %d seconds" % DELAY)
        self.assertEqual(self.decisions.decisions()[0]["verdict"], "greylisted")
        self.clock.advance(DELAY)
        self.assertTrue(self.talk(rcpt)[-1].startswith("250"))
        # the LAN is never greylisted
        self.assertTrue(self.talk(rcpt.replace(b"x@y", b"z@y"), peer=LAN)[-1].startswith("250"))

    def test_no_greylisting_unless_asked(self):
        lines = self.talk(b"EHLO ok.example\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<alice@example.com>\r\n")
        self.assertTrue(lines[-1].startswith("250"), lines)


class DecisionLogTests(unittest.TestCase):

    def test_ring_newest_first(self):
        clock = task.Clock()
        log = DecisionLog(clock, size=3)
        for n in range(5):
            clock.advance(1)
            log.record("192.0.2.%d" % n, "h", "s@x", ["a@example.com"], "accepted", "", 1.0, "")
        out = log.decisions(10)
        self.assertEqual([d["client"] for d in out], ["192.0.2.4", "192.0.2.3", "192.0.2.2"])
        self.assertEqual(set(out[0]), {"time", "client", "helo", "sender", "recipients", "verdict",
                                       "reason", "score", "auth"})
        self.assertEqual(out[0]["time"], 5)
        self.assertEqual(len(log.decisions(2)), 2)
        self.assertEqual(log.counts["accepted"], 5)
        self.assertRaises(ValueError, log.record, "x", "h", "s", [], "maybe", "")


class JunkDeliveryTests(ImapCase):

    def test_junk_copy_goes_to_the_junk_folder(self):
        told = []
        self.store.folder_listeners.append(lambda user, folder: told.append((user, folder)))
        d = self.store.deliver(["alice", "bob@example.com"], MESSAGE, "x@y.example", junk=("alice",))
        result = self.successResultOf(d)
        self.assertIn("alice", result.users)
        self.assertEqual(told, [("alice", "Junk")])
        self.assertEqual(self.store.junk_count("alice"), 1)
        self.assertEqual(len(self.store.list_messages("alice")), 3)     # INBOX unchanged

    def test_idle_on_junk_hears_the_delivery(self):
        p, t = self.select(b"Junk")
        self.assertIn(b"+ idling", self.talk(p, t, b"i1 IDLE"))
        t.clear()
        self.successResultOf(self.store.deliver(["alice"], MESSAGE, "x@y.example", junk=("alice",)))
        self.assertEqual(t.value(), b"* 1 EXISTS\r\n")
        self.assertIn(b"i1 OK", self.talk(p, t, b"DONE"))
        out = self.talk(p, t, b"f1 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertIn(b"Subject: hello", out)
