"""Tests for the "mail" child service (allworx.protocols.mail.service): composition and live reconfiguration."""

import os

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from allworx.interfaces import IMailQueue, IMailStore
from allworx.protocols.mail import service as mail_service
from allworx.tests.mailtesting import PlainChecker, make_office, sync_thread


class MailServiceTests(unittest.TestCase):

    def setUp(self):
        self.office = make_office(self)
        self.office.update_settings("mail", {"smtp_port": "2525", "submission_port": "2587"})
        self.office.update_settings("pop3", {"port": "2110", "pop3s_port": "2995"})
        self.office.update_settings("imap", {"port": "2143", "imaps_port": "2993"})
        self.reactor = MemoryReactorClock()
        self.mail = mail_service.MailService(self.office, self.reactor, PlainChecker({}), sync_thread)
        self.mail.startService()
        self.addCleanup(self.mail.stopService)

    def ports(self):
        tcp = sorted(p[0] for p in self.reactor.tcpServers)
        ssl = sorted(p[0] for p in self.reactor.sslServers)
        return tcp, ssl

    def test_children_and_published_parts(self):
        self.assertEqual([c.name for c in self.mail], ["queue", "smtp", "submission", "pop3", "imap", "fetch"])
        self.assertTrue(IMailStore.providedBy(self.mail.store))
        self.assertTrue(IMailQueue.providedBy(self.mail.queue))
        self.assertEqual(self.mail.fetch.status, {})
        self.assertEqual(self.ports(), ([2110, 2143, 2525, 2587], [465, 2993, 2995]))
        self.assertEqual(self.office.status["smtp"].state, "up")

    def test_the_junk_folder_trains_the_content_filter(self):
        trained = []

        def train(user, toks, spam):
            trained.append((user, spam))
            return defer.succeed(None)
        self.mail.content_filter.bayes.train = train
        self.mail.imap.factory.mailboxes.filed("alice", "INBOX", "Junk", b"Subject: win\n\nprize\n")
        self.assertEqual(trained, [("alice", True)])

    def test_imap_follows_its_section_and_the_mail_certificate(self):
        self.assertIs(self.mail.imap.factory.tls_options, self.mail.tls_options)
        replaced = object()
        self.mail.tls_options = replaced        # a certificate reloaded live
        self.assertIs(self.mail.imap.factory.tls_options, replaced)
        self.office.update_settings("imap", {"enabled": "no"})
        self.assertEqual(self.office.status["imap"].state, "disabled")
        self.assertEqual(self.office.status["mail"].state, "up")

    def test_one_live_certificate_for_every_tls_port(self):
        options = self.mail.certificates.current()
        self.assertIsNotNone(options)
        self.assertEqual({p[2] for p in self.reactor.sslServers}, {options})
        self.assertIs(self.mail.smtp_factory.tls_options, options)
        self.assertIs(self.mail.submission_factory.tls_options, options)
        self.assertIs(self.mail.pop3.factory.tls_options, options)
        self.assertIs(self.mail.imap.factory.tls_options, options)

    def test_submissions_port_implicit_tls(self):
        self.office.update_settings("mail", {"submissions_port": "2465"})
        ssl = {p[0]: p[1] for p in self.reactor.sslServers}
        self.assertIs(ssl[2465], self.mail.submission_factory)
        self.assertIn("submissions tcp/2465", self.office.status["submission"].detail)
        self.office.update_settings("mail", {"submissions_port": "0"})
        self.assertNotIn("2465", self.office.status["submission"].detail)
        self.assertIn("submission tcp/2587", self.office.status["submission"].detail)

    def test_port_change_relistens(self):
        self.office.update_settings("mail", {"smtp_port": "2526"})
        self.assertIn(2526, [p[0] for p in self.reactor.tcpServers])
        self.assertIn("2526", self.office.status["smtp"].detail)

    def test_disable_and_enable(self):
        self.office.update_settings("mail", {"enabled": "no"})
        self.assertEqual(self.office.status["smtp"].state, "disabled")
        self.assertEqual(self.office.status["mail"].state, "disabled")
        self.office.update_settings("pop3", {"enabled": "no"})
        self.assertEqual(self.office.status["pop3"].state, "disabled")
        self.office.update_settings("mail", {"enabled": "yes"})
        self.assertEqual(self.office.status["smtp"].state, "up")

    def test_smarthost_and_users_follow(self):
        self.office.update_settings("mail", {"smarthost": "198.51.100.10:2525"})
        self.assertEqual(self.mail.relay.smarthost, ("198.51.100.10", 2525))
        self.mail.store.list_messages("alice")
        self.office.put_record("user", "dave", {"password": self.office.config.users["alice"].password})
        self.assertEqual(self.mail.store.list_messages("dave"), [])

    def test_one_connection_limit_for_every_smtp_port(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from allworx.protocols.mail.smtp import MAX_CONNECTIONS_PER_PEER

        def connect(factory, peer):
            p = factory.buildProtocol(None)
            t = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
            p.makeConnection(t)
            self.addCleanup(p.connectionLost, None)
            return t.value()[:4]
        wan, other = "198.51.100.10", "198.51.100.11"
        half = MAX_CONNECTIONS_PER_PEER // 2
        greetings = [connect(self.mail.smtp_factory, wan) for _ in range(half)]
        greetings += [connect(self.mail.submission_factory, wan)
                      for _ in range(MAX_CONNECTIONS_PER_PEER - half)]
        self.assertEqual(set(greetings), {b"220 "})
        self.assertEqual(connect(self.mail.submission_factory, wan), b"421 ")
        self.assertEqual(connect(self.mail.smtp_factory, wan), b"421 ")
        self.assertEqual(connect(self.mail.smtp_factory, other), b"220 ")

    def test_guards_shared_by_the_mail_ports_or_given(self):
        from allworx.guards import LoginThrottle, PeerLimit
        m = self.mail
        factories = (m.smtp_factory, m.submission_factory, m.pop3.factory)
        self.assertEqual({id(f.throttle) for f in factories}, {id(m.throttle)})
        self.assertEqual({id(f.peers) for f in factories}, {id(m.peers)})
        throttle, peers = LoginThrottle(self.reactor), PeerLimit(3)
        given = mail_service.MailService(self.office, self.reactor, PlainChecker({}), sync_thread,
                                         throttle=throttle, peer_limit=peers)
        self.assertIs(given.pop3.factory.throttle, throttle)
        self.assertIs(given.smtp_factory.peers, peers)

    def test_own_resolver_first(self):
        r = mail_service.own_resolver(self.office.config, self.reactor)
        self.assertEqual(r.servers, [("127.0.0.1", 53), ("203.0.113.1", 53)])


class InboundWiringTests(unittest.TestCase):
    """The checks on mail from the internet, as the service builds them (SPEC 18)."""

    setUp = MailServiceTests.setUp

    def test_port_25_checks_wan_mail_submission_does_not(self):
        inbound = self.mail.smtp_factory.inbound
        self.assertIs(inbound, self.mail.inbound)
        self.assertIsNone(self.mail.submission_factory.inbound)
        self.assertIs(inbound.resolver, self.mail.relay.resolver)
        self.assertIs(inbound.decisions, self.mail.decisions)
        self.assertTrue(self.mail.inbound.greylist.path.endswith("/mail/greylist.json"))

    def test_resolver_follows_the_config(self):
        before = self.mail.inbound.resolver
        self.office.update_settings("dns", {"primary": "192.0.2.53"})
        self.assertIsNot(self.mail.inbound.resolver, before)
        self.assertIs(self.mail.inbound.resolver, self.mail.relay.resolver)

    def test_greylist_state_written_at_stop(self):
        self.mail.inbound.greylist.check("198.51.100.1", "a@x.example", "alice@example.com")
        self.mail.stopService()
        self.assertTrue(os.path.exists(self.mail.inbound.greylist.path))
