"""
Tests for allworx.acmeissuer and the certificate keeper with an ACME CA: a
fake ACME client on task.Clock whose CA checks each HTTP-01 challenge
through the web sites' resource, renewal timing, failures that keep the
working certificate and show on the status, the retry back-off, and the
challenge resource itself over HTTP.
"""

import datetime
import os
import stat
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from allworx import acmeissuer, certificates
from allworx.config import parse_config
from allworx.office import Office
from allworx.protocols.web import sites
from allworx.tests.mailtesting import MAIL_CONF, sync_thread
from allworx.tests.web.test_sites import raw_get

NOW = int(time.time())
DIRECTORY = "https://acme.test/dir"
ACME_CONF = MAIL_CONF + """
[tls]
acme_directory = %s
acme_email = admin@example.com
""" % DIRECTORY
WAN_PEER = "198.51.100.10"
DAY = 86400


class FakeCA:
    """
    What the fake clients talk to: a CA that validates each challenge by
    fetching it through `fetch(token)`, keeps some polls pending, and
    issues certificates of `days` for the CSR's key.
    """

    def __init__(self, clock, days=90):
        self.clock = clock
        self.days = days
        self.key_pem, self.cert_pem = certificates.make_ca("fake ACME root", clock.seconds())
        self.fetch = None
        self.refuse = None          # an exception connect() raises
        self.pending = 2            # polls that answer "pending" before the result
        self.connects = []          # clock time of each try
        self.emails = []
        self.issued = []

    def client(self, url, account_pem, email):
        assert url == DIRECTORY, url
        serialization.load_pem_private_key(account_pem, None)
        self.emails.append(email)
        return FakeClient(self)

    def sign(self, csr_pem):
        ca_key = serialization.load_pem_private_key(self.key_pem, None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        csr = x509.load_pem_x509_csr(csr_pem)
        start = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(ca_cert.subject).public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=self.days))
                .add_extension(san, critical=True)
                .sign(ca_key, hashes.SHA256()))
        self.issued.append(cert)
        return cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem


class FakeClient:
    """One order, as LibraryClient's methods see it."""

    def __init__(self, ca):
        self.ca = ca
        self.tokens = {}
        self.answered = set()
        self.polls = 0
        self.csr = None
        self.finalized = False

    def connect(self):
        self.ca.connects.append(self.ca.clock.seconds())
        if self.ca.refuse is not None:
            raise self.ca.refuse

    def new_order(self, csr_pem):
        self.csr = csr_pem
        csr = x509.load_pem_x509_csr(csr_pem)
        names = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        self.tokens = {"tok%d" % n: name for n, name in enumerate(names)}
        return [(token, token + ".thumbprint") for token in self.tokens]

    def answer(self, token):
        self.answered.add(token)

    def authorizations(self):
        self.polls += 1
        out = []
        for token, name in self.tokens.items():
            if self.polls <= self.ca.pending:
                out.append((name, "pending", None))
            elif token in self.answered and self.ca.fetch(token) == token + ".thumbprint":
                out.append((name, "valid", None))
            else:
                out.append((name, "invalid", "the key authorization did not match"))
        return out

    def finalize(self):
        self.finalized = True

    def order_state(self):
        if not self.finalized:
            return "ready", None, None
        return "valid", self.ca.sign(self.csr), None


def fetch_through_site(office, answer, token, peer=WAN_PEER):
    """What the port-80 site answers at /.well-known/acme-challenge/TOKEN (None for a 404)."""
    request = DummyRequest([b".well-known", b"acme-challenge", token.encode()])
    request.client = IPv4Address("TCP", peer, 40000)
    site = sites.SiteBySide(office, None, answer)
    body = getChildForRequest(site, request).render(request)
    return body.decode() if request.responseCode in (None, 200) else None


