# -*- test-case-name: allworx.tests.core.test_certificates -*-
"""
The server's certificates (SPEC 17). At first start the server makes its own
CA under `data_dir/tls` (`ca.key`, 0600, and `ca.crt`) and one certificate
for `hostname.DOMAIN` with every built-in name and the LAN address as
subject alternative names (`server.pem`: key, then certificate and chain),
valid 397 days. It is renewed 30 days before it ends (or as soon as the
names it must carry change), by a timer on the reactor, without a restart; a
renewal that fails keeps the working certificate, says so in the status and
is tried again an hour later, then after twice as long each time up to a
day.

With `[tls] acme_directory` the certificate comes from that ACME CA
instead (`allworx.acmeissuer`: HTTP-01 on the WAN's port 80, SPEC 17's
names), kept in `acme.pem` beside the own one and renewed 30 days before it
ends (a third of its life for a short one). Until the first one is obtained,
and whenever getting one fails, the working certificate (the own CA's, or
the last ACME one) stays in use and the status says why ("degraded"); a new
WAN address brings the next try forward.

`CertificateKeeper.current()` is the one TLS option object every TLS port
listens with (listenSSL, startTLS): it hands each new connection the
certificate of the moment, so a renewal reaches every port at once while the
ports stay bound. TLS 1.2 or later only.
"""

import datetime
import ipaddress
import os

from twisted.internet import defer, ssl
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolNegotiationFactory
from twisted.logger import Logger
from zope.interface import implementer

from allworx.acmeissuer import AcmeIssuer, acme_names, account_key_path
from allworx.atomicfile import write_atomically
from allworx.config.model import BUILTIN_NAMES
from allworx.interfaces import ICertificateState

log = Logger()

DAY = 86400
LEAF_DAYS = 397                 # what browsers accept for a leaf (at most 398)
CA_DAYS = 20 * 365
RENEW_BEFORE = 30 * DAY         # renewed this long before the leaf ends
RETRY_AFTER = 3600              # a failed renewal is tried again after this,
RETRY_MAX = DAY                 # then after twice as long each time, up to this
CHECK_EVERY = DAY               # the timer looks at least this often (clock jumps, names)
# SPEC 17's names for mail clients; guide 10's built-in names may already
# carry them (they are added to BUILTIN_NAMES in the same issue).
MAIL_NAMES = ("imap", "mail", "autoconfig", "autodiscover")

CA_KEY, CA_CERT, SERVER_PEM, ACME_PEM = "ca.key", "ca.crt", "server.pem", "acme.pem"


def certificate_names(config):
    """The DNS names the server's certificate carries: hostname.DOMAIN first, then each built-in name."""
    domain = config.system.domain
    out = []
    for label in (config.system.hostname,) + tuple(BUILTIN_NAMES) + MAIL_NAMES:
        name = "%s.%s" % (label, domain)
        if name not in out:
            out.append(name)
    return out


def certificate_addresses(config):
    """The IP addresses it carries too (the LAN address, by which admins reach the admin pages)."""
    return [str(config.lan_ip)]


def tls_dir(data_dir):
    return os.path.join(data_dir, "tls")


# ---------------------------------------------------------------- making

def _utc(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _pem_key(key):
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert):
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name, now, days=CA_DAYS):
    """(key PEM, certificate PEM) of a new CA (EC P-256) valid from `now` (POSIX seconds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "allworx"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _utc(now) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return _pem_key(key), _pem_cert(cert)


def make_leaf(ca_key_pem, ca_cert_pem, names, addresses, now, days=LEAF_DAYS):
    """
    (key PEM, certificate PEM) of a new server certificate signed by the CA:
    subject `names[0]`, every name and address as SANs, valid `days` from `now`.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _utc(now) - datetime.timedelta(minutes=5)
    sans = ([x509.DNSName(n) for n in names]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), _pem_cert(cert)


