"""Tests for allworx.certificates: the own CA, the server certificate, renewal timing and the live swap."""

import os
import stat
import time

from cryptography import x509
from OpenSSL import SSL
from twisted.internet import protocol, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer

from allworx import certificates
from allworx.tests.mailtesting import make_office

NOW = int(time.time())    # the clients verify validity against the real time


def keeper_for(testcase, clock=None):
    office = make_office(testcase)
    clock = clock or Clock()
    if clock.seconds() < NOW:
        clock.advance(NOW)
    reports = []
    keeper = certificates.CertificateKeeper(lambda: office.config, clock,
                                            report=lambda *a: reports.append(a))
    keeper.reports = reports
    keeper.office = office
    return keeper, clock


@implementer(IHandshakeListener)
class TLSClient(protocol.Protocol):
    """Completes a handshake and keeps the server's certificate."""

    def __init__(self):
        self.peer = None

    def handshakeCompleted(self):
        self.peer = self.transport.getPeerCertificate().to_cryptography()


def handshake(server_options, client_options):
    """The certificate a client sees from a server listening with `server_options` (in memory)."""
    server = TLSMemoryBIOFactory(server_options, False,
                                 protocol.Factory.forProtocol(protocol.Protocol))
    client_proto = TLSClient()
    client = TLSMemoryBIOFactory(client_options, True,
                                 protocol.Factory.forProtocol(lambda: client_proto))
    s, c, pump = iosim.connectedServerAndClient(lambda: server.buildProtocol(None),
                                                lambda: client.buildProtocol(None))
    pump.flush()
    return client_proto.peer, c


class MakingTests(unittest.TestCase):

    def setUp(self):
        self.keeper, self.clock = keeper_for(self)
        self.keeper.start()
        self.addCleanup(self.keeper.stop)
        self.dir = certificates.tls_dir(self.keeper.office.config.system.data_dir)

    def test_names_from_one_function(self):
        config = self.keeper.office.config
        names = certificates.certificate_names(config)
        domain = config.system.domain
        self.assertEqual(names[0], "%s.%s" % (config.system.hostname, domain))
        for label in ("www", "corp", "admin", "lan", "wan", "smtp", "pop",
                      "imap", "mail", "autoconfig", "autodiscover"):
            self.assertIn("%s.%s" % (label, domain), names)
        self.assertEqual(len(names), len(set(names)))

    def test_ca_and_leaf(self):
        with open(os.path.join(self.dir, "ca.crt"), "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        leaf = self.keeper.leaf.cert
        self.assertEqual(leaf.issuer, ca.subject)
        ca.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                               __import__("cryptography.hazmat.primitives.asymmetric.ec",
                                          fromlist=["ECDSA"]).ECDSA(leaf.signature_hash_algorithm))
        config = self.keeper.office.config
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName),
                         certificates.certificate_names(config))
        self.assertEqual([str(a) for a in san.get_values_for_type(x509.IPAddress)],
                         [str(config.lan_ip)])
        self.assertEqual(leaf.not_valid_after_utc - leaf.not_valid_before_utc,
                         __import__("datetime").timedelta(days=397))
        self.assertLessEqual(leaf.not_valid_before_utc.timestamp(), NOW)
        self.assertEqual(self.keeper.reports[-1][0], "up")

    def test_key_modes(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o700)
        for name in ("ca.key", "ca.crt", "server.pem"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, name)).st_mode), 0o600,
                             name)

    def test_kept_across_restarts(self):
        again = certificates.CertificateKeeper(lambda: self.keeper.office.config, self.clock)
        again.start()
        self.addCleanup(again.stop)
        self.assertEqual(again.leaf.pem, self.keeper.leaf.pem)
        self.assertEqual(again.ca_pem(), self.keeper.ca_pem())

    def test_name_change_reissues(self):
        self.keeper.office.update_settings("system", {"hostname": "other"})
        self.keeper.check()
        self.assertIn("other.%s" % self.keeper.office.config.system.domain,
                      self.keeper.leaf.names)

    def test_unwritable_means_no_tls(self):
        office = make_office(self)
        os.makedirs(office.config.system.data_dir + "/tls")
        with open(office.config.system.data_dir + "/tls/ca.key", "w") as f:
            f.write("garbage")
        with open(office.config.system.data_dir + "/tls/ca.crt", "w") as f:
            f.write("garbage")
        keeper = certificates.CertificateKeeper(lambda: office.config, self.clock)
        self.assertIsNone(keeper.current())
        self.assertIn("PEM", keeper.error)