class KeeperWithAcme(unittest.TestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(self.data)
        self.office = Office(parse_config(ACME_CONF), data_dir=self.data)
        self.ca = FakeCA(self.clock)
        self.issuer = acmeissuer.AcmeIssuer(self.clock, client_factory=self.ca.client,
                                            in_thread=sync_thread)
        self.reports = []
        self.keeper = self.make_keeper()
        self.ca.fetch = lambda token: fetch_through_site(self.office, self.keeper.answer, token)
        self.renewed = []
        self.keeper.subscribe(self.renewed.append)

    def make_keeper(self):
        keeper = certificates.CertificateKeeper(lambda: self.office.config, self.clock,
                                                report=lambda *a: self.reports.append(a),
                                                acme=self.issuer)
        self.addCleanup(keeper.stop)
        return keeper

    def tls(self, name):
        return os.path.join(self.data, "tls", name)

    def obtain(self):
        """Start the keeper and let the ACME exchange run; the first ACME leaf."""
        self.keeper.start()
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertEqual(len(self.ca.issued), 1, self.reports)
        return self.keeper.leaf

    def test_own_certificate_at_once_then_the_acme_one(self):
        self.keeper.start()
        own = self.keeper.leaf
        self.assertIsNotNone(own)
        self.assertIn("asking the ACME CA " + DIRECTORY, self.reports[-1][1])
        self.assertEqual(self.ca.issued, [])
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        leaf = self.keeper.leaf
        self.assertIsNot(leaf, own)
        self.assertEqual(leaf.issuer, x509.load_pem_x509_certificate(self.ca.cert_pem).subject)
        self.assertEqual(sorted(leaf.names), sorted(
            "%s.example.com" % label for label in
            ("allworx", "www", "smtp", "pop", "imap", "mail", "autoconfig", "autodiscover")))
        self.assertEqual(leaf.names[0], "allworx.example.com")
        self.assertEqual(leaf.addresses, [])
        self.assertEqual(self.renewed, [leaf])
        self.assertEqual(self.reports[-1][0], "up")
        self.assertIn("from " + DIRECTORY, self.reports[-1][1])
        self.assertEqual(self.ca.emails, ["admin@example.com"])
        # The key authorizations are gone once the order is done.
        self.assertEqual(self.issuer.responses, {})
        for name in ("acme.pem", acmeissuer.ACCOUNT_KEY):
            self.assertEqual(stat.S_IMODE(os.stat(self.tls(name)).st_mode), 0o600, name)
        # The live options carry the new chain: leaf and the CA's certificate.
        self.assertEqual(len(leaf.chain), 2)

    def test_account_key_made_once(self):
        self.obtain()
        with open(self.tls(acmeissuer.ACCOUNT_KEY), "rb") as f:
            first = f.read()
        self.keeper.renew()
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertEqual(len(self.ca.issued), 2)
        with open(self.tls(acmeissuer.ACCOUNT_KEY), "rb") as f:
            self.assertEqual(f.read(), first)

    def test_kept_across_restarts(self):
        leaf = self.obtain()
        again = self.make_keeper()
        again.start()
        self.assertEqual(again.leaf.cert, leaf.cert)
        self.clock.advance(1)
        self.assertEqual(len(self.ca.issued), 1)

    def test_renewed_thirty_days_before_the_end(self):
        leaf = self.obtain()
        due = leaf.not_after - 30 * DAY
        self.clock.advance(due - self.clock.seconds() - 60)
        self.assertIs(self.keeper.leaf, leaf)
        self.clock.advance(120)
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertIsNot(self.keeper.leaf, leaf)
        self.assertEqual(len(self.ca.issued), 2)
        self.assertEqual(self.renewed[-1], self.keeper.leaf)

    def test_short_lived_renewed_at_two_thirds(self):
        self.ca.days = 6
        leaf = self.obtain()
        self.clock.advance(leaf.renew_at() - self.clock.seconds() - 60)
        self.assertEqual(len(self.ca.issued), 1)
        self.clock.advance(120)
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertEqual(len(self.ca.issued), 2)

    def test_failure_keeps_the_own_one_and_backs_off(self):
        self.ca.refuse = ConnectionRefusedError("acme.test:443 refused the connection")
        self.keeper.start()
        own = self.keeper.leaf
        self.clock.advance(0)
        self.assertEqual(len(self.ca.connects), 1)
        self.assertIs(self.keeper.leaf, own)
        state, detail = self.reports[-1]
        self.assertEqual(state, "degraded")
        self.assertIn("refused the connection", detail)
        self.assertIn(DIRECTORY, detail)
        self.assertIn("next try in 60 min", detail)
        # 1 h, then twice as long each time, up to a day.
        waits = []
        for _ in range(8):
            before = len(self.ca.connects)
            start = self.clock.seconds()
            while len(self.ca.connects) == before:
                self.clock.advance(60)
            waits.append(self.clock.seconds() - start)
        self.assertEqual(waits, [3600, 7200, 14400, 28800, 57600, DAY, DAY, DAY])
        self.assertIs(self.keeper.leaf, own)
        # Once the CA answers again, the certificate comes and the back-off ends.
        self.ca.refuse = None
        self.clock.advance(DAY)
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertEqual(len(self.ca.issued), 1)
        self.assertEqual(self.reports[-1][0], "up")
        self.assertEqual(self.keeper.failures, 0)

    def test_failed_renewal_keeps_the_acme_one(self):
        leaf = self.obtain()
        self.ca.fetch = lambda token: None      # the challenge does not reach us
        self.clock.advance(leaf.not_after - 30 * DAY - self.clock.seconds() + 1)
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertIs(self.keeper.leaf, leaf)
        self.assertEqual(self.reports[-1][0], "degraded")
        self.assertIn("validation failed", self.reports[-1][1])
        self.assertIn("did not match", self.reports[-1][1])
        self.assertEqual(self.issuer.responses, {})

    def test_a_new_wan_address_brings_the_try_forward(self):
        self.ca.refuse = OSError("no route to host")
        self.keeper.start()
        self.clock.advance(0)
        self.assertEqual(len(self.ca.connects), 1)
        self.ca.refuse = None
        self.keeper.wan_changed()
        for _ in range(10):
            self.clock.advance(POLL_STEP)
        self.assertEqual(len(self.ca.connects), 2)
        self.assertEqual(len(self.ca.issued), 1)

    def test_order_that_never_finishes_fails(self):
        self.ca.pending = 10 ** 6
        self.keeper.start()
        for _ in range(acmeissuer.POLL_DEADLINE // POLL_STEP + 2):
            self.clock.advance(POLL_STEP)
        self.assertEqual(self.reports[-1][0], "degraded")
        self.assertIn("not done after", self.reports[-1][1])

    def test_without_acme_directory_the_own_ca_again(self):
        self.obtain()
        self.office = Office(parse_config(MAIL_CONF), data_dir=self.data)
        self.keeper.check()
        self.assertEqual(self.keeper.leaf.issuer,
                         x509.load_pem_x509_certificate(self.keeper.ca_pem()).subject)
        self.assertIn("corp.example.com", self.keeper.leaf.names)


POLL_STEP = acmeissuer.POLL_MAX


class ChallengeResourceTests(unittest.TestCase):

    def setUp(self):
        self.office = Office(parse_config(MAIL_CONF),
                             data_dir=os.path.abspath(self.mktemp()))
        self.answers = {"tok-1": "tok-1.thumb"}
        self.site = sites.SiteBySide(self.office, None, self.answers.get)

    @defer.inlineCallbacks
    def test_answers_the_key_authorization_to_any_peer(self):
        for peer in (WAN_PEER, "192.168.2.10"):
            response, body = yield raw_get(self.site, "/.well-known/acme-challenge/tok-1", peer)
            self.assertEqual((response.code, body), (200, b"tok-1.thumb"), peer)

    @defer.inlineCallbacks
    def test_unknown_token_and_other_paths_404(self):
        for path in ("/.well-known/acme-challenge/other", "/.well-known/acme-challenge/",
                     "/.well-known/acme-challenge/tok-1/more", "/.well-known/acme-challenge"):
            response, _ = yield raw_get(self.site, path, WAN_PEER)
            self.assertEqual(response.code, 404, path)

    @defer.inlineCallbacks
    def test_without_an_issuer_nothing_is_answered(self):
        response, _ = yield raw_get(sites.SiteBySide(self.office),
                                    "/.well-known/acme-challenge/tok-1", WAN_PEER)
        self.assertEqual(response.code, 404)