class Leaf:
    """A server certificate as loaded: its PEM (key and chain), names, addresses and end."""

    def __init__(self, pem):
        from cryptography import x509
        self.pem = pem
        marker = b"-----BEGIN CERTIFICATE-----"
        if marker not in pem:
            raise ValueError("no certificate in it")
        self.chain = [x509.load_pem_x509_certificate(marker + p) for p in pem.split(marker)[1:]]
        cert = self.chain[0]
        self.cert = cert
        self.not_after = cert.not_valid_after_utc.timestamp()
        self.not_before = cert.not_valid_before_utc.timestamp()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        self.names = san.get_values_for_type(x509.DNSName)
        self.addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        self.issuer = cert.issuer

    def renew_at(self):
        """When it is due: 30 days before its end, or a third of its life for a short one."""
        return self.not_after - min(RENEW_BEFORE, (self.not_after - self.not_before) / 3)

    def options(self):
        """Twisted TLS server options for it (TLS 1.2 or later)."""
        private = ssl.PrivateCertificate.loadPEM(self.pem)
        marker = b"-----BEGIN CERTIFICATE-----"
        extra = [ssl.Certificate.loadPEM(marker + p).original
                 for p in self.pem.split(marker)[2:]]
        options = ssl.CertificateOptions(
            privateKey=private.privateKey.original, certificate=private.original,
            extraCertChain=extra or None, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        options.getContext().set_alpn_select_callback(_alpn_select)
        return options


def _alpn_select(connection, offered):
    """
    ALPN (RFC 7301) on our ports: the first protocol the port's factory
    speaks (the web: http/1.1) that the client offered; for a port that
    speaks none (mail, IMAP, SIP) the extension is ignored, as a server
    without ALPN would. Twisted's own callback fails the handshake of every
    client that offers ALPN to such a port (Thunderbird, iOS Mail, curl).
    """
    tls = connection.get_app_data()
    factory = getattr(getattr(tls, "factory", None), "wrappedFactory", None)
    negotiation = IProtocolNegotiationFactory(factory, None)
    for protocol in negotiation.acceptableProtocols() if negotiation is not None else ():
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class LiveTLSOptions:
    """
    TLS server options whose certificate can be swapped: each new connection
    (a listenSSL port's or a startTLS) gets the options of the moment.
    """

    def __init__(self, options=None):
        self._options = options

    def swap(self, options):
        self._options = options

    def serverConnectionForTLS(self, protocol):
        return self._options.serverConnectionForTLS(protocol)

    def getContext(self):
        return self._options.getContext()


# ---------------------------------------------------------------- keeping

@implementer(ICertificateState)
class CertificateKeeper:
    """
    The server's CA and certificate under `data_dir/tls`, kept current.
    `config()` gives the configuration of the moment (names, data_dir);
    `report(state, detail)` is told how it stands ("up" or "degraded");
    `subscribe(callback)` calls back with the new Leaf after each renewal.
    `acme` (an `allworx.acmeissuer.AcmeIssuer`) gets certificates when the
    configuration names an ACME directory; `answer(token)` gives its HTTP-01
    key authorizations to the port-80 sites.
    """

    def __init__(self, config, reactor, report=None, acme=None):
        self.config = config
        self.reactor = reactor
        self.report = report or (lambda state, detail: None)
        self.acme = acme if acme is not None else AcmeIssuer(reactor)
        self.leaf = None
        self.ca_cert_pem = None
        self.options = LiveTLSOptions()
        self.error = None
        self.failures = 0
        self._callbacks = []
        self._timer = None
        self._renewing = None

    # ------------------------------------------------------------ reading

    def current(self):
        """The live TLS options, or None when there is no certificate (it could not be made)."""
        self.ensure()
        return self.options if self.leaf is not None else None

    def expires(self):
        """When the certificate in use stops being valid (POSIX), or None (ICertificateState)."""
        return self.leaf.not_after if self.leaf is not None else None

    def ca_pem(self):
        """The CA's certificate (PEM), or None."""
        self.ensure()
        return self.ca_cert_pem

    def answer(self, token):
        """The HTTP-01 key authorization for an ACME challenge's token, or None."""
        return self.acme.answer(token)

    def subscribe(self, callback):
        self._callbacks.append(callback)

    def acme_directory(self):
        """The ACME directory certificates come from, or "" (the own CA)."""
        return self.config().tls.acme_directory

    def wanted(self):
        """(names, addresses) the certificate in use must carry."""
        config = self.config()
        if config.tls.acme_directory:
            return acme_names(config), []
        return certificate_names(config), certificate_addresses(config)

    def _own_wanted(self):
        config = self.config()
        return certificate_names(config), certificate_addresses(config)

    # ------------------------------------------------------------ life

    def start(self):
        self.ensure()
        self._schedule()

    def stop(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def ensure(self):
        """Load the CA and certificate, making what is missing; on failure, none (logged)."""
        if self.leaf is not None:
            return
        try:
            self._load_or_make()
        except (OSError, ValueError) as e:
            self.error = str(e)
            log.error("certificates: none ({error}); TLS is off", error=self.error)
            self.report("down", "no certificate: %s" % self.error)

    def _paths(self):
        d = tls_dir(self.config().system.data_dir)
        return d, os.path.join(d, CA_KEY), os.path.join(d, CA_CERT), os.path.join(d, SERVER_PEM)

    def _read_leaf(self, path):
        try:
            with open(path, "rb") as f:
                return Leaf(f.read())
        except FileNotFoundError:
            return None
        except ValueError as e:
            log.warn("certificates: {path} unreadable ({error})", path=path, error=str(e))
            return None

    def _load_or_make(self):
        d, key_path, cert_path, server_path = self._paths()
        os.makedirs(d, mode=0o700, exist_ok=True)
        if not (os.path.exists(key_path) and os.path.exists(cert_path)):
            config = self.config()
            key, cert = make_ca("allworx CA for %s" % config.system.domain, self.reactor.seconds())
            write_atomically(key_path, key, mode=0o600)
            write_atomically(cert_path, cert, mode=0o600)
            log.info("certificates: made the server's own CA in {path}", path=cert_path)
        with open(cert_path, "rb") as f:
            self.ca_cert_pem = f.read()
        if self.acme_directory():
            # The last certificate from the ACME CA, while it is good for our names.
            leaf = self._read_leaf(os.path.join(d, ACME_PEM))
            if leaf is not None and not self._due(leaf):
                self._install(leaf)
                return
        # The own CA's: at once, and until the ACME CA gives one.
        leaf = self._read_leaf(server_path)
        if leaf is None or self._due(leaf, *self._own_wanted()):
            leaf = self._issue()
        self._install(leaf)

    def _due(self, leaf, names=None, addresses=None):
        """Whether `leaf` must be replaced: near its end, or not (or no longer) for our names."""
        if names is None:
            names, addresses = self.wanted()
        return (self.reactor.seconds() >= leaf.renew_at()
                or sorted(leaf.names) != sorted(names)
                or sorted(leaf.addresses) != sorted(addresses))

    def _issue(self):
        """A new leaf from the own CA, written to server.pem."""
        _, key_path, cert_path, server_path = self._paths()
        with open(key_path, "rb") as f:
            ca_key = f.read()
        with open(cert_path, "rb") as f:
            ca_cert = f.read()
        names, addresses = self._own_wanted()
        key, cert = make_leaf(ca_key, ca_cert, names, addresses, self.reactor.seconds())
        write_atomically(server_path, key + cert, mode=0o600)
        leaf = Leaf(key + cert)
        log.info("certificates: issued a certificate for {names} until {end}",
                 names=", ".join(names), end=leaf.cert.not_valid_after_utc.isoformat())
        return leaf

    def _issue_acme(self):
        """A Deferred: a new leaf from the ACME CA, written to acme.pem."""
        config = self.config()
        d = tls_dir(config.system.data_dir)
        names, _ = self.wanted()
        log.info("certificates: asking the ACME CA {url} for {names}",
                 url=config.tls.acme_directory, names=", ".join(names))
        issued = self.acme.issue(config.tls.acme_directory, config.tls.acme_email,
                                 account_key_path(d), names)

        def got(pem):
            leaf = Leaf(pem)    # before it is written: a broken answer keeps the file
            write_atomically(os.path.join(d, ACME_PEM), pem, mode=0o600)
            log.info("certificates: the ACME CA issued a certificate for {names} until {end}",
                     names=", ".join(leaf.names), end=leaf.cert.not_valid_after_utc.isoformat())
            return leaf
        return issued.addCallback(got)

    def _install(self, leaf):
        self.options.swap(leaf.options())
        self.leaf = leaf
        self.error = None
        self.report("up", "certificate for %s until %s%s" % (
            leaf.names[0] if leaf.names else "?", leaf.cert.not_valid_after_utc.date(),
            self._origin(leaf)))

    def _is_own(self, leaf):
        """Whether `leaf` is the own CA's."""
        return self.ca_cert_pem is not None and leaf.issuer == Leaf(self.ca_cert_pem).cert.subject

    def _origin(self, leaf):
        if self._is_own(leaf):
            if self.acme_directory():
                return " (the server's own CA; asking the ACME CA %s)" % self.acme_directory()
            return ""
        return " (from %s)" % (self.acme_directory() or "an ACME CA")

    # ------------------------------------------------------------ renewing

    def retry_delay(self):
        """How long after the latest of `failures` failed tries the next one is."""
        return min(RETRY_AFTER * 2 ** max(0, self.failures - 1), RETRY_MAX)

    def _schedule(self, delay=None):
        self.stop()
        if self.leaf is None:
            delay = RETRY_AFTER if delay is None else delay
        elif delay is None:
            delay = 0 if self._due(self.leaf) else max(
                0, self.leaf.renew_at() - self.reactor.seconds())
        self._timer = self.reactor.callLater(min(delay, CHECK_EVERY), self._check)

    def _check(self):
        self._timer = None
        if self.leaf is None:
            self.ensure()
            self._schedule()
        elif self._due(self.leaf):
            self.renew()
        else:
            self._schedule()

    def check(self):
        """Look now (the configuration changed): renew if the names changed."""
        if self._timer is not None and self._renewing is None:
            self._check()

    def wan_changed(self):
        """The WAN has a new address: a failing ACME CA is tried again now."""
        if self.failures and self.acme_directory():
            self.check()

    def renew(self):
        """Issue a new certificate now; a Deferred that fires when done (never fails)."""
        if self._renewing is not None:
            return self._renewing
        acme = bool(self.acme_directory())
        d = self._issue_acme() if acme else defer.maybeDeferred(self._issue)
        self._renewing = d

        def done(leaf):
            self.failures = 0
            self._install(leaf)
            for callback in list(self._callbacks):
                callback(leaf)
            self._schedule()

        def failed(failure):
            self.failures += 1
            self.error = failure.getErrorMessage()
            retry = self.retry_delay()
            what = "getting a certificate from the ACME CA %s" % self.acme_directory() \
                if acme else "renewal"
            log.error("certificates: {what} failed ({error}); keeping the current one, "
                      "trying again in {retry} s", what=what, error=self.error, retry=retry)
            if acme:
                self._keep_own_current()
            self.report("degraded", "%s failed: %s; the certificate until %s is kept; "
                        "next try in %d min" % (what, self.error,
                                                self.leaf.cert.not_valid_after_utc.date(),
                                                retry // 60))
            self._schedule(retry)

        def finished(result):
            self._renewing = None
            return result
        d.addCallback(done)
        d.addErrback(failed)
        d.addBoth(finished)
        return d

    def _keep_own_current(self):
        """While the ACME CA fails, an own certificate in use that is itself due is renewed."""
        if self.leaf is None or not self._is_own(self.leaf):
            return
        if self._due(self.leaf, *self._own_wanted()):
            try:
                self._install(self._issue())
            except (OSError, ValueError) as e:
                log.error("certificates: the own CA failed too ({error})", error=str(e))