class RenewalTests(unittest.TestCase):

    def setUp(self):
        self.keeper, self.clock = keeper_for(self)
        self.keeper.start()
        self.addCleanup(self.keeper.stop)
        self.first = self.keeper.leaf
        self.renewed = []
        self.keeper.subscribe(self.renewed.append)

    def test_renews_thirty_days_before_the_end(self):
        due = self.first.not_after - 30 * 86400
        self.clock.advance(due - self.clock.seconds() - 60)
        self.assertIs(self.keeper.leaf, self.first)
        self.assertEqual(self.renewed, [])
        self.clock.advance(120)
        self.assertIsNot(self.keeper.leaf, self.first)
        self.assertEqual(self.renewed, [self.keeper.leaf])
        self.assertGreater(self.keeper.leaf.not_after, self.first.not_after + 300 * 86400)
        # and again a year later, without a restart
        second = self.keeper.leaf
        self.clock.advance(367 * 86400 + 120)
        self.assertIsNot(self.keeper.leaf, second)
        self.assertEqual(len(self.renewed), 2)

    def test_failure_keeps_the_old_and_retries(self):
        def broken():
            raise OSError("disk full")
        real = self.keeper._issue
        self.keeper._issue = broken
        self.clock.advance(self.first.not_after - 30 * 86400 - self.clock.seconds() + 1)
        self.assertIs(self.keeper.leaf, self.first)
        self.assertEqual(self.keeper.reports[-1][0], "degraded")
        self.assertIn("disk full", self.keeper.reports[-1][1])
        self.keeper._issue = real
        self.clock.advance(certificates.RETRY_AFTER)
        self.assertIsNot(self.keeper.leaf, self.first)
        self.assertEqual(self.keeper.reports[-1][0], "up")

    def test_stop_cancels_the_timer(self):
        self.keeper.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LiveOptionsTests(unittest.TestCase):

    def setUp(self):
        self.keeper, self.clock = keeper_for(self)
        self.keeper.start()
        self.addCleanup(self.keeper.stop)
        self.ca = ssl.Certificate.loadPEM(self.keeper.ca_pem())
        hostname = self.keeper.leaf.names[0]
        self.client = ssl.optionsForClientTLS(hostname, trustRoot=self.ca)

    def test_verifies_against_the_ca(self):
        peer, _ = handshake(self.keeper.current(), self.client)
        self.assertEqual(peer.serial_number, self.keeper.leaf.cert.serial_number)

    def test_swap_reaches_the_same_listener(self):
        listening = self.keeper.current()
        first = self.keeper.leaf.cert.serial_number
        self.keeper.renew()
        self.assertIs(self.keeper.current(), listening)
        peer, _ = handshake(listening, self.client)
        self.assertNotEqual(peer.serial_number, first)
        self.assertEqual(peer.serial_number, self.keeper.leaf.cert.serial_number)

    def test_a_client_offering_alpn_reaches_a_port_that_speaks_none(self):
        """Mail, IMAP and SIP speak no ALPN protocol: the offer is ignored, not fatal."""
        for offered in ([b"imap"], [b"http/1.1"]):
            client = ssl.optionsForClientTLS(self.keeper.leaf.names[0], trustRoot=self.ca,
                                             acceptableProtocols=offered)
            peer, _ = handshake(self.keeper.current(), client)
            self.assertEqual(peer.serial_number, self.keeper.leaf.cert.serial_number, offered)

    def test_tls_1_1_refused(self):
        old = ssl.CertificateOptions(insecurelyLowerMinimumTo=ssl.TLSVersion.TLSv1_0,
                                     lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_1)
        peer, client = handshake(self.keeper.current(), old)
        self.assertIsNone(peer)
        # what the server itself is set to (not only the system's OpenSSL policy)
        options = self.keeper.current()._options._options
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)
        self.assertTrue(options & SSL.OP_NO_TLSv1)
